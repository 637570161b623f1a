"""Refunds: what was asked, where it stands, and the work the refund worker claims.

A refund is asked for once per charge (the charge id is its key): by a caller (RequestRefund,
reason `requested`) or by portex-pay itself for a charge it cannot accept (auto-refund). The
worker sends it to Telegram (refundStarPayment) until it succeeds or its attempts run out.

Its states change only as `TRANSITIONS` allows, as an order's do (domain/order.py): the adapter's
compare-and-set guards (`state = ANY($n)`) are derived from the table by `sources`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class RefundState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# The legal changes of state. PENDING -> PENDING is a failed attempt that backs off. A failed
# refund (its attempts ran out) still succeeds when Telegram reports the charge refunded
# (refunded_payment: refunded by hand, or an attempt that did go through): Telegram's word is the
# truth about the money. A succeeded refund is settled for good.
TRANSITIONS: dict[RefundState, frozenset[RefundState]] = {
    RefundState.PENDING: frozenset(
        {RefundState.PENDING, RefundState.SUCCEEDED, RefundState.FAILED}
    ),
    RefundState.FAILED: frozenset({RefundState.SUCCEEDED}),
    RefundState.SUCCEEDED: frozenset(),
}


def sources(target: RefundState) -> list[str]:
    """The states a refund may become `target` from, by the table: what a compare-and-set in SQL
    checks (`state = ANY($n)`)."""
    return [state.value for state in RefundState if target in TRANSITIONS[state]]


def allows(current: RefundState, new: RefundState) -> bool:
    return new in TRANSITIONS[current]


# What the worker sends to Telegram: a refund an attempt can still change (a failed attempt
# leaves it pending); a failed one waits for Telegram's word alone.
DUE = frozenset(RefundState(state) for state in sources(RefundState.PENDING))


@dataclass(frozen=True, slots=True)
class Refund:
    telegram_payment_charge_id: str
    tg_payment_id: int | None
    amount: int
    state: RefundState
    reason: str
    attempts: int
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class DueRefund:
    telegram_payment_charge_id: str
    application_id: UUID
    tg_payment_id: int | None
    tg_use_id: int
    attempts: int
    bot_token: str | None
