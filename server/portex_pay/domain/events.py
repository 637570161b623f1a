"""The event log's nouns: events, their types, and the cursors that position a reader.

Events are ordered by `(xid, id)`: the writing transaction's id and the row id (the adapter,
adapters/postgres/events.py, says why). A cursor is that pair, opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import total_ordering
from typing import Any
from uuid import UUID


class EventType(StrEnum):
    """Every event portex-pay writes. `order.*` events carry the order as it is after the change
    (`data.order`); `refund.*` events carry the refund as it is after the change too
    (`data.refund`, beside its order's `data.order`); the others say what happened beside an
    order."""

    ORDER_CREATED = "order.created"
    ORDER_INVOICE_CREATED = "order.invoice_created"
    ORDER_FAILED = "order.failed"
    ORDER_PAID = "order.paid"
    ORDER_CANCELLED = "order.cancelled"
    ORDER_EXPIRED = "order.expired"
    ORDER_REFUNDED = "order.refunded"
    ORDER_CLIENT_REPORT = "order.client_report"
    ORDER_FULFILLED = "order.fulfilled"
    CHECKOUT_APPROVED = "checkout.approved"
    CHECKOUT_DECLINED = "checkout.declined"
    PAYMENT_DUPLICATE = "payment.duplicate"
    PAYMENT_ANOMALY = "payment.anomaly"
    REFUND_REQUESTED = "refund.requested"
    REFUND_FAILED = "refund.failed"
    REFUND_RETRIED = "refund.retried"
    UPDATE_DEAD_LETTERED = "update.dead_lettered"
    # A Star transaction that looks like an order's payment or refund but matches none of ours
    # (data.star_transaction: domain/star_ledger.py, LedgerEntry.event_data).
    LEDGER_UNMATCHED = "ledger.unmatched"
    # A subscription order's changes (domain/subscription.py), each with the order after it
    # (`data.order`, whose subscription columns say the state and period); renewals also carry
    # the charge (`telegram_payment_charge_id`, `period_start`, `period_end`). Callbacks get
    # them as they get `order.*` events.
    SUBSCRIPTION_STARTED = "subscription.started"
    SUBSCRIPTION_RENEWED = "subscription.renewed"
    SUBSCRIPTION_CANCELLED = "subscription.cancelled"
    SUBSCRIPTION_REACTIVATED = "subscription.reactivated"
    SUBSCRIPTION_PAYMENT_FAILED = "subscription.payment_failed"
    SUBSCRIPTION_EXPIRED = "subscription.expired"


XID_MAX = 2**64 - 1  # xid8, the writing transaction's id
EVENT_ID_MAX = 2**63 - 1  # bigint, the event's row id
# "v1.<xid>.<id>", canonical decimal, in unpadded base64url.
_RAW = re.compile(r"v1\.(0|[1-9][0-9]{0,19})\.(0|[1-9][0-9]{0,18})", re.ASCII)
_ENCODED = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_ENCODED_MAX_CHARS = 64


class MalformedCursor(ValueError):
    """The cursor was not made by this service."""


@total_ordering
@dataclass(frozen=True, slots=True)
class Cursor:
    xid: int
    id: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"v1.{self.xid}.{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor `encode` made, or MalformedCursor: anything else is refused here, before
        any query (another base64 spelling of it, digits that are not ASCII, a sign, a leading
        zero, a position out of the columns' range)."""
        if len(text) > _ENCODED_MAX_CHARS or not _ENCODED.fullmatch(text):
            raise MalformedCursor("not a cursor of this service")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        except (ValueError, binascii.Error):
            raise MalformedCursor("not a cursor of this service") from None
        parts = _RAW.fullmatch(raw)
        if parts is None:
            raise MalformedCursor("not a cursor of this service")
        cursor = cls(int(parts[1]), int(parts[2]))
        if cursor.xid > XID_MAX or cursor.id > EVENT_ID_MAX or cursor.encode() != text:
            raise MalformedCursor("not a cursor of this service")
        return cursor

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Cursor):
            return NotImplemented
        return (self.xid, self.id) < (other.xid, other.id)


START = Cursor(0, 0)


@dataclass(frozen=True, slots=True)
class Event:
    cursor: Cursor
    application_id: UUID
    tg_payment_id: int | None
    # The type as stored: one of EventType for everything this version writes, but a reader
    # must not trip on a type a newer replica wrote during a rolling upgrade.
    type: str
    data: dict[str, Any]
    occurred_at: datetime

    @property
    def event_id(self) -> int:
        return self.cursor.id


# Invoice outcomes in the SDK's InvoiceClosedResult words (the client-facing `invoice_closed` of
# an event); an order that expired unpaid was, for the user, closed without paying.
_INVOICE_CLOSED: dict[str, str] = {
    EventType.ORDER_PAID: "paid",
    EventType.ORDER_CANCELLED: "cancelled",
    EventType.ORDER_EXPIRED: "cancelled",
    EventType.ORDER_FAILED: "failed",
}


def invoice_closed(event_type: str) -> str | None:
    """The SDK's InvoiceClosedResult status an event announces (`paid`, `cancelled`, `failed`),
    or None when it closes no invoice."""
    return _INVOICE_CLOSED.get(event_type)
