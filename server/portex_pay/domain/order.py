"""The order: its states, the SDK's status numbers, the transition table and the order record.

States follow AIP-216. The SDK reads `status` (a number) and `status_description`; its own test
expects `1` / `success` for a paid order, so the numbering below is a compatibility contract,
documented in the proto.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from portex_pay.domain.errors import IllegalTransition


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


def check_transition(current: OrderState, new: OrderState) -> None:
    """Raises IllegalTransition unless the table allows `current` -> `new`."""
    if new not in TRANSITIONS[current]:
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

    def state_at(self, now: datetime) -> OrderState:
        """The state as callers see it: an unpaid order past its expiry time is expired even
        before the sweeper has written that down."""
        if self.state in (OrderState.PENDING, OrderState.FAILED) and now >= self.expires_at:
            return OrderState.EXPIRED
        return self.state

    def is_payable(self, now: datetime) -> bool:
        return self.state_at(now) is OrderState.PENDING and self.invoice_link is not None

    def invoice_in_progress(self, now: datetime) -> bool:
        """Another Pay call holds the lease to create this order's invoice link."""
        return (
            self.invoice_link is None
            and self.invoice_lease_until is not None
            and self.invoice_lease_until > now
        )
