"""Conversions between the generated messages and the domain."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from portex.payment.v1 import payment_pb2
from portex_pay.domain.catalog import CatalogItem, SeenUser
from portex_pay.domain.events import Cursor, Event, invoice_closed
from portex_pay.domain.order import SDK_STATUS, Order, OrderState
from portex_pay.domain.pay import PayCommand
from portex_pay.domain.refunds import Refund, RefundState
from portex_pay.service.bot_messages import TEXT_FIELDS, BotMessages

_STATE = {
    OrderState.PENDING: payment_pb2.Order.PENDING,
    OrderState.PAID: payment_pb2.Order.PAID,
    OrderState.CANCELLED: payment_pb2.Order.CANCELLED,
    OrderState.EXPIRED: payment_pb2.Order.EXPIRED,
    OrderState.FAILED: payment_pb2.Order.FAILED,
    OrderState.REFUNDED: payment_pb2.Order.REFUNDED,
}


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


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
    )


def order_message(order: Order, now: datetime) -> payment_pb2.Order:
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
    return message


_REFUND_STATE = {
    RefundState.PENDING: payment_pb2.Refund.PENDING,
    RefundState.SUCCEEDED: payment_pb2.Refund.SUCCEEDED,
    RefundState.FAILED: payment_pb2.Refund.FAILED,
}


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
    )
    if refund.completed_at is not None:
        message.complete_time.CopyFrom(_timestamp(refund.completed_at))
    return message


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
    status = invoice_closed(event.type)
    if status is not None and event.tg_payment_id is not None:
        message.invoice_closed.CopyFrom(
            payment_pb2.InvoiceClosedResult(order_id=event.tg_payment_id, status=status)
        )
    return message


def catalog_item(message: payment_pb2.CatalogItem) -> CatalogItem:
    """The item a request describes; an optional field left unset is None."""

    def optional(field: str) -> str | None:
        return getattr(message, field) if message.HasField(field) else None  # type: ignore[arg-type]

    return CatalogItem(
        key=message.key,
        amount=message.amount,
        title=optional("title"),
        description=optional("description"),
        photo_url=optional("photo_url"),
        metadata=dict(message.metadata),
    )


def catalog_item_message(item: CatalogItem) -> payment_pb2.CatalogItem:
    message = payment_pb2.CatalogItem(key=item.key, amount=item.amount)
    for field in ("title", "description", "photo_url"):
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
