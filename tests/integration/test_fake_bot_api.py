"""The fake Telegram Bot API, spoken to over real HTTP on loopback.

Each test states one behaviour of the fake that portex-pay's tests (or the sandbox) rely on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from portex_pay_devtools.fake_bot_api import (
    MAX_DOWNLOAD_SIZE,
    MAX_UPLOAD_SIZE,
    FakeBotApi,
    PaymentOutcome,
    UploadedFile,
)

TOKEN = "123456:" + "A" * 35
OTHER_TOKEN = "654321:" + "B" * 35
USER = 4242


# ----------------------------------------------------------------------------- helpers


@dataclass
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def result(self) -> Any:
        assert self.status == 200 and self.body["ok"] is True, self.body
        return self.body["result"]

    @property
    def description(self) -> str:
        assert self.body["ok"] is False, self.body
        assert self.body["error_code"] == self.status
        description: str = self.body["description"]
        return description


@dataclass
class Bot:
    """A minimal Bot API client for one token."""

    http: aiohttp.ClientSession
    base_url: str
    token: str = TOKEN

    async def json(self, method: str, **params: Any) -> Reply:
        url = f"{self.base_url}/bot{self.token}/{method}"
        async with self.http.post(url, json=params) as response:
            return Reply(response.status, await response.json())

    async def form(self, method: str, **params: str) -> Reply:
        url = f"{self.base_url}/bot{self.token}/{method}"
        async with self.http.post(url, data=params) as response:
            return Reply(response.status, await response.json())

    async def query(self, method: str, **params: str) -> Reply:
        url = f"{self.base_url}/bot{self.token}/{method}"
        async with self.http.get(url, params=params) as response:
            return Reply(response.status, await response.json())

    async def ok(self, method: str, **params: Any) -> Any:
        return (await self.json(method, **params)).result

    async def multipart(
        self, method: str, files: dict[str, tuple[str, bytes]], **params: str
    ) -> Reply:
        """A multipart/form-data request: `files` maps a part name to (filename, bytes)."""
        form = aiohttp.FormData(default_to_multipart=True)
        for name, value in params.items():
            form.add_field(name, value)
        for name, (filename, data) in files.items():
            form.add_field(name, data, filename=filename, content_type="application/octet-stream")
        url = f"{self.base_url}/bot{self.token}/{method}"
        async with self.http.post(url, data=form) as response:
            return Reply(response.status, await response.json())

    async def download(self, file_path: str) -> tuple[int, bytes]:
        async with self.http.get(f"{self.base_url}/file/bot{self.token}/{file_path}") as response:
            return response.status, await response.read()


def invoice(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "title": "Book",
        "description": "A book of magic",
        "payload": "order-1",
        "currency": "XTR",
        "prices": [{"label": "item", "amount": 5}],
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


async def answer_next_pre_checkout(
    bot: Bot, *, ok: bool = True, error_message: str | None = None
) -> dict[str, Any]:
    """Plays the bot in long-polling mode: answers the first pre_checkout_query it gets, after
    confirming it (and everything before it), so that only later updates stay queued."""
    offset = 0
    while True:
        updates = await bot.ok("getUpdates", offset=offset, timeout=5)
        for update in updates:
            offset = update["update_id"] + 1
            if "pre_checkout_query" in update:
                assert await bot.ok("getUpdates", offset=offset, limit=1) is not None
                query: dict[str, Any] = update["pre_checkout_query"]
                answer: dict[str, Any] = {"pre_checkout_query_id": query["id"], "ok": ok}
                if error_message is not None:
                    answer["error_message"] = error_message
                assert await bot.ok("answerPreCheckoutQuery", **answer) is True
                return query


async def next_updates(bot: Bot, offset: int = 0) -> list[dict[str, Any]]:
    updates: list[dict[str, Any]] = await bot.ok("getUpdates", offset=offset, timeout=5)
    return updates


@dataclass
class Receiver:
    """A tiny webhook endpoint; `statuses` scripts its answers (default 200)."""

    url: str
    received: asyncio.Queue[tuple[dict[str, str], dict[str, Any]]]
    statuses: list[int] = field(default_factory=list)
    reply: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None

    async def next_post(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The next POST (headers, update); fails fast rather than hanging when none comes."""
        return await asyncio.wait_for(self.received.get(), 5)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(webhook_retry_delay=0.01) as server:
        server.add_bot(TOKEN, "portex_test_bot")
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def bot(http: aiohttp.ClientSession, fake: FakeBotApi) -> Bot:
    return Bot(http, fake.base_url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    received: asyncio.Queue[tuple[dict[str, str], dict[str, Any]]] = asyncio.Queue()
    state = Receiver("", received)

    async def handle(request: web.Request) -> web.Response:
        update = await request.json()
        await received.put((dict(request.headers), update))
        status = state.statuses.pop(0) if state.statuses else 200
        body = state.reply(update) if state.reply is not None and status == 200 else None
        if body is not None:
            return web.json_response(body, status=status)
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


async def create_link(bot: Bot, **overrides: Any) -> str:
    link: str = await bot.ok("createInvoiceLink", **invoice(**overrides))
    return link


async def pay_with_bot(
    fake: FakeBotApi, bot: Bot, link: str, *, ok: bool = True, error_message: str | None = None
) -> tuple[PaymentOutcome, dict[str, Any]]:
    outcome, query = await asyncio.gather(
        fake.pay_invoice(link, USER),
        answer_next_pre_checkout(bot, ok=ok, error_message=error_message),
    )
    return outcome, query


# -------------------------------------------------------------------------- wire format


async def test_get_me_answers_a_user_object_for_json_form_and_query_requests(bot: Bot) -> None:
    for reply in (await bot.json("getMe"), await bot.form("getMe"), await bot.query("getMe")):
        assert reply.result == {
            "id": 123456,
            "is_bot": True,
            "first_name": "Fake Bot 123456",
            "username": "portex_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }


async def test_an_unknown_token_is_401_unauthorized(bot: Bot) -> None:
    bot.token = OTHER_TOKEN
    reply = await bot.json("getMe")
    assert (reply.status, reply.body) == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )


async def test_an_unknown_method_is_404_while_method_names_ignore_case(bot: Bot) -> None:
    reply = await bot.json("sendFax")
    assert (reply.status, reply.description) == (404, "Not Found: method not found")
    # Bot API: "All methods in the Bot API are case-insensitive."
    assert (await bot.json("GETME")).result["id"] == 123456


async def test_sandbox_mode_accepts_any_well_formed_token_and_only_those(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeBotApi(accept_any_token=True) as sandbox:
        good = Bot(http, sandbox.base_url, "777:" + "x" * 30)
        assert (await good.ok("getMe"))["id"] == 777
        short = Bot(http, sandbox.base_url, "778:" + "x" * 29)
        assert (await short.json("getMe")).status == 401


# ----------------------------------------------------------------------- createInvoiceLink


async def test_create_invoice_link_returns_a_t_me_link_and_remembers_the_invoice(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot, photo_url="https://example.com/a.png", photo_width=64)
    assert link.startswith("https://t.me/$") and len(link) > len("https://t.me/$") + 10
    [stored] = fake.invoices
    assert (stored.link, stored.bot_id, stored.title, stored.payload) == (
        link,
        123456,
        "Book",
        "order-1",
    )
    assert (stored.currency, stored.label, stored.amount, stored.photo_width) == (
        "XTR",
        "item",
        5,
        64,
    )


async def test_prices_may_come_json_encoded_in_a_form_body(fake: FakeBotApi, bot: Bot) -> None:
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in invoice().items()}
    assert (await bot.form("createInvoiceLink", **form)).result.startswith("https://t.me/$")
    assert fake.invoices[0].amount == 5


async def test_title_is_limited_to_32_characters_not_bytes(bot: Bot) -> None:
    # 32 CJK characters are 96 UTF-8 bytes: still fine.
    assert (await bot.json("createInvoiceLink", **invoice(title="書" * 32))).status == 200
    reply = await bot.json("createInvoiceLink", **invoice(title="a" * 33))
    assert (reply.status, reply.description) == (
        400,
        "Bad Request: invoice title must be 1-32 characters long",
    )


async def test_description_is_limited_to_255_characters(bot: Bot) -> None:
    assert (await bot.json("createInvoiceLink", **invoice(description="書" * 255))).status == 200
    assert (await bot.json("createInvoiceLink", **invoice(description="a" * 256))).status == 400


async def test_payload_is_limited_to_128_bytes_not_characters(bot: Bot) -> None:
    assert (await bot.json("createInvoiceLink", **invoice(payload="é" * 64))).status == 200
    # 65 characters, but 130 bytes.
    reply = await bot.json("createInvoiceLink", **invoice(payload="é" * 65))
    assert (reply.status, reply.description) == (
        400,
        "Bad Request: invoice payload must be 1-128 bytes long in UTF-8",
    )


@pytest.mark.parametrize("name", ["title", "description", "payload", "currency", "prices"])
@pytest.mark.parametrize("value", [None, ""])
async def test_required_parameters_may_be_neither_missing_nor_empty(
    bot: Bot, name: str, value: str | None
) -> None:
    params = invoice()
    if value is None:
        del params[name]
    else:
        params[name] = value
    reply = await bot.json("createInvoiceLink", **params)
    assert (reply.status, reply.description) == (
        400,
        f'Bad Request: parameter "{name}" is required',
    )


@pytest.mark.parametrize(
    "prices",
    [
        pytest.param([], id="none"),
        pytest.param([{"label": "a", "amount": 5}, {"label": "b", "amount": 1}], id="two"),
        pytest.param([{"label": "a", "amount": 5.0}], id="float"),
        pytest.param([{"label": "a", "amount": 2.5}], id="fraction"),
        pytest.param([{"label": "a", "amount": "5"}], id="string"),
        pytest.param([{"label": "a", "amount": True}], id="boolean"),
        pytest.param([{"label": "a", "amount": 0}], id="zero"),
        pytest.param([{"label": "a", "amount": -5}], id="negative"),
        pytest.param([{"label": "", "amount": 5}], id="empty-label"),
        pytest.param([{"amount": 5}], id="no-label"),
        pytest.param({"label": "a", "amount": 5}, id="object-not-array"),
        pytest.param("[{", id="not-json"),
    ],
)
async def test_prices_must_be_exactly_one_labeled_positive_integer_amount(
    fake: FakeBotApi, bot: Bot, prices: Any
) -> None:
    reply = await bot.json("createInvoiceLink", **invoice(prices=prices))
    assert reply.status == 400 and reply.description.startswith("Bad Request: ")
    assert fake.invoices == []


async def test_currency_must_be_xtr(bot: Bot) -> None:
    reply = await bot.json("createInvoiceLink", **invoice(currency="USD"))
    assert (reply.status, reply.description) == (
        400,
        "Bad Request: currency must be XTR for payments in Telegram Stars",
    )


async def test_provider_token_must_be_absent_or_empty(bot: Bot) -> None:
    assert (await bot.json("createInvoiceLink", **invoice(provider_token=""))).status == 200
    reply = await bot.json("createInvoiceLink", **invoice(provider_token="284685063:TEST:abc"))
    assert (reply.status, reply.description) == (
        400,
        "Bad Request: provider_token must be empty for payments in Telegram Stars",
    )


@pytest.mark.parametrize(
    ("name", "truthy", "falsy"),
    [
        ("max_tip_amount", 10, 0),
        ("suggested_tip_amounts", [1, 2], []),
        ("need_name", True, False),
        ("need_phone_number", True, False),
        ("need_email", True, False),
        ("need_shipping_address", True, False),
        ("send_phone_number_to_provider", True, False),
        ("send_email_to_provider", True, False),
        ("is_flexible", True, False),
    ],
)
async def test_fields_unsupported_for_stars_are_refused_only_when_set(
    bot: Bot, name: str, truthy: Any, falsy: Any
) -> None:
    reply = await bot.json("createInvoiceLink", **invoice(**{name: truthy}))
    assert (reply.status, reply.description) == (
        400,
        f"Bad Request: {name} is not supported for payments in Telegram Stars",
    )
    assert (await bot.json("createInvoiceLink", **invoice(**{name: falsy}))).status == 200


async def test_subscription_period_must_be_30_days_and_at_most_10000_stars(bot: Bot) -> None:
    assert (
        await bot.json("createInvoiceLink", **invoice(subscription_period=2592000))
    ).status == 200
    assert (await bot.json("createInvoiceLink", **invoice(subscription_period=86400))).status == 400
    too_dear = invoice(subscription_period=2592000, prices=[{"label": "a", "amount": 10001}])
    assert (await bot.json("createInvoiceLink", **too_dear)).status == 400


@pytest.mark.parametrize("name", ["photo_size", "photo_width", "photo_height"])
async def test_photo_sizes_must_be_non_negative_integers(bot: Bot, name: str) -> None:
    assert (await bot.json("createInvoiceLink", **invoice(**{name: 0}))).status == 200
    assert (await bot.json("createInvoiceLink", **invoice(**{name: -1}))).status == 400
    assert (await bot.json("createInvoiceLink", **invoice(**{name: 1.5}))).status == 400


# ------------------------------------------------------------------------ fault injection


async def test_fail_next_answers_in_telegram_error_format_with_retry_after_then_recovers(
    fake: FakeBotApi, bot: Bot
) -> None:
    fake.fail_next(
        "createInvoiceLink",
        error_code=429,
        description="Too Many Requests: retry after 9",
        retry_after=9,
    )
    reply = await bot.json("createInvoiceLink", **invoice())
    assert (reply.status, reply.body) == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 9",
            "parameters": {"retry_after": 9},
        },
    )
    assert (await bot.json("createInvoiceLink", **invoice())).status == 200
    assert len(fake.invoices) == 1  # the failed call created nothing
    assert len(fake.calls_for("createInvoiceLink")) == 2  # but was recorded


async def test_a_fault_can_target_one_token(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    fake.add_bot(OTHER_TOKEN)
    fake.fail_next("getMe", error_code=500, description="Internal Server Error", token=OTHER_TOKEN)
    assert (await bot.json("getMe")).status == 200
    assert (await Bot(http, fake.base_url, OTHER_TOKEN).json("getMe")).status == 500


async def test_delay_holds_the_answer_for_the_given_time(fake: FakeBotApi, bot: Bot) -> None:
    fake.delay("getMe", 0.2, times=1)
    started = time.monotonic()
    assert (await bot.json("getMe")).status == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    await bot.json("getMe")
    assert time.monotonic() - started < 0.2


async def test_drop_connection_closes_the_connection_without_an_answer_once(
    fake: FakeBotApi, bot: Bot
) -> None:
    fake.drop_connection("createInvoiceLink")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await bot.json("createInvoiceLink", **invoice())
    assert (await bot.json("createInvoiceLink", **invoice())).status == 200


async def test_clear_faults_removes_standing_faults(fake: FakeBotApi, bot: Bot) -> None:
    fake.fail_next("*", error_code=502, description="Bad Gateway", times=100)
    assert (await bot.json("getMe")).status == 502
    fake.clear_faults()
    assert (await bot.json("getMe")).status == 200


# ---------------------------------------------------------------------------- getUpdates


async def test_updates_below_the_offset_are_confirmed_and_never_come_back(
    fake: FakeBotApi, bot: Bot
) -> None:
    first = await fake.deliver_update(TOKEN, {"message": {"text": "one"}})
    second = await fake.deliver_update(TOKEN, {"message": {"text": "two"}})
    assert first is not None and second == first + 1
    updates = await bot.ok("getUpdates")
    assert [u["update_id"] for u in updates] == [first, second]
    # Without a higher offset nothing is confirmed: the same updates again.
    assert [u["update_id"] for u in await bot.ok("getUpdates")] == [first, second]
    assert [u["update_id"] for u in await bot.ok("getUpdates", offset=second)] == [second]
    # `first` is gone for good, even for a client that asks from the start again.
    assert [u["update_id"] for u in await bot.ok("getUpdates", offset=0)] == [second]
    assert await bot.ok("getUpdates", offset=second + 1) == []


async def test_limit_caps_the_batch(fake: FakeBotApi, bot: Bot) -> None:
    for n in range(3):
        await fake.deliver_update(TOKEN, {"message": {"text": str(n)}})
    assert len(await bot.ok("getUpdates", limit=2)) == 2


async def test_a_long_poll_wakes_up_as_soon_as_an_update_arrives(
    fake: FakeBotApi, bot: Bot
) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.ok("getUpdates", timeout=10))
    await fake.wait_for_call("getUpdates")
    update_id = await fake.deliver_update(TOKEN, {"message": {"text": "hi"}})
    updates = await poll
    assert [u["update_id"] for u in updates] == [update_id]
    assert time.monotonic() - started < 5


async def test_a_second_get_updates_terminates_the_waiting_one_with_409(
    fake: FakeBotApi, bot: Bot
) -> None:
    first = asyncio.create_task(bot.json("getUpdates", timeout=10))
    await fake.wait_for_call("getUpdates")
    assert await bot.ok("getUpdates") == []
    reply = await first
    assert (reply.status, reply.description) == (
        409,
        "Conflict: terminated by other getUpdates request; "
        "make sure that only one bot instance is running",
    )


async def test_get_updates_is_refused_while_a_webhook_is_set(bot: Bot, receiver: Receiver) -> None:
    assert await bot.ok("setWebhook", url=receiver.url) is True
    reply = await bot.json("getUpdates")
    assert (reply.status, reply.description) == (
        409,
        "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first",
    )
    assert await bot.ok("deleteWebhook") is True
    assert await bot.ok("getUpdates") == []


async def test_set_webhook_terminates_a_waiting_long_poll(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    poll = asyncio.create_task(bot.json("getUpdates", timeout=10))
    await fake.wait_for_call("getUpdates")
    await bot.ok("setWebhook", url=receiver.url)
    reply = await poll
    assert (reply.status, reply.description) == (409, "Conflict: terminated by setWebhook request")


async def test_allowed_updates_keeps_other_update_types_from_being_created(
    fake: FakeBotApi, bot: Bot
) -> None:
    assert await bot.ok("getUpdates", allowed_updates=["pre_checkout_query"]) == []
    assert await fake.deliver_update(TOKEN, {"message": {"text": "filtered"}}) is None
    kept = await fake.deliver_update(TOKEN, {"pre_checkout_query": {"id": "1"}})
    assert [u["update_id"] for u in await bot.ok("getUpdates")] == [kept]
    # An empty list restores the default (everything but chat_member and reactions).
    await bot.ok("getUpdates", allowed_updates=[])
    assert await fake.deliver_update(TOKEN, {"message": {"text": "back"}}) is not None


async def test_update_types_of_a_newer_bot_api_can_be_added(fake: FakeBotApi, bot: Bot) -> None:
    """A Telegram newer than the code under test: the new type is in the default set and can
    be asked for by name; a list that leaves it out keeps it from being created."""
    assert await fake.deliver_update(TOKEN, {"future_kind_y": {}}) is None  # unknown here yet
    fake.add_update_types("future_kind_y")
    assert await fake.deliver_update(TOKEN, {"future_kind_y": {}}) is not None  # default set
    await bot.ok("getUpdates", allowed_updates=["message"])
    assert await fake.deliver_update(TOKEN, {"future_kind_y": {}}) is None
    await bot.ok("getUpdates", allowed_updates=["future_kind_y"])
    assert await fake.deliver_update(TOKEN, {"future_kind_y": {}}) is not None


async def test_a_negative_offset_keeps_only_the_last_updates(fake: FakeBotApi, bot: Bot) -> None:
    ids = [await fake.deliver_update(TOKEN, {"message": {"text": str(n)}}) for n in range(3)]
    assert [u["update_id"] for u in await bot.ok("getUpdates", offset=-1)] == ids[-1:]


# ------------------------------------------------------------------------------ webhooks


async def test_the_webhook_gets_updates_in_order_with_the_secret_header(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    await bot.ok("setWebhook", url=receiver.url, secret_token="s3cr3t_-x")
    ids = [await fake.deliver_update(TOKEN, {"message": {"text": str(n)}}) for n in range(3)]
    for expected in ids:
        headers, update = await receiver.next_post()
        assert update["update_id"] == expected
        assert headers["X-Telegram-Bot-Api-Secret-Token"] == "s3cr3t_-x"
        assert headers["Content-Type"] == "application/json"


async def test_without_a_secret_token_no_secret_header_is_sent(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    await bot.ok("setWebhook", url=receiver.url)
    await fake.deliver_update(TOKEN, {"message": {"text": "x"}})
    headers, _ = await receiver.next_post()
    assert "X-Telegram-Bot-Api-Secret-Token" not in headers


async def test_a_failed_delivery_is_retried_and_reported_in_webhook_info(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    await bot.ok("setWebhook", url=receiver.url)
    update_id = await fake.deliver_update(TOKEN, {"message": {"text": "x"}})
    first = await receiver.next_post()
    second = await receiver.next_post()
    assert first[1]["update_id"] == second[1]["update_id"] == update_id
    info = await bot.ok("getWebhookInfo")
    assert (
        info["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    )
    assert isinstance(info["last_error_date"], int)


async def test_delivery_gives_up_after_the_configured_attempts_and_moves_on(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    receiver.statuses = [503, 503, 503]  # default: 3 attempts
    await bot.ok("setWebhook", url=receiver.url)
    doomed = await fake.deliver_update(TOKEN, {"message": {"text": "doomed"}})
    fine = await fake.deliver_update(TOKEN, {"message": {"text": "fine"}})
    seen = [(await receiver.next_post())[1]["update_id"] for _ in range(4)]
    assert seen == [doomed, doomed, doomed, fine]


async def test_an_unreachable_webhook_is_reported_as_a_connection_error(
    http: aiohttp.ClientSession,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with FakeBotApi(webhook_attempts=1) as server:
        server.add_bot(TOKEN)
        bot = Bot(http, server.base_url)
        await bot.ok("setWebhook", url=f"http://127.0.0.1:{port}/hook")
        await server.deliver_update(TOKEN, {"message": {"text": "x"}})
        await server.drain(TOKEN)  # the single attempt failed and the fake gave up
        info = await bot.ok("getWebhookInfo")
        assert (info["pending_update_count"], info["last_error_message"]) == (
            0,
            "Connection refused",
        )


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"url": "ftp://example.com/hook"}, "Bad Request: invalid webhook URL specified"),
        ({"url": "https:///hook"}, "Bad Request: invalid webhook URL specified"),
        (
            {"url": "https://example.com/hook", "secret_token": "bad secret!"},
            "Bad Request: secret token contains unallowed characters",
        ),
        (
            {"url": "https://example.com/hook", "secret_token": "a" * 257},
            "Bad Request: secret token is too long",
        ),
    ],
)
async def test_set_webhook_validates_the_url_and_the_secret_token(
    bot: Bot, params: dict[str, str], description: str
) -> None:
    reply = await bot.json("setWebhook", **params)
    assert (reply.status, reply.description) == (400, description)


async def test_webhook_info_describes_the_webhook_until_it_is_deleted(
    bot: Bot, receiver: Receiver
) -> None:
    set_reply = await bot.json(
        "setWebhook",
        url=receiver.url,
        secret_token="a" * 256,
        max_connections=10,
        allowed_updates=["message", "pre_checkout_query"],
    )
    assert set_reply.result is True and set_reply.body["description"] == "Webhook was set"
    assert await bot.ok("getWebhookInfo") == {
        "url": receiver.url,
        "has_custom_certificate": False,
        "pending_update_count": 0,
        "max_connections": 10,
        "allowed_updates": ["message", "pre_checkout_query"],
    }
    deleted = await bot.json("deleteWebhook")
    assert deleted.result is True and deleted.body["description"] == "Webhook was deleted"
    info = await bot.ok("getWebhookInfo")
    assert (info["url"], info["pending_update_count"]) == ("", 0)
    assert "max_connections" not in info


async def test_drop_pending_updates_forgets_queued_updates(fake: FakeBotApi, bot: Bot) -> None:
    await fake.deliver_update(TOKEN, {"message": {"text": "x"}})
    assert await bot.ok("getWebhookInfo") == {
        "url": "",
        "has_custom_certificate": False,
        "pending_update_count": 1,
    }
    await bot.ok("deleteWebhook", drop_pending_updates=True)
    assert await bot.ok("getUpdates") == []


async def test_redeliver_sends_the_same_update_again(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    await bot.ok("setWebhook", url=receiver.url)
    update_id = await fake.deliver_update(TOKEN, {"message": {"text": "x"}})
    assert update_id is not None
    _, original = await receiver.next_post()
    await fake.redeliver(update_id)
    _, duplicate = await receiver.next_post()
    assert duplicate == original


async def test_a_webhook_reply_can_answer_the_pre_checkout_query(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    def reply(update: dict[str, Any]) -> dict[str, Any] | None:
        if "pre_checkout_query" not in update:
            return None
        query_id = update["pre_checkout_query"]["id"]
        return {"method": "answerPreCheckoutQuery", "pre_checkout_query_id": query_id, "ok": True}

    receiver.reply = reply
    await bot.ok("setWebhook", url=receiver.url)
    outcome = await fake.pay_invoice(await create_link(bot), USER)
    assert outcome.approved and outcome.charge_id is not None
    [answer] = fake.calls_for("answerPreCheckoutQuery")
    assert answer.via_webhook_reply


# ------------------------------------------------------------------------------ payments


async def test_a_payment_the_users_stars_cannot_cover_fails_before_any_pre_checkout(
    fake: FakeBotApi, bot: Bot
) -> None:
    """Telegram checks the user's balance first: short of it, the bot hears nothing and nothing
    is charged; with enough Stars the same link pays and the balance is spent."""
    link = await create_link(bot)  # 5 Stars
    fake.set_user_stars(USER, 4)
    short = await fake.pay_invoice(link, USER)
    assert (short.approved, short.answered, short.error_message) == (
        False,
        False,
        "not enough Stars",
    )
    assert (await next_updates(bot), fake.charges) == ([], [])
    fake.set_user_stars(USER, 7)
    outcome, _ = await pay_with_bot(fake, bot, link)
    assert outcome.approved is True
    assert fake.user_stars(USER) == 2


async def test_an_approved_payment_charges_the_user_and_sends_successful_payment(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot)
    outcome, query = await pay_with_bot(fake, bot, link)
    assert query["from"]["id"] == USER
    assert (query["currency"], query["total_amount"], query["invoice_payload"]) == (
        "XTR",
        5,
        "order-1",
    )
    assert outcome.approved and outcome.answered and outcome.error_message is None
    assert outcome.answer_latency is not None and 0 <= outcome.answer_latency < 5
    [update] = await next_updates(bot)
    message = update["message"]
    assert message["from"]["id"] == USER
    assert message["chat"] == {
        "id": USER,
        "first_name": f"User {USER}",
        "username": f"user{USER}",
        "type": "private",
    }
    assert message["successful_payment"] == {
        "currency": "XTR",
        "total_amount": 5,
        "invoice_payload": "order-1",
        "telegram_payment_charge_id": outcome.charge_id,
        "provider_payment_charge_id": "",
    }
    [charge] = fake.charges
    assert (charge.telegram_payment_charge_id, charge.user_id, charge.total_amount) == (
        outcome.charge_id,
        USER,
        5,
    )


async def test_a_declined_payment_shows_the_error_message_and_charges_nothing(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot)
    outcome, _ = await pay_with_bot(fake, bot, link, ok=False, error_message="Sold out")
    assert (outcome.approved, outcome.answered, outcome.error_message, outcome.charge_id) == (
        False,
        True,
        "Sold out",
        None,
    )
    assert fake.charges == []
    assert await bot.ok("getUpdates", offset=0) == []  # no successful_payment


async def test_declining_requires_an_error_message(fake: FakeBotApi, bot: Bot) -> None:
    link = await create_link(bot)
    payment = asyncio.create_task(fake.pay_invoice(link, USER, answer_timeout=5))
    [update] = await next_updates(bot)
    query_id = update["pre_checkout_query"]["id"]
    reply = await bot.json("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=False)
    assert (reply.status, reply.description) == (
        400,
        'Bad Request: parameter "error_message" is required',
    )
    await bot.ok("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)
    assert (await payment).approved


async def test_an_unanswered_query_times_out_and_a_late_answer_is_too_old(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot)
    outcome = await fake.pay_invoice(link, USER, answer_timeout=0.2)
    assert outcome == PaymentOutcome(False, None, False, None, None)
    [update] = await next_updates(bot)
    query_id = update["pre_checkout_query"]["id"]
    reply = await bot.json("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)
    assert (reply.status, reply.description) == (
        400,
        "Bad Request: query is too old and response timeout expired or query ID is invalid",
    )
    assert fake.charges == []


async def test_an_unknown_or_already_answered_query_is_query_id_invalid(
    fake: FakeBotApi, bot: Bot
) -> None:
    reply = await bot.json("answerPreCheckoutQuery", pre_checkout_query_id="1", ok=True)
    assert (reply.status, reply.description) == (400, "Bad Request: QUERY_ID_INVALID")
    _, query = await pay_with_bot(fake, bot, await create_link(bot))
    again = await bot.json("answerPreCheckoutQuery", pre_checkout_query_id=query["id"], ok=True)
    assert (again.status, again.description) == (400, "Bad Request: QUERY_ID_INVALID")


async def test_another_bot_cannot_answer_the_query(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    fake.add_bot(OTHER_TOKEN)
    link = await create_link(bot)
    payment = asyncio.create_task(fake.pay_invoice(link, USER, answer_timeout=5))
    [update] = await next_updates(bot)
    query_id = update["pre_checkout_query"]["id"]
    other = Bot(http, fake.base_url, OTHER_TOKEN)
    reply = await other.json("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)
    assert reply.description == "Bad Request: QUERY_ID_INVALID"
    await bot.ok("answerPreCheckoutQuery", pre_checkout_query_id=query_id, ok=True)
    assert (await payment).approved


async def test_pay_invoice_overrides_let_a_test_tamper_with_the_query(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot)
    payment = asyncio.create_task(
        fake.pay_invoice(
            link, USER, total_amount=1, invoice_payload="forged", currency="USD", answer_timeout=5
        )
    )
    [update] = await next_updates(bot)
    query = update["pre_checkout_query"]
    assert (query["total_amount"], query["invoice_payload"], query["currency"]) == (
        1,
        "forged",
        "USD",
    )
    await bot.ok(
        "answerPreCheckoutQuery", pre_checkout_query_id=query["id"], ok=False, error_message="No"
    )
    assert not (await payment).approved


async def test_an_invoice_link_can_be_paid_twice_each_payment_a_new_charge(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot)
    first, _ = await pay_with_bot(fake, bot, link)
    second, _ = await pay_with_bot(fake, bot, link)
    assert first.approved and second.approved
    assert first.charge_id != second.charge_id
    assert len(fake.charges) == 2


async def test_a_subscription_payment_carries_its_expiration_date(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot, subscription_period=2592000)
    await pay_with_bot(fake, bot, link)
    [update] = await next_updates(bot)
    payment = update["message"]["successful_payment"]
    assert payment["is_recurring"] is True and payment["is_first_recurring"] is True
    assert payment["subscription_expiration_date"] - update["message"]["date"] == 2592000


async def test_paying_an_unknown_link_raises_lookup_error(fake: FakeBotApi) -> None:
    with pytest.raises(LookupError):
        await fake.pay_invoice("https://t.me/$nope", USER)


# ------------------------------------------------------------------------------- refunds


async def test_a_refund_returns_true_once_and_then_charge_already_refunded(
    fake: FakeBotApi, bot: Bot
) -> None:
    outcome, _ = await pay_with_bot(fake, bot, await create_link(bot))
    [paid] = await next_updates(bot)
    offset = paid["update_id"] + 1
    refund = {"user_id": USER, "telegram_payment_charge_id": outcome.charge_id}
    assert await bot.ok("refundStarPayment", **refund) is True
    again = await bot.json("refundStarPayment", **refund)
    assert (again.status, again.description) == (400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    [refunded] = await next_updates(bot, offset)
    assert refunded["message"]["refunded_payment"] == {
        "currency": "XTR",
        "total_amount": 5,
        "invoice_payload": "order-1",
        "telegram_payment_charge_id": outcome.charge_id,
    }
    assert fake.charges[0].refunded_at is not None


@pytest.mark.parametrize("who", ["other-user", "unknown-charge"])
async def test_refunding_a_charge_of_someone_else_is_charge_not_found(
    fake: FakeBotApi, bot: Bot, who: str
) -> None:
    outcome, _ = await pay_with_bot(fake, bot, await create_link(bot))
    refund: dict[str, Any] = {"user_id": USER, "telegram_payment_charge_id": outcome.charge_id}
    if who == "other-user":
        refund["user_id"] = USER + 1
    else:
        refund["telegram_payment_charge_id"] = "stxNOPE"
    reply = await bot.json("refundStarPayment", **refund)
    assert (reply.status, reply.description) == (400, "Bad Request: CHARGE_NOT_FOUND")


async def test_star_transactions_and_balance_follow_payments_and_refunds(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot, prices=[{"label": "item", "amount": 7}])
    kept, _ = await pay_with_bot(fake, bot, link)
    refunded, _ = await pay_with_bot(fake, bot, link)
    await bot.ok("refundStarPayment", user_id=USER, telegram_payment_charge_id=refunded.charge_id)
    assert await bot.ok("getMyStarBalance") == {"amount": 7, "nanostar_amount": 0}
    transactions = (await bot.ok("getStarTransactions"))["transactions"]
    assert [(t["id"], t["amount"], "source" in t) for t in transactions] == [
        (kept.charge_id, 7, True),
        (refunded.charge_id, 7, True),
        (refunded.charge_id, 7, False),
    ]
    source = transactions[0]["source"]
    assert (source["type"], source["user"]["id"], source["invoice_payload"]) == (
        "user",
        USER,
        "order-1",
    )
    assert transactions[2]["receiver"]["user"]["id"] == USER
    page = (await bot.ok("getStarTransactions", offset=1, limit=1))["transactions"]
    assert [t["id"] for t in page] == [refunded.charge_id]


# -------------------------------------------------------------------------- Star transactions


def withdrawal(
    transaction_id: str, amount: int, state: dict[str, Any], date: int
) -> dict[str, Any]:
    receiver = {"type": "fragment", "withdrawal_state": state}
    return {"id": transaction_id, "amount": amount, "date": date, "receiver": receiver}


async def test_every_transaction_kind_is_listed_in_telegrams_shape_oldest_first(
    fake: FakeBotApi, bot: Bot
) -> None:
    link = await create_link(bot, prices=[{"label": "item", "amount": 50}])
    paid, _ = await pay_with_bot(fake, bot, link)
    now = int(time.time())
    added = [
        {"id": "ads-1", "amount": 3, "nanostar_amount": 250_000_000, "date": now,
         "receiver": {"type": "telegram_ads"}},
        {"id": "aff-1", "amount": 2, "date": now + 1,
         "source": {"type": "affiliate_program", "commission_per_mille": 100,
                    "sponsor_user": {"id": 999, "is_bot": True, "first_name": "Sponsor"}}},
        {"id": "api-1", "amount": 1, "date": now + 2,
         "receiver": {"type": "telegram_api", "request_count": 1000}},
        withdrawal("wd-1", 10, {"type": "pending"}, now + 3),
        {"id": "new-1", "amount": 4, "nanostar_amount": 0, "date": now + 4,
         "source": {"type": "stars_from_the_future", "anything": [1, 2]}},
    ]  # fmt: skip
    for transaction in added:
        fake.add_star_transaction(TOKEN, transaction)

    listed = (await bot.ok("getStarTransactions"))["transactions"]
    assert [t["id"] for t in listed] == [paid.charge_id, "ads-1", "aff-1", "api-1", "wd-1", "new-1"]
    assert [t["date"] for t in listed] == sorted(t["date"] for t in listed)
    assert listed[0]["source"]["transaction_type"] == "invoice_payment"
    assert listed[1]["nanostar_amount"] == 250_000_000
    # Optional, and left out when zero, as Telegram does.
    assert "nanostar_amount" not in listed[0] and "nanostar_amount" not in listed[5]
    assert listed[5]["source"] == {"type": "stars_from_the_future", "anything": [1, 2]}
    # 50 + 2 + 4 in, 3.25 + 1 + 10 out: 41.75 Stars.
    assert await bot.ok("getMyStarBalance") == {"amount": 41, "nanostar_amount": 750_000_000}


async def test_a_balance_below_zero_is_a_star_amount_rounded_toward_zero(
    fake: FakeBotApi, bot: Bot
) -> None:
    fake.add_star_transaction(
        TOKEN,
        {"id": "ads-2", "amount": 1, "nanostar_amount": 500_000_000,
         "receiver": {"type": "telegram_ads"}},
    )  # fmt: skip
    # StarAmount: nanostars are negative only when the whole amount is not positive.
    assert await bot.ok("getMyStarBalance") == {"amount": -1, "nanostar_amount": -500_000_000}


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"limit": 0}, 'Bad Request: parameter "limit" must be between 1 and 100'),
        ({"limit": 101}, 'Bad Request: parameter "limit" must be between 1 and 100'),
        ({"offset": -1}, 'Bad Request: parameter "offset" must be non-negative'),
    ],
)
async def test_get_star_transactions_refuses_a_limit_or_offset_out_of_telegrams_range(
    bot: Bot, params: dict[str, int], description: str
) -> None:
    reply = await bot.json("getStarTransactions", **params)
    assert (reply.status, reply.description) == (400, description)


async def test_star_transactions_page_by_offset_at_most_a_hundred_at_a_time(
    fake: FakeBotApi, bot: Bot
) -> None:
    for number in range(130):
        fake.add_star_transaction(
            TOKEN, {"id": f"ads-{number}", "amount": 1, "receiver": {"type": "telegram_ads"}}
        )
    first = (await bot.ok("getStarTransactions"))["transactions"]
    rest = (await bot.ok("getStarTransactions", offset=100, limit=100))["transactions"]
    beyond = (await bot.ok("getStarTransactions", offset=500))["transactions"]
    assert [len(first), len(rest), beyond] == [100, 30, []]
    assert [t["id"] for t in first + rest] == [f"ads-{n}" for n in range(130)]


async def test_a_transaction_out_of_order_or_of_a_shape_telegram_never_sends_is_refused(
    fake: FakeBotApi,
) -> None:
    now = int(time.time())
    fake.add_star_transaction(TOKEN, withdrawal("wd-1", 5, {"type": "pending"}, now))
    with pytest.raises(ValueError, match="chronological"):
        fake.add_star_transaction(TOKEN, withdrawal("wd-0", 5, {"type": "pending"}, now - 1))
    both = {"id": "x", "amount": 1, "source": {"type": "other"}, "receiver": {"type": "other"}}
    for bad in (
        both,
        {"id": "", "amount": 1, "source": {"type": "other"}},
        {"id": "x", "amount": -1, "source": {"type": "other"}},
        {"id": "x", "amount": 1, "nanostar_amount": 10**9, "source": {"type": "other"}},
        {"id": "x", "amount": 1, "source": {"kind": "other"}},
    ):
        with pytest.raises(ValueError):
            fake.add_star_transaction(TOKEN, bad)
    assert [t["id"] for t in fake.star_transactions(TOKEN)] == ["wd-1"]


async def test_a_payment_whose_update_never_came_is_listed_and_refundable_but_sends_nothing(
    fake: FakeBotApi, bot: Bot
) -> None:
    paid = fake.record_star_payment(TOKEN, USER, "order-9", 12)
    assert paid["source"]["invoice_payload"] == "order-9" and paid["source"]["user"]["id"] == USER
    assert await bot.ok("getUpdates") == []  # no pre-checkout, no successful_payment
    refund = {"user_id": USER, "telegram_payment_charge_id": paid["id"]}
    assert await bot.ok("refundStarPayment", **refund) is True
    listed = (await bot.ok("getStarTransactions"))["transactions"]
    assert [(t["id"], "receiver" in t) for t in listed] == [(paid["id"], False), (paid["id"], True)]
    assert await bot.ok("getMyStarBalance") == {"amount": 0, "nanostar_amount": 0}


async def test_a_refund_made_elsewhere_is_listed_without_an_update_and_counts_as_refunded(
    fake: FakeBotApi, bot: Bot
) -> None:
    outcome, _ = await pay_with_bot(fake, bot, await create_link(bot))
    offset = max(u["update_id"] for u in await next_updates(bot)) + 1
    refund = fake.refund_outside(TOKEN, outcome.charge_id or "")
    assert (refund["id"], refund["receiver"]["user"]["id"]) == (outcome.charge_id, USER)
    assert await bot.ok("getUpdates", offset=offset) == []  # no refunded_payment
    again = await bot.json(
        "refundStarPayment", user_id=USER, telegram_payment_charge_id=outcome.charge_id
    )
    assert (again.status, again.description) == (400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    with pytest.raises(LookupError):
        fake.refund_outside(TOKEN, "stxNOPE")


async def test_fragment_settles_a_pending_withdrawal_in_place(fake: FakeBotApi, bot: Bot) -> None:
    now = int(time.time())
    fake.add_star_transaction(TOKEN, withdrawal("wd-1", 7, {"type": "pending"}, now))
    fake.add_star_transaction(
        TOKEN, {"id": "ads-1", "amount": 1, "receiver": {"type": "telegram_ads"}}
    )
    done = {"type": "succeeded", "date": now + 60, "url": "https://fragment.com/tx/1"}
    fake.set_withdrawal_state(TOKEN, "wd-1", done)
    listed = (await bot.ok("getStarTransactions"))["transactions"]
    assert [t["id"] for t in listed] == ["wd-1", "ads-1"]  # the same position
    assert listed[0]["receiver"]["withdrawal_state"] == done
    with pytest.raises(LookupError):
        fake.set_withdrawal_state(TOKEN, "ads-1", done)


async def test_the_control_api_adds_star_transactions_and_counts_calls_per_method(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    base = fake.base_url

    async def control(method: str, path: str, body: Any = None) -> Reply:
        async with http.request(method, f"{base}/_fake/{path}", json=body) as response:
            return Reply(response.status, await response.json())

    ads = {"id": "ads-1", "amount": 2, "receiver": {"type": "telegram_ads"}}
    assert (
        await control("POST", "star_transactions", {"token": TOKEN, "transaction": ads})
    ).status == 200
    payment = {"token": TOKEN, "user_id": USER, "invoice_payload": "p", "amount": 5}
    paid = (await control("POST", "star_payment", payment)).result
    refund = {"token": TOKEN, "telegram_payment_charge_id": paid["id"]}
    assert (await control("POST", "outside_refund", refund)).status == 200
    wd = withdrawal("wd-1", 1, {"type": "pending"}, int(time.time()) + 5)
    await control("POST", "star_transactions", {"token": TOKEN, "transaction": wd})
    state = {"token": TOKEN, "id": "wd-1", "withdrawal_state": {"type": "failed"}}
    assert (await control("POST", "withdrawal_state", state)).status == 200
    bad = {"token": TOKEN, "transaction": {"id": "x", "amount": "5", "source": {"type": "user"}}}
    assert (await control("POST", "star_transactions", bad)).status == 400

    listed = (await control("GET", "star_transactions?bot_id=123456")).result
    assert [(t["id"], t.get("receiver", t.get("source"))["type"]) for t in listed] == [
        ("ads-1", "telegram_ads"),
        (paid["id"], "user"),
        (paid["id"], "user"),
        ("wd-1", "fragment"),
    ]
    await bot.ok("getStarTransactions")
    await bot.ok("getStarTransactions", offset=4)
    await bot.ok("getMyStarBalance")
    assert (await control("GET", "call_counts?bot_id=123456")).result == {
        "getStarTransactions": 2,
        "getMyStarBalance": 1,
    }
    assert (await control("GET", "call_counts?bot_id=1")).status == 400


# ------------------------------------------------------------------------- messages


async def test_send_message_returns_a_message_from_the_bot_in_the_private_chat(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")  # message 1 of the chat
    message = await bot.ok("sendMessage", chat_id=USER, text="Hello, <b>you</b>", parse_mode="HTML")
    assert isinstance(message.pop("date"), int)
    assert message == {
        "message_id": 2,
        "from": {
            "id": 123456,
            "is_bot": True,
            "first_name": "Fake Bot 123456",
            "username": "portex_test_bot",
        },
        "chat": {
            "id": USER,
            "first_name": f"User {USER}",
            "username": f"user{USER}",
            "type": "private",
        },
        "text": "Hello, <b>you</b>",  # no entity parsing: the markup stays
    }
    # A form body (what aiogram sends) with a string chat_id is the same request.
    again = (await bot.form("sendMessage", chat_id=str(USER), text="again")).result
    assert again["message_id"] == 3
    assert [m["text"] for m in fake.sent_messages(TOKEN)] == ["Hello, <b>you</b>", "again"]


async def test_message_ids_count_per_chat(fake: FakeBotApi, bot: Bot) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    await fake.send_user_message(TOKEN, USER + 1, "hi")
    first = await bot.ok("sendMessage", chat_id=USER, text="a")
    other = await bot.ok("sendMessage", chat_id=USER + 1, text="b")
    second = await bot.ok("sendMessage", chat_id=USER, text="c")
    assert (first["message_id"], other["message_id"], second["message_id"]) == (2, 2, 3)
    assert [m["text"] for m in fake.sent_messages(TOKEN, USER)] == ["a", "c"]
    assert [m["text"] for m in fake.sent_messages(TOKEN, USER + 1)] == ["b"]


@pytest.mark.parametrize(
    ("params", "description"),
    [
        pytest.param({"text": "x"}, "chat_id is empty", id="no-chat"),
        pytest.param({"chat_id": USER + 1, "text": "x"}, "chat not found", id="never-wrote"),
        pytest.param({"chat_id": f"@user{USER}", "text": "x"}, "chat not found", id="username"),
        pytest.param({"chat_id": "abc", "text": "x"}, "chat not found", id="garbage"),
        pytest.param({"chat_id": USER}, "message text is empty", id="no-text"),
        pytest.param({"text": ""}, "message text is empty", id="text-before-chat"),
        pytest.param({"chat_id": USER, "text": " \n "}, "message must be non-empty", id="spaces"),
        pytest.param({"chat_id": USER, "text": "a" * 4097}, "message is too long", id="long"),
        pytest.param(
            {"chat_id": USER, "text": "x", "parse_mode": "BBCode"},
            "unsupported parse_mode",
            id="parse-mode",
        ),
    ],
)
async def test_send_message_refuses_what_telegram_refuses(
    fake: FakeBotApi, bot: Bot, params: dict[str, Any], description: str
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    reply = await bot.json("sendMessage", **params)
    assert (reply.status, reply.description) == (400, f"Bad Request: {description}")
    assert fake.sent_messages(TOKEN) == []


async def test_the_text_limit_counts_characters(fake: FakeBotApi, bot: Bot) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    # 4096 CJK characters are 12288 UTF-8 bytes: still one message.
    assert (await bot.ok("sendMessage", chat_id=USER, text="書" * 4096))["text"] == "書" * 4096


async def test_a_chat_opens_for_each_bot_separately_and_by_payment_too(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    fake.add_bot(OTHER_TOKEN)
    await fake.send_user_message(OTHER_TOKEN, USER, "hi, other bot")
    reply = await bot.json("sendMessage", chat_id=USER, text="x")
    assert reply.description == "Bad Request: chat not found"
    # A user who paid an invoice link can be written to.
    await pay_with_bot(fake, bot, await create_link(bot))
    assert (await bot.ok("sendMessage", chat_id=USER, text="thanks"))["chat"]["id"] == USER
    other = Bot(http, fake.base_url, OTHER_TOKEN)
    assert (await other.ok("sendMessage", chat_id=USER, text="x"))["message_id"] == 2


async def test_an_inline_keyboard_comes_back_in_the_message_a_reply_keyboard_does_not(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    keyboard = {"inline_keyboard": [[{"text": "Buy", "callback_data": "buy:1"}]]}
    message = await bot.ok("sendMessage", chat_id=USER, text="x", reply_markup=keyboard)
    assert message["reply_markup"] == keyboard
    # A JSON-encoded string (a form body) is the same markup.
    form = await bot.form(
        "sendMessage", chat_id=str(USER), text="x", reply_markup=json.dumps(keyboard)
    )
    assert form.result["reply_markup"] == keyboard
    reply_keyboard = {"keyboard": [[{"text": "Yes"}]], "one_time_keyboard": True}
    plain = await bot.ok("sendMessage", chat_id=USER, text="x", reply_markup=reply_keyboard)
    assert "reply_markup" not in plain


@pytest.mark.parametrize(
    ("markup", "description"),
    [
        pytest.param("{", "can't parse reply keyboard markup JSON object", id="not-json"),
        pytest.param([], "object expected as reply markup", id="array"),
        pytest.param(
            {"inline_keyboard": [{"text": "a"}]},
            'field "inline_keyboard" must be an Array of Arrays',
            id="flat",
        ),
        pytest.param(
            {"inline_keyboard": [[{"text": "a"}]]},
            "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
            id="text-button",
        ),
        pytest.param(
            {"inline_keyboard": [[{"text": "a", "callback_data": "x" * 65}]]},
            "BUTTON_DATA_INVALID",
            id="long-data",
        ),
        pytest.param(
            {"inline_keyboard": [[{"text": "a", "callback_data": "x", "url": "https://a.b"}]]},
            "can't parse inline keyboard button: exactly one of url, callback_data must be used",
            id="two-actions",
        ),
    ],
)
async def test_reply_markup_must_be_a_well_formed_keyboard(
    fake: FakeBotApi, bot: Bot, markup: Any, description: str
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    reply = await bot.json("sendMessage", chat_id=USER, text="x", reply_markup=markup)
    assert (reply.status, reply.description) == (400, f"Bad Request: {description}")


async def test_a_reply_carries_the_replied_message_if_it_exists(fake: FakeBotApi, bot: Bot) -> None:
    await fake.send_user_message(TOKEN, USER, "question")  # message 1
    answer = await bot.ok(
        "sendMessage", chat_id=USER, text="answer", reply_parameters={"message_id": 1}
    )
    assert answer["reply_to_message"]["text"] == "question"
    # Bot API: a replied message carries no reply_to_message of its own.
    nested = await bot.ok(
        "sendMessage", chat_id=USER, text="more", reply_parameters={"message_id": 2}
    )
    assert "reply_to_message" not in nested["reply_to_message"]
    missing = await bot.json(
        "sendMessage", chat_id=USER, text="x", reply_parameters={"message_id": 99}
    )
    assert missing.description == "Bad Request: message to be replied not found"
    lenient = await bot.ok(
        "sendMessage",
        chat_id=USER,
        text="x",
        reply_parameters={"message_id": 99, "allow_sending_without_reply": True},
    )
    assert "reply_to_message" not in lenient
    legacy = await bot.ok("sendMessage", chat_id=USER, text="x", reply_to_message_id=1)
    assert legacy["reply_to_message"]["message_id"] == 1
    broken = await bot.json("sendMessage", chat_id=USER, text="x", reply_parameters="{")
    assert broken.description == "Bad Request: can't parse reply parameters JSON object"


async def test_delete_message_deletes_once_within_48_hours(fake: FakeBotApi, bot: Bot) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")  # message 1
    sent = await bot.ok("sendMessage", chat_id=USER, text="oops")
    assert await bot.ok("deleteMessage", chat_id=USER, message_id=sent["message_id"]) is True
    again = await bot.json("deleteMessage", chat_id=USER, message_id=sent["message_id"])
    assert again.description == "Bad Request: message to delete not found"
    assert len(fake.sent_messages(TOKEN)) == 1  # the record of what was sent stays
    for params, description in [
        ({"message_id": 1}, "chat identifier is not specified"),
        ({"chat_id": USER}, "message identifier is not specified"),
        ({"chat_id": USER + 1, "message_id": 1}, "chat not found"),
    ]:
        reply = await bot.json("deleteMessage", **params)
        assert reply.description == f"Bad Request: {description}"
    # The user's own message, once older than 48 hours, can no longer be deleted.
    fake._bots[TOKEN].messages[(USER, 1)]["date"] -= 48 * 3600 + 1
    old = await bot.json("deleteMessage", chat_id=USER, message_id=1)
    assert old.description == "Bad Request: message can't be deleted"


# --------------------------------------------------------------------- the chatting user


async def test_a_user_message_arrives_through_get_updates_with_its_bot_command(
    fake: FakeBotApi, bot: Bot
) -> None:
    update_id = await fake.send_user_message(TOKEN, USER, "/start ref_42", first_name="Alice")
    [update] = await next_updates(bot)
    assert update["update_id"] == update_id
    message = update["message"]
    assert (message["message_id"], message["text"]) == (1, "/start ref_42")
    assert message["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]
    assert message["from"] == {
        "id": USER,
        "is_bot": False,
        "first_name": "Alice",
        "username": f"user{USER}",
        "language_code": "en",
    }
    assert message["chat"] == {
        "id": USER,
        "first_name": "Alice",
        "username": f"user{USER}",
        "type": "private",
    }


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ("hello", None),
        ("/buy@portex_test_bot 5", [(0, 20)]),
        ("see /help or /about", [(4, 5), (13, 6)]),
        ("😀 /go", [(3, 3)]),  # offsets count UTF-16 code units: the emoji is two
        ("a/b and /x/y", None),  # glued to other characters: no command
    ],
)
async def test_bot_command_entities_follow_telegram(
    fake: FakeBotApi, bot: Bot, text: str, entities: list[tuple[int, int]] | None
) -> None:
    await fake.send_user_message(TOKEN, USER, text)
    [update] = await next_updates(bot)
    found = update["message"].get("entities")
    if entities is None:
        assert found is None
    else:
        assert found == [
            {"offset": offset, "length": length, "type": "bot_command"}
            for offset, length in entities
        ]


async def test_a_user_message_goes_to_the_webhook_and_respects_allowed_updates(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    await bot.ok("setWebhook", url=receiver.url)
    update_id = await fake.send_user_message(TOKEN, USER, "/start")
    _, update = await receiver.next_post()
    assert update["update_id"] == update_id and update["message"]["text"] == "/start"
    await bot.ok("setWebhook", url=receiver.url, allowed_updates=["pre_checkout_query"])
    assert await fake.send_user_message(TOKEN, USER, "ignored") is None


async def test_send_user_message_refuses_what_no_user_can_send(fake: FakeBotApi) -> None:
    for text in ("", "   ", "a" * 4097):
        with pytest.raises(ValueError):
            await fake.send_user_message(TOKEN, USER, text)
    with pytest.raises(ValueError):
        await fake.send_user_message(TOKEN, 0, "hi")
    with pytest.raises(LookupError):
        await fake.send_user_message(OTHER_TOKEN, USER, "hi")


async def test_a_pressed_button_is_a_callback_query_answered_once(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    keyboard = {"inline_keyboard": [[{"text": "Buy", "callback_data": "buy:1"}]]}
    sent = await bot.ok("sendMessage", chat_id=USER, text="Pick", reply_markup=keyboard)
    [first] = await next_updates(bot)
    with pytest.raises(ValueError):
        await fake.send_callback_query(TOKEN, USER, sent["message_id"], "sell:1")
    await fake.send_callback_query(TOKEN, USER, sent["message_id"], "buy:1")
    [update] = await next_updates(bot, first["update_id"] + 1)
    query = update["callback_query"]
    assert (query["data"], query["from"]["id"], query["message"]["message_id"]) == (
        "buy:1",
        USER,
        sent["message_id"],
    )
    assert await bot.ok("answerCallbackQuery", callback_query_id=query["id"], text="Done") is True
    too_old = "Bad Request: query is too old and response timeout expired or query ID is invalid"
    again = await bot.json("answerCallbackQuery", callback_query_id=query["id"])
    unknown = await bot.json("answerCallbackQuery", callback_query_id="123")
    assert again.description == unknown.description == too_old


# ----------------------------------------------------------------------------- files


BINARY = bytes(range(256)) * 4 + b"\x00\x00end\r\n--boundary--\x00"


async def test_an_uploaded_document_round_trips_through_get_file_and_the_file_url(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "send me the report")
    reply = await bot.multipart(
        "sendDocument",
        {"document": ("report.pdf", BINARY)},
        chat_id=str(USER),
        caption="Your report",
    )
    message = reply.result
    document = message["document"]
    assert message["caption"] == "Your report"
    # The MIME type comes from the file name, as Telegram derives it.
    assert (document["file_name"], document["mime_type"], document["file_size"]) == (
        "report.pdf",
        "application/pdf",
        len(BINARY),
    )
    assert document["file_id"] != document["file_unique_id"]
    assert fake.uploaded_file(document["file_id"]) == BINARY
    file = await bot.ok("getFile", file_id=document["file_id"])
    assert file == {
        "file_id": document["file_id"],
        "file_unique_id": document["file_unique_id"],
        "file_size": len(BINARY),
        "file_path": "documents/file_0.pdf",
    }
    assert await bot.download(file["file_path"]) == (200, BINARY)
    # The call is recorded with the file as it came.
    [call] = fake.calls_for("sendDocument")
    upload = call.params["document"]
    assert isinstance(upload, UploadedFile)
    assert (upload.filename, upload.data) == ("report.pdf", BINARY)
    assert repr(BINARY[:3])[2:-1] not in repr(call)  # the bytes stay out of reprs


async def test_an_attach_reference_names_the_file_part(fake: FakeBotApi, bot: Bot) -> None:
    # aiogram's way: document="attach://<random name>" plus a file part of that name.
    await fake.send_user_message(TOKEN, USER, "hi")
    reply = await bot.multipart(
        "sendDocument", {"f0x": ("data.bin", BINARY)}, chat_id=str(USER), document="attach://f0x"
    )
    document = reply.result["document"]
    assert (document["file_name"], document["mime_type"]) == (
        "data.bin",
        "application/octet-stream",
    )
    assert fake.uploaded_file(document["file_id"]) == BINARY
    missing = await bot.multipart(
        "sendDocument", {"f0x": ("data.bin", BINARY)}, chat_id=str(USER), document="attach://f1"
    )
    assert missing.description == "Bad Request: there is no document in the request"


async def test_a_file_id_resends_the_same_file_but_only_for_its_bot(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    first = await bot.multipart("sendDocument", {"document": ("a.txt", b"abc")}, chat_id=str(USER))
    file_id = first.result["document"]["file_id"]
    again = await bot.ok("sendDocument", chat_id=USER, document=file_id)
    assert again["document"] == first.result["document"]
    fake.add_bot(OTHER_TOKEN)
    await fake.send_user_message(OTHER_TOKEN, USER, "hi")
    other = Bot(http, fake.base_url, OTHER_TOKEN)
    foreign = await other.json("sendDocument", chat_id=USER, document=file_id)
    assert foreign.description == "Bad Request: wrong file identifier/HTTP URL specified"
    assert (
        await other.json("getFile", file_id=file_id)
    ).description == "Bad Request: invalid file_id"


async def test_a_document_by_url_is_only_recorded(fake: FakeBotApi, bot: Bot) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    url = "https://example.com/files/Price%20list.pdf"
    document = (await bot.ok("sendDocument", chat_id=USER, document=url))["document"]
    assert (document["file_name"], document["mime_type"]) == ("Price list.pdf", "application/pdf")
    assert "file_size" not in document
    # The fake never fetched it: no size, no file_path, no bytes.
    file = await bot.ok("getFile", file_id=document["file_id"])
    assert set(file) == {"file_id", "file_unique_id"}
    with pytest.raises(LookupError):
        fake.uploaded_file(document["file_id"])


@pytest.mark.parametrize(
    ("files", "params", "description"),
    [
        pytest.param({}, {}, "there is no document in the request", id="no-document"),
        pytest.param({"document": ("e.txt", b"")}, {}, "file must be non-empty", id="empty"),
        pytest.param(
            {"document": ("a.txt", b"a")},
            {"caption": "c" * 1025},
            "message caption is too long",
            id="long-caption",
        ),
        pytest.param(
            {}, {"document": "BQACnope"}, "wrong file identifier/HTTP URL specified", id="bad-id"
        ),
        pytest.param(
            {"document": ("a.txt", b"a")}, {"chat_id": ""}, "chat_id is empty", id="no-chat"
        ),
    ],
)
async def test_send_document_refuses_what_telegram_refuses(
    fake: FakeBotApi,
    bot: Bot,
    files: dict[str, tuple[str, bytes]],
    params: dict[str, str],
    description: str,
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    reply = await bot.multipart("sendDocument", files, **{"chat_id": str(USER), **params})
    assert (reply.status, reply.description) == (400, f"Bad Request: {description}")
    assert fake.sent_messages(TOKEN) == []


async def test_an_upload_over_50_mb_is_413_request_entity_too_large(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    reply = await bot.multipart(
        "sendDocument", {"document": ("big.bin", bytes(MAX_UPLOAD_SIZE + 1))}, chat_id=str(USER)
    )
    assert (reply.status, reply.body) == (
        413,
        {"ok": False, "error_code": 413, "description": "Request Entity Too Large"},
    )
    assert fake.sent_messages(TOKEN) == []


async def test_get_file_refuses_files_over_20_mb_and_unknown_ids(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    big = await bot.multipart(
        "sendDocument", {"document": ("big.bin", bytes(MAX_DOWNLOAD_SIZE + 1))}, chat_id=str(USER)
    )
    too_big = await bot.json("getFile", file_id=big.result["document"]["file_id"])
    assert too_big.description == "Bad Request: file is too big"
    assert (await bot.json("getFile")).description == "Bad Request: file_id not specified"
    assert (await bot.json("getFile", file_id="x")).description == "Bad Request: invalid file_id"


async def test_the_file_url_serves_only_known_paths_to_their_bot(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "hi")
    sent = await bot.multipart("sendDocument", {"document": ("a.txt", b"abc")}, chat_id=str(USER))
    file_id = sent.result["document"]["file_id"]
    assert (await bot.download("documents/file_0.txt"))[0] == 404  # no getFile yet
    path = (await bot.ok("getFile", file_id=file_id))["file_path"]
    assert await bot.download(path) == (200, b"abc")
    assert await bot.download(f"test/{path}") == (200, b"abc")  # the test environment's URL
    assert (await bot.download("documents/file_9.txt"))[0] == 404
    fake.add_bot(OTHER_TOKEN)
    assert (await Bot(http, fake.base_url, OTHER_TOKEN).download(path))[0] == 404
    assert (await Bot(http, fake.base_url, "1:" + "z" * 35).download(path))[0] == 401


# ---------------------------------------------------------------------------- sendInvoice


async def send_invoice(bot: Bot, **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = await bot.ok("sendInvoice", **invoice(chat_id=USER, **overrides))
    return message


async def test_send_invoice_sends_an_invoice_message_payable_once(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "/buy")
    [hello] = await next_updates(bot)
    await bot.ok("getUpdates", offset=hello["update_id"] + 1)
    message = await send_invoice(bot, start_parameter="book")
    assert message["invoice"] == {
        "title": "Book",
        "description": "A book of magic",
        "start_parameter": "book",
        "currency": "XTR",
        "total_amount": 5,
    }
    assert message["from"]["is_bot"] is True and message["chat"]["id"] == USER
    [stored] = fake.invoices
    assert (stored.link, stored.chat_id, stored.message_id, stored.payload) == (
        "",
        USER,
        message["message_id"],
        "order-1",
    )

    outcome, query = await asyncio.gather(
        fake.pay_sent_invoice(TOKEN, USER, message["message_id"]),
        answer_next_pre_checkout(bot),
    )
    assert outcome.approved and outcome.charge_id is not None
    assert (query["from"]["id"], query["total_amount"], query["invoice_payload"]) == (
        USER,
        5,
        "order-1",
    )
    [paid] = await next_updates(bot)
    assert paid["message"]["successful_payment"]["telegram_payment_charge_id"] == outcome.charge_id
    [charge] = fake.charges
    assert (charge.user_id, charge.invoice_link, charge.invoice_payload) == (USER, "", "order-1")
    # Paid: the message now shows a receipt, not a Pay button.
    with pytest.raises(ValueError):
        await fake.pay_sent_invoice(TOKEN, USER, message["message_id"])
    with pytest.raises(LookupError):
        await fake.pay_sent_invoice(TOKEN, USER, message["message_id"] + 1)


async def test_a_declined_sent_invoice_stays_payable(fake: FakeBotApi, bot: Bot) -> None:
    await fake.send_user_message(TOKEN, USER, "/buy")
    [hello] = await next_updates(bot)
    await bot.ok("getUpdates", offset=hello["update_id"] + 1)
    message_id = (await send_invoice(bot))["message_id"]
    declined, _ = await asyncio.gather(
        fake.pay_sent_invoice(TOKEN, USER, message_id),
        answer_next_pre_checkout(bot, ok=False, error_message="Sold out"),
    )
    assert not declined.approved and fake.charges == []
    approved, _ = await asyncio.gather(
        fake.pay_sent_invoice(TOKEN, USER, message_id), answer_next_pre_checkout(bot)
    )
    assert approved.approved


@pytest.mark.parametrize(
    ("overrides", "description"),
    [
        ({"title": "a" * 33}, "invoice title must be 1-32 characters long"),
        ({"currency": "USD"}, "currency must be XTR for payments in Telegram Stars"),
        (
            {"provider_token": "284685063:TEST:abc"},
            "provider_token must be empty for payments in Telegram Stars",
        ),
        (
            {"prices": [{"label": "a", "amount": 1}, {"label": "b", "amount": 1}]},
            "prices must contain exactly one item for payments in Telegram Stars",
        ),
        ({"need_email": True}, "need_email is not supported for payments in Telegram Stars"),
        ({"payload": None}, 'parameter "payload" is required'),
        (
            {"subscription_period": 2592000},
            "subscription_period is not supported by sendInvoice; use createInvoiceLink",
        ),
        # The invoice is checked before the chat, as in the reference server.
        (
            {"currency": "USD", "chat_id": None},
            "currency must be XTR for payments in Telegram Stars",
        ),
        ({"chat_id": None}, "chat_id is empty"),
        ({"chat_id": USER + 1}, "chat not found"),
        (
            {"reply_markup": {"inline_keyboard": [[{"text": "Info", "url": "https://a.b"}]]}},
            "the first button of an invoice's keyboard must be a Pay button",
        ),
    ],
)
async def test_send_invoice_checks_the_invoice_as_create_invoice_link_does_and_the_chat(
    fake: FakeBotApi, bot: Bot, overrides: dict[str, Any], description: str
) -> None:
    await fake.send_user_message(TOKEN, USER, "/buy")
    reply = await bot.json("sendInvoice", **invoice(**{"chat_id": USER, **overrides}))
    assert (reply.status, reply.description) == (400, f"Bad Request: {description}")
    assert fake.invoices == [] and fake.sent_messages(TOKEN) == []


async def test_an_invoice_keyboard_may_start_with_the_pay_button(
    fake: FakeBotApi, bot: Bot
) -> None:
    await fake.send_user_message(TOKEN, USER, "/buy")
    keyboard = {
        "inline_keyboard": [
            [{"text": "Pay ⭐5", "pay": True}],
            [{"text": "?", "url": "https://a.b"}],
        ]
    }
    assert (await send_invoice(bot, reply_markup=keyboard))["reply_markup"] == keyboard


# ------------------------------------------------------------------------------ commands


async def test_commands_are_kept_per_scope_and_language(bot: Bot) -> None:
    commands = [
        {"command": "start", "description": "Start"},
        {"command": "buy_1", "description": "Buy"},
    ]
    assert await bot.ok("setMyCommands", commands=commands) is True
    private = {"type": "all_private_chats"}
    await bot.ok("setMyCommands", commands=commands[:1], scope=private, language_code="de")
    assert await bot.ok("getMyCommands") == commands
    assert await bot.ok("getMyCommands", scope=private) == []
    assert await bot.ok("getMyCommands", scope=private, language_code="de") == commands[:1]
    assert await bot.ok("deleteMyCommands") is True
    assert await bot.ok("getMyCommands") == []


@pytest.mark.parametrize(
    ("commands", "description"),
    [
        ([{"command": "Start", "description": "x"}], "BOT_COMMAND_INVALID"),
        ([{"command": "/start", "description": "x"}], "BOT_COMMAND_INVALID"),
        ([{"command": "a" * 33, "description": "x"}], "BOT_COMMAND_INVALID"),
        ([{"command": "start", "description": ""}], "BOT_COMMAND_DESCRIPTION_INVALID"),
        ([{"command": "start", "description": "x" * 257}], "BOT_COMMAND_DESCRIPTION_INVALID"),
        ([{"command": f"c{n}", "description": "x"} for n in range(101)], "BOT_COMMANDS_TOO_MUCH"),
        ([{"command": "start"}], "can't parse BotCommand: Can't find field \"description\""),
        ("[", "can't parse commands JSON object"),
        ({"command": "start", "description": "x"}, "expected an Array of BotCommand"),
    ],
)
async def test_set_my_commands_refuses_what_telegram_refuses(
    bot: Bot, commands: Any, description: str
) -> None:
    reply = await bot.json("setMyCommands", commands=commands)
    assert (reply.status, reply.description) == (400, f"Bad Request: {description}")
    assert await bot.ok("getMyCommands") == []


# -------------------------------------------------------------- a real client: aiogram


async def test_aiogram_talks_to_the_fake_as_to_telegram(fake: FakeBotApi) -> None:
    """aiogram's own request building (form bodies, attach:// uploads, the file URL) and its
    strict response models are an independent check of the wire format."""
    # Imported here: aiogram takes seconds to import.
    from aiogram import Bot as AiogramBot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import (
        BotCommand,
        BufferedInputFile,
        InlineKeyboardButton,
        InlineKeyboardMarkup,
        LabeledPrice,
    )

    session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
    client = AiogramBot(TOKEN, session=session)
    try:
        await fake.send_user_message(TOKEN, USER, "/start")
        [update] = await client.get_updates()
        assert update.message is not None and update.message.text == "/start"
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(text="Go", callback_data="go")]]
        )
        sent = await client.send_message(USER, "Hello", reply_markup=keyboard)
        assert (sent.message_id, sent.chat.id, sent.text) == (2, USER, "Hello")
        assert sent.from_user is not None and sent.from_user.is_bot

        document = await client.send_document(
            USER, BufferedInputFile(BINARY, filename="blob.bin"), caption="data"
        )
        assert document.document is not None and document.document.file_size == len(BINARY)
        file = await client.get_file(document.document.file_id)
        assert file.file_path is not None
        downloaded = await client.download_file(file.file_path)
        assert downloaded is not None and downloaded.read() == BINARY

        invoice_message = await client.send_invoice(
            USER,
            "Book",
            "A book",
            "order-9",
            currency="XTR",
            prices=[LabeledPrice(label="x", amount=3)],
        )
        assert invoice_message.invoice is not None
        assert invoice_message.invoice.total_amount == 3

        await fake.send_callback_query(TOKEN, USER, sent.message_id, "go")
        [pressed] = await client.get_updates(offset=update.update_id + 1)
        query = pressed.callback_query
        assert query is not None and query.data == "go" and query.from_user.id == USER
        assert await client.answer_callback_query(query.id, text="Going") is True

        assert await client.delete_message(USER, sent.message_id) is True
        assert await client.set_my_commands([BotCommand(command="start", description="Start")])
        assert [c.command for c in await client.get_my_commands()] == ["start"]
    finally:
        await session.close()
    assert [m["message_id"] for m in fake.sent_messages(TOKEN, USER)] == [2, 3, 4]


# --------------------------------------------------------------------- the control API


async def test_the_control_api_drives_the_fake_from_another_process(
    fake: FakeBotApi, http: aiohttp.ClientSession
) -> None:
    base = fake.base_url

    async def control(method: str, path: str, body: Any = None) -> Reply:
        async with http.request(method, f"{base}/_fake/{path}", json=body) as response:
            return Reply(response.status, await response.json())

    assert (await control("POST", "bots", {"token": OTHER_TOKEN, "username": "b"})).result == 654321
    other = Bot(http, base, OTHER_TOKEN)
    assert (await other.ok("getMe"))["username"] == "b"

    fail = {"method": "getMe", "error_code": 429, "description": "Too Many Requests: retry after 3"}
    await control("POST", "fail", {**fail, "retry_after": 3, "times": 1})
    assert (await other.json("getMe")).body["parameters"] == {"retry_after": 3}
    await control("POST", "drop", {"method": "getMe"})
    await control("POST", "delay", {"method": "getMe", "seconds": 5})
    await control("POST", "clear")
    assert (await other.json("getMe")).status == 200  # no drop, no delay left

    calls = (await control("GET", "calls?method=getme")).result
    assert [c["bot_id"] for c in calls] == [654321, 654321, 654321]
    assert all("token" not in c for c in calls)

    link = await create_link(other)
    [stored] = (await control("GET", "invoices")).result
    assert stored["link"] == link and stored["amount"] == 5

    paying = control("POST", "pay", {"link": link, "user_id": USER, "answer_timeout": 5})
    reply, _ = await asyncio.gather(paying, answer_next_pre_checkout(other))
    outcome = reply.result
    assert outcome["approved"] is True and outcome["charge_id"].startswith("stx")
    assert [c["user_id"] for c in (await control("GET", "charges")).result] == [USER]

    assert (
        await control("POST", "pay", {"link": "https://t.me/$nope", "user_id": 1})
    ).status == 404
    assert (await control("POST", "pay", {"link": link})).status == 400


async def test_the_control_api_chats_and_pays_sent_invoices(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    base = fake.base_url

    async def control(method: str, path: str, body: Any = None) -> Reply:
        async with http.request(method, f"{base}/_fake/{path}", json=body) as response:
            return Reply(response.status, await response.json())

    message = {"token": TOKEN, "user_id": USER, "text": "/buy", "first_name": "Bob"}
    update_id = (await control("POST", "user_message", message)).result
    [update] = await next_updates(bot)
    assert update["update_id"] == update_id and update["message"]["from"]["first_name"] == "Bob"
    await bot.ok("getUpdates", offset=update_id + 1)
    invoice_message = await send_invoice(bot)
    sent = (await control("GET", f"sent_messages?bot_id=123456&chat_id={USER}")).result
    assert [m["message_id"] for m in sent] == [invoice_message["message_id"]]
    assert (await control("GET", "sent_messages?bot_id=1")).status == 400

    pay = {"token": TOKEN, "chat_id": USER, "message_id": invoice_message["message_id"]}
    reply, _ = await asyncio.gather(
        control("POST", "pay", {**pay, "answer_timeout": 5}), answer_next_pre_checkout(bot)
    )
    assert reply.result["approved"] is True
    assert (await control("POST", "pay", pay)).status == 400  # paid already
    assert (await control("POST", "pay", {**pay, "message_id": 99})).status == 404

    await bot.multipart("sendDocument", {"document": ("a.txt", b"abc")}, chat_id=str(USER))
    [call] = (await control("GET", "calls?method=sendDocument")).result
    assert call["params"]["document"] == {
        "filename": "a.txt",
        "content_type": "application/octet-stream",
        "size": 3,
    }


async def test_the_control_api_can_inject_and_redeliver_updates(
    fake: FakeBotApi, http: aiohttp.ClientSession, bot: Bot
) -> None:
    async with http.post(
        f"{fake.base_url}/_fake/deliver",
        json={"token": TOKEN, "update": {"message": {"text": "x"}}},
    ) as response:
        update_id = (await response.json())["result"]
    async with http.post(
        f"{fake.base_url}/_fake/redeliver", json={"update_id": update_id}
    ) as response:
        assert response.status == 200
    assert [u["update_id"] for u in await bot.ok("getUpdates")] == [update_id, update_id]


# ---------------------------------------------------------------------- odds and ends


async def test_reset_forgets_everything_but_the_bots(fake: FakeBotApi, bot: Bot) -> None:
    await create_link(bot)
    await fake.deliver_update(TOKEN, {"message": {"text": "x"}})
    await fake.send_user_message(TOKEN, USER, "hi")
    sent = await bot.multipart("sendDocument", {"document": ("a.txt", b"a")}, chat_id=str(USER))
    await bot.ok("setMyCommands", commands=[{"command": "start", "description": "Start"}])
    fake.fail_next("getUpdates", error_code=500, description="x")
    fake.reset()
    assert (fake.calls, fake.invoices, fake.charges) == ([], [], [])
    assert await bot.ok("getUpdates") == []
    assert fake.sent_messages(TOKEN) == [] and await bot.ok("getMyCommands") == []
    with pytest.raises(LookupError):
        fake.uploaded_file(sent.result["document"]["file_id"])
    # The chat is forgotten too: the user has to write again.
    assert (await bot.json("sendMessage", chat_id=USER, text="x")).status == 400
    await fake.send_user_message(TOKEN, USER, "back")
    # Message ids keep counting, like update ids.
    assert (await bot.ok("sendMessage", chat_id=USER, text="x"))["message_id"] == 4


async def test_a_forged_update_from_a_user_opens_the_chat(fake: FakeBotApi, bot: Bot) -> None:
    await fake.deliver_update(TOKEN, {"message": {"text": "x", "from": {"id": USER + 7}}})
    assert (await bot.ok("sendMessage", chat_id=USER + 7, text="hi"))["message_id"] == 1


async def test_bot_tokens_never_reach_the_logs(
    fake: FakeBotApi, bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await bot.ok("setWebhook", url=f"http://127.0.0.1:1/{TOKEN}")  # nothing listens on port 1
    await fake.deliver_update(TOKEN, {"message": {"text": "x"}})
    await bot.json("sendFax")
    fake.drop_connection("getMe")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await bot.json("getMe")
    await fake.drain(TOKEN)  # every delivery attempt has failed (and been logged) by now
    assert "webhook delivery" in caplog.text
    secret = TOKEN.split(":", 1)[1]
    assert secret not in caplog.text
    # RecordedCall keeps the token out of its repr (and so out of assertion messages).
    assert secret not in repr(fake.calls_for("getMe"))


async def test_the_cli_announces_its_address_and_stops_on_sigterm(
    http: aiohttp.ClientSession,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "portex_pay_devtools.fake_bot_api",
        "--port",
        "0",
        "--accept-any-token",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        assert line.startswith("fake Bot API listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        assert (await Bot(http, base, "9:" + "z" * 30).ok("getMe"))["id"] == 9
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ------------------------------------------------------------------- Stars subscriptions

MONTH = 2_592_000


async def subscribe(fake: FakeBotApi, bot: Bot, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """Pays a new subscription link (5 Stars a month) as USER; returns the first charge id and
    the successful_payment update (confirmed: nothing stays queued)."""
    link = await create_link(bot, subscription_period=MONTH, **overrides)
    outcome, _ = await pay_with_bot(fake, bot, link)
    [paid] = await next_updates(bot)
    assert await bot.ok("getUpdates", offset=paid["update_id"] + 1) == []
    assert outcome.charge_id is not None
    return outcome.charge_id, paid


async def test_a_subscription_link_remembers_its_period_and_only_create_invoice_link_has_one(
    fake: FakeBotApi, bot: Bot
) -> None:
    await create_link(bot)
    await create_link(bot, subscription_period=MONTH)
    assert [i.subscription_period for i in fake.invoices] == [None, MONTH]
    sent = await bot.json("sendInvoice", chat_id=USER, subscription_period=MONTH, **invoice())
    assert sent.status == 400 and "subscription_period" in sent.description
    as_text = await bot.form(
        "createInvoiceLink", subscription_period="2592001", **{**invoice(), "prices": "[]"}
    )
    assert as_text.status == 400


async def test_the_first_payment_is_recurring_and_first_and_starts_a_subscription(
    fake: FakeBotApi, bot: Bot
) -> None:
    before = int(time.time())
    charge_id, paid = await subscribe(fake, bot)
    payment = paid["message"]["successful_payment"]
    expires = payment.pop("subscription_expiration_date")
    assert before + MONTH <= expires <= int(time.time()) + MONTH
    assert payment == {
        "currency": "XTR",
        "total_amount": 5,
        "invoice_payload": "order-1",
        "telegram_payment_charge_id": charge_id,
        "provider_payment_charge_id": "",
        "is_recurring": True,
        "is_first_recurring": True,
    }
    [subscription] = fake.subscriptions(TOKEN)
    assert (subscription.telegram_payment_charge_id, subscription.user_id) == (charge_id, USER)
    assert (subscription.expiration_date, subscription.charge_ids) == (expires, [charge_id])
    [transaction] = (await bot.ok("getStarTransactions"))["transactions"]
    assert transaction["id"] == charge_id
    assert transaction["source"]["subscription_period"] == MONTH
    assert transaction["source"]["invoice_payload"] == "order-1"


async def test_two_renewals_charge_again_with_the_first_payload_and_later_expirations(
    fake: FakeBotApi, bot: Bot
) -> None:
    first, paid = await subscribe(fake, bot)
    expires = paid["message"]["successful_payment"]["subscription_expiration_date"]
    renewals = [await fake.renew_subscription(TOKEN, first) for _ in range(2)]
    assert [r.charged for r in renewals] == [True, True]
    assert [r.subscription_expiration_date for r in renewals] == [
        expires + MONTH,
        expires + 2 * MONTH,
    ]
    updates = await next_updates(bot)
    assert [u["update_id"] for u in updates] == [r.update_id for r in renewals]
    payments = [u["message"]["successful_payment"] for u in updates]
    charge_ids = [p["telegram_payment_charge_id"] for p in payments]
    assert charge_ids == [r.telegram_payment_charge_id for r in renewals]
    assert len({first, *charge_ids}) == 3
    for payment, renewal in zip(payments, renewals, strict=True):
        assert payment["is_recurring"] is True and "is_first_recurring" not in payment
        assert payment["invoice_payload"] == "order-1" and payment["total_amount"] == 5
        assert payment["subscription_expiration_date"] == renewal.subscription_expiration_date
    transactions = (await bot.ok("getStarTransactions"))["transactions"]
    assert [t["id"] for t in transactions] == [first, *charge_ids]
    assert all(t["source"]["subscription_period"] == MONTH for t in transactions)
    assert (await bot.ok("getMyStarBalance"))["amount"] == 15
    assert fake.subscriptions(TOKEN)[0].charge_ids == [first, *charge_ids]


async def test_a_renewal_can_be_delivered_twice_with_the_same_update(
    fake: FakeBotApi, bot: Bot
) -> None:
    first, _ = await subscribe(fake, bot)
    renewal = await fake.renew_subscription(TOKEN, first)
    assert renewal.update_id is not None
    await fake.redeliver(renewal.update_id, token=TOKEN)
    twice = await next_updates(bot)
    assert [u["update_id"] for u in twice] == [renewal.update_id] * 2
    assert twice[0] == twice[1]
    assert len((await bot.ok("getStarTransactions"))["transactions"]) == 2  # charged once


async def test_a_renewal_the_users_stars_cannot_pay_fails_without_a_charge(
    fake: FakeBotApi, bot: Bot
) -> None:
    first, paid = await subscribe(fake, bot)
    expires = paid["message"]["successful_payment"]["subscription_expiration_date"]
    fake.set_user_stars(USER, 4)
    failed = await fake.renew_subscription(TOKEN, first)
    assert (failed.charged, failed.telegram_payment_charge_id) == (False, None)
    assert failed.subscription_expiration_date == expires
    [update] = await next_updates(bot)
    assert update["update_id"] == failed.update_id
    subscription = update["subscription"]
    assert subscription["user"]["id"] == USER and subscription["user"]["is_bot"] is False
    assert (subscription["invoice_payload"], subscription["state"]) == ("order-1", "failed")
    assert set(subscription) == {"user", "invoice_payload", "state"}
    assert len(fake.charges) == 1
    assert len((await bot.ok("getStarTransactions"))["transactions"]) == 1
    fake.set_user_stars(USER, 7)  # topped up: the next attempt pays and spends the Stars
    assert (await fake.renew_subscription(TOKEN, first)).charged is True
    assert fake.user_stars(USER) == 2


async def test_the_user_cancels_and_re_enables_with_subscription_updates_on_the_webhook(
    fake: FakeBotApi, bot: Bot, receiver: Receiver
) -> None:
    first, _ = await subscribe(fake, bot)
    await bot.ok("setWebhook", url=receiver.url)
    canceled = await fake.cancel_subscription(TOKEN, first)
    _, update = await receiver.next_post()
    assert (update["update_id"], update["subscription"]["state"]) == (canceled, "canceled")
    assert await fake.cancel_subscription(TOKEN, first) is None  # already canceled: no update
    with pytest.raises(ValueError, match="canceled"):
        await fake.renew_subscription(TOKEN, first)
    active = await fake.reactivate_subscription(TOKEN, first)
    _, update = await receiver.next_post()
    assert (update["update_id"], update["subscription"]["state"]) == (active, "active")
    assert (await fake.renew_subscription(TOKEN, first)).charged is True


async def test_edit_user_star_subscription_cancels_and_lifts_the_bots_cancellation(
    fake: FakeBotApi, bot: Bot
) -> None:
    first, _ = await subscribe(fake, bot)
    cancel = {"user_id": USER, "telegram_payment_charge_id": first, "is_canceled": True}
    assert await bot.ok("editUserStarSubscription", **cancel) is True
    assert await bot.ok("editUserStarSubscription", **cancel) is True  # idempotent
    assert fake.subscriptions(TOKEN)[0].canceled_by_bot is True
    with pytest.raises(ValueError, match="canceled"):
        await fake.renew_subscription(TOKEN, first)
    forced = await fake.renew_subscription(TOKEN, first, force=True)  # a charge under way
    assert forced.charged is True
    await fake.cancel_subscription(TOKEN, first)  # the user cancels too
    with pytest.raises(ValueError, match="bot canceled"):
        await fake.reactivate_subscription(TOKEN, first)
    resume = {**cancel, "is_canceled": False}
    assert await bot.ok("editUserStarSubscription", **resume) is True
    assert await bot.ok("editUserStarSubscription", **resume) is True
    # The bot only lifted its own cancellation; the user's stands until they re-enable it.
    with pytest.raises(ValueError, match="canceled"):
        await fake.renew_subscription(TOKEN, first)
    await fake.reactivate_subscription(TOKEN, first)
    assert (await fake.renew_subscription(TOKEN, first)).charged is True
    assert len(fake.calls_for("editUserStarSubscription")) == 4
    assert [u.get("subscription", {}).get("state") for u in await next_updates(bot)] == [
        None,  # the forced renewal's successful_payment
        "canceled",
        "active",
        None,
    ]


async def test_edit_user_star_subscription_refuses_unknown_charges_and_other_users(
    fake: FakeBotApi, bot: Bot
) -> None:
    first, _ = await subscribe(fake, bot)
    renewal = await fake.renew_subscription(TOKEN, first)
    one_off, _ = await pay_with_bot(fake, bot, await create_link(bot))
    for charge_id in ("stx-nope", renewal.telegram_payment_charge_id, one_off.charge_id):
        reply = await bot.json(
            "editUserStarSubscription",
            user_id=USER,
            telegram_payment_charge_id=charge_id,
            is_canceled=True,
        )
        assert (reply.status, reply.description) == (400, "Bad Request: CHARGE_ID_INVALID")
    other = await bot.json(
        "editUserStarSubscription",
        user_id=USER + 1,
        telegram_payment_charge_id=first,
        is_canceled=True,
    )
    assert (other.status, other.description) == (400, "Bad Request: USER_ID_INVALID")
    assert fake.subscriptions(TOKEN)[0].canceled is False


async def test_subscription_updates_follow_allowed_updates(fake: FakeBotApi, bot: Bot) -> None:
    first, _ = await subscribe(fake, bot)
    assert await bot.ok("getUpdates", allowed_updates=["message", "pre_checkout_query"]) == []
    assert await fake.cancel_subscription(TOKEN, first) is None  # never created
    assert await bot.ok("getUpdates") == []
    await bot.ok("getUpdates", allowed_updates=["subscription"])
    active = await fake.reactivate_subscription(TOKEN, first)
    assert active is not None
    [update] = await next_updates(bot)
    assert update["subscription"]["state"] == "active"
    renewal = await fake.renew_subscription(TOKEN, first)
    assert renewal.charged is True and renewal.update_id is None  # its message is left out


async def test_one_period_of_a_subscription_can_be_refunded(fake: FakeBotApi, bot: Bot) -> None:
    first, _ = await subscribe(fake, bot)
    renewal = await fake.renew_subscription(TOKEN, first)
    renewed = renewal.telegram_payment_charge_id
    assert renewed is not None
    refund = {"user_id": USER, "telegram_payment_charge_id": renewed}
    assert await bot.ok("refundStarPayment", **refund) is True
    again = await bot.json("refundStarPayment", **refund)
    assert (again.status, again.description) == (400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    *_, refunded = await next_updates(bot)
    assert refunded["message"]["refunded_payment"]["telegram_payment_charge_id"] == renewed
    transactions = (await bot.ok("getStarTransactions"))["transactions"]
    assert [(t["id"], "source" in t) for t in transactions] == [
        (first, True),
        (renewed, True),
        (renewed, False),
    ]
    assert transactions[-1]["receiver"]["subscription_period"] == MONTH
    assert (await bot.ok("getMyStarBalance"))["amount"] == 5
    charges = {c.telegram_payment_charge_id: c.refunded_at for c in fake.charges}
    assert charges[first] is None and charges[renewed] is not None


async def test_the_control_api_renews_fails_and_cancels_subscriptions(
    fake: FakeBotApi, bot: Bot, http: aiohttp.ClientSession
) -> None:
    first, _ = await subscribe(fake, bot)
    bot_id = TOKEN.split(":")[0]

    async def post(path: str, body: dict[str, Any]) -> Reply:
        async with http.post(f"{fake.base_url}/_fake/{path}", json=body) as response:
            return Reply(response.status, await response.json())

    charge = {"token": TOKEN, "telegram_payment_charge_id": first}
    renewal = (await post("subscriptions/renew", charge)).result
    assert renewal["charged"] is True and renewal["telegram_payment_charge_id"] != first
    assert (await post("user_stars", {"user_id": USER, "stars": 0})).result is True
    assert (await post("subscriptions/renew", charge)).result["charged"] is False
    assert isinstance((await post("subscriptions/cancel", charge)).result, int)
    refused = await post("subscriptions/renew", charge)
    assert refused.status == 400 and "canceled" in refused.description
    assert isinstance((await post("subscriptions/reactivate", charge)).result, int)
    unknown = await post("subscriptions/renew", {**charge, "telegram_payment_charge_id": "x"})
    assert unknown.status == 404
    async with http.get(f"{fake.base_url}/_fake/subscriptions?bot_id={bot_id}") as response:
        [listed] = (await response.json())["result"]
    assert listed["charge_ids"][0] == first and len(listed["charge_ids"]) == 2
    assert [u.get("subscription", {}).get("state") for u in await next_updates(bot)] == [
        None,
        "failed",
        "canceled",
        "active",
    ]
