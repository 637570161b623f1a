"""The Mini App edge (issue 8): the Portex JS SDK's JSON-over-HTTP calls, over real HTTP against a
running service, with Telegram played by the fake Bot API.

- The SDK's whole flow: saveTgUser -> createTgPayment -> the user pays -> getTgPayment, and the
  same order over gRPC (QueryOrder, ListEvents).
- Identity is the verified initData: tampered, forged, stale, future, missing, malformed or
  another bot's initData is 401 with its reason; Ed25519 third-party signatures with a configured
  key; a body `tg_use_id` that is not the verified user is 403.
- Owner-only reads, unknown applications, server-side prices (catalog and open pricing), browser
  callback URLs under the application's prefixes, CORS, rate limits, body limits and types,
  idempotent retries, reportInvoiceClosed, and numbers that stay JSON numbers.

Every refused request is shown to create nothing by counting the application's orders.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
import asyncpg
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.catalog import CatalogRepository, TelegramUserRepository
from portex_pay.app import PortexApp
from portex_pay.domain.catalog import CatalogItem, PricingMode
from portex_pay.domain.init_data import init_data_fields, sign_init_data, sign_init_data_ed25519
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, make_settings, new_bot_token
from tests.integration.helpers import pay_request

Order = payment_pb2.Order
USER = 4242
OTHER_USER = 5353
# The seed's PaymentOptions (../shared/seed/portex-sdk-payment.txt), as the SDK sends them.
SEED = {
    "tg_use_id": USER,
    "amount": 5,
    "label": "item",
    "title": "Book",
    "description": "Magic book",
    "payload": "your-payload",
    "photo_url": "https://your-photo-url.com",
}


def seed(user: int = USER, **changes: Any) -> dict[str, Any]:
    """The seed's PaymentOptions for `user`, with changes."""
    return {**SEED, "tg_use_id": user, **changes}


ITEM = CatalogItem(key="item", amount=5)  # the seed's item: no title of its own
PREFIX = "https://hooks.example.com/hooks/"
TEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TEST_KEY_HEX = TEST_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
NO_BODY = object()  # post() without a body (the SDK's init())

Reply = tuple[int, Any, Mapping[str, str]]


# --- helpers -------------------------------------------------------------------------------------


class Edge:
    """The SDK's side: POSTs to one service's /v1/ with X-App-Id and X-Tg-InitData."""

    def __init__(self, session: aiohttp.ClientSession, port: int, app_id: str | None) -> None:
        self.session = session
        self.port = port
        self.app_id = app_id

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/v1/{path}"

    async def post(
        self,
        path: str,
        body: object = NO_BODY,
        *,
        init_data: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """(status, the JSON body, the headers). `body` bytes (or an async iterator of them, sent
        chunked) go as they are; anything else as JSON."""
        sent = {"Content-Type": "application/json", "X-Tg-Platform": "ios", "X-Tg-Version": "8.0"}
        if self.app_id is not None:
            sent["X-App-Id"] = self.app_id
        if init_data is not None:
            sent["X-Tg-InitData"] = init_data
        sent.update(headers or {})
        data: Any = None
        if isinstance(body, bytes) or hasattr(body, "__aiter__"):
            data = body
        elif body is not NO_BODY:
            data = json.dumps(body).encode()
        async with self.session.post(self.url(path), data=data, headers=sent) as response:
            text = await response.text()
            return response.status, _json_or_text(text), response.headers

    async def options(self, path: str, headers: Mapping[str, str]) -> Reply:
        async with self.session.options(self.url(path), headers=headers) as response:
            text = await response.text()
            return response.status, _json_or_text(text), response.headers


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def user_json(user_id: int, **extra: Any) -> dict[str, Any]:
    return {"id": user_id, "first_name": f"User {user_id}", **extra}


def signed_init_data(
    bot_token: str,
    user_id: int,
    *,
    auth_date: datetime | None = None,
    query_id: str | None = "AAHdF6IQAAAAAN0XohDhrOrc",
    **user_extra: Any,
) -> str:
    fields = init_data_fields(
        user_json(user_id, **user_extra),
        auth_date=auth_date or datetime.now(UTC),
        query_id=query_id,
    )
    return sign_init_data(fields, bot_token=bot_token)


def init_data_pairs(init_data: str) -> dict[str, str]:
    return dict(parse_qsl(init_data, keep_blank_values=True, strict_parsing=True))


def encode_init_data(fields: Mapping[str, str]) -> str:
    """Re-encodes fields as Telegram does, without signing them again."""
    return urlencode(list(fields.items()), quote_via=quote, safe="")


@dataclass
class Shop:
    """One application seen through the edge of one service, with its users' initData."""

    app: TestApp
    bot_id: int
    edge: Edge
    pool: asyncpg.Pool

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self.app.id)

    def init_data(self, user: int = USER, **kwargs: Any) -> str:
        return signed_init_data(self.app.bot_token, user, **kwargs)

    async def call(
        self,
        path: str,
        body: object = NO_BODY,
        *,
        user: int = USER,
        init_data: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """A call by `user` (a fresh initData for them unless `init_data` is given)."""
        return await self.edge.post(
            path, body, init_data=init_data or self.init_data(user), headers=headers
        )

    async def pay(self, body: Mapping[str, Any], *, user: int = USER, **kwargs: Any) -> Reply:
        return await self.call("createTgPayment", dict(body), user=user, **kwargs)

    async def paid_id(self, body: Mapping[str, Any], *, user: int = USER, **kwargs: Any) -> int:
        """createTgPayment that must succeed; its tg_payment_id."""
        status, reply, _ = await self.pay(body, user=user, **kwargs)
        assert status == 200, reply
        tg_payment_id: int = reply["result"]["tg_payment_id"]
        return tg_payment_id

    async def pay_raw(self, raw: object, *, user: int = USER) -> Reply:
        """createTgPayment with `raw` (bytes or an async iterator of bytes) as the body."""
        return await self.call("createTgPayment", raw, user=user)

    async def get(self, tg_payment_id: object, *, user: int = USER) -> Reply:
        return await self.call("getTgPayment", {"tg_payment_id": tg_payment_id}, user=user)

    async def orders(self) -> int:
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM orders WHERE application_id = $1", self.id
        )
        return count

    def on(self, service: PortexApp) -> Shop:
        """The same application through another service's edge."""
        return replace(self, edge=Edge(self.edge.session, http_port(service), self.app.id))


MakeShop = Callable[..., Awaitable[Shop]]


def refused(reply: Reply, status: int, reason: str, field: str | None = None) -> None:
    """The SDK's error envelope with this status, reason (and field)."""
    got_status, body, _ = reply
    assert got_status == status, body
    assert isinstance(body, dict), body
    assert body["ok"] is False
    assert body["error_code"] == status
    assert body["reason"] == reason, body
    assert isinstance(body["description"], str) and body["description"]
    if field is not None:
        assert body.get("field") == field, body


def is_number(value: object) -> bool:
    return type(value) is int  # a JSON number that is whole: not a str, float or bool


async def query(stub: Any, app: TestApp, tg_payment_id: int) -> payment_pb2.Order:
    request = payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id)
    order: payment_pb2.Order = await stub.QueryOrder(request, metadata=app.metadata)
    return order


def http_port(service: PortexApp) -> int:
    assert service.http_port is not None, "the service is not started"
    return service.http_port


async def total_orders(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM orders")
    return count


async def start_own_service(
    database_url: str, fake_telegram: FakeBotApi, **overrides: object
) -> PortexApp:
    service = PortexApp(make_settings(database_url, fake_telegram.base_url, **overrides))
    await service.start()
    return service


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def make_shop(service: PortexApp, make_app: Any, http: aiohttp.ClientSession) -> MakeShop:
    """Applications (webhook mode, so payments flow) configured before the edge first sees them,
    so no cached copy of them predates their settings."""

    async def create(
        *,
        items: tuple[CatalogItem, ...] = (ITEM,),
        pricing: PricingMode | None = None,
        origins: list[str] | None = None,
        prefixes: list[str] | None = None,
    ) -> Shop:
        app: TestApp = await make_app(updates="webhook")
        application_id = uuid.UUID(app.id)
        for item in items:
            assert await CatalogRepository(service.pool).put(application_id, item)
        if pricing or origins is not None or prefixes is not None:
            updated = await ApplicationRepository(service.pool, DATA_KEYS).set_edge(
                application_id,
                pricing_mode=pricing,
                allowed_origins=origins,
                callback_prefixes=prefixes,
            )
            assert updated is not None
        bot_id = await service.pool.fetchval(
            "SELECT bot_id FROM applications WHERE id = $1", application_id
        )
        return Shop(app, bot_id, Edge(http, http_port(service), app.id), service.pool)

    return create


@pytest.fixture
async def shop(make_shop: MakeShop) -> Shop:
    return await make_shop()


@pytest.fixture(scope="module")
async def own_service(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    """A second replica on the same database: it trusts TEST_KEY's Ed25519 signatures, and its
    dedupe window is so long that no window boundary can fall inside a test (the retry tests
    would otherwise fail about once in thousands of runs)."""
    own = await start_own_service(
        database_url,
        fake_telegram,
        init_data_public_key=TEST_KEY_HEX,
        edge_dedupe_window=1e9,
    )
    try:
        yield own
    finally:
        await own.stop()


@pytest.fixture(scope="module")
async def limited_service(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    """A replica with tiny rate limits that practically never refill during a test."""
    own = await start_own_service(
        database_url,
        fake_telegram,
        edge_user_rate=0.01,
        edge_user_burst=3,
        edge_app_rate=0.01,
        edge_app_burst=6,
    )
    try:
        yield own
    finally:
        await own.stop()


# --- 1: the SDK's whole flow ---------------------------------------------------------------------


async def test_the_sdk_flow_init_pay_the_user_pays_query_order(
    shop: Shop, service: PortexApp, stub: Any, fake_telegram: FakeBotApi
) -> None:
    init_data = shop.init_data(
        USER,
        last_name="Lovelace",
        username="ada",
        language_code="en",
        is_premium=True,
        first_name="Ada",
    )
    # init()
    status, body, _ = await shop.edge.post("saveTgUser", init_data=init_data)
    assert status == 200, body
    assert body == {"ok": True, "result": {"tg_use_id": USER}}
    seen = await TelegramUserRepository(service.pool).get(shop.id, USER)
    assert seen is not None
    assert (seen.user.first_name, seen.user.last_name) == ("Ada", "Lovelace")
    assert (seen.user.username, seen.user.language_code) == ("ada", "en")
    assert seen.user.is_premium is True
    assert seen.last_seen_at >= seen.first_seen_at

    # pay(options)
    status, body, _ = await shop.pay(SEED, init_data=init_data)
    assert status == 200, body
    assert body["ok"] is True
    result = body["result"]
    assert is_number(result["tg_payment_id"]) and result["tg_payment_id"] > 0
    assert isinstance(result["tg_payment_url"], str)
    assert result["tg_payment_url"].startswith("https://t.me/")
    tg_payment_id = result["tg_payment_id"]
    assert await shop.orders() == 1

    # The sandbox user pays in Telegram.
    outcome = await fake_telegram.pay_invoice(result["tg_payment_url"], USER)
    assert outcome.approved
    await fake_telegram.drain(shop.app.bot_token)

    # queryOrder(orderId)
    status, body, _ = await shop.get(tg_payment_id)
    assert status == 200, body
    order = body["result"]
    assert (order["status"], order["status_description"]) == (1, "success")
    assert (order["tg_payment_id"], order["tg_use_id"], order["amount"]) == (tg_payment_id, USER, 5)
    for field in ("tg_payment_id", "tg_use_id", "amount", "status"):
        assert is_number(order[field]), (field, order[field])
    assert (order["label"], order["title"], order["description"]) == ("item", "Book", "Magic book")
    assert order["payload"] == "your-payload"
    assert order["application_id"] == shop.app.id

    # The same order for the internal services, over gRPC.
    grpc_order = await query(stub, shop.app, tg_payment_id)
    assert (grpc_order.state, grpc_order.status, grpc_order.tg_use_id) == (Order.PAID, 1, USER)
    assert (grpc_order.amount, grpc_order.payload) == (5, "your-payload")
    assert grpc_order.telegram_payment_charge_id == outcome.charge_id
    events = await stub.ListEvents(
        payment_pb2.ListEventsRequest(tg_payment_id=tg_payment_id), metadata=shop.app.metadata
    )
    types = [event.type for event in events.events]
    assert types[0] == "order.created"
    assert types[-1] == "order.paid"
    assert all(event.order.tg_payment_id == tg_payment_id for event in events.events)


async def test_save_tg_user_keeps_the_latest_names(shop: Shop, service: PortexApp) -> None:
    users = TelegramUserRepository(service.pool)
    status, body, _ = await shop.call("saveTgUser", init_data=shop.init_data(USER, username="a"))
    assert status == 200, body
    status, body, _ = await shop.call("saveTgUser", init_data=shop.init_data(USER, username="b"))
    assert status == 200, body
    seen = await users.get(shop.id, USER)
    assert seen is not None and seen.user.username == "b"
    assert seen.user.is_premium is False


# --- 2: initData refusals ------------------------------------------------------------------------


def _tampered(change: Callable[[dict[str, str]], object]) -> Callable[[Shop], str | None]:
    def make(shop: Shop) -> str:
        fields = init_data_pairs(shop.init_data(USER))
        change(fields)
        return encode_init_data(fields)

    return make


def _set(key: str, value: str) -> Callable[[dict[str, str]], None]:
    return lambda fields: fields.__setitem__(key, value)


def _other_user(fields: dict[str, str]) -> None:
    fields["user"] = json.dumps(user_json(OTHER_USER), separators=(",", ":"))


def _earlier(fields: dict[str, str]) -> None:
    fields["auth_date"] = str(int(fields["auth_date"]) - 1)


def _wrong_hash(fields: dict[str, str]) -> None:
    fields["hash"] = ("0" if fields["hash"][0] != "0" else "1") + fields["hash"][1:]


def _reversed_hash(fields: dict[str, str]) -> None:
    fields["hash"] = fields["hash"][::-1]


REFUSED_INIT_DATA: dict[str, tuple[Callable[[Shop], str | None], str]] = {
    "tampered-user": (_tampered(_other_user), "INIT_DATA_INVALID"),
    "tampered-user-name": (
        _tampered(_set("user", json.dumps(user_json(USER, first_name="Mallory")))),
        "INIT_DATA_INVALID",
    ),
    "tampered-auth_date": (_tampered(_earlier), "INIT_DATA_INVALID"),
    "tampered-query_id": (
        _tampered(_set("query_id", "AAHdF6IQAAAAAN0XohDhrOrX")),
        "INIT_DATA_INVALID",
    ),
    "added-field": (_tampered(_set("start_param", "promo")), "INIT_DATA_INVALID"),
    "removed-field": (_tampered(lambda fields: fields.pop("query_id")), "INIT_DATA_INVALID"),
    "wrong-hash": (_tampered(_wrong_hash), "INIT_DATA_INVALID"),
    "reversed-hash": (_tampered(_reversed_hash), "INIT_DATA_INVALID"),
    "another-bot": (
        lambda shop: signed_init_data(new_bot_token(), USER),
        "INIT_DATA_INVALID",
    ),
    "missing": (lambda shop: None, "INIT_DATA_MISSING"),
    "empty": (lambda shop: "", "INIT_DATA_MISSING"),
    "garbage": (lambda shop: "this is not init data %%% ;", "INIT_DATA_MALFORMED"),
    "no-hash": (_tampered(lambda fields: fields.pop("hash")), "INIT_DATA_MALFORMED"),
    "stale": (
        # init_data_max_age is 24 h: a day and two minutes ago is too old.
        lambda shop: shop.init_data(
            USER, auth_date=datetime.now(UTC) - timedelta(days=1, minutes=2)
        ),
        "INIT_DATA_EXPIRED",
    ),
    "future": (
        lambda shop: shop.init_data(USER, auth_date=datetime.now(UTC) + timedelta(hours=1)),
        "INIT_DATA_FROM_FUTURE",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_INIT_DATA))
async def test_refused_init_data_is_401_with_its_reason_and_creates_nothing(
    shop: Shop, service: PortexApp, case: str
) -> None:
    make, reason = REFUSED_INIT_DATA[case]
    init_data = make(shop)
    for path, body in (("saveTgUser", NO_BODY), ("createTgPayment", SEED)):
        reply = await shop.edge.post(path, body, init_data=init_data)
        refused(reply, 401, reason)
    existing = await shop.paid_id(seed(OTHER_USER), user=OTHER_USER)  # a genuine order to read
    refused(
        await shop.edge.post("getTgPayment", {"tg_payment_id": existing}, init_data=init_data),
        401,
        reason,
    )
    assert await shop.orders() == 1  # only the genuine one
    assert await TelegramUserRepository(service.pool).get(shop.id, USER) is None


async def test_fresh_init_data_at_the_edges_of_the_window_is_accepted(shop: Shop) -> None:
    """The control for the refusals above: the same shape of request, genuinely signed."""
    almost_a_day = datetime.now(UTC) - timedelta(hours=23, minutes=58)
    for init_data in (shop.init_data(USER, auth_date=almost_a_day), shop.init_data(USER)):
        status, body, _ = await shop.edge.post("saveTgUser", init_data=init_data)
        assert status == 200, body


async def test_the_api_key_is_not_accepted_instead_of_init_data(shop: Shop) -> None:
    reply = await shop.edge.post(
        "createTgPayment", SEED, headers={"Authorization": f"Bearer {shop.app.api_key}"}
    )
    refused(reply, 401, "INIT_DATA_MISSING")
    assert await shop.orders() == 0


# --- 3: Ed25519 third-party signatures -----------------------------------------------------------


def ed25519_init_data(
    bot_id: int, user: int = USER, *, key: Ed25519PrivateKey = TEST_KEY, **extra: str
) -> str:
    """Signed by `key` only: the hash is bogus (no bot token is needed for this check)."""
    fields = {**init_data_fields(user_json(user), auth_date=datetime.now(UTC)), **extra}
    signed = sign_init_data_ed25519(fields, bot_id=bot_id, private_key=key)
    return signed + "&hash=" + secrets.token_hex(32)


async def test_ed25519_signed_init_data_is_accepted_with_the_configured_key(
    shop: Shop, own_service: PortexApp, stub: Any
) -> None:
    mine = shop.on(own_service)
    init_data = ed25519_init_data(shop.bot_id)
    status, body, _ = await mine.edge.post("saveTgUser", init_data=init_data)
    assert status == 200, body
    assert body["result"] == {"tg_use_id": USER}
    status, body, _ = await mine.edge.post("createTgPayment", SEED, init_data=init_data)
    assert status == 200, body
    order = await query(stub, shop.app, body["result"]["tg_payment_id"])
    assert order.tg_use_id == USER

    # The signature covers the fields and the bot: anything else is refused there too.
    fields = init_data_pairs(init_data)
    fields["user"] = json.dumps(user_json(OTHER_USER), separators=(",", ":"))
    for bad in (
        encode_init_data(fields),
        ed25519_init_data(shop.bot_id + 1),
        ed25519_init_data(shop.bot_id, key=Ed25519PrivateKey.generate()),
    ):
        refused(
            await mine.edge.post("createTgPayment", SEED, init_data=bad), 401, "INIT_DATA_INVALID"
        )
    assert await shop.orders() == 1


async def test_ed25519_with_a_key_telegram_never_used_is_refused_by_default(shop: Shop) -> None:
    """The session service trusts Telegram's production key, not the test key."""
    reply = await shop.edge.post("createTgPayment", SEED, init_data=ed25519_init_data(shop.bot_id))
    refused(reply, 401, "INIT_DATA_INVALID")
    refused(
        await shop.edge.post("saveTgUser", init_data=ed25519_init_data(shop.bot_id)),
        401,
        "INIT_DATA_INVALID",
    )
    assert await shop.orders() == 0


# --- 4: owner-only reads, unknown applications ---------------------------------------------------


def _without_number(body: Any, number: int) -> str:
    return re.sub(rf"\b{number}\b", "N", json.dumps(body, sort_keys=True))


async def test_another_users_order_answers_exactly_like_a_missing_one(
    make_shop: MakeShop, shop: Shop
) -> None:
    mine = await shop.paid_id(SEED)
    missing = mine + 1_000_000_000
    status, theirs, headers = await shop.get(mine, user=OTHER_USER)
    refused((status, theirs, headers), 404, "ORDER_NOT_FOUND")
    status_missing, nothing, headers_missing = await shop.get(missing, user=OTHER_USER)
    refused((status_missing, nothing, headers_missing), 404, "ORDER_NOT_FOUND")
    assert _without_number(theirs, mine) == _without_number(nothing, missing)
    assert headers.get("Content-Type") == headers_missing.get("Content-Type")

    # Another application's order, asked for by the same user id of that other application.
    elsewhere = await make_shop()
    status, foreign, _ = await elsewhere.get(mine, user=USER)
    refused((status, foreign, _), 404, "ORDER_NOT_FOUND")
    assert _without_number(foreign, mine) == _without_number(nothing, missing)

    # The owner still sees it.
    status, body, _ = await shop.get(mine)
    assert status == 200 and body["result"]["tg_payment_id"] == mine


@pytest.mark.parametrize(
    "app_id", [str(uuid.uuid4()), "not-a-uuid", "", None], ids=["uuid", "text", "empty", "absent"]
)
async def test_an_unknown_application_is_404_app_not_found(
    shop: Shop, service: PortexApp, app_id: str | None
) -> None:
    before = await total_orders(service.pool)
    stranger = Edge(shop.edge.session, shop.edge.port, app_id)
    for path, body in (
        ("saveTgUser", NO_BODY),
        ("createTgPayment", SEED),
        ("getTgPayment", {"tg_payment_id": 1}),
        ("reportInvoiceClosed", {"tg_payment_id": 1, "status": "cancelled"}),
    ):
        refused(await stranger.post(path, body, init_data=shop.init_data()), 404, "APP_NOT_FOUND")
    assert await total_orders(service.pool) == before


# --- 5: prices are the merchant's ----------------------------------------------------------------


BOOK = CatalogItem(
    key="book",
    amount=7,
    title="Catalog Book",
    description="From the catalog",
    photo_url="https://cdn.example.com/book.png",
)


async def test_an_unknown_item_is_400_unknown_item(shop: Shop) -> None:
    refused(await shop.pay({**SEED, "label": "nope"}), 400, "UNKNOWN_ITEM", "label")
    refused(await shop.pay({**SEED, "label": ""}), 400, "UNKNOWN_ITEM", "label")
    no_label = {key: value for key, value in SEED.items() if key != "label"}
    refused(await shop.pay(no_label), 400, "UNKNOWN_ITEM", "label")
    assert await shop.orders() == 0


async def test_a_wrong_price_is_400_price_mismatch(shop: Shop) -> None:
    for amount in (4, 6, 1, 10_000):
        refused(await shop.pay({**SEED, "amount": amount}), 400, "PRICE_MISMATCH", "amount")
    assert await shop.orders() == 0


async def test_a_left_out_amount_is_the_catalog_price(
    shop: Shop, fake_telegram: FakeBotApi
) -> None:
    body = {key: value for key, value in SEED.items() if key != "amount"}
    status, reply, _ = await shop.pay(body)
    assert status == 200, reply
    status, order, _ = await shop.get(reply["result"]["tg_payment_id"])
    assert order["result"]["amount"] == 5
    invoice = next(i for i in fake_telegram.invoices if i.link == reply["result"]["tg_payment_url"])
    assert invoice.amount == 5  # what Telegram charges


async def test_the_catalog_title_description_and_photo_win_over_the_browsers(
    make_shop: MakeShop, stub: Any, fake_telegram: FakeBotApi
) -> None:
    shop = await make_shop(items=(ITEM, BOOK))
    status, reply, _ = await shop.pay({**SEED, "label": "book", "amount": 7})
    assert status == 200, reply
    order = await query(stub, shop.app, reply["result"]["tg_payment_id"])
    assert (order.label, order.amount) == ("book", 7)
    assert (order.title, order.description) == ("Catalog Book", "From the catalog")
    assert order.photo_url == "https://cdn.example.com/book.png"
    invoice = next(i for i in fake_telegram.invoices if i.link == reply["result"]["tg_payment_url"])
    assert (invoice.title, invoice.amount) == ("Catalog Book", 7)

    # An item without a title of its own keeps the browser's.
    status, reply, _ = await shop.pay(SEED)
    order = await query(stub, shop.app, reply["result"]["tg_payment_id"])
    assert (order.title, order.description) == ("Book", "Magic book")


async def test_the_items_metadata_is_on_the_order_and_a_browsers_is_ignored(
    make_shop: MakeShop, stub: Any
) -> None:
    """A browser never sets metadata: a `metadata` field in its body is ignored like any field
    the edge does not take; the order carries its catalog item's (none in open pricing)."""
    tagged = CatalogItem(key="gem", amount=3, metadata={"sku": "GEM-1", "tier": "gold"})
    shop = await make_shop(items=(ITEM, tagged))
    forged = {"sku": "FREE", "admin": "true"}
    for label, expected in (("gem", {"sku": "GEM-1", "tier": "gold"}), ("item", {})):
        tg_payment_id = await shop.paid_id(
            {**SEED, "label": label, "amount": 0, "metadata": forged}
        )
        order = await query(stub, shop.app, tg_payment_id)
        assert dict(order.metadata) == expected
    open_shop = await make_shop(items=(tagged,), pricing=PricingMode.OPEN)
    tg_payment_id = await open_shop.paid_id({**SEED, "label": "gem", "metadata": forged})
    assert dict((await query(stub, open_shop.app, tg_payment_id)).metadata) == {}


async def test_a_subscription_items_order_is_a_subscription_and_a_browser_cannot_make_one(
    make_shop: MakeShop, stub: Any, fake_telegram: FakeBotApi
) -> None:
    """An edge payment for an item with `subscription_period` creates a subscription order (as
    the item's metadata is copied), which the user's payment starts; a `subscription_period` in
    a browser's body is ignored (a one-off item stays one-off, open pricing makes none)."""
    month = 2592000
    vip = CatalogItem(key="vip", amount=50, subscription_period=month, metadata={"tier": "vip"})
    shop = await make_shop(items=(ITEM, vip))
    status, body, _ = await shop.pay({**SEED, "label": "vip", "amount": 0})
    assert status == 200, body
    result = body["result"]
    order = await query(stub, shop.app, result["tg_payment_id"])
    assert (order.amount, order.subscription.period_seconds) == (50, month)
    assert order.subscription.state == payment_pb2.Subscription.STATE_UNSPECIFIED
    assert dict(order.metadata) == {"tier": "vip"}
    outcome = await fake_telegram.pay_invoice(result["tg_payment_url"], USER)
    assert outcome.approved
    await fake_telegram.drain(shop.app.bot_token)
    order = await query(stub, shop.app, result["tg_payment_id"])
    assert (order.state, order.subscription.state) == (Order.PAID, payment_pb2.Subscription.ACTIVE)
    assert [c.telegram_payment_charge_id for c in order.subscription.charges] == [outcome.charge_id]

    forged = {**SEED, "label": "item", "amount": 0, "subscription_period": month}
    one_off = await query(stub, shop.app, await shop.paid_id(forged))
    assert not one_off.HasField("subscription")
    open_shop = await make_shop(items=(vip,), pricing=PricingMode.OPEN)
    forged = {**SEED, "label": "vip", "subscription_period": month}
    assert not (await query(stub, open_shop.app, await open_shop.paid_id(forged))).HasField(
        "subscription"
    )


async def test_a_deleted_item_can_no_longer_be_bought(shop: Shop) -> None:
    await shop.paid_id(SEED)
    assert await CatalogRepository(shop.pool).delete(shop.id, "item")
    refused(await shop.pay({**SEED, "payload": "again"}), 400, "UNKNOWN_ITEM", "label")
    assert await shop.orders() == 1


async def test_open_pricing_takes_the_browsers_amount(make_shop: MakeShop, stub: Any) -> None:
    shop = await make_shop(items=(), pricing=PricingMode.OPEN)
    status, reply, _ = await shop.pay({**SEED, "label": "anything", "amount": 7})
    assert status == 200, reply
    order = await query(stub, shop.app, reply["result"]["tg_payment_id"])
    assert (order.label, order.amount, order.title) == ("anything", 7, "Book")
    # Pay's own rules still hold.
    refused(
        await shop.pay({**SEED, "amount": 0, "payload": "zero"}), 400, "INVALID_ARGUMENT", "amount"
    )
    assert await shop.orders() == 1


async def test_grpc_pay_is_not_priced_by_the_catalog(shop: Shop, stub: Any) -> None:
    paid = await stub.Pay(pay_request(label="not-in-catalog", amount=9), metadata=shop.app.metadata)
    order = await query(stub, shop.app, paid.tg_payment_id)
    assert (order.label, order.amount) == ("not-in-catalog", 9)


# --- 6: the paying user is the verified user -----------------------------------------------------


async def test_a_body_user_that_is_not_the_verified_one_is_403(shop: Shop) -> None:
    for other in (OTHER_USER, str(OTHER_USER), 1):
        refused(await shop.pay({**SEED, "tg_use_id": other}), 403, "USER_MISMATCH")
    assert await shop.orders() == 0


async def test_a_left_out_user_is_the_verified_one(shop: Shop, stub: Any) -> None:
    body = {key: value for key, value in SEED.items() if key != "tg_use_id"}
    tg_payment_id = await shop.paid_id(body)
    assert (await query(stub, shop.app, tg_payment_id)).tg_use_id == USER
    status, reply, _ = await shop.get(tg_payment_id)
    assert status == 200, reply
    assert reply["result"]["tg_use_id"] == USER


async def test_a_decimal_string_user_equal_to_the_verified_one_is_accepted(
    shop: Shop, stub: Any
) -> None:
    tg_payment_id = await shop.paid_id({**SEED, "tg_use_id": str(USER), "payload": "string-id"})
    assert (await query(stub, shop.app, tg_payment_id)).tg_use_id == USER
    for bad in ("42a", " 4242", "-4242", "4242.0", ""):
        refused(await shop.pay({**SEED, "tg_use_id": bad}), 400, "INVALID_ARGUMENT", "tg_use_id")
    assert await shop.orders() == 1


# --- 7: browser callback URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com/hooks/x",
        "https://hooks.example.com.evil.com/hooks/x",
        "https://hooks.example.com/hooks/../admin",
        "https://hooks.example.com/hooks/%2e%2e/admin",
        # Issue 16: every encoding of a way out, decoded before it is checked.
        "https://hooks.example.com/hooks/..%2f..%2fadmin",
        "https://hooks.example.com/hooks/..%2F..%2Fadmin",
        "https://hooks.example.com/hooks/%2e%2e/",
        "https://hooks.example.com/hooks/%2E%2E%2Fadmin",
        "https://hooks.example.com/hooks/..\\admin",
        "https://hooks.example.com/hooks/..%5cadmin",
        "https://hooks.example.com/hooks/%252e%252e%252fadmin",
        "https://hooks.example.com/hooks/./x",
        "https://hooks.example.com/hooks/..;/admin",
        "https://hooks.example.com/hooks%2fx",
        "https://hooks.example.com@evil.com/hooks/x",
        "https://user@hooks.example.com/hooks/x",
        "https://hooks.example.com/hooksevil",
        "https://hooks.example.com/admin",
        "http://hooks.example.com/hooks/x",
        "https://hooks.example.com:8443/hooks/x",
        "not a url",
    ],
)
async def test_a_callback_url_outside_the_prefixes_is_400(make_shop: MakeShop, url: str) -> None:
    shop = await make_shop(prefixes=[PREFIX])
    refused(
        await shop.pay({**SEED, "callback_url": url}),
        400,
        "CALLBACK_URL_NOT_ALLOWED",
        "callback_url",
    )
    assert await shop.orders() == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://HOOKS.Example.com/hooks/x",
        "https://hooks.example.com:443/hooks/x",
        "https://hooks.example.com/hook%73/x",
        "https://hooks.example.com/hooks/x?next=../admin",
    ],
    ids=["mixed-case-host", "default-port", "encoded-letter", "dots-in-the-query"],
)
async def test_the_same_place_spelled_otherwise_is_under_the_prefix(
    make_shop: MakeShop, url: str
) -> None:
    shop = await make_shop(prefixes=[PREFIX])
    status, body, _ = await shop.pay({**SEED, "callback_url": url})
    assert status == 200, body
    assert await shop.orders() == 1


async def test_a_callback_url_under_a_prefix_is_accepted_and_stored(
    make_shop: MakeShop, stub: Any
) -> None:
    shop = await make_shop(prefixes=["https://other.example.org/", PREFIX])
    url = "https://hooks.example.com/hooks/orders?shop=1"
    tg_payment_id = await shop.paid_id({**SEED, "callback_url": url})
    assert (await query(stub, shop.app, tg_payment_id)).callback_url == url
    stored = await shop.pool.fetchval(
        "SELECT callback_url FROM orders WHERE tg_payment_id = $1", tg_payment_id
    )
    assert stored == url


async def test_without_prefixes_no_browser_callback_url_is_accepted(shop: Shop) -> None:
    refused(
        await shop.pay({**SEED, "callback_url": PREFIX + "x"}),
        400,
        "CALLBACK_URL_NOT_ALLOWED",
        "callback_url",
    )
    assert await shop.orders() == 0


# --- 8: CORS -------------------------------------------------------------------------------------


def _origin() -> str:
    return f"https://game-{uuid.uuid4().hex[:12]}.example.com"


def _header_list(headers: Mapping[str, str], name: str) -> set[str]:
    return {part.strip().lower() for part in headers.get(name, "").split(",") if part.strip()}


async def test_a_preflight_from_an_allowed_origin_is_granted_with_the_sdks_headers(
    make_shop: MakeShop,
) -> None:
    origin = _origin()
    shop = await make_shop(origins=[origin])
    status, _, headers = await shop.edge.options(
        "createTgPayment",
        {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-app-id,x-tg-initdata",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == origin
    assert "post" in _header_list(headers, "Access-Control-Allow-Methods")
    allowed = _header_list(headers, "Access-Control-Allow-Headers")
    assert {"content-type", "x-app-id", "x-tg-initdata", "x-tg-platform", "x-tg-version"} <= allowed


async def test_a_preflight_from_an_unknown_origin_gets_no_grant(shop: Shop) -> None:
    for origin in (_origin(), "null", "https://example.com/path"):
        status, _, headers = await shop.edge.options(
            "createTgPayment", {"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert "Access-Control-Allow-Origin" not in headers, (origin, status)
        assert "Access-Control-Allow-Headers" not in headers


async def test_a_request_from_an_origin_outside_the_apps_list_is_403(
    make_shop: MakeShop,
) -> None:
    mine, theirs = _origin(), _origin()
    shop = await make_shop(origins=[mine])
    await make_shop(origins=[theirs])  # allowed somewhere: its preflight passes, not its request
    for origin in (theirs, _origin(), "null"):
        reply = await shop.pay(SEED, headers={"Origin": origin})
        refused(reply, 403, "ORIGIN_NOT_ALLOWED")
        assert "Access-Control-Allow-Origin" not in reply[2]
    assert await shop.orders() == 0

    status, body, headers = await shop.pay(SEED, headers={"Origin": mine})
    assert status == 200, body
    assert headers["Access-Control-Allow-Origin"] == mine
    assert await shop.orders() == 1


# --- 9: rate limits ------------------------------------------------------------------------------


def _retry_after(headers: Mapping[str, str]) -> int:
    value = headers["Retry-After"]
    assert value.isdigit(), value
    assert int(value) >= 1
    return int(value)


async def test_one_user_over_the_limit_gets_429_others_still_pass(
    shop: Shop, limited_service: PortexApp
) -> None:
    limited = shop.on(limited_service)
    for _ in range(3):
        status, body, _ = await limited.call("saveTgUser")
        assert status == 200, body
    reply = await limited.pay(SEED)
    refused(reply, 429, "RATE_LIMITED")
    _retry_after(reply[2])
    assert await shop.orders() == 0
    status, body, _ = await limited.pay(seed(OTHER_USER), user=OTHER_USER)
    assert status == 200, body


async def test_one_application_over_the_limit_gets_429_others_still_pass(
    make_shop: MakeShop, limited_service: PortexApp
) -> None:
    busy = (await make_shop()).on(limited_service)
    for user in range(1, 7):  # six users, one request each: the application's burst
        status, body, _ = await busy.call("saveTgUser", user=user)
        assert status == 200, body
    reply = await busy.pay(seed(7), user=7)
    refused(reply, 429, "RATE_LIMITED")
    _retry_after(reply[2])
    assert await busy.orders() == 0
    quiet = (await make_shop()).on(limited_service)
    status, body, _ = await quiet.pay(seed(7), user=7)
    assert status == 200, body


async def _browser_sees_429(reply: Reply, origin: str) -> None:
    """Without Access-Control-Allow-Origin a browser's fetch() sees no answer at all, and without
    Access-Control-Expose-Headers it cannot read Retry-After (not a CORS-safelisted header)."""
    refused(reply, 429, "RATE_LIMITED")
    _retry_after(reply[2])
    assert reply[2].get("Access-Control-Allow-Origin") == origin
    assert "retry-after" in _header_list(reply[2], "Access-Control-Expose-Headers")


async def test_a_browser_can_read_the_users_429_and_its_retry_after(
    make_shop: MakeShop, limited_service: PortexApp
) -> None:
    origin = _origin()
    shop = (await make_shop(origins=[origin])).on(limited_service)
    for _ in range(3):
        status, body, headers = await shop.call("saveTgUser", headers={"Origin": origin})
        assert status == 200, body
        assert headers["Access-Control-Allow-Origin"] == origin
    await _browser_sees_429(await shop.pay(SEED, headers={"Origin": origin}), origin)
    assert await shop.orders() == 0


async def test_a_browser_can_read_the_applications_429_and_its_retry_after(
    make_shop: MakeShop, limited_service: PortexApp
) -> None:
    origin = _origin()
    busy = (await make_shop(origins=[origin])).on(limited_service)
    for user in range(1, 7):
        status, body, _ = await busy.call("saveTgUser", user=user, headers={"Origin": origin})
        assert status == 200, body
    await _browser_sees_429(await busy.pay(seed(7), user=7, headers={"Origin": origin}), origin)
    assert await busy.orders() == 0


# --- 10: bodies ----------------------------------------------------------------------------------


async def test_an_oversized_body_is_413(shop: Shop) -> None:
    big = json.dumps({**SEED, "description": "x" * (16 * 1024)}).encode()
    refused(await shop.pay_raw(big), 413, "BODY_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server must count
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    refused(await shop.pay_raw(chunks()), 413, "BODY_TOO_LARGE")
    assert await shop.orders() == 0


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'[{"label": "item"}]', b'"item"', b"null", b"5", b"", b"{", b"\xff"],
    ids=["text", "array", "array-of-object", "string", "null", "number", "empty", "cut", "binary"],
)
async def test_a_body_that_is_not_a_json_object_is_400(shop: Shop, raw: bytes) -> None:
    refused(await shop.pay_raw(raw), 400, "INVALID_ARGUMENT", "body")
    assert await shop.orders() == 0


WRONG_TYPES = [
    ("amount", "5"),
    ("amount", 5.5),
    ("amount", 5.0),
    ("amount", True),
    ("amount", -5),
    ("amount", [5]),
    ("label", 7),
    ("label", ["item"]),
    ("title", {"text": "Book"}),
    ("payload", 1),
    ("photo_url", False),
    ("tg_use_id", True),
    ("tg_use_id", 4242.0),
    ("callback_url", 1),
    ("photo_size", "1"),
]


async def test_fields_of_the_wrong_type_are_400_with_the_field(shop: Shop) -> None:
    for index, (field, value) in enumerate(WRONG_TYPES):
        # One user per case: the per-user rate limit is not what this is about.
        user = USER + 1 + index
        reply = await shop.pay({**seed(user), field: value}, user=user)
        refused(reply, 400, "INVALID_ARGUMENT", field)
        assert any(v["field"] == field for v in reply[1]["violations"]), reply[1]
    assert await shop.orders() == 0


async def post_in_pieces(shop: Shop, raw: bytes, *, chunked: bool) -> tuple[int, Any]:
    """createTgPayment whose body reaches the server in two writes, 50 ms apart, as a body does
    when it spans TCP segments (Content-Length framing, as browsers send it, or chunked)."""
    head = [
        "POST /v1/createTgPayment HTTP/1.1",
        f"Host: 127.0.0.1:{shop.edge.port}",
        "Content-Type: application/json",
        f"X-App-Id: {shop.app.id}",
        f"X-Tg-InitData: {shop.init_data()}",
        "Connection: close",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(raw)}",
    ]
    pieces = [raw[:10], raw[10:]]
    if chunked:
        pieces = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces] + [b"0\r\n\r\n"]
    reader, writer = await asyncio.open_connection("127.0.0.1", shop.edge.port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + pieces[0])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"".join(pieces[1:]))
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    if b"chunked" in rest.partition(b"\r\n\r\n")[0].lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return int(status_line.split()[1]), _json_or_text(body.decode())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_valid_body_arriving_in_pieces_is_read_whole(shop: Shop, chunked: bool) -> None:
    """The handler may start before the whole body is in: it must read to the end of it."""
    status, body = await post_in_pieces(shop, json.dumps(SEED).encode(), chunked=chunked)
    assert status == 200, body
    assert await shop.orders() == 1


async def test_a_wrong_method_or_route_under_v1_answers_the_envelope(shop: Shop) -> None:
    """The module promises the envelope for every answer: a route we do not serve is 404
    NOT_FOUND (issue 16: it was 405, the preflight's catch-all making every path exist), a wrong
    method on one we serve 405 METHOD_NOT_ALLOWED."""
    cases = [
        ("GET", "createTgPayment", 405),
        ("PUT", "getTgPayment", 405),
        ("DELETE", "saveTgUser", 405),
        ("PATCH", "reportInvoiceClosed", 405),
        ("POST", "nope", 404),
        ("POST", "getLeaderboard", 404),  # the SDK's leaderboard module
        ("GET", "getLeaderboard", 404),
        ("POST", "savetguser", 404),
        ("POST", "saveTgUser/extra", 404),
        ("POST", "", 404),
    ]
    for method, path, expected in cases:
        url = shop.edge.url(path)
        async with shop.edge.session.request(method, url, headers={"X-App-Id": shop.app.id}) as r:
            body = _json_or_text(await r.text())
            assert r.status == expected, (method, path, r.status, body)
            assert isinstance(body, dict), (method, path, body)
            assert body["ok"] is False and body["error_code"] == r.status, body
            reason = "NOT_FOUND" if expected == 404 else "METHOD_NOT_ALLOWED"
            assert body["reason"] == reason, body
            assert isinstance(body["description"], str) and body["description"]
            if expected == 405:
                assert "POST" in r.headers["Allow"]


# --- 11: idempotent retries ----------------------------------------------------------------------


async def test_retries_of_the_same_pay_make_one_order_until_it_is_paid(
    shop: Shop, own_service: PortexApp, fake_telegram: FakeBotApi
) -> None:
    steady = shop.on(own_service)
    first = await steady.paid_id(SEED)
    assert await steady.paid_id(SEED) == first
    racing = await asyncio.gather(*(steady.pay(SEED) for _ in range(5)))
    assert {reply[0] for reply in racing} == {200}
    assert {reply[1]["result"]["tg_payment_id"] for reply in racing} == {first}
    assert len({reply[1]["result"]["tg_payment_url"] for reply in racing}) == 1
    assert await shop.orders() == 1

    # A different purchase is a different order.
    other = await steady.paid_id({**SEED, "payload": "another"})
    assert other != first
    assert await shop.orders() == 2

    # Once paid, the same pay() is a second purchase: one new order, however it is retried.
    status, body, _ = await steady.get(first)
    assert status == 200, body
    outcome = await fake_telegram.pay_invoice(body["result"]["tg_payment_url"], USER)
    assert outcome.approved
    await fake_telegram.drain(shop.app.bot_token)
    racing = await asyncio.gather(*(steady.pay(SEED) for _ in range(5)))
    second = {reply[1]["result"]["tg_payment_id"] for reply in racing}
    assert len(second) == 1 and first not in second
    assert await steady.paid_id(SEED) in second
    assert await shop.orders() == 3


async def test_an_idempotency_key_names_one_order(shop: Shop) -> None:
    key = {"Idempotency-Key": f"buy-{uuid.uuid4()}"}
    first = await shop.paid_id(SEED, headers=key)
    assert await shop.paid_id(SEED, headers=key) == first
    assert await shop.orders() == 1
    refused(
        await shop.pay({**SEED, "payload": "changed"}, headers=key),
        409,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert await shop.orders() == 1
    # The key is the user's: another user with the same key has an order of their own.
    theirs = await shop.paid_id(seed(OTHER_USER), user=OTHER_USER, headers=key)
    assert theirs != first
    for bad in ("", "x" * 129, "tab\there", "ключ"):
        reply = await shop.pay(seed(USER + 9), headers={"Idempotency-Key": bad}, user=USER + 9)
        refused(reply, 400, "INVALID_ARGUMENT", "Idempotency-Key")
    assert await shop.orders() == 2


# --- 12: reportInvoiceClosed ---------------------------------------------------------------------


async def test_the_owner_reports_cancelled_and_the_order_stays_payable(
    shop: Shop, stub: Any, fake_telegram: FakeBotApi
) -> None:
    status, body, _ = await shop.pay(SEED)
    tg_payment_id, link = body["result"]["tg_payment_id"], body["result"]["tg_payment_url"]

    report = {"tg_payment_id": tg_payment_id, "status": "cancelled"}
    status, theirs, _ = await shop.call("reportInvoiceClosed", report, user=OTHER_USER)
    refused((status, theirs, {}), 404, "ORDER_NOT_FOUND")
    assert (await query(stub, shop.app, tg_payment_id)).client_report == ""
    refused(
        await shop.call("reportInvoiceClosed", {**report, "status": "bogus"}),
        400,
        "INVALID_ARGUMENT",
        "status",
    )

    # A client's "paid" is not proof either: the order stays pending.
    status, body, _ = await shop.call("reportInvoiceClosed", {**report, "status": "paid"})
    assert status == 200, body
    assert (body["result"]["status"], body["result"]["state"]) == (0, "pending")

    status, body, _ = await shop.call("reportInvoiceClosed", report)
    assert status == 200, body
    result = body["result"]
    assert (result["status"], result["status_description"], result["state"]) == (
        0,
        "pending",
        "pending",
    )
    order = await query(stub, shop.app, tg_payment_id)
    assert (order.state, order.client_report) == (Order.PENDING, "cancelled")
    events = await stub.ListEvents(
        payment_pb2.ListEventsRequest(tg_payment_id=tg_payment_id), metadata=shop.app.metadata
    )
    assert "order.client_report" in [event.type for event in events.events]

    # The report is not proof of anything: the user can still pay.
    outcome = await fake_telegram.pay_invoice(link, USER)
    assert outcome.approved
    await fake_telegram.drain(shop.app.bot_token)
    status, body, _ = await shop.get(tg_payment_id)
    assert (body["result"]["status"], body["result"]["status_description"]) == (1, "success")
    assert await shop.orders() == 1


# --- 13: numbers stay numbers --------------------------------------------------------------------


async def test_numbers_are_json_numbers_in_every_answer(shop: Shop) -> None:
    status, body, headers = await shop.call("saveTgUser")
    assert headers["Content-Type"].startswith("application/json")
    assert is_number(body["result"]["tg_use_id"])

    status, body, _ = await shop.pay(SEED)
    tg_payment_id = body["result"]["tg_payment_id"]
    assert is_number(tg_payment_id)

    answers = [
        await shop.get(tg_payment_id),
        await shop.get(str(tg_payment_id)),  # the id as a string is read, answered as a number
        await shop.call(
            "reportInvoiceClosed", {"tg_payment_id": tg_payment_id, "status": "failed"}
        ),
    ]
    for status, body, _ in answers:
        assert status == 200, body
        result = body["result"]
        for field in ("tg_payment_id", "amount", "status", "tg_use_id"):
            assert is_number(result[field]), (field, result[field])
        assert (result["tg_payment_id"], result["amount"], result["tg_use_id"]) == (
            tg_payment_id,
            5,
            USER,
        )
        assert isinstance(result["status_description"], str)
    # The error envelope's own number, too.
    status, body, _ = await shop.get(tg_payment_id + 10**9)
    assert status == 404 and is_number(body["error_code"])


async def test_the_edge_can_be_turned_off(
    database_url: str, fake_telegram: FakeBotApi, shop: Shop, http: aiohttp.ClientSession
) -> None:
    off = await start_own_service(database_url, fake_telegram, edge_enabled=False)
    try:
        async with http.post(
            f"http://127.0.0.1:{off.http_port}/v1/createTgPayment",
            json=SEED,
            headers={"X-App-Id": shop.app.id},
        ) as response:
            assert response.status == 404
        async with http.get(f"http://127.0.0.1:{off.http_port}/healthz") as response:
            assert response.status == 200  # the rest of the HTTP door is unchanged
    finally:
        await off.stop()


# --- 14: issue 16: text before lookups, odd names, CORS for refusals, unauthenticated limits ----


async def _browser_request(
    edge: Edge, method: str, path: str, headers: Mapping[str, str], body: object = NO_BODY
) -> Reply:
    data = None if body is NO_BODY else json.dumps(body).encode()
    async with edge.session.request(method, edge.url(path), headers=headers, data=data) as r:
        return r.status, _json_or_text(await r.text()), r.headers


async def raw_request(
    port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> Reply:
    """A request written byte by byte: header values an HTTP client would not send (bytes that
    are not UTF-8, which the server hands on as lone surrogates)."""
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: %d" % len(body))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    got = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), _json_or_text(payload.decode()), got


BAD_TEXT = {"nul": "\x00", "lone-high-surrogate": "\ud800", "lone-low-surrogate": "\udfff"}
TEXT_FIELDS = ["label", "title", "description", "payload", "photo_url", "callback_url"]


@pytest.mark.parametrize("pricing", [PricingMode.CATALOG, PricingMode.OPEN])
@pytest.mark.parametrize("bad", list(BAD_TEXT.values()), ids=list(BAD_TEXT))
async def test_text_postgresql_cannot_take_is_400_with_its_field_never_500(
    make_shop: MakeShop, pricing: PricingMode, bad: str
) -> None:
    """Issue 16: `{"label": "item\\u0000"}` reached the catalog lookup before the text rules
    (PostgreSQL refuses NUL, asyncpg cannot encode a lone surrogate): 500. Every text field, in
    both pricings, is now refused with its field before anything is looked up."""
    shop = await make_shop(pricing=pricing, prefixes=[PREFIX])
    for index, field in enumerate(TEXT_FIELDS):
        user = USER + index  # one user per field: the per-user rate limit is not the subject
        value = {"photo_url": f"https://cdn.example.com/{bad}.png", "callback_url": PREFIX + bad}
        body = {**seed(user), "callback_url": PREFIX + "ok", field: value.get(field, "item" + bad)}
        reply = await shop.pay(body, user=user)
        refused(reply, 400, "INVALID_ARGUMENT", field)
        assert [v["field"] for v in reply[1]["violations"]] == [field]
    status_bad = {"tg_payment_id": 1, "status": "cancelled" + bad}
    refused(await shop.call("reportInvoiceClosed", status_bad), 400, "INVALID_ARGUMENT", "status")
    assert await shop.orders() == 0
    # Keys are not looked up: odd ones are ignored like any unknown key.
    status, body, _ = await shop.pay({**SEED, "label" + bad: "x", bad: bad})
    assert status == 200, body
    assert await shop.orders() == 1


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"], ids=repr)
async def test_header_bytes_that_are_not_utf8_are_refused_with_their_field(
    shop: Shop, bad: bytes
) -> None:
    """The server hands such header bytes on as lone surrogates: X-App-Id, Origin,
    Idempotency-Key and X-Tg-InitData each refuse them, none reaches PostgreSQL."""
    port, app_id = shop.edge.port, shop.app.id.encode()
    body = json.dumps(SEED).encode()
    init_data = shop.init_data().encode()
    base = [(b"Content-Type", b"application/json"), (b"X-Tg-InitData", init_data)]

    async def post(*headers: tuple[bytes, bytes]) -> Reply:
        return await raw_request(port, b"POST", b"/v1/createTgPayment", [*base, *headers], body)

    refused(await post((b"X-App-Id", app_id[:-2] + bad)), 404, "APP_NOT_FOUND")
    refused(
        await post((b"X-App-Id", app_id), (b"Origin", b"https://" + bad)), 403, "ORIGIN_NOT_ALLOWED"
    )
    reply = await post((b"X-App-Id", app_id), (b"Idempotency-Key", b"k" + bad))
    refused(reply, 400, "INVALID_ARGUMENT", "Idempotency-Key")
    headers = [(b"X-App-Id", app_id), (b"X-Tg-InitData", init_data + bad)]
    reply = await raw_request(port, b"POST", b"/v1/createTgPayment", headers, body)
    refused(reply, 401, "INIT_DATA_MALFORMED")
    reply = await raw_request(port, b"OPTIONS", b"/v1/createTgPayment", [(b"Origin", bad)])
    refused(reply, 403, "ORIGIN_NOT_ALLOWED")
    assert await shop.orders() == 0


def odd_init_data(
    bot_token: str, user_id: int, *, extra: Mapping[str, str] | None = None, **user: Any
) -> str:
    """Genuinely signed initData whose user JSON escapes what it holds, as JSON may: `\\u0000`
    and lone surrogates such as `\\ud800` included."""
    fields = {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(user_json(user_id, **user), separators=(",", ":")),
        "auth_date": str(int(datetime.now(UTC).timestamp())),
        **(extra or {}),
    }
    return sign_init_data(fields, bot_token=bot_token)


ODD_USERS: dict[str, dict[str, Any]] = {
    "nul-first-name": {"first_name": "A\x00da"},
    "surrogate-first-name": {"first_name": "\ud800"},
    "surrogate-pair-halves-swapped": {"first_name": "\ude00\ud83d"},
    "nul-last-name": {"last_name": "Love\x00lace"},
    "surrogate-last-name": {"last_name": "\udfff"},
    "nul-username": {"username": "ada\x00"},
    "surrogate-username": {"username": "\udbffada"},
    "nul-photo-url": {"photo_url": "https://t.me/i/userpic/\x00.jpg"},
    "surrogate-photo-url": {"photo_url": "https://t.me/i/userpic/\ud800.jpg"},
    "nul-language": {"language_code": "e\x00"},
    "surrogate-language": {"language_code": "\ud83d"},
    "everything-and-emoji": {
        "first_name": "\U0001f600\u200d\x00",
        "last_name": "\ud800\x01",
        "username": "\x00",
        "language_code": "\udfff",
        "photo_url": "\x00",
        "is_premium": True,
        "allows_write_to_pm": True,
    },
}


def _stored_form(value: str | None) -> str | None:
    return None if value is None else re.sub("[\x00\ud800-\udfff]", "\ufffd", value)


@pytest.mark.parametrize("case", list(ODD_USERS))
async def test_a_user_with_odd_names_is_saved_readable_over_grpc_and_can_pay(
    shop: Shop, stub: Any, case: str
) -> None:
    """Issue 16: the signature is valid, Telegram chose the names: NUL and lone surrogates are
    stored as U+FFFD (PostgreSQL holds neither; protobuf cannot carry a surrogate), the rest is
    kept, and the same initData pays."""
    fields = ODD_USERS[case]
    init_data = odd_init_data(shop.app.bot_token, USER, **fields)
    status, body, _ = await shop.edge.post("saveTgUser", init_data=init_data)
    assert status == 200, body
    assert body["result"] == {"tg_use_id": USER}

    seen = await TelegramUserRepository(shop.pool).get(shop.id, USER)
    assert seen is not None
    message = await stub.GetTelegramUser(
        payment_pb2.GetTelegramUserRequest(tg_use_id=USER), metadata=shop.app.metadata
    )
    expected = user_json(USER, **fields)
    for name in ("first_name", "last_name", "username", "language_code", "photo_url"):
        want = _stored_form(expected.get(name))
        assert getattr(seen.user, name) == want, name
        present = name == "first_name" or message.HasField(name)
        assert (getattr(message, name) if present else None) == want, name
    assert message.is_premium is bool(expected.get("is_premium", False))

    status, body, _ = await shop.edge.post("createTgPayment", SEED, init_data=init_data)
    assert status == 200, body
    assert await shop.orders() == 1


async def test_other_init_data_fields_may_hold_odd_text(shop: Shop) -> None:
    extra = {
        "chat_instance": "-123\x00",
        "chat_type": "sender\x01",
        "start_param": "\U0001f600\u2028promo",
        "can_send_after": "\x7f",
    }
    init_data = odd_init_data(shop.app.bot_token, USER, extra=extra)
    status, body, _ = await shop.edge.post("saveTgUser", init_data=init_data)
    assert status == 200, body
    status, body, _ = await shop.edge.post("createTgPayment", SEED, init_data=init_data)
    assert status == 200, body


WRONG_SHAPES: dict[str, dict[str, Any]] = {
    "id-bool": {"id": True, "first_name": "A"},
    "id-float": {"id": 4242.0, "first_name": "A"},
    "id-string": {"id": "4242", "first_name": "A"},
    "id-past-int64": {"id": 2**63, "first_name": "A"},
    "id-zero": {"id": 0, "first_name": "A"},
    "id-negative": {"id": -4242, "first_name": "A"},
    "id-huge": {"id": 10**3000, "first_name": "A"},
    "no-first-name": {"id": 4242},
    "first-name-null": {"id": 4242, "first_name": None},
    "first-name-number": {"id": 4242, "first_name": 7},
    "last-name-number": {"id": 4242, "first_name": "A", "last_name": 7},
    "premium-string": {"id": 4242, "first_name": "A", "is_premium": "true"},
    "premium-null": {"id": 4242, "first_name": "A", "is_premium": None},
    "write-to-pm-number": {"id": 4242, "first_name": "A", "allows_write_to_pm": 1},
}


@pytest.mark.parametrize("case", list(WRONG_SHAPES))
async def test_a_signed_user_of_the_wrong_shape_is_401_and_saves_nothing(
    shop: Shop, case: str
) -> None:
    fields = {
        "user": json.dumps(WRONG_SHAPES[case], separators=(",", ":")),
        "auth_date": str(int(datetime.now(UTC).timestamp())),
    }
    init_data = sign_init_data(fields, bot_token=shop.app.bot_token)
    for path, body in (("saveTgUser", NO_BODY), ("createTgPayment", SEED)):
        refused(await shop.edge.post(path, body, init_data=init_data), 401, "INIT_DATA_MALFORMED")
    assert await shop.orders() == 0
    count = await shop.pool.fetchval(
        "SELECT count(*) FROM telegram_users WHERE application_id = $1", shop.id
    )
    assert count == 0


async def test_unknown_routes_from_an_allowed_origin_get_a_readable_404(
    make_shop: MakeShop,
) -> None:
    """The SDK's other modules call routes we do not serve: their preflight is granted and the
    404 (405 for a wrong method) carries the grant, so the SDK reads the envelope instead of
    failing with a network error; an origin no application allows gets no grant."""
    origin = _origin()
    shop = await make_shop(origins=[origin])
    edge = shop.edge
    status, _, headers = await edge.options(
        "getLeaderboard", {"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert status == 204 and headers["Access-Control-Allow-Origin"] == origin
    sent = {"Origin": origin, "X-App-Id": shop.app.id, "X-Tg-InitData": shop.init_data()}
    for method, path, status, reason in (
        ("POST", "getLeaderboard", 404, "NOT_FOUND"),
        ("GET", "createTgPayment", 405, "METHOD_NOT_ALLOWED"),
    ):
        reply = await _browser_request(edge, method, path, sent)
        refused(reply, status, reason)
        assert reply[2]["Access-Control-Allow-Origin"] == origin
        assert "retry-after" in _header_list(reply[2], "Access-Control-Expose-Headers")
    stranger = _origin()
    reply = await _browser_request(edge, "POST", "getLeaderboard", {**sent, "Origin": stranger})
    refused(reply, 404, "NOT_FOUND")
    assert "Access-Control-Allow-Origin" not in reply[2]


@pytest.mark.parametrize(
    "app_id", [str(uuid.uuid4()), "not-a-uuid", None], ids=["uuid", "text", "absent"]
)
async def test_an_unknown_app_from_an_allowed_origin_gets_the_grant_and_a_readable_404(
    make_shop: MakeShop, app_id: str | None
) -> None:
    """Issue 16: the SDK's init() with a wrong appId threw a network error: the 404 had no CORS
    grant. It is granted when some application allows the origin (as its preflight was), never
    otherwise."""
    origin = _origin()
    shop = await make_shop(origins=[origin])
    stranger = Edge(shop.edge.session, shop.edge.port, app_id)
    for path, body in (("saveTgUser", NO_BODY), ("createTgPayment", SEED)):
        reply = await stranger.post(
            path, body, init_data=shop.init_data(), headers={"Origin": origin}
        )
        refused(reply, 404, "APP_NOT_FOUND")
        assert reply[2]["Access-Control-Allow-Origin"] == origin
        assert "retry-after" in _header_list(reply[2], "Access-Control-Expose-Headers")
        for other in (_origin(), "null", "https://" + origin.split("//")[1] + "/path"):
            reply = await stranger.post(
                path, body, init_data=shop.init_data(), headers={"Origin": other}
            )
            refused(reply, 404, "APP_NOT_FOUND")
            assert "Access-Control-Allow-Origin" not in reply[2], other
    assert await shop.orders() == 0


async def test_origin_lookups_are_cached_for_the_auth_cache_ttl(
    database_url: str, fake_telegram: FakeBotApi, make_shop: MakeShop, http: aiohttp.ClientSession
) -> None:
    """Issue 16: every preflight cost a query. With a long cache, a change made in the database
    after the first preflight is not seen by the second: it was answered without a query. (The
    query count itself is checked on a counting fake in tests/unit/test_edge_service.py.)"""
    own = await start_own_service(database_url, fake_telegram, auth_cache_ttl=600.0)
    try:
        allowed, refused_origin = _origin(), _origin()
        shop = await make_shop(origins=[allowed])
        edge = Edge(http, http_port(own), None)
        ask = {"Access-Control-Request-Method": "POST"}
        status, _, headers = await edge.options("createTgPayment", {"Origin": allowed, **ask})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == allowed
        status, _, headers = await edge.options(
            "createTgPayment", {"Origin": refused_origin, **ask}
        )
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        repository = ApplicationRepository(shop.pool, DATA_KEYS)
        assert await repository.set_edge(shop.id, allowed_origins=[refused_origin])
        assert await repository.origin_allowed_anywhere(refused_origin)
        status, _, headers = await edge.options("createTgPayment", {"Origin": allowed, **ask})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == allowed
        status, _, headers = await edge.options(
            "createTgPayment", {"Origin": refused_origin, **ask}
        )
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
    finally:
        await own.stop()


async def test_preflights_and_unauthenticated_refusals_are_limited_per_address(
    database_url: str, fake_telegram: FakeBotApi, make_shop: MakeShop, http: aiohttp.ClientSession
) -> None:
    """Issue 16: preflights were not rate-limited. Per client address, a burst of them (and of
    refusals before any application is known) passes, then 429 in the envelope with Retry-After,
    granted when the origin is known to be allowed; authenticated requests and other addresses
    are not affected."""
    own = await start_own_service(
        database_url, fake_telegram, edge_preflight_rate=0.01, edge_preflight_burst=3
    )
    try:
        origin = _origin()
        shop = (await make_shop(origins=[origin])).on(own)
        edge = Edge(http, http_port(own), None)
        ask = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        for _ in range(3):
            status, _, headers = await edge.options("createTgPayment", ask)
            assert status == 204 and headers["Access-Control-Allow-Origin"] == origin
        reply = await edge.options("createTgPayment", ask)
        await _browser_sees_429(reply, origin)
        stranger = Edge(http, http_port(own), str(uuid.uuid4()))
        reply = await stranger.post("saveTgUser", init_data=shop.init_data(), headers=ask)
        await _browser_sees_429(reply, origin)
        await _browser_sees_429(
            await _browser_request(edge, "POST", "getLeaderboard", {"Origin": origin}), origin
        )
        reply = await edge.options("createTgPayment", {**ask, "Origin": _origin()})
        refused(reply, 429, "RATE_LIMITED")
        assert "Access-Control-Allow-Origin" not in reply[2]  # never an origin none allows

        status, body, _ = await shop.call("saveTgUser", headers={"Origin": origin})
        assert status == 200, body  # an application's own requests have their own limits

        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as elsewhere:
            other = Edge(elsewhere, http_port(own), None)
            status, _, headers = await other.options("createTgPayment", ask)
            assert status == 204 and headers["Access-Control-Allow-Origin"] == origin
    finally:
        await own.stop()


BROKEN_BODIES = {
    # A gzip body that is not gzip: the server's decompression fails mid-read.
    "bad-gzip": (["Content-Encoding: gzip", "Content-Length: 20"], [b"not gzip at all!...."]),
    # A chunked body broken by a bad chunk, then the client goes.
    "bad-chunk": (
        ["Transfer-Encoding: chunked"],
        [b'5\r\n{"lab\r\n', b"zz\r\nnot a chunk\r\n0\r\n\r\n"],
    ),
    # Fewer bytes than announced, then the client goes.
    "cut-short": (["Content-Length: 100"], [b'{"label": "it']),
}


@pytest.mark.parametrize("case", list(BROKEN_BODIES))
async def test_a_body_the_client_breaks_is_refused_and_logged_as_no_error(
    shop: Shop, case: str
) -> None:
    """The client's fault, never an `edge request failed` (issue 16): a body that does not
    decompress was a 500 with an error logged, now 400 with the field `body`. (With aiohttp's C
    parser the other two leave the handler waiting until the client goes; either way nothing is
    logged as an error and nothing is created.)"""
    extra, pieces = BROKEN_BODIES[case]
    head = [
        "POST /v1/createTgPayment HTTP/1.1",
        f"Host: 127.0.0.1:{shop.edge.port}",
        "Content-Type: application/json",
        f"X-App-Id: {shop.app.id}",
        f"X-Tg-InitData: {shop.init_data()}",
        "Connection: close",
        *extra,
    ]
    with structlog.testing.capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", shop.edge.port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write_eof()  # nothing more comes: the server can still answer
            try:
                response = await asyncio.wait_for(reader.read(), 0.5)
            except TimeoutError:
                response = b""  # no answer: the client gives up and goes
        finally:
            writer.close()
        await asyncio.sleep(0.3)  # the server notices the client is gone
    if response:
        assert response.split(b" ", 2)[1] == b"400", response
        assert b'"field": "body"' in response, response
    assert not [entry for entry in logs if entry["log_level"] == "error"], logs
    assert await shop.orders() == 0
