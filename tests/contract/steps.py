"""What the contract tests do through the ports to get an order, a charge or a refund where they
need it, the same way on every backend."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any
from uuid import UUID

from portex_pay.domain.checkout import (
    Charge,
    Disposition,
    PaymentOutcome,
    PaymentRecord,
)
from portex_pay.domain.events import START, Event
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.pay import PayCommand
from portex_pay.domain.refunds import Refund, RefundCause
from portex_pay.service.ledger import CUSTOMER_REQUEST
from tests.contract.backend import Backend

USER = 4242
AMOUNT = 5
BOT_ID = 9_000_001
DAY = 86_400.0


def command(**overrides: Any) -> PayCommand:
    fields: dict[str, Any] = {
        "tg_use_id": USER,
        "amount": AMOUNT,
        "label": "item",
        "title": "Book",
        "description": "Magic book",
    }
    fields.update(overrides)
    return PayCommand(**fields)


def new_charge_id() -> str:
    return f"charge-{uuid.uuid4().hex}"


def new_bot_token() -> str:
    """A bot token of Telegram's shape, its bot id unique (one bot, one application)."""
    return f"{uuid.uuid4().int % 10**12 + 1}:token"


def new_update_id() -> int:
    return uuid.uuid4().int % 2**62


async def new_order(
    backend: Backend, application_id: UUID, *, ttl: float = DAY, lease: float = 0.0, **fields: Any
) -> Order:
    """A pending order without an invoice link (and, by default, no live invoice lease)."""
    return await backend.orders.create(
        application_id, command(**fields), ttl_seconds=ttl, lease_seconds=lease
    )


def charge_of(
    order: Order,
    charge_id: str,
    *,
    application_id: UUID | None = None,
    update_id: int | None = None,
) -> PaymentRecord:
    """The charge Telegram reports for `order`, as the update processor records it."""
    return PaymentRecord(
        bot_id=BOT_ID,
        update_id=update_id,
        application_id=order.application_id,
        tg_payment_id=order.tg_payment_id,
        signed_amount=order.amount,
        charge=Charge(
            payer_id=order.tg_use_id,
            currency="XTR",
            total_amount=order.amount,
            invoice_payload="v1.signed",
        ),
        telegram_payment_charge_id=charge_id,
        provider_payment_charge_id=None,
        raw={"update_id": update_id},
    )


async def add_charge(
    backend: Backend,
    order: Order,
    charge_id: str,
    disposition: Disposition = Disposition.ACCEPTED,
) -> None:
    async with backend.payments.transaction() as tx:
        assert await tx.charges.add(
            charge_of(order, charge_id), order.tg_payment_id, PaymentOutcome(disposition)
        )


async def pay(backend: Backend, order: Order, charge_id: str | None = None) -> Order:
    """The order paid by a new (or the given) charge, as the ledger pays it."""
    charge_id = charge_id or new_charge_id()
    async with backend.payments.transaction() as tx:
        paid = await tx.orders.pay(charge_of(order, charge_id))
    assert paid is not None
    return paid


async def order_in(backend: Backend, application_id: UUID, state: OrderState) -> Order:
    """An order in `state`, got there through the ports, without an invoice link (so that every
    change the table allows is still open to it)."""
    ttl = 0.0 if state is OrderState.EXPIRED else DAY
    order = await new_order(backend, application_id, ttl=ttl)
    changed: Order | None = order
    if state is OrderState.FAILED:
        changed = await backend.orders.record_invoice_failure(order.tg_payment_id, "E", "r", None)
    elif state is OrderState.CANCELLED:
        changed = await backend.orders.cancel(application_id, order.tg_payment_id)
    elif state is OrderState.EXPIRED:
        assert await backend.orders.expire_due(100) == 1
        changed = await backend.orders.get(application_id, order.tg_payment_id)
    elif state in (OrderState.PAID, OrderState.REFUNDED):
        changed = await pay(backend, order)
        if state is OrderState.REFUNDED:
            charge_id = changed.telegram_payment_charge_id
            assert charge_id is not None
            async with backend.payments.transaction() as tx:
                changed = await tx.orders.mark_refunded(order.tg_payment_id, charge_id)
    assert changed is not None and changed.state is state
    return changed


async def request_refund(
    backend: Backend, order: Order, cause: RefundCause = CUSTOMER_REQUEST
) -> str:
    """A refund of the charge that paid `order`; the charge id."""
    charge_id = order.telegram_payment_charge_id
    assert charge_id is not None
    async with backend.payments.transaction() as tx:
        assert await tx.refunds.add(
            charge_id,
            BOT_ID,
            order.application_id,
            order.tg_payment_id,
            order.tg_use_id,
            order.amount,
            cause,
        )
    return charge_id


async def requested_refund(backend: Backend, order: Order) -> Refund | None:
    """The refund of the charge that paid `order`."""
    async with backend.payments.transaction() as tx:
        return await tx.refunds.of_order(order.tg_payment_id)


async def events_of(backend: Backend, application_id: UUID) -> list[Event]:
    return await backend.events.read_after(START, limit=1000, application_id=application_id)


async def event_types(backend: Backend, application_id: UUID) -> list[str]:
    return [event.type for event in await events_of(backend, application_id)]


def announced(event: Event) -> Order:
    """The order an event carries (`data.order`)."""
    return Order.from_snapshot(event.data["order"])


def unleased(order: Order) -> Order:
    """The order as an event shows it: the invoice lease is internal."""
    return replace(order, invoice_lease_until=None)
