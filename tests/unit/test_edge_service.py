"""The edge's use cases (service/edge.py) on fakes of their ports (issue 16): browser text is
checked before anything is looked up with it, the verified user is stored as PostgreSQL can hold
it, origin lookups are cached (answers that found nothing apart), and unauthenticated work is
rate-limited per client address."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.catalog import CatalogItem
from portex_pay.domain.errors import IdentityRefused, InvalidArgument, RateLimited
from portex_pay.domain.init_data import (
    TelegramUser,
    VerifiedInitData,
    init_data_fields,
    sign_init_data,
)
from portex_pay.domain.pay import PayCommand
from portex_pay.service.edge import EdgeService, EdgeSettings
from portex_pay.service.orders import OrderService, PaymentSettings
from tests.unit.fakes import NOW, FakeTelegram, InMemoryOrders

APPLICATION = Application(id=uuid4(), name="shop", bot=Bot(777, "777:token", "shop_bot"))
USER = TelegramUser(id=42, first_name="Ada")
IDENTITY = VerifiedInitData(USER, NOW, None, None, None, None, "hmac")
COMMAND = PayCommand(tg_use_id=0, amount=0, label="item", title="Book", description="Magic book")


class Unstorable(Exception):
    """What PostgreSQL (asyncpg) does with U+0000 or a lone surrogate: refuses the statement."""


def as_postgres_would(*values: str | None) -> None:
    for value in values:
        if value is not None and ("\x00" in value or _surrogate(value)):
            raise Unstorable(repr(value))


def _surrogate(value: str) -> bool:
    return any(0xD800 <= ord(character) <= 0xDFFF for character in value)


class Catalog:
    def __init__(self) -> None:
        self.lookups: list[str] = []

    async def get(self, application_id: UUID, key: str) -> CatalogItem | None:
        as_postgres_would(key)
        self.lookups.append(key)
        return CatalogItem(key="item", amount=5) if key == "item" else None

    async def list(self, application_id: UUID) -> list[CatalogItem]:
        raise AssertionError("not used by the edge")

    async def put(self, application_id: UUID, item: CatalogItem) -> bool:
        raise AssertionError("not used by the edge")

    async def delete(self, application_id: UUID, key: str) -> bool:
        raise AssertionError("not used by the edge")


class Users:
    def __init__(self) -> None:
        self.recorded: list[TelegramUser] = []

    async def record(self, application_id: UUID, user: TelegramUser, seen_at: datetime) -> None:
        as_postgres_would(
            user.first_name, user.last_name, user.username, user.language_code, user.photo_url
        )
        self.recorded.append(user)

    async def get(self, application_id: UUID, user_id: int) -> Any:
        raise AssertionError("not used by the edge")


class Origins:
    """The origin port, counting its queries."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.queries: list[str] = []

    async def __call__(self, origin: str) -> bool:
        self.queries.append(origin)
        return origin in self.allowed


async def no_application(_application_id: UUID) -> Application | None:
    return None


def make_edge(
    orders: InMemoryOrders,
    *,
    origins: Origins | None = None,
    catalog: Catalog | None = None,
    users: Users | None = None,
    **settings: Any,
) -> EdgeService:
    order_service = OrderService(
        orders,
        FakeTelegram(),
        PaymentSettings(
            max_amount=10_000, order_ttl_seconds=900, telegram_timeout=5.0, payload_secret=b"p" * 32
        ),
        clock=lambda: orders.now,
    )
    return EdgeService(
        no_application,
        origins or Origins(set()),
        catalog or Catalog(),
        users or Users(),
        order_service,
        EdgeSettings(**settings),
        clock=lambda: orders.now,
    )


@pytest.mark.parametrize("label", ["item\x00", "item\ud800", "\udfff", "\x00"])
async def test_a_label_postgresql_cannot_take_is_refused_before_the_catalog_lookup(
    label: str,
) -> None:
    orders, catalog = InMemoryOrders(), Catalog()
    edge = make_edge(orders, catalog=catalog)
    with pytest.raises(InvalidArgument) as raised:
        await edge.create_payment(APPLICATION, IDENTITY, PayCommand(0, 0, label, "B", "D"), None)
    assert [v.field for v in raised.value.violations] == ["label"]
    assert catalog.lookups == [] and orders.orders == {}


@pytest.mark.parametrize("field", ["title", "description", "payload", "photo_url", "callback_url"])
@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
async def test_every_text_field_is_checked_before_the_catalog_lookup(field: str, bad: str) -> None:
    orders, catalog = InMemoryOrders(), Catalog()
    edge = make_edge(orders, catalog=catalog)
    value = f"https://x.example/{bad}" if field.endswith("url") else f"x{bad}"
    command = replace(COMMAND, **{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as raised:
        await edge.create_payment(APPLICATION, IDENTITY, command, None)
    assert [v.field for v in raised.value.violations] == [field]
    assert catalog.lookups == [] and orders.orders == {}


async def test_a_good_request_is_looked_up_and_priced() -> None:
    orders, catalog = InMemoryOrders(), Catalog()
    order = await make_edge(orders, catalog=catalog).create_payment(
        APPLICATION, IDENTITY, COMMAND, None
    )
    assert (order.label, order.amount, order.tg_use_id) == ("item", 5, 42)
    assert catalog.lookups == ["item"]


async def test_a_bad_status_is_refused_before_the_order_is_looked_up() -> None:
    orders = InMemoryOrders()
    edge = make_edge(orders)
    with pytest.raises(InvalidArgument) as raised:
        # No order 1 exists: a lookup first would have answered ORDER_NOT_FOUND.
        await edge.report_invoice_closed(APPLICATION, IDENTITY, 1, "cancelled\x00")
    assert [v.field for v in raised.value.violations] == ["status"]


async def test_the_verified_user_is_stored_with_nul_and_lone_surrogates_replaced() -> None:
    users = Users()
    odd = TelegramUser(
        id=42,
        first_name="A\x00da",
        last_name="\ud800",
        username="u\udfff",
        language_code="e\x00",
        photo_url="https://t.me/\ud83d.jpg",
        is_premium=True,
    )
    edge = make_edge(InMemoryOrders(), users=users)
    await edge.save_user(APPLICATION, VerifiedInitData(odd, NOW, None, None, None, None, "hmac"))
    assert users.recorded == [
        TelegramUser(
            id=42,
            first_name="A\ufffdda",
            last_name="\ufffd",
            username="u\ufffd",
            language_code="e\ufffd",
            photo_url="https://t.me/\ufffd.jpg",
            is_premium=True,
        )
    ]


async def test_an_origin_is_queried_once_per_ttl_whatever_the_answer() -> None:
    origins = Origins({"https://game.example.com"})
    edge = make_edge(InMemoryOrders(), origins=origins, origin_cache_ttl=60.0)
    assert not edge.origin_known_allowed("https://game.example.com")  # never asked yet
    for _ in range(5):
        assert await edge.origin_allowed_anywhere("https://game.example.com")
        assert not await edge.origin_allowed_anywhere("https://evil.example.com")
    assert origins.queries == ["https://game.example.com", "https://evil.example.com"]
    assert edge.origin_known_allowed("https://game.example.com")
    assert not edge.origin_known_allowed("https://evil.example.com")


async def test_a_flood_of_made_up_origins_never_evicts_the_allowed_ones() -> None:
    live = {f"https://game-{i}.example.com" for i in range(50)}
    origins = Origins(live)
    edge = make_edge(InMemoryOrders(), origins=origins, origin_cache_ttl=600.0)
    for origin in live:
        assert await edge.origin_allowed_anywhere(origin)
    for i in range(20_000):  # far more than the cache of answers that found nothing holds
        assert not await edge.origin_allowed_anywhere(f"https://random-{i}.example.com")
    origins.queries.clear()
    for origin in live:
        assert await edge.origin_allowed_anywhere(origin)
        assert edge.origin_known_allowed(origin)
    assert origins.queries == []


def test_unauthenticated_work_is_limited_per_client_address() -> None:
    edge = make_edge(InMemoryOrders(), preflight_rate=0.01, preflight_burst=3)
    for _ in range(3):
        edge.admit_address("203.0.113.7")
    with pytest.raises(RateLimited) as raised:
        edge.admit_address("203.0.113.7")
    assert raised.value.retry_after >= 1
    edge.admit_address("198.51.100.1")  # another address has its own bucket
    edge.admit_address(None)  # no address (a Unix socket) is one key of its own


def signed_init_data(token: str, user_id: int = 42) -> str:
    fields = init_data_fields({"id": user_id, "first_name": "Ada"}, auth_date=NOW)
    return sign_init_data(fields, bot_token=token)


def refusal(edge: EdgeService, application: Application, init_data: str) -> str:
    with pytest.raises(IdentityRefused) as refused:
        edge.identify(application, init_data)
    return refused.value.reason


def test_initdata_verified_before_still_expires() -> None:
    orders = InMemoryOrders()
    edge = make_edge(orders, init_data_max_age=timedelta(hours=1))
    init_data = signed_init_data(APPLICATION.bot_token or "")
    assert edge.identify(APPLICATION, init_data).user.id == 42
    orders.now = NOW + timedelta(hours=1)
    assert edge.identify(APPLICATION, init_data).user.id == 42  # exactly max_age old: accepted
    orders.now = NOW + timedelta(hours=1, seconds=1)
    assert refusal(edge, APPLICATION, init_data) == "INIT_DATA_EXPIRED"


def test_initdata_verified_before_is_checked_afresh_for_another_bot_token() -> None:
    orders = InMemoryOrders()
    edge = make_edge(orders)
    init_data = signed_init_data(APPLICATION.bot_token or "")
    assert edge.identify(APPLICATION, init_data).user.id == 42
    rotated = replace(APPLICATION, bot=Bot(777, "777:another-token", "shop_bot"))
    assert refusal(edge, rotated, init_data) == "INIT_DATA_INVALID"
    other_bot = replace(APPLICATION, bot=Bot(778, "777:token", "other_bot"))
    assert edge.identify(other_bot, init_data).user.id == 42  # the HMAC names no bot id


def test_initdata_refused_once_is_refused_every_time() -> None:
    orders = InMemoryOrders()
    edge = make_edge(orders)
    forged = signed_init_data("777:not-the-token")
    assert refusal(edge, APPLICATION, forged) == "INIT_DATA_INVALID"
    assert refusal(edge, APPLICATION, forged) == "INIT_DATA_INVALID"
    assert edge.identify(APPLICATION, signed_init_data(APPLICATION.bot_token or "")).user.id == 42
