"""Per-application bot messages: the support texts answered to /paysupport and /terms, and the
optional buyer messages when an order is paid and when it is refunded, through the real webhook
and the fake Bot API."""

from __future__ import annotations

import uuid

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp
from tests.integration.helpers import eventually, pay_request

USER = 6060
Order = payment_pb2.Order


def texts(fake: FakeBotApi, token: str) -> list[str]:
    return [m["text"] for m in fake.sent_messages(token, chat_id=USER) if "text" in m]


async def configure(service: PortexApp, app: TestApp, **changes: str | bool | None) -> None:
    updated = await ApplicationRepository(service.pool, DATA_KEYS).set_bot_messages(
        uuid.UUID(app.id), changes
    )
    assert updated is not None


async def test_buyer_messages_are_off_by_default(stub, make_app, fake_telegram: FakeBotApi) -> None:
    shop: TestApp = await make_app(updates="webhook")
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    assert (await fake_telegram.pay_invoice(created.tg_payment_url, USER)).approved
    await fake_telegram.drain(shop.bot_token)
    assert texts(fake_telegram, shop.bot_token) == []


async def test_the_buyer_hears_once_when_paid_and_once_when_refunded(
    stub, service: PortexApp, make_app, fake_telegram: FakeBotApi
) -> None:
    shop: TestApp = await make_app(updates="webhook")
    await configure(
        service,
        shop,
        buyer_messages=True,
        paid_message="Paid: {title} #{order_id}, {amount} Stars, from {bot}. {unknown} stays",
    )
    created = await stub.Pay(pay_request(tg_use_id=USER, title="Sword"), metadata=shop.metadata)
    assert (await fake_telegram.pay_invoice(created.tg_payment_url, USER)).approved
    await fake_telegram.drain(shop.bot_token)
    [paid] = texts(fake_telegram, shop.bot_token)
    username = fake_telegram.sent_messages(shop.bot_token)[0]["from"]["username"]
    assert paid == (
        f"Paid: Sword #{created.tg_payment_id}, 5 Stars, from @{username}. {{unknown}} stays"
    )
    # A redelivered payment update changes nothing and says nothing twice.
    update_id = await service.pool.fetchval(
        "SELECT update_id FROM telegram_updates WHERE bot_id = $1 AND kind = 'successful_payment'",
        int(shop.bot_token.partition(":")[0]),
    )
    await fake_telegram.redeliver(update_id, token=shop.bot_token)
    await fake_telegram.drain(shop.bot_token)
    assert len(texts(fake_telegram, shop.bot_token)) == 1

    request = payment_pb2.RefundPaymentRequest(tg_payment_id=created.tg_payment_id)
    await stub.RefundPayment(request, metadata=shop.metadata)
    await eventually(lambda: len(texts(fake_telegram, shop.bot_token)) == 2)
    refunded = texts(fake_telegram, shop.bot_token)[1]
    # The default refund template, filled in.
    assert f"Sword (order {created.tg_payment_id})" in refunded and "5 Stars" in refunded


async def test_an_applications_own_support_texts_are_answered(
    service: PortexApp, make_app, fake_telegram: FakeBotApi
) -> None:
    shop: TestApp = await make_app(updates="webhook")
    await configure(service, shop, support_text="Write to help@example.com", terms_text="Be nice")
    for command in ("/paysupport", "/terms"):
        await fake_telegram.send_user_message(shop.bot_token, USER, command)
    await fake_telegram.drain(shop.bot_token)
    assert texts(fake_telegram, shop.bot_token) == ["Write to help@example.com", "Be nice"]
