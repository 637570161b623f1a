"""The catalog RPCs (SetCatalogItem, DeleteCatalogItem, ListCatalogItems) and GetTelegramUser,
through real gRPC: validation with field violations, replacement, and tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.catalog import TelegramUserRepository
from portex_pay.app import PortexApp
from portex_pay.domain.init_data import TelegramUser
from tests.conftest import TestApp
from tests.integration.helpers import details


def _item(**fields: Any) -> payment_pb2.CatalogItem:
    return payment_pb2.CatalogItem(**{"key": "sword", "amount": 25, **fields})


async def _set(stub: Any, app: TestApp, **fields: Any) -> payment_pb2.CatalogItem:
    request = payment_pb2.SetCatalogItemRequest(item=_item(**fields))
    stored: payment_pb2.CatalogItem = await stub.SetCatalogItem(request, metadata=app.metadata)
    return stored


async def _list(stub: Any, app: TestApp) -> list[payment_pb2.CatalogItem]:
    listed = await stub.ListCatalogItems(
        payment_pb2.ListCatalogItemsRequest(), metadata=app.metadata
    )
    return list(listed.items)


async def _rejected(call: Any, code: grpc.StatusCode) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, raised.value.details()
    return details(raised.value)


async def test_set_adds_then_replaces_and_list_is_ordered_by_key(stub, app: TestApp) -> None:
    stored = await _set(
        stub,
        app,
        title="Sword",
        description="Sharp.\nVery sharp.",
        photo_url="https://cdn.example.com/sword.png",
    )
    assert (stored.key, stored.amount, stored.title) == ("sword", 25, "Sword")
    assert stored.description == "Sharp.\nVery sharp."
    assert stored.photo_url == "https://cdn.example.com/sword.png"
    await _set(stub, app, key="axe", amount=7)

    # Replacing sets every field: the optional ones left unset are cleared.
    replaced = await _set(stub, app, amount=30)
    assert replaced.amount == 30
    assert not replaced.HasField("title") and not replaced.HasField("photo_url")

    items = await _list(stub, app)
    assert [(i.key, i.amount) for i in items] == [("axe", 7), ("sword", 30)]
    sword = items[1]
    assert not sword.HasField("title")
    assert not sword.HasField("description")
    assert not sword.HasField("photo_url")


async def test_a_subscription_item_round_trips_and_a_replacement_without_it_is_one_off(
    stub, app: TestApp
) -> None:
    stored = await _set(stub, app, key="vip", amount=10_000, subscription_period=2592000)
    assert (stored.key, stored.amount, stored.subscription_period) == ("vip", 10_000, 2592000)
    await _set(stub, app, key="axe", amount=7)
    vip, axe = sorted(await _list(stub, app), key=lambda item: item.key, reverse=True)
    assert (vip.key, vip.subscription_period) == ("vip", 2592000)
    assert not axe.HasField("subscription_period")
    replaced = await _set(stub, app, key="vip", amount=100)
    assert not replaced.HasField("subscription_period")
    assert not (await _list(stub, app))[1].HasField("subscription_period")


async def test_delete_removes_once(stub, app: TestApp) -> None:
    await _set(stub, app)
    request = payment_pb2.DeleteCatalogItemRequest(key="sword")
    assert (await stub.DeleteCatalogItem(request, metadata=app.metadata)).deleted is True
    assert (await stub.DeleteCatalogItem(request, metadata=app.metadata)).deleted is False
    assert await _list(stub, app) == []


async def test_a_new_application_has_an_empty_catalog(stub, app: TestApp) -> None:
    assert await _list(stub, app) == []


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"key": ""}, ["item.key"]),
        ({"key": "k" * 65}, ["item.key"]),
        ({"key": "two\nlines"}, ["item.key"]),
        ({"key": "nul\x00"}, ["item.key"]),
        ({"amount": 0}, ["item.amount"]),
        ({"amount": -5}, ["item.amount"]),
        ({"amount": 10_001}, ["item.amount"]),  # the test server's PORTEX_MAX_AMOUNT is 10000
        ({"title": ""}, ["item.title"]),
        ({"title": "t" * 33}, ["item.title"]),
        ({"title": "esc\x1b[2J"}, ["item.title"]),
        ({"description": "del\x7f"}, ["item.description"]),
        ({"description": "d" * 256}, ["item.description"]),
        ({"photo_url": "ftp://example.com/a.png"}, ["item.photo_url"]),
        ({"photo_url": "https://example.com/a\tb"}, ["item.photo_url"]),
        ({"subscription_period": 86400}, ["item.subscription_period"]),
        ({"subscription_period": 0}, ["item.subscription_period"]),
        ({"subscription_period": -2592000}, ["item.subscription_period"]),
        ({"subscription_period": 2592000, "amount": 10_001}, ["item.amount"]),
        (
            {"key": "", "amount": 0, "title": "t\x00", "photo_url": "nope"},
            ["item.key", "item.amount", "item.title", "item.photo_url"],
        ),
    ],
)
async def test_set_refuses_a_bad_item_with_one_violation_per_field(
    stub, app: TestApp, service: PortexApp, fields: dict[str, Any], bad: list[str]
) -> None:
    request = payment_pb2.SetCatalogItemRequest(item=_item(**fields))
    found = await _rejected(
        stub.SetCatalogItem(request, metadata=app.metadata), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert [v.field for v in found["BadRequest"].field_violations] == bad
    count = await service.pool.fetchval(
        "SELECT count(*) FROM catalog_items WHERE application_id = $1::uuid", app.id
    )
    assert count == 0


async def test_set_without_an_item_is_invalid(stub, app: TestApp) -> None:
    found = await _rejected(
        stub.SetCatalogItem(payment_pb2.SetCatalogItemRequest(), metadata=app.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {v.field for v in found["BadRequest"].field_violations} == {"item.key", "item.amount"}


async def test_free_text_description_keeps_line_breaks_and_tabs(stub, app: TestApp) -> None:
    text = "Line one\r\n\tLine two"
    assert (await _set(stub, app, description=text)).description == text
    assert (await _list(stub, app))[0].description == text


@pytest.mark.parametrize("key", ["", "k" * 65, "a\x00", "a\nb", "a\u2028b"])
async def test_delete_refuses_a_key_no_item_can_have(stub, app: TestApp, key: str) -> None:
    found = await _rejected(
        stub.DeleteCatalogItem(
            payment_pb2.DeleteCatalogItemRequest(key=key), metadata=app.metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert [v.field for v in found["BadRequest"].field_violations] == ["key"]


async def test_one_application_never_sees_or_changes_anothers_catalog(stub, make_app) -> None:
    shop: TestApp = await make_app()
    other: TestApp = await make_app()
    await _set(stub, shop, key="gem", amount=50)
    assert await _list(stub, other) == []
    gone = await stub.DeleteCatalogItem(
        payment_pb2.DeleteCatalogItemRequest(key="gem"), metadata=other.metadata
    )
    assert gone.deleted is False
    # The same key in another application is another item.
    await _set(stub, other, key="gem", amount=1)
    assert [(i.key, i.amount) for i in await _list(stub, shop)] == [("gem", 50)]
    assert [(i.key, i.amount) for i in await _list(stub, other)] == [("gem", 1)]


async def test_catalog_rpcs_need_an_api_key(stub) -> None:
    calls = [
        stub.SetCatalogItem(payment_pb2.SetCatalogItemRequest(item=_item())),
        stub.DeleteCatalogItem(payment_pb2.DeleteCatalogItemRequest(key="sword")),
        stub.ListCatalogItems(payment_pb2.ListCatalogItemsRequest()),
        stub.GetTelegramUser(payment_pb2.GetTelegramUserRequest(tg_use_id=1)),
    ]
    for call in calls:
        await _rejected(call, grpc.StatusCode.UNAUTHENTICATED)


def _get_user(stub: Any, app: TestApp, tg_use_id: int) -> Any:
    return stub.GetTelegramUser(
        payment_pb2.GetTelegramUserRequest(tg_use_id=tg_use_id), metadata=app.metadata
    )


async def test_get_telegram_user_not_found_until_recorded_then_found(
    stub, make_app, service: PortexApp
) -> None:
    shop: TestApp = await make_app()
    other: TestApp = await make_app()
    found = await _rejected(_get_user(stub, shop, 777001), grpc.StatusCode.NOT_FOUND)
    assert found["ErrorInfo"].reason == "USER_NOT_FOUND"

    users = TelegramUserRepository(service.pool)
    first = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    await users.record(
        UUID(shop.id),
        TelegramUser(id=777001, first_name="Ann", username="ann", language_code="en"),
        first,
    )
    later = first + timedelta(hours=1)
    await users.record(
        UUID(shop.id),
        TelegramUser(
            id=777001,
            first_name="Anna",
            last_name="Smith",
            username="anna",
            language_code="de",
            is_premium=True,
            photo_url="https://t.me/i/userpic/320/anna.jpg",
        ),
        later,
    )

    user = await _get_user(stub, shop, 777001)
    assert (user.id, user.first_name, user.last_name, user.username) == (
        777001,
        "Anna",
        "Smith",
        "anna",
    )
    assert (user.language_code, user.is_premium) == ("de", True)
    assert user.photo_url == "https://t.me/i/userpic/320/anna.jpg"
    assert user.first_seen_time.ToDatetime(tzinfo=UTC) == first
    assert user.last_seen_time.ToDatetime(tzinfo=UTC) == later

    # Another application's Mini App never saw this user.
    found = await _rejected(_get_user(stub, other, 777001), grpc.StatusCode.NOT_FOUND)
    assert found["ErrorInfo"].reason == "USER_NOT_FOUND"


async def test_get_telegram_user_leaves_unset_what_telegram_did_not_send(
    stub, app: TestApp, service: PortexApp
) -> None:
    await TelegramUserRepository(service.pool).record(
        UUID(app.id), TelegramUser(id=5, first_name="Bo"), datetime.now(UTC)
    )
    user = await _get_user(stub, app, 5)
    assert user.first_name == "Bo" and user.is_premium is False
    for field in ("last_name", "username", "language_code", "photo_url"):
        assert not user.HasField(field), field


@pytest.mark.parametrize("tg_use_id", [0, -1])
async def test_get_telegram_user_refuses_an_id_that_is_not_positive(
    stub, app: TestApp, tg_use_id: int
) -> None:
    found = await _rejected(_get_user(stub, app, tg_use_id), grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in found["BadRequest"].field_violations] == ["tg_use_id"]
