"""Refunds: what was asked and why, where it stands, and the work the refund worker claims.

A refund is asked for once per charge (the charge id is its key): by a caller (RefundPayment,
reason `requested`, with the caller's reason code and text) or by portex-pay itself (a further
charge of a settled order, a charge of a withdrawn order, the application's unfulfilled-order
policy, a refund found on Telegram), with the reason code `OWN_REASON_CODES` gives it. Asking again
changes nothing: the first reason stands. The worker sends it to Telegram (refundStarPayment) until
it succeeds or its attempts run out; RetryRefund sends a failed one again with a fresh budget.

Its states change only as `TRANSITIONS` allows, as an order's do (domain/order.py): the adapter's
compare-and-set guards (`state = ANY($n)`) are derived from the table by `sources`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from portex_pay.domain.checkout import RefundReason
from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.text import free_text_problem


class RefundState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# The legal changes of state. PENDING -> PENDING is a failed attempt that backs off. A failed
# refund (its attempts ran out) still succeeds when Telegram reports the charge refunded
# (refunded_payment: refunded by hand, or an attempt that did go through): Telegram's word is the
# truth about the money. FAILED -> PENDING is RetryRefund: sent again with a fresh budget of
# attempts (BALANCE_TOO_LOW recovers once received Stars clear). A succeeded refund is settled
# for good.
TRANSITIONS: dict[RefundState, frozenset[RefundState]] = {
    RefundState.PENDING: frozenset(
        {RefundState.PENDING, RefundState.SUCCEEDED, RefundState.FAILED}
    ),
    RefundState.FAILED: frozenset({RefundState.SUCCEEDED, RefundState.PENDING}),
    RefundState.SUCCEEDED: frozenset(),
}


def sources(target: RefundState) -> list[str]:
    """The states a refund may become `target` from, by the table: what a compare-and-set in SQL
    checks (`state = ANY($n)`)."""
    return [state.value for state in RefundState if target in TRANSITIONS[state]]


def allows(current: RefundState, new: RefundState) -> bool:
    return new in TRANSITIONS[current]


# What the worker sends to Telegram: a pending refund. A failed one waits for RetryRefund or for
# Telegram's word alone.
DUE = frozenset({RefundState.PENDING})

# What RetryRefund sends again: a refund the table lets become pending that the worker does not
# send already (a failed one).
RETRYABLE = frozenset(RefundState(state) for state in sources(RefundState.PENDING)) - DUE


def attempt_sources(target: RefundState) -> list[str]:
    """The states a failed attempt may move a refund to `target` from: the table's, among the
    states the worker sends (an attempt that lands late never revives a refund that failed or
    was retried meanwhile)."""
    return [state for state in sources(target) if RefundState(state) in DUE]


class RefundReasonCode(enum.StrEnum):
    """Why a refund was made, in short (Refund.ReasonCode; `refunds.reason_code`)."""

    REQUESTED_BY_CUSTOMER = "requested_by_customer"
    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    NOT_FULFILLED = "not_fulfilled"
    ORDER_CANCELLED = "order_cancelled"
    OTHER = "other"


# The reason code of each refund portex-pay starts (and of a caller's, when it gave none).
OWN_REASON_CODES: dict[RefundReason, RefundReasonCode] = {
    RefundReason.REQUESTED: RefundReasonCode.REQUESTED_BY_CUSTOMER,
    RefundReason.DUPLICATE_CHARGE: RefundReasonCode.DUPLICATE,
    RefundReason.CANCELLED_ORDER: RefundReasonCode.ORDER_CANCELLED,
    RefundReason.ANOMALY: RefundReasonCode.OTHER,
    RefundReason.UNFULFILLED: RefundReasonCode.NOT_FULFILLED,
    RefundReason.OUTSIDE: RefundReasonCode.OTHER,
}

REASON_TEXT_MAX_CHARS = 500


@dataclass(frozen=True, slots=True)
class RefundCause:
    """Why a refund is asked for: who started it and on what ground (`reason`), why in short
    (`code`) and in words (`text`, None when nobody gave any)."""

    reason: RefundReason
    code: RefundReasonCode
    text: str | None = None

    @classmethod
    def own(cls, reason: RefundReason) -> RefundCause:
        """A refund portex-pay starts itself, with its reason's code."""
        return cls(reason, OWN_REASON_CODES[reason])

    @classmethod
    def requested(cls, code: RefundReasonCode | None, text: str) -> RefundCause:
        """A caller's refund (RefundPayment): its code (REQUESTED_BY_CUSTOMER when it gave
        none) and its text, checked as free text (domain/text.py) of at most
        REASON_TEXT_MAX_CHARS characters; InvalidArgument on `reason_text` otherwise."""
        problem = free_text_problem(text)
        if problem is None and len(text) > REASON_TEXT_MAX_CHARS:
            problem = f"must be at most {REASON_TEXT_MAX_CHARS} characters"
        if problem is not None:
            raise InvalidArgument([FieldViolation("reason_text", problem)])
        return cls(
            RefundReason.REQUESTED, code or OWN_REASON_CODES[RefundReason.REQUESTED], text or None
        )


@dataclass(frozen=True, slots=True)
class Refund:
    telegram_payment_charge_id: str
    tg_payment_id: int | None
    tg_use_id: int
    amount: int
    state: RefundState
    reason: str
    reason_code: RefundReasonCode
    reason_text: str | None
    attempts: int
    # RetryRefund calls so far (each gave it a fresh budget of attempts).
    retries: int
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Refund:
        """The refund as an event recorded it (PostgreSQL's `to_jsonb` of the row: ISO-8601
        timestamps)."""
        values: dict[str, Any] = {name: snapshot.get(name) for name in _FIELDS}
        values["state"] = RefundState(values["state"])
        values["reason_code"] = RefundReasonCode(values["reason_code"])
        for name in ("created_at", "completed_at"):
            if isinstance(values[name], str):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


_FIELDS = tuple(field.name for field in fields(Refund))


@dataclass(frozen=True, slots=True)
class RefundFilter:
    """Which of an application's refunds ListRefunds lists: each field narrows the list when it
    is set (`created_from` inclusive, `created_before` exclusive)."""

    tg_payment_id: int | None = None
    state: RefundState | None = None
    created_from: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class RefundPosition:
    """Where a page of refunds ended, in their order (newest first: creation time, then charge
    id, both descending): the next page starts after it."""

    created_at: datetime
    telegram_payment_charge_id: str


@dataclass(frozen=True, slots=True)
class DueRefund:
    telegram_payment_charge_id: str
    application_id: UUID
    tg_payment_id: int | None
    tg_use_id: int
    attempts: int
    bot_token: str | None
