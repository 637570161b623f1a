"""Pay and the application's own order actions (service/orders.py) on in-memory fakes of the
Orders and Telegram ports: what is sent to Telegram, idempotency, how each Telegram failure is
reported and recorded, and retries after a failure or past the expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import uuid4

import pytest

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.errors import (
    BotNotConfigured,
    IdempotencyKeyReused,
    IllegalTransition,
    OrderExpired,
    TelegramRateLimited,
    TelegramRejected,
    TelegramUnavailable,
)
from portex_pay.domain.order import OrderState
from portex_pay.domain.pay import PayCommand, PayloadKeys, verify_invoice_payload
from portex_pay.domain.telegram import (
    TelegramApiError,
    TelegramNetworkError,
    TelegramTooManyRequests,
)
from portex_pay.service.orders import OrderService, PaymentSettings
from tests.unit.fakes import FakeTelegram, InMemoryOrders

SECRET = b"p" * 32
APPLICATION = Application(id=uuid4(), name="shop", bot=Bot(777, "777:token", "shop_bot"))
COMMAND = PayCommand(
    tg_use_id=42, amount=250, label="Gems", title="100 gems", description="A pile of gems"
)
TTL = 900


@pytest.fixture
def orders() -> InMemoryOrders:
    return InMemoryOrders()


@pytest.fixture
def telegram() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def service(orders: InMemoryOrders, telegram: FakeTelegram) -> OrderService:
    settings = PaymentSettings(
        max_amount=10_000, order_ttl_seconds=TTL, telegram_timeout=5.0, payload_secret=SECRET
    )
    return OrderService(orders, telegram, settings, clock=lambda: orders.now)


async def test_pay_asks_telegram_for_our_signed_invoice_and_stores_the_link(
    service, orders, telegram
) -> None:
    order = await service.pay(APPLICATION, COMMAND, "")
    assert order.state is OrderState.PENDING and order.invoice_link == "https://t.me/$invoice1"
    (invoice,) = telegram.invoices
    assert (invoice.title, invoice.label, invoice.amount) == ("100 gems", "Gems", 250)
    # The payload is our reference to the order, never the app's payload.
    assert verify_invoice_payload(PayloadKeys(SECRET), invoice.payload) == (
        order.tg_payment_id,
        250,
    )
    assert [event for _, event in orders.events] == ["order.created", "order.invoice_created"]


async def test_a_retry_with_the_same_request_id_is_the_same_order(service, telegram) -> None:
    first = await service.pay(APPLICATION, COMMAND, "req-1")
    again = await service.pay(APPLICATION, COMMAND, "req-1")
    assert again == first and len(telegram.invoices) == 1
    with pytest.raises(IdempotencyKeyReused):
        await service.pay(APPLICATION, replace(COMMAND, amount=1), "req-1")
    assert len(telegram.invoices) == 1


async def test_an_application_without_a_bot_makes_no_order(service, orders) -> None:
    with pytest.raises(BotNotConfigured):
        await service.pay(Application(id=uuid4(), name="nobot"), COMMAND, "req-1")
    assert orders.orders == {}


@pytest.mark.parametrize(
    ("failure", "reported", "retry_after"),
    [
        (TelegramTooManyRequests("createInvoiceLink", 429, "Too Many Requests", 7),
         TelegramRateLimited, 7),
        (TelegramApiError("createInvoiceLink", 400, "Bad Request: PHOTO_INVALID"),
         TelegramRejected, None),
        (TelegramApiError("createInvoiceLink", 502, "Bad Gateway"), TelegramUnavailable, None),
        (TelegramNetworkError("createInvoiceLink", "timed out"), TelegramUnavailable, None),
    ],
)  # fmt: skip
async def test_a_telegram_failure_is_recorded_on_the_order_and_reported(
    service, orders, telegram, failure, reported, retry_after
) -> None:
    telegram.invoice_errors.append(failure)
    with pytest.raises(reported) as raised:
        await service.pay(APPLICATION, COMMAND, "req-1")
    (order,) = orders.orders.values()
    assert order.state is OrderState.FAILED and order.invoice_link is None
    assert (order.failure_code, order.retry_after) == (raised.value.reason, retry_after)
    if retry_after is not None:
        assert raised.value.metadata == {"retry_after": str(retry_after)}
    # The same Pay again, Telegram well again: the failed order gets its invoice.
    retried = await service.pay(APPLICATION, COMMAND, "req-1")
    assert retried.tg_payment_id == order.tg_payment_id
    assert retried.state is OrderState.PENDING and retried.invoice_link is not None
    assert retried.failure_code is None and len(telegram.invoices) == 2


async def test_a_retry_after_the_expiry_is_refused_without_calling_telegram(
    service, orders, telegram
) -> None:
    telegram.invoice_errors.append(TelegramNetworkError("createInvoiceLink", "timed out"))
    with pytest.raises(TelegramUnavailable):
        await service.pay(APPLICATION, COMMAND, "req-1")
    orders.now += timedelta(seconds=TTL + 1)
    with pytest.raises(OrderExpired):
        await service.pay(APPLICATION, COMMAND, "req-1")
    assert len(telegram.invoices) == 1


async def test_resume_finds_the_latest_payable_order_of_the_user(service, orders) -> None:
    older = await service.pay(APPLICATION, COMMAND, "a")
    newer = await service.pay(APPLICATION, COMMAND, "b")
    assert await service.resume_payment(APPLICATION, 42) == newer
    await service.cancel(APPLICATION, newer.tg_payment_id)
    assert await service.resume_payment(APPLICATION, 42) == older
    orders.now += timedelta(seconds=TTL)
    assert await service.resume_payment(APPLICATION, 42) is None


async def test_cancel_withdraws_an_unpaid_order_and_says_why_it_cannot(service, orders) -> None:
    order = await service.pay(APPLICATION, COMMAND, "")
    cancelled = await service.cancel(APPLICATION, order.tg_payment_id)
    assert cancelled.state is OrderState.CANCELLED
    assert await service.cancel(APPLICATION, order.tg_payment_id) == cancelled  # twice: fine
    paid = await service.pay(APPLICATION, COMMAND, "")
    orders.orders[paid.tg_payment_id] = replace(paid, state=OrderState.PAID)
    with pytest.raises(IllegalTransition):
        await service.cancel(APPLICATION, paid.tg_payment_id)
