"""The order: its states, the SDK's status numbers, the transition table and the order record.

States follow AIP-216. The SDK reads `status` (a number) and `status_description`; its own test
expects `1` / `success` for a paid order, so the numbering below is a compatibility contract,
documented in the proto.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from portex_pay.domain.errors import IllegalTransition
from portex_pay.domain.subscription import SubscriptionState


class OrderState(enum.StrEnum):
    PENDING = "pending"
    PAID = "paid"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


# state -> (SDK status number, SDK status description)
SDK_STATUS: dict[OrderState, tuple[int, str]] = {
    OrderState.PENDING: (0, "pending"),
    OrderState.PAID: (1, "success"),
    OrderState.CANCELLED: (2, "cancelled"),
    OrderState.EXPIRED: (3, "expired"),
    OrderState.FAILED: (4, "failed"),
    OrderState.REFUNDED: (5, "refunded"),
}

# The legal changes of state. FAILED -> PENDING is a Pay retry (same request_id) whose invoice
# was created after an earlier attempt failed; FAILED -> FAILED records a failed retry.
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.PENDING: frozenset(
        {
            OrderState.PENDING,
            OrderState.PAID,
            OrderState.CANCELLED,
            OrderState.EXPIRED,
            OrderState.FAILED,
        }
    ),
    OrderState.FAILED: frozenset(
        {OrderState.PENDING, OrderState.FAILED, OrderState.CANCELLED, OrderState.EXPIRED}
    ),
    # Telegram charges only after our pre-checkout approval: a charge that lands just after the
    # expiry sweep still pays the order.
    OrderState.EXPIRED: frozenset({OrderState.PAID}),
    OrderState.PAID: frozenset({OrderState.REFUNDED}),
    OrderState.CANCELLED: frozenset(),
    OrderState.REFUNDED: frozenset(),
}


def sources(target: OrderState) -> list[str]:
    """The states an order may become `target` from, by the table: what a compare-and-set in
    SQL checks (`state = ANY($n)`), so every guard in the adapter is derived from the table."""
    return [state.value for state in OrderState if target in TRANSITIONS[state]]


# An unpaid order past its expiry time is expired, written down or not (Order.state_at).
EXPIRABLE = frozenset(OrderState(state) for state in sources(OrderState.EXPIRED))


# Where a buyer can still pay: an invoice link exists and it is not expired (Order.is_payable).
PAYABLE = frozenset({OrderState.PENDING})


def allows(current: OrderState, new: OrderState) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: OrderState, new: OrderState) -> None:
    """Raises IllegalTransition unless the table allows `current` -> `new`."""
    if not allows(current, new):
        raise IllegalTransition(f"an order that is {current} cannot become {new}")


@dataclass(frozen=True, slots=True)
class Order:
    tg_payment_id: int
    application_id: UUID
    tg_use_id: int
    amount: int
    label: str
    title: str
    description: str
    payload: str | None
    photo_url: str | None
    photo_size: int | None
    photo_width: int | None
    photo_height: int | None
    callback_url: str | None
    state: OrderState
    invoice_link: str | None
    failure_code: str | None
    failure_reason: str | None
    retry_after: int | None
    telegram_payment_charge_id: str | None
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None
    expires_at: datetime
    invoice_lease_until: datetime | None
    client_report: str | None = None
    # The application's key-value data (domain/metadata.py), empty when it gave none.
    metadata: Mapping[str, str] = field(default_factory=dict)
    # When the application acknowledged delivering the goods, and the id it gave that delivery.
    fulfilled_at: datetime | None = None
    fulfilment_request_id: str | None = None
    # The subscription (domain/subscription.py), for an order made with a subscription_period:
    # None for a one-off order; its state None until the first payment starts it.
    subscription_period: int | None = None
    subscription_state: SubscriptionState | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> Order:
        """The order as an event recorded it (PostgreSQL's `to_jsonb` of the row: ISO-8601
        timestamps, the id as text); fields the snapshot lacks (a lease) are None."""
        values: dict[str, Any] = {name: snapshot.get(name) for name in _FIELDS}
        values["application_id"] = UUID(str(values["application_id"]))
        values["state"] = OrderState(values["state"])
        values["metadata"] = dict(values["metadata"] or {})
        if values["subscription_state"] is not None:
            values["subscription_state"] = SubscriptionState(values["subscription_state"])
        for name in _TIMESTAMPS:
            if isinstance(values[name], str):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)

    def state_at(self, now: datetime) -> OrderState:
        """The state as callers see it: an unpaid order past its expiry time is expired even
        before the sweeper has written that down."""
        if self.state in EXPIRABLE and now >= self.expires_at:
            return OrderState.EXPIRED
        return self.state

    def is_payable(self, now: datetime) -> bool:
        return self.state_at(now) in PAYABLE and self.invoice_link is not None

    def invoice_in_progress(self, now: datetime) -> bool:
        """Another Pay call holds the lease to create this order's invoice link."""
        return (
            self.invoice_link is None
            and self.invoice_lease_until is not None
            and self.invoice_lease_until > now
        )


_FIELDS = tuple(field.name for field in fields(Order))
_TIMESTAMPS = (
    "created_at",
    "updated_at",
    "paid_at",
    "expires_at",
    "fulfilled_at",
    "current_period_start",
    "current_period_end",
)


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of inserting an order under an idempotency key."""

    order: Order
    created: bool
    request_hash: bytes
