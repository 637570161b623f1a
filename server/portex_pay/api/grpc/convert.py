"""Conversions between the generated messages and the domain."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from portex.payment.v1 import payment_pb2
from portex_pay.domain.catalog import CatalogItem, SeenUser
from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.events import Cursor, Event, EventType, invoice_closed
from portex_pay.domain.order import SDK_STATUS, Order, OrderState
from portex_pay.domain.pay import PayCommand
from portex_pay.domain.refunds import Refund, RefundFilter, RefundReasonCode, RefundState
from portex_pay.domain.star_ledger import Direction, LedgerEntry, Match, StarBalance
from portex_pay.domain.subscription import SubscriptionCharge, SubscriptionState
from portex_pay.service.bot_messages import TEXT_FIELDS, BotMessages

_STATE = {
    OrderState.PENDING: payment_pb2.Order.PENDING,
    OrderState.PAID: payment_pb2.Order.PAID,
    OrderState.CANCELLED: payment_pb2.Order.CANCELLED,
    OrderState.EXPIRED: payment_pb2.Order.EXPIRED,
    OrderState.FAILED: payment_pb2.Order.FAILED,
    OrderState.REFUNDED: payment_pb2.Order.REFUNDED,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_Value = TypeVar("_Value")


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """`Timestamp.FromDatetime`'s result (a naive datetime is UTC), computed from the datetime's
    own fields: FromDatetime goes through `calendar.timegm` and a `timetuple`, a few percent of
    QueryOrder, whose Order carries three to five timestamps."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def pay_command(request: payment_pb2.PayRequest) -> PayCommand:
    def optional(field: str) -> object:
        return getattr(request, field) if request.HasField(field) else None  # type: ignore[arg-type]

    return PayCommand(
        tg_use_id=request.tg_use_id,
        amount=request.amount,
        label=request.label,
        title=request.title,
        description=request.description,
        payload=optional("payload"),  # type: ignore[arg-type]
        photo_url=optional("photo_url"),  # type: ignore[arg-type]
        photo_size=optional("photo_size"),  # type: ignore[arg-type]
        photo_width=optional("photo_width"),  # type: ignore[arg-type]
        photo_height=optional("photo_height"),  # type: ignore[arg-type]
        callback_url=optional("callback_url"),  # type: ignore[arg-type]
        metadata=dict(request.metadata),
        subscription_period=optional("subscription_period"),  # type: ignore[arg-type]
    )


_SUBSCRIPTION_STATE = {
    SubscriptionState.ACTIVE: payment_pb2.Subscription.ACTIVE,
    SubscriptionState.CANCELLED: payment_pb2.Subscription.CANCELLED,
    SubscriptionState.LAPSED: payment_pb2.Subscription.LAPSED,
    SubscriptionState.EXPIRED: payment_pb2.Subscription.EXPIRED,
}


def subscription_message(
    order: Order, charges: Sequence[SubscriptionCharge] = ()
) -> payment_pb2.Subscription:
    """The order's subscription (its charges only where the caller read them: QueryOrder and
    the subscription RPCs)."""
    assert order.subscription_period is not None
    message = payment_pb2.Subscription(period_seconds=order.subscription_period)
    if order.subscription_state is not None:
        message.state = _SUBSCRIPTION_STATE[order.subscription_state]
    if order.current_period_start is not None:
        message.current_period_start.CopyFrom(_timestamp(order.current_period_start))
    if order.current_period_end is not None:
        message.current_period_end.CopyFrom(_timestamp(order.current_period_end))
    for charge in charges:
        item = message.charges.add(
            telegram_payment_charge_id=charge.telegram_payment_charge_id,
            amount=charge.amount,
            paid_time=_timestamp(charge.paid_at),
        )
        if charge.period is not None:
            item.period_start.CopyFrom(_timestamp(charge.period.start))
            item.period_end.CopyFrom(_timestamp(charge.period.end))
        if charge.refunded_at is not None:
            item.refunded_time.CopyFrom(_timestamp(charge.refunded_at))
    return message


def order_message(
    order: Order, now: datetime, charges: Sequence[SubscriptionCharge] = ()
) -> payment_pb2.Order:
    state = order.state_at(now)
    status, status_description = SDK_STATUS[state]
    message = payment_pb2.Order(
        tg_payment_id=order.tg_payment_id,
        application_id=str(order.application_id),
        tg_use_id=order.tg_use_id,
        amount=order.amount,
        label=order.label,
        title=order.title,
        description=order.description,
        payload=order.payload or "",
        status=status,
        status_description=status_description,
        state=_STATE[state],
        tg_payment_url=order.invoice_link or "",
        telegram_payment_charge_id=order.telegram_payment_charge_id or "",
        failure_reason=order.failure_reason or "",
        client_report=order.client_report or "",
        create_time=_timestamp(order.created_at),
        update_time=_timestamp(order.updated_at),
        expire_time=_timestamp(order.expires_at),
    )
    for field in ("photo_url", "photo_size", "photo_width", "photo_height", "callback_url"):
        value = getattr(order, field)
        if value is not None:
            setattr(message, field, value)
    if order.paid_at is not None:
        message.paid_time.CopyFrom(_timestamp(order.paid_at))
    if order.fulfilled_at is not None:
        message.fulfilled_time.CopyFrom(_timestamp(order.fulfilled_at))
    message.metadata.update(order.metadata)
    if order.subscription_period is not None:
        message.subscription.CopyFrom(subscription_message(order, charges))
    return message


_REFUND_STATE = {
    RefundState.PENDING: payment_pb2.Refund.PENDING,
    RefundState.SUCCEEDED: payment_pb2.Refund.SUCCEEDED,
    RefundState.FAILED: payment_pb2.Refund.FAILED,
}


# --- Refunds: the Refund message, RefundPayment's reason, ListRefunds' filter -------------------

_REASON_CODE = {
    RefundReasonCode.REQUESTED_BY_CUSTOMER: payment_pb2.Refund.REQUESTED_BY_CUSTOMER,
    RefundReasonCode.DUPLICATE: payment_pb2.Refund.DUPLICATE,
    RefundReasonCode.FRAUDULENT: payment_pb2.Refund.FRAUDULENT,
    RefundReasonCode.NOT_FULFILLED: payment_pb2.Refund.NOT_FULFILLED,
    RefundReasonCode.ORDER_CANCELLED: payment_pb2.Refund.ORDER_CANCELLED,
    RefundReasonCode.OTHER: payment_pb2.Refund.OTHER,
}
_REASON_CODE_OF = {number: code for code, number in _REASON_CODE.items()}
_REFUND_STATE_OF = {number: state for state, number in _REFUND_STATE.items()}


def refund_message(refund: Refund) -> payment_pb2.Refund:
    message = payment_pb2.Refund(
        tg_payment_id=refund.tg_payment_id or 0,
        telegram_payment_charge_id=refund.telegram_payment_charge_id,
        amount=refund.amount,
        state=_REFUND_STATE[refund.state],
        reason=refund.reason,
        attempts=refund.attempts,
        last_error=refund.last_error or "",
        create_time=_timestamp(refund.created_at),
        reason_code=_REASON_CODE[refund.reason_code],
        reason_text=refund.reason_text or "",
        tg_use_id=refund.tg_use_id,
    )
    if refund.completed_at is not None:
        message.complete_time.CopyFrom(_timestamp(refund.completed_at))
    return message


def _enum_value(number: int, values: Mapping[Any, _Value], field: str) -> _Value | None:
    """The domain value of an enum field (None for its zero, UNSPECIFIED); a number the enum does
    not have (proto3 enums are open) is InvalidArgument on `field`."""
    if number == 0:
        return None
    if number not in values:
        raise InvalidArgument([FieldViolation(field, f"is not a known value ({number})")])
    return values[number]


def refund_reason_code(request: payment_pb2.RefundPaymentRequest) -> RefundReasonCode | None:
    """RefundPayment's reason code (None: unset)."""
    return _enum_value(request.reason_code, _REASON_CODE_OF, "reason_code")


# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_SECONDS = range(-62_135_596_800, 253_402_300_800)


def _time_of(stamp: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A request's time, rounded up to whole microseconds (PostgreSQL's precision): as a bound
    it then keeps and drops exactly the rows the nanosecond bound would."""
    if stamp.seconds not in _TIMESTAMP_SECONDS or not 0 <= stamp.nanos < 1_000_000_000:
        raise InvalidArgument([FieldViolation(field, "is not a valid time")])
    try:
        return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=-(-stamp.nanos // 1000))
    except OverflowError:  # the last nanoseconds of 9999, rounded up
        raise InvalidArgument([FieldViolation(field, "is not a valid time")]) from None


def refund_filter(request: payment_pb2.ListRefundsRequest) -> RefundFilter:
    """ListRefunds' filters (an unset one is None)."""
    times = {
        field: timestamp_value(request, field) for field in ("create_time_start", "create_time_end")
    }
    return RefundFilter(
        tg_payment_id=request.tg_payment_id if request.HasField("tg_payment_id") else None,
        state=_enum_value(request.state, _REFUND_STATE_OF, "state"),
        created_from=times["create_time_start"],
        created_before=times["create_time_end"],
    )


def event_message(cursor: Cursor, event: Event | None) -> payment_pb2.InvoiceEvent:
    """An event, or (event None) a heartbeat at `cursor`."""
    if event is None:
        return payment_pb2.InvoiceEvent(cursor=cursor.encode(), heartbeat=True)
    message = payment_pb2.InvoiceEvent(
        cursor=cursor.encode(),
        event_id=str(event.event_id),
        type=event.type,
        occurred_at=_timestamp(event.occurred_at),
    )
    snapshot = event.data.get("order")
    if snapshot:
        # As it was right after the change: its state is not aged to the present.
        message.order.CopyFrom(order_message(Order.from_snapshot(snapshot), event.occurred_at))
    refund = event.data.get("refund")
    if refund:  # a refund event (before this field existed, refund events had none)
        message.refund.CopyFrom(refund_message(Refund.from_snapshot(refund)))
    status = invoice_closed(event.type)
    if status is not None and event.tg_payment_id is not None:
        message.invoice_closed.CopyFrom(
            payment_pb2.InvoiceClosedResult(order_id=event.tg_payment_id, status=status)
        )
    if event.type == EventType.LEDGER_UNMATCHED:
        entry = LedgerEntry.from_event_data(event.data)
        if entry is not None:
            message.star_transaction.CopyFrom(star_transaction_message(entry))
    return message


class EncodedEvents:
    """Each event's serialized InvoiceEvent, made once and shared by every stream it goes to.

    A thousand subscribers of one application get the same bytes for an event (its cursor is
    its own position): converting and serializing it per subscriber cost more than gRPC's write.
    The key is (application, cursor): a cursor names one event for good, so the bytes under a
    key never change, and a stream only ever asks for its own application's events (the hub
    and the catch-up read route by application), so bytes never cross applications. The oldest
    entries go first beyond `size`: live fan-out asks for an event within moments."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._encoded: dict[tuple[UUID, Cursor], bytes] = {}
        # The live fan-out hands every subscriber the hub's one Event object in turn: the
        # last one asked for answers by identity, before any hashing.
        self._last: tuple[Event | None, Cursor | None, bytes] = (None, None, b"")

    def __call__(self, cursor: Cursor, event: Event | None) -> bytes:
        """`event_message(cursor, event)` serialized (a heartbeat, event None, is not kept)."""
        if event is None:
            return event_message(cursor, None).SerializeToString()
        last, last_cursor, encoded = self._last
        if event is last and cursor is last_cursor:
            return encoded
        key = (event.application_id, cursor)
        found = self._encoded.get(key)
        if found is None:
            found = event_message(cursor, event).SerializeToString()
            if len(self._encoded) >= self._size:
                del self._encoded[next(iter(self._encoded))]
            self._encoded[key] = found
        self._last = (event, cursor, found)
        return found


def catalog_item(message: payment_pb2.CatalogItem) -> CatalogItem:
    """The item a request describes; an optional field left unset is None."""

    def optional(field: str) -> Any:
        return getattr(message, field) if message.HasField(field) else None  # type: ignore[arg-type]

    return CatalogItem(
        key=message.key,
        amount=message.amount,
        title=optional("title"),
        description=optional("description"),
        photo_url=optional("photo_url"),
        metadata=dict(message.metadata),
        subscription_period=optional("subscription_period"),
    )


def catalog_item_message(item: CatalogItem) -> payment_pb2.CatalogItem:
    message = payment_pb2.CatalogItem(key=item.key, amount=item.amount)
    for field in ("title", "description", "photo_url", "subscription_period"):
        value = getattr(item, field)
        if value is not None:
            setattr(message, field, value)
    message.metadata.update(item.metadata)
    return message


def telegram_user_message(seen: SeenUser) -> payment_pb2.TelegramUser:
    user = seen.user
    message = payment_pb2.TelegramUser(
        id=user.id,
        first_name=user.first_name,
        is_premium=user.is_premium,
        first_seen_time=_timestamp(seen.first_seen_at),
        last_seen_time=_timestamp(seen.last_seen_at),
    )
    for field in ("last_name", "username", "language_code", "photo_url"):
        value = getattr(user, field)
        if value is not None:
            setattr(message, field, value)
    return message


def bot_message_texts(request: payment_pb2.SetBotMessagesRequest) -> dict[str, str | None]:
    """The texts a SetBotMessages request changes (None: left unset, unchanged)."""
    given = {
        "support_text": request.support_text if request.HasField("support_text") else None,
        "terms_text": request.terms_text if request.HasField("terms_text") else None,
        "paid_message": request.paid_message if request.HasField("paid_message") else None,
        "refunded_message": (
            request.refunded_message if request.HasField("refunded_message") else None
        ),
    }
    assert set(given) == set(TEXT_FIELDS)
    return given


def bot_messages_message(messages: BotMessages) -> payment_pb2.BotMessages:
    return payment_pb2.BotMessages(
        support_text=messages.support_text,
        support_text_default=messages.support_text_default,
        terms_text=messages.terms_text,
        terms_text_default=messages.terms_text_default,
        buyer_messages=messages.buyer_messages,
        paid_message=messages.paid_message,
        paid_message_default=messages.paid_message_default,
        refunded_message=messages.refunded_message,
        refunded_message_default=messages.refunded_message_default,
    )


# ------------------------------------------------------------------------- the Star ledger


def timestamp_value(message: Message, field: str) -> datetime | None:
    """A request's optional Timestamp field (see `_time_of`), or None when unset."""
    if not message.HasField(field):
        return None
    return _time_of(getattr(message, field), field)


_DIRECTION = {
    Direction.INCOMING: payment_pb2.StarTransaction.INCOMING,
    Direction.OUTGOING: payment_pb2.StarTransaction.OUTGOING,
}
_MATCH = {
    Match.PAYMENT: payment_pb2.StarTransaction.PAYMENT,
    Match.REFUND: payment_pb2.StarTransaction.REFUND,
    Match.NONE: payment_pb2.StarTransaction.NONE,
    Match.UNMATCHED: payment_pb2.StarTransaction.UNMATCHED,
}


def star_transaction_message(entry: LedgerEntry) -> payment_pb2.StarTransaction:
    t = entry.transaction
    message = payment_pb2.StarTransaction(
        id=t.id,
        direction=_DIRECTION[t.direction],
        amount=t.amount,
        nanostar_amount=t.nanostar_amount,
        date=_timestamp(t.date),
        partner_type=t.partner_type,
        transaction_type=t.transaction_type or "",
        invoice_payload=t.invoice_payload or "",
        withdrawal_state=t.withdrawal_state or "",
        match=_MATCH[entry.match],
        raw_json=json.dumps(t.raw, ensure_ascii=False, separators=(",", ":")),
    )
    if t.partner_id is not None:
        message.partner_id = t.partner_id
    if t.commission_per_mille is not None:
        message.commission_per_mille = t.commission_per_mille
    if entry.tg_payment_id is not None:
        message.tg_payment_id = entry.tg_payment_id
    return message


def star_balance_message(balance: StarBalance) -> payment_pb2.StarBalance:
    ledger = balance.ledger
    message = payment_pb2.StarBalance(
        amount=balance.telegram.amount,
        nanostar_amount=balance.telegram.nanostar_amount,
        received=ledger.received,
        refunded=ledger.refunded,
        withdrawn=ledger.withdrawn,
        held=[
            payment_pb2.HeldStars(available_time=_timestamp(part.available_at), amount=part.amount)
            for part in ledger.held
        ],
        held_total=ledger.held_total,
    )
    if ledger.read_at is not None:
        message.ledger_read_time.CopyFrom(_timestamp(ledger.read_at))
    return message
