"""Fulfilment: the application's word that a paid order's goods were delivered, and its policy of
refunding paid orders nobody acknowledged in time.

AcknowledgeOrder is a compare-and-set: a paid order not acknowledged yet gets its `fulfilled_at`
(and the caller's request id) with its `order.fulfilled` event in one statement. When that does
not apply, `acknowledgement_refusal` tells from the order as it is now whether the call repeats
the acknowledgement (answered with the order unchanged) or why it is refused. A repeat is a call
with the request id recorded or with none; any other id (also one given after an acknowledgement
that had none) is another delivery of the same goods: ALREADY_EXISTS. An order refunded after its
acknowledgement still answers a repeat with the order: the goods were delivered.

The policy (off unless the operator sets a deadline for the application) refunds an order paid at
least that long ago and still not acknowledged, and only one paid since the policy was switched
on: switching it on never reaches back to orders paid under no such promise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from portex_pay.domain.errors import (
    DomainError,
    IllegalTransition,
    OrderAlreadyFulfilled,
    OrderNotPaid,
    OrderRefunded,
)
from portex_pay.domain.order import Order, OrderState

# Whose goods can be delivered: a paid order (a refunded one only if it was delivered before).
FULFILLABLE = frozenset({OrderState.PAID})


def acknowledgement_refusal(order: Order, request_id: str | None) -> DomainError | None:
    """Why acknowledging `order`, which the compare-and-set left as it was, is refused; None
    when the call repeats the recorded acknowledgement."""
    if order.fulfilled_at is not None:
        if request_id is None or request_id == order.fulfilment_request_id:
            return None
        return OrderAlreadyFulfilled(
            f"order {order.tg_payment_id} was acknowledged under another request_id",
            metadata={"fulfilled_time": order.fulfilled_at.isoformat()},
        )
    if order.state is OrderState.REFUNDED:
        return OrderRefunded(
            f"order {order.tg_payment_id} was refunded before its goods were delivered"
        )
    if order.state in FULFILLABLE:  # the compare-and-set would have taken it: it changed since
        return IllegalTransition(f"order {order.tg_payment_id} changed while acknowledged; retry")
    # Pending, failed, cancelled or expired (also an unpaid one merely past its time).
    return OrderNotPaid(
        f"order {order.tg_payment_id} was never paid", metadata={"state": order.state.value}
    )


# --- The unfulfilled-order policy ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnfulfilledOrder:
    """A paid order nobody acknowledged within its application's deadline: the policy refunds
    it through its application's bot."""

    application_id: UUID
    tg_payment_id: int
    bot_id: int


DEADLINE_MIN = timedelta(minutes=1)
DEADLINE_MAX = timedelta(days=365)
_UNITS = {"d": 86_400, "h": 3600, "m": 60, "s": 1}
_DEADLINE = re.compile(r"(?:[0-9]{1,6}[dhms])+", re.ASCII)
_PART = re.compile(r"([0-9]{1,6})([dhms])", re.ASCII)


def parse_deadline(text: str) -> timedelta:
    """`72h`, `3d`, `1d12h`, `90m`: whole numbers of days, hours, minutes and seconds, from
    DEADLINE_MIN to DEADLINE_MAX; ValueError (its message says why) otherwise."""
    if not _DEADLINE.fullmatch(text):
        raise ValueError("must be a duration such as 72h, 3d, 1d12h or 90m")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(text))
    deadline = timedelta(seconds=seconds)
    if not DEADLINE_MIN <= deadline <= DEADLINE_MAX:
        raise ValueError(
            f"must be from {format_deadline(DEADLINE_MIN)} to {format_deadline(DEADLINE_MAX)}"
        )
    return deadline


def format_deadline(deadline: timedelta) -> str:
    """The deadline as `parse_deadline` reads it, in its largest whole units (`3d`, `1d12h`)."""
    remaining = int(deadline.total_seconds())
    parts = []
    for unit, size in _UNITS.items():
        if remaining >= size:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    return "".join(parts) or "0s"
