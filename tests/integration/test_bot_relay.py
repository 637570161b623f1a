"""The application's own bot beside portex-pay: a real aiogram bot whose only change is its API URL
(the Bot API proxy), against the real service, the real webhook and the fake Bot API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramConflictError, TelegramUnauthorizedError
from aiogram.filters import CommandStart
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
)
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, create_test_app, free_port, make_settings
from tests.integration.helpers import eventually, pay_request

USER = 7001
Order = payment_pb2.Order


def proxied(base_url: str, token: str) -> Bot:
    """The app's bot as its team writes it, pointed at portex-pay instead of Telegram."""
    return Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))


@contextlib.asynccontextmanager
async def polling(dispatcher: Dispatcher, bot: Bot, **options: Any) -> AsyncIterator[None]:
    """aiogram's own long-polling loop, in the background."""
    task = asyncio.create_task(
        dispatcher.start_polling(
            bot, polling_timeout=1, handle_signals=False, close_bot_session=False, **options
        )
    )
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):
            await dispatcher.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


@pytest.fixture
async def bot(service: PortexApp, shop: TestApp) -> AsyncIterator[Bot]:
    client = proxied(f"http://127.0.0.1:{service.http_port}", shop.bot_token)
    try:
        yield client
    finally:
        await client.session.close()


def keyboard(data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=data, callback_data=data)]]
    )


def texts(fake: FakeBotApi, token: str, chat_id: int) -> list[str]:
    return [m["text"] for m in fake.sent_messages(token, chat_id=chat_id) if "text" in m]


# What portex-pay itself asks Telegram for, whatever the app's bot asks: payments, the bot's
# commands, and subscription changes.
PORTEX_KINDS = ("message", "pre_checkout_query", "subscription")


def order_id_in(payload: str) -> int:
    """The order id in a payload portex-pay signed: v2.<key id>.<order id>.<amount>.<mac> (or
    the older v1.<order id>.<amount>.<mac>)."""
    parts = payload.split(".")
    return int(parts[2] if parts[0] == "v2" else parts[1])


async def test_the_bot_gets_start_and_answers_through_the_proxy(
    bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    dispatcher = Dispatcher()

    @dispatcher.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(f"Welcome, {message.chat.id}")

    async with polling(dispatcher, bot):
        await turn_relay_on(bot)
        await fake_telegram.send_user_message(shop.bot_token, USER, "/start")
        await eventually(lambda: texts(fake_telegram, shop.bot_token, USER))
    assert texts(fake_telegram, shop.bot_token, USER) == [f"Welcome, {USER}"]
    # Sent through the proxy with the bot's own token, as the bot's own message.
    [sent] = fake_telegram.calls_for("sendMessage", shop.bot_token)
    assert sent.params["chat_id"] in (USER, str(USER))


async def turn_relay_on(bot: Bot) -> None:
    """The bot's first call to an update method turns its relay on."""
    info = await bot.get_webhook_info()
    assert info.url == ""


async def long_poll_started(pool: Any, bot: Bot, before: int) -> bool:
    """Whether a getUpdates newer than generation `before` has begun (each one bumps it)."""
    return await poll_generation(pool, bot) > before


async def poll_generation(pool: Any, bot: Bot) -> int:
    found: int = await pool.fetchval(
        "SELECT poll_generation FROM relay_bots WHERE bot_id = $1", bot.id
    )
    return found


async def test_support_commands_are_answered_by_portex_pay_and_not_relayed(
    bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    await bot.get_updates(timeout=0)  # relay on
    for command in ("/paysupport", "/terms", "/paysupport"):
        await fake_telegram.send_user_message(shop.bot_token, USER, command)
    await fake_telegram.drain(shop.bot_token)
    replies = texts(fake_telegram, shop.bot_token, USER)
    assert len(replies) == 3 and "support" in replies[0] and "Terms" in replies[1]
    await fake_telegram.send_user_message(shop.bot_token, USER, "hello")
    await fake_telegram.drain(shop.bot_token)
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates if u.message] == ["hello"]


async def test_the_bots_own_invoice_is_its_own_to_answer_and_is_not_recorded(
    service: PortexApp, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    dispatcher = Dispatcher()
    paid: list[Message] = []

    @dispatcher.pre_checkout_query()
    async def checkout(query: PreCheckoutQuery) -> None:
        await query.answer(ok=query.invoice_payload == "own-sale-1")

    @dispatcher.message(F.successful_payment)
    async def thanks(message: Message) -> None:
        paid.append(message)
        await message.answer("Thanks for buying from the bot itself")

    async with polling(dispatcher, bot):
        await turn_relay_on(bot)
        await fake_telegram.send_user_message(shop.bot_token, USER, "hi")  # opens the chat
        sent = await bot.send_invoice(
            USER,
            "Sword",
            "A sword",
            "own-sale-1",
            currency="XTR",
            prices=[LabeledPrice(label="Sword", amount=7)],
        )
        outcome = await fake_telegram.pay_sent_invoice(shop.bot_token, USER, sent.message_id)
        assert outcome.approved and outcome.charge_id
        await eventually(lambda: paid)
    [message] = paid
    assert message.successful_payment is not None
    assert message.successful_payment.invoice_payload == "own-sale-1"
    # The bot's answer went to Telegram through the proxy; portex-pay answered nothing.
    [answer] = fake_telegram.calls_for("answerPreCheckoutQuery", shop.bot_token)
    assert answer.params["ok"] in (True, "true")
    recorded = await service.pool.fetchval(
        "SELECT count(*) FROM payments WHERE telegram_payment_charge_id = $1", outcome.charge_id
    )
    assert recorded == 0


async def test_a_portex_order_is_answered_by_portex_and_its_payment_relayed_after_recording(
    stub, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    dispatcher = Dispatcher()
    queries: list[PreCheckoutQuery] = []
    seen_states: list[tuple[int, int]] = []

    @dispatcher.pre_checkout_query()
    async def checkout(query: PreCheckoutQuery) -> None:
        queries.append(query)

    @dispatcher.message(F.successful_payment)
    async def thanks(message: Message) -> None:
        assert message.successful_payment is not None
        order_id = order_id_in(message.successful_payment.invoice_payload)
        order = await stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=order_id), metadata=shop.metadata
        )
        seen_states.append((order_id, order.state))

    async with polling(dispatcher, bot):
        await turn_relay_on(bot)
        created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
        outcome = await fake_telegram.pay_invoice(created.tg_payment_url, USER)
        assert outcome.approved
        await eventually(lambda: seen_states)
    assert queries == []  # portex-pay's own checkout never reaches the bot
    # When the bot hears of the payment, portex-pay has recorded it already.
    assert seen_states == [(created.tg_payment_id, Order.PAID)]


async def test_the_bots_own_set_webhook_switches_it_to_webhook_relay(
    bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    dispatcher = Dispatcher()

    @dispatcher.message(F.text)
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}")

    port = free_port()
    secret = secrets.token_urlsafe(16)
    async with webhook_server(dispatcher, bot, port, secret):
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token=secret)
        with pytest.raises(TelegramConflictError):
            await bot.get_updates(timeout=0)
        await fake_telegram.send_user_message(shop.bot_token, USER, "ping")
        await eventually(lambda: texts(fake_telegram, shop.bot_token, USER))
        assert texts(fake_telegram, shop.bot_token, USER) == ["echo: ping"]
        info = await bot.get_webhook_info()
        assert info.url == f"http://127.0.0.1:{port}/hook"

        async def pending() -> int:
            return (await bot.get_webhook_info()).pending_update_count

        # aiogram answers the webhook before its handler runs: the echo can reach Telegram
        # before the relay has recorded the webhook's 2xx.
        await eventually(pending, equals=0, what="the update confirmed by the webhook's 2xx")
    assert await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == []


async def test_a_method_in_the_webhooks_answer_is_run_as_telegram_would(
    bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    """aiogram answers a webhook with the handler's method as multipart form data."""
    dispatcher = Dispatcher()

    @dispatcher.message(F.text)
    async def echo(message: Message) -> Any:
        return message.answer(f"replied in the webhook answer: {message.text}")

    port = free_port()
    async with webhook_server(dispatcher, bot, port, "s", in_background=False):
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s")
        await fake_telegram.send_user_message(shop.bot_token, USER, "hey")
        await eventually(lambda: texts(fake_telegram, shop.bot_token, USER))
    assert texts(fake_telegram, shop.bot_token, USER) == ["replied in the webhook answer: hey"]
    await bot.delete_webhook()


async def test_a_webhook_without_the_secret_is_refused_by_the_bot_and_retried(
    bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    """The relay sends the secret the bot registered; aiogram checks it."""
    dispatcher = Dispatcher()
    got: list[str] = []

    @dispatcher.message(F.text)
    async def note(message: Message) -> None:
        got.append(str(message.text))

    port = free_port()
    async with webhook_server(dispatcher, bot, port, "right-secret"):
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="wrong-secret")
        await fake_telegram.send_user_message(shop.bot_token, USER, "one")
        info = await eventually(_last_error(bot))
        assert "401" in (info.last_error_message or "") and got == []
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="right-secret")
        await eventually(lambda: got)
    assert got == ["one"]


def _last_error(bot: Bot) -> Callable[[], Awaitable[Any]]:
    async def check() -> Any:
        info = await bot.get_webhook_info()
        return info if info.last_error_message else None

    return check


async def test_a_dead_app_webhook_delays_no_payment_and_gets_the_updates_once_back(
    stub, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    port = free_port()  # nothing listens there yet
    await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s")
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    started = time.monotonic()
    outcome = await fake_telegram.pay_invoice(created.tg_payment_url, USER)
    assert outcome.approved  # answered by portex-pay, whatever the app's bot is doing
    await fake_telegram.send_user_message(shop.bot_token, USER, "after the payment")
    await eventually(lambda: _paid(stub, shop, created.tg_payment_id))
    took = time.monotonic() - started
    info = await eventually(_last_error(bot))
    assert info.pending_update_count == 2 and "Connection" in info.last_error_message

    dispatcher = Dispatcher()
    got: list[Message] = []

    @dispatcher.message()
    async def note(message: Message) -> None:
        got.append(message)

    async with webhook_server(dispatcher, bot, port, "s"):
        await eventually(lambda: len(got) == 2, timeout=40)
    first, second = got
    assert first.successful_payment is not None
    assert second.text == "after the payment"
    assert first.message_id < second.message_id
    assert (await bot.get_webhook_info()).pending_update_count == 0
    print(f"payment recorded {took:.2f}s after the checkout began, app webhook down")


async def _paid(stub, shop: TestApp, order_id: int) -> bool:
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=order_id), metadata=shop.metadata
    )
    return bool(order.state == Order.PAID)


@contextlib.asynccontextmanager
async def webhook_server(
    dispatcher: Dispatcher, bot: Bot, port: int, secret: str, *, in_background: bool = True
) -> AsyncIterator[None]:
    """The bot's own webhook endpoint, as aiogram serves it."""
    app = web.Application()
    SimpleRequestHandler(
        dispatcher, bot, secret_token=secret, handle_in_background=in_background
    ).register(app, path="/hook")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def test_a_wrong_token_is_401(service: PortexApp, shop: TestApp) -> None:
    bot_id, _, secret = shop.bot_token.partition(":")
    wrong = [f"{bot_id}:{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}", "123:nope", "garbage"]
    base = f"http://127.0.0.1:{service.http_port}"
    async with aiohttp.ClientSession() as http:
        for token in wrong:
            for method in ("getMe", "getUpdates", "sendMessage"):
                async with http.post(f"{base}/bot{token}/{method}", json={}) as response:
                    body = await response.json()
                assert response.status == 401
                assert body == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    client = proxied(base, wrong[0])
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await client.get_me()
    finally:
        await client.session.close()


async def test_a_multipart_upload_and_a_download_pass_through_intact(
    bot: Bot, fake_telegram: FakeBotApi
) -> None:
    blob = secrets.token_bytes(3 * 1024 * 1024 + 17)  # larger than any buffer on the way
    await fake_telegram.send_user_message(bot.token, USER, "hi")  # opens the chat
    message = await bot.send_document(
        USER, BufferedInputFile(blob, filename="save.bin"), caption="your save"
    )
    assert message.document is not None and message.document.file_size == len(blob)
    assert fake_telegram.uploaded_file(message.document.file_id) == blob
    file = await bot.get_file(message.document.file_id)
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)
    assert downloaded is not None and downloaded.read() == blob


async def test_telegrams_errors_come_back_as_they_are(
    bot: Bot, service: PortexApp, shop: TestApp
) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{service.http_port}/bot{shop.bot_token}/sendMessage"
        async with http.post(url, json={"chat_id": USER}) as response:
            assert response.status == 400
            body = await response.json()
    assert body["ok"] is False and body["error_code"] == 400 and "text" in body["description"]


async def test_allowed_updates_reach_telegram_as_the_union_in_webhook_mode(
    service: PortexApp, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
    info = await _telegram_webhook_info(fake_telegram, shop.bot_token)
    assert set(info["allowed_updates"]) == {"callback_query", *PORTEX_KINDS}
    await fake_telegram.send_user_message(shop.bot_token, USER, "hi")  # opens the chat
    sent = await bot.send_message(USER, "Press", reply_markup=keyboard("go"))
    await fake_telegram.send_callback_query(shop.bot_token, USER, sent.message_id, "go")
    await fake_telegram.send_user_message(shop.bot_token, USER, "not asked for")
    await fake_telegram.drain(shop.bot_token)
    # The bot asked for callback queries only: the message is not relayed to it.
    [update] = await bot.get_updates(timeout=0)
    assert update.callback_query is not None and update.callback_query.data == "go"
    # An operator pointing the bot at portex-pay again keeps the union.
    session = await new_session()
    try:
        admin = application_admin(
            service.pool, BotApiClient(session, fake_telegram.base_url, 5.0), data_keys=DATA_KEYS
        )
        await admin.register_webhook(uuid.UUID(shop.id), f"http://127.0.0.1:{service.http_port}")
    finally:
        await session.close()
    info = await _telegram_webhook_info(fake_telegram, shop.bot_token)
    assert set(info["allowed_updates"]) == {"callback_query", *PORTEX_KINDS}


async def _telegram_webhook_info(fake: FakeBotApi, token: str) -> dict[str, Any]:
    session = await new_session()
    try:
        client = BotApiClient(session, fake.base_url, 5.0)
        info: dict[str, Any] = await client.call(token, "getWebhookInfo", {})
        return info
    finally:
        await session.close()


async def test_a_newer_get_updates_ends_the_waiting_one_with_409(
    service: PortexApp, bot: Bot, shop: TestApp
) -> None:
    await bot.get_updates(timeout=0)
    before = await poll_generation(service.pool, bot)
    waiting = asyncio.create_task(bot.get_updates(timeout=20))
    await eventually(lambda: long_poll_started(service.pool, bot, before))
    second = proxied_twin(bot, shop)
    try:
        assert await second.get_updates(timeout=0) == []
    finally:
        await second.session.close()
    with pytest.raises(TelegramConflictError):
        await asyncio.wait_for(waiting, 5)


def proxied_twin(bot: Bot, shop: TestApp) -> Bot:
    return Bot(shop.bot_token, session=AiohttpSession(api=bot.session.api))


# ---------------------------------------------------------------- polling mode, restarts, replicas


async def test_the_relay_survives_a_restart_and_is_one_queue_across_replicas(
    database_url: str, service: PortexApp, fake_telegram: FakeBotApi
) -> None:
    """portex-pay polls Telegram itself here; the app's bot polls portex-pay."""
    port = free_port()
    options: dict[str, Any] = {
        "http_addr": f"127.0.0.1:{port}",
        "telegram_pollers": True,
        "poll_timeout": 1,
    }
    first = PortexApp(make_settings(database_url, fake_telegram.base_url, **options))
    await first.start()
    session = await new_session()
    admin = application_admin(
        first.pool, BotApiClient(session, fake_telegram.base_url, 5.0), data_keys=DATA_KEYS
    )
    shop = await create_test_app(admin, fake_telegram, updates="polling")
    bot = proxied(f"http://127.0.0.1:{port}", shop.bot_token)
    other_replica = proxied(f"http://127.0.0.1:{service.http_port}", shop.bot_token)
    second: PortexApp | None = None
    try:
        await bot.get_updates(timeout=0, allowed_updates=["message", "callback_query"])

        def asked_for_callbacks() -> bool:
            calls = fake_telegram.calls_for("getUpdates", shop.bot_token)
            return any("callback_query" in str(c.params.get("allowed_updates")) for c in calls)

        await eventually(asked_for_callbacks)  # the poller asks Telegram for the union
        await fake_telegram.send_user_message(shop.bot_token, USER, "before the restart")
        await eventually(lambda: _pending(bot, 1))
        sent = await bot.send_message(USER, "Menu", reply_markup=keyboard("pick"))
        await fake_telegram.send_callback_query(shop.bot_token, USER, sent.message_id, "pick")
        await eventually(lambda: _pending(bot, 2))
        await first.stop()

        second = PortexApp(make_settings(database_url, fake_telegram.base_url, **options))
        await second.start()
        updates = await bot.get_updates(timeout=0)
        assert [bool(u.message) for u in updates] == [True, False]
        assert updates[0].message and updates[0].message.text == "before the restart"
        assert updates[1].callback_query and updates[1].callback_query.data == "pick"
        # Another replica serves the same queue, and a confirmation on one holds on the other.
        again = await other_replica.get_updates(timeout=0)
        assert [u.update_id for u in again] == [u.update_id for u in updates]
        assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == []
        assert await other_replica.get_updates(timeout=0) == []
        # A long poll on one replica wakes for an update the other replica took from Telegram.
        before = await poll_generation(service.pool, bot)
        waiting = asyncio.create_task(other_replica.get_updates(timeout=20))
        await eventually(lambda: long_poll_started(service.pool, bot, before))
        await fake_telegram.send_user_message(shop.bot_token, USER, "after")
        [late] = await asyncio.wait_for(waiting, 15)
        assert late.message and late.message.text == "after"
    finally:
        for client in (bot, other_replica):
            await client.session.close()
        await session.close()
        await first.stop()
        if second is not None:
            await second.stop()


async def _pending(bot: Bot, count: int) -> bool:
    return (await bot.get_webhook_info()).pending_update_count == count


async def test_kept_updates_are_bounded_to_24_hours(
    service: PortexApp, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    await bot.get_updates(timeout=0)
    await fake_telegram.send_user_message(shop.bot_token, USER, "old")
    await fake_telegram.drain(shop.bot_token)
    bot_id = int(shop.bot_token.partition(":")[0])
    await service.pool.execute(
        "UPDATE relay_updates SET received_at = now() - interval '24 hours 1 second' "
        "WHERE bot_id = $1",
        bot_id,
    )
    assert service.relay is not None
    assert await service.relay.prune() >= 1
    assert await bot.get_updates(timeout=0) == []


async def test_callback_queries_reach_the_bot_through_a_dispatcher(
    bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    dispatcher = Dispatcher()
    pressed: list[str] = []

    @dispatcher.callback_query()
    async def on_press(query: CallbackQuery) -> None:
        pressed.append(str(query.data))
        await query.answer("ok")

    async with polling(dispatcher, bot, allowed_updates=["message", "callback_query"]):
        await turn_relay_on(bot)
        await fake_telegram.send_user_message(shop.bot_token, USER, "hi")  # opens the chat
        sent = await bot.send_message(USER, "Menu", reply_markup=keyboard("buy"))
        await eventually(lambda: _asked(fake_telegram, shop.bot_token))
        await fake_telegram.send_callback_query(shop.bot_token, USER, sent.message_id, "buy")
        await eventually(lambda: pressed)
    assert pressed == ["buy"]
    assert fake_telegram.calls_for("answerCallbackQuery", shop.bot_token)


async def _asked(fake: FakeBotApi, token: str) -> bool:
    info = await _telegram_webhook_info(fake, token)
    return "callback_query" in info.get("allowed_updates", [])


async def test_a_refund_of_a_portex_order_is_relayed_after_it_is_recorded(
    stub, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    await bot.get_updates(timeout=0)  # relay on
    created = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    assert (await fake_telegram.pay_invoice(created.tg_payment_url, USER)).approved
    await eventually(lambda: _paid(stub, shop, created.tg_payment_id))
    request = payment_pb2.RefundPaymentRequest(tg_payment_id=created.tg_payment_id)
    await stub.RefundPayment(request, metadata=shop.metadata)

    async def refund_relayed() -> list[Message]:
        updates = await bot.get_updates(timeout=1)
        return [u.message for u in updates if u.message and u.message.refunded_payment]

    [message] = await eventually(refund_relayed)
    assert message.refunded_payment is not None
    order_id = order_id_in(message.refunded_payment.invoice_payload)
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=order_id), metadata=shop.metadata
    )
    assert (order_id, order.state) == (created.tg_payment_id, Order.REFUNDED)


# ---------------------------------------------------------------- update kinds newer than the code

# An update kind Telegram has (the fake plays a newer Bot API) and portex-pay's code does not.
NEW_KIND = "future_kind_x"


def newer_kind_update(text: str) -> dict[str, Any]:
    # Non-ASCII text, a float, nesting: re-encoding it would change its bytes.
    return {NEW_KIND: {"id": "q1", "from": {"id": USER}, "text": text, "ratio": 1.5, "n": [None]}}


def as_the_fake_sends(update_id: int, update: dict[str, Any]) -> bytes:
    """The bytes the fake Bot API POSTs for an update (fake_bot_api/delivery.py)."""
    return json.dumps({"update_id": update_id, **update}, ensure_ascii=False).encode()


async def raw_get_updates(service: PortexApp, token: str, **params: Any) -> bytes:
    url = f"http://127.0.0.1:{service.http_port}/bot{token}/getUpdates"
    async with aiohttp.ClientSession() as http, http.post(url, json=params) as response:
        assert response.status == 200
        return await response.read()


def asked_of_telegram(fake: FakeBotApi, token: str) -> Any:
    """`allowed_updates` of portex-pay's latest setWebhook at Telegram (webhook mode)."""
    [*_, call] = fake.calls_for("setWebhook", token)
    value = call.params.get("allowed_updates")
    return json.loads(value) if isinstance(value, str) else value


async def dead_letters(service: PortexApp, shop: TestApp) -> int:
    bot_id = int(shop.bot_token.partition(":")[0])
    count: int = await service.pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE bot_id = $1", bot_id
    )
    return count


async def test_a_kind_newer_than_the_code_reaches_the_bot_that_asked_for_it_as_sent(
    service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    fake_telegram.add_update_types(NEW_KIND)
    token = shop.bot_token
    empty = b'{"ok":true,"result":[]}'
    assert await raw_get_updates(service, token, allowed_updates=["message", NEW_KIND]) == empty
    assert set(asked_of_telegram(fake_telegram, token)) == {*PORTEX_KINDS, NEW_KIND}
    update = newer_kind_update("ωμέγα, Zoë")
    update_id = await fake_telegram.deliver_update(token, update)
    assert update_id is not None  # Telegram sends it: portex-pay asked for it
    await fake_telegram.drain(token)
    sent = as_the_fake_sends(update_id, update)
    assert await raw_get_updates(service, token) == b'{"ok":true,"result":[' + sent + b"]}"
    # A bot that no longer asks for it: Telegram may still send one created before the change
    # (Bot API, getUpdates). portex-pay acknowledges it and keeps it from the bot.
    await raw_get_updates(service, token, offset=update_id + 1, allowed_updates=["message"])
    assert NEW_KIND not in asked_of_telegram(fake_telegram, token)
    late = as_the_fake_sends(update_id + 1, newer_kind_update("late"))
    application = await ApplicationRepository(service.pool, DATA_KEYS).get(uuid.UUID(shop.id))
    assert application is not None
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{service.http_port}/telegram/webhook/{shop.id}",
            data=late,
            headers={
                "Content-Type": "application/json",
                "X-Telegram-Bot-Api-Secret-Token": application.webhook_secret,
            },
        ) as response,
    ):
        assert response.status == 200
    await fake_telegram.send_user_message(token, USER, "after")
    await fake_telegram.drain(token)
    after = await raw_get_updates(service, token)
    assert b"after" in after and NEW_KIND.encode() not in after
    assert await dead_letters(service, shop) == 0


async def test_a_bot_on_the_default_set_gets_kinds_newer_than_the_code(
    service: PortexApp, bot: Bot, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    """Telegram's default set names its exceptions, so a new kind is in it: portex-pay asks
    Telegram for the default set itself ([]), not for the kinds it knows."""
    fake_telegram.add_update_types(NEW_KIND)
    assert await bot.get_updates(timeout=0, allowed_updates=[]) == []
    assert asked_of_telegram(fake_telegram, shop.bot_token) == []
    update = newer_kind_update("hello")
    update_id = await fake_telegram.deliver_update(shop.bot_token, update)
    assert update_id is not None
    await fake_telegram.drain(shop.bot_token)
    [received] = await bot.get_updates(timeout=0)
    assert received.update_id == update_id
    assert received.model_extra == {NEW_KIND: update[NEW_KIND]}
    assert await dead_letters(service, shop) == 0


async def test_allowed_updates_nested_past_the_parser_are_a_bad_request(
    service: PortexApp, shop: TestApp
) -> None:
    url = f"http://127.0.0.1:{service.http_port}/bot{shop.bot_token}/getUpdates"
    nested = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError
    async with aiohttp.ClientSession() as http:
        for form in ({"json": {"allowed_updates": nested}}, {"data": {"allowed_updates": nested}}):
            async with http.post(url, **form) as response:  # type: ignore[arg-type]
                body = await response.json()
            assert response.status == 400, body
            assert body["ok"] is False and body["error_code"] == 400
