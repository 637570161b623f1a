"""ListOrders through real gRPC and PostgreSQL (issue 18): every filter alone and combined, the
stuck list, keyset pages across concurrent inserts, expiry as a reader sees it before the sweeper
ran, tenant isolation, limits and bad input with their exact messages (never a 5xx, whatever the
filter), and no transaction held between pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay.domain.paging import encode_page_token
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import details, pay_request

Order = payment_pb2.Order


@pytest.fixture
async def shop(make_app) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


async def page(
    stub: Any, app: TestApp, text: str = "", *, size: int = 0, token: str = ""
) -> payment_pb2.ListOrdersResponse:
    request = payment_pb2.ListOrdersRequest(filter=text, page_size=size, page_token=token)
    response: payment_pb2.ListOrdersResponse = await stub.ListOrders(request, metadata=app.metadata)
    return response


async def listed(stub: Any, app: TestApp, text: str = "", *, size: int = 0) -> list[int]:
    """Every order the filter selects, page after page."""
    ids: list[int] = []
    token = ""
    while True:
        response = await page(stub, app, text, size=size, token=token)
        ids.extend(order.tg_payment_id for order in response.orders)
        token = response.next_page_token
        if not token:
            return ids


def rfc3339(stamp: timestamp_pb2.Timestamp) -> str:
    return stamp.ToJsonString()


async def refusal(call: Any) -> tuple[grpc.StatusCode, list[tuple[str, str]]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    bad = details(raised.value).get("BadRequest")
    violations = [(v.field, v.description) for v in bad.field_violations] if bad else []
    return raised.value.code(), violations


async def paid(stub: Any, shop: TestApp, fake: FakeBotApi, **fields: Any) -> Order:
    created = await stub.Pay(pay_request(**fields), metadata=shop.metadata)
    outcome = await fake.pay_invoice(created.tg_payment_url, fields.get("tg_use_id", 4242))
    assert outcome.approved
    await fake.drain(shop.bot_token)
    order: Order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=created.tg_payment_id), metadata=shop.metadata
    )
    assert order.state == Order.PAID
    return order


async def test_each_filter_alone_and_combined(stub, service: PortexApp, shop, fake_telegram):
    a = await paid(stub, shop, fake_telegram, tg_use_id=101, label="gems", metadata={"sku": "G"})
    b = (await stub.Pay(pay_request(tg_use_id=101, label="coins"), metadata=shop.metadata)).order
    c = (
        await stub.Pay(
            pay_request(tg_use_id=202, label="gems", metadata={"gift card": "yes"}),
            metadata=shop.metadata,
        )
    ).order
    await stub.CancelOrder(
        payment_pb2.CancelOrderRequest(tg_payment_id=c.tg_payment_id), metadata=shop.metadata
    )
    d = await paid(stub, shop, fake_telegram, tg_use_id=202, label="gems")
    # AcknowledgeOrder is another change's: the delivery is recorded directly.
    await service.pool.execute(
        "UPDATE orders SET fulfilled_at = now() WHERE tg_payment_id = $1", a.tg_payment_id
    )
    ids = {name: o.tg_payment_id for name, o in zip("abcd", (a, b, c, d), strict=True)}
    cases = {
        "": "dcba",
        "tg_use_id = 101": "ba",
        "tg_use_id != 101": "dc",
        'label = "gems"': "dca",
        'label != "gems"': "b",
        "state = PAID": "da",
        "state = CANCELLED": "c",
        "state != PENDING": "dca",
        "state = EXPIRED": "",
        "fulfilled = true": "a",
        "fulfilled = false": "dcb",
        'metadata.sku = "G"': "a",
        'metadata.sku != "G"': "dcb",
        'metadata."gift card" = "yes"': "c",
        f'create_time > "{rfc3339(b.create_time)}"': "dc",
        f'create_time <= "{rfc3339(b.create_time)}"': "ba",
        f'create_time = "{rfc3339(c.create_time)}"': "c",
        f'paid_time >= "{rfc3339(a.paid_time)}"': "da",
        f'paid_time > "{rfc3339(a.paid_time)}"': "d",
        f'paid_time != "{rfc3339(a.paid_time)}"': "dcb",
        'tg_use_id = 202 AND label = "gems" AND state = PAID': "d",
        "state = PAID AND fulfilled = false": "d",
        'label = "gems" AND tg_use_id = 101 AND metadata.sku = "G" AND fulfilled = true': "a",
        f'tg_use_id = 101 AND create_time < "{rfc3339(d.create_time)}" AND state != PAID': "b",
    }
    for text, names in cases.items():
        assert await listed(stub, shop, text) == [ids[name] for name in names], text
    # The orders are the whole orders, newest first, with their metadata.
    response = await page(stub, shop, 'label = "gems"')
    assert [o.metadata for o in response.orders] == [{}, {"gift card": "yes"}, {"sku": "G"}]
    assert response.orders[0] == await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=d.tg_payment_id), metadata=shop.metadata
    )
    assert response.orders[2].HasField("fulfilled_time")


async def test_the_stuck_list_is_paid_unacknowledged_orders_older_than_a_time(
    stub, service: PortexApp, shop, fake_telegram
):
    old = await paid(stub, shop, fake_telegram, tg_use_id=1)
    old_delivered = await paid(stub, shop, fake_telegram, tg_use_id=2)
    recent = await paid(stub, shop, fake_telegram, tg_use_id=3)
    await stub.Pay(pay_request(tg_use_id=4), metadata=shop.metadata)  # never paid
    # Time passing, without waiting: two orders were paid an hour ago, one of them delivered.
    await service.pool.execute(
        "UPDATE orders SET paid_at = now() - interval '1 hour' WHERE tg_payment_id = ANY($1)",
        [old.tg_payment_id, old_delivered.tg_payment_id],
    )
    await service.pool.execute(
        "UPDATE orders SET fulfilled_at = now() WHERE tg_payment_id = $1",
        old_delivered.tg_payment_id,
    )
    ten_minutes_ago = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    stuck = f'state = PAID AND fulfilled = false AND paid_time < "{ten_minutes_ago}"'
    assert await listed(stub, shop, stuck) == [old.tg_payment_id]
    unfulfilled = "state = PAID AND fulfilled = false"
    assert await listed(stub, shop, unfulfilled) == [recent.tg_payment_id, old.tg_payment_id]


async def _seed(
    service: PortexApp, app: TestApp, count: int, *, base: datetime | None = None
) -> None:
    """`count` orders straight into the table, created a second before `base` (now) and a
    millisecond apart, three to a creation time (ties that a page boundary must split by id)."""
    await service.pool.execute(
        """
        INSERT INTO orders (application_id, tg_use_id, amount, label, title, description, state,
            expires_at, created_at)
        SELECT $1::uuid, 7, 5, 'seed', 'Book', 'Magic', 'pending', now() + interval '1 day',
            coalesce($3, now()) - make_interval(secs => (n / 3) * 0.001 + 1)
        FROM generate_series(1, $2) AS n
        """,
        app.id,
        count,
        base,
    )


async def test_pages_stay_exact_while_orders_are_inserted(stub, service: PortexApp, shop):
    """Keyset pages: an order inserted while a listing pages (new ones at the head, a late
    commit with an old creation time in the middle) neither repeats an order nor hides one
    that existed when the listing began; the order is strictly newest first."""
    started = datetime.now(UTC)
    await _seed(service, shop, 60, base=started)
    before = await listed(stub, shop, size=1000)
    assert len(before) == 60
    seen: list[Order] = []
    token = ""
    while True:
        response = await page(stub, shop, size=7, token=token)
        seen.extend(response.orders)
        await stub.Pay(pay_request(tg_use_id=7), metadata=shop.metadata)
        # A late commit created among the seeded orders.
        await _seed(service, shop, 1, base=started - timedelta(seconds=0.0105))
        token = response.next_page_token
        if not token:
            break
    ids = [o.tg_payment_id for o in seen]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i in set(before)] == before
    keys = [(o.create_time.ToMicroseconds(), o.tg_payment_id) for o in seen]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)


async def test_a_page_holds_no_transaction_open_until_the_next(stub, service: PortexApp, shop):
    """Each page is one statement: between pages no connection sits in a transaction whose
    last statement was the listing (the event stream's horizon and vacuum depend on it)."""
    await _seed(service, shop, 30)
    first = await page(stub, shop, size=10)
    assert first.next_page_token
    held = await service.pool.fetchval(
        """
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND state LIKE 'idle in transaction%'
          AND query LIKE '%ORDER BY created_at DESC, tg_payment_id DESC%'
        """
    )
    assert held == 0
    second = await page(stub, shop, size=10, token=first.next_page_token)
    assert len(second.orders) == 10


async def test_an_order_past_its_expiry_is_expired_before_the_sweeper_ran(
    stub, service: PortexApp, shop
):
    created = await stub.Pay(pay_request(tg_use_id=31), metadata=shop.metadata)
    tg_payment_id = created.tg_payment_id
    await service.pool.execute(
        "UPDATE orders SET expires_at = now() - interval '1 second' WHERE tg_payment_id = $1",
        tg_payment_id,
    )
    # Hold the row: the sweeper skips locked rows (FOR UPDATE SKIP LOCKED), so it stays
    # 'pending' in the table for as long as this test looks.
    async with service.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM orders WHERE tg_payment_id = $1 FOR UPDATE", tg_payment_id
        )
        stored = await service.pool.fetchval(
            "SELECT state FROM orders WHERE tg_payment_id = $1", tg_payment_id
        )
        assert stored == "pending"
        assert await listed(stub, shop, "state = EXPIRED") == [tg_payment_id]
        assert await listed(stub, shop, "state = PENDING") == []
        assert await listed(stub, shop, "state != PENDING") == [tg_payment_id]
        response = await page(stub, shop, "tg_use_id = 31")
        assert [o.state for o in response.orders] == [Order.EXPIRED]


async def test_another_applications_orders_are_never_listed(stub, make_app, shop):
    stranger: TestApp = await make_app()
    mine = await stub.Pay(pay_request(tg_use_id=555), metadata=shop.metadata)
    await stub.Pay(pay_request(tg_use_id=555), metadata=stranger.metadata)
    assert await listed(stub, shop, "tg_use_id = 555") == [mine.tg_payment_id]
    theirs = await listed(stub, stranger, "")
    assert mine.tg_payment_id not in theirs and len(theirs) == 1


async def test_the_page_size_defaults_to_100_and_the_last_page_has_no_token(
    stub, service: PortexApp, shop
):
    await _seed(service, shop, 150)
    first = await page(stub, shop)
    assert (len(first.orders), bool(first.next_page_token)) == (100, True)
    second = await page(stub, shop, token=first.next_page_token)
    assert (len(second.orders), second.next_page_token) == (50, "")
    whole = await page(stub, shop, size=1000)
    assert (len(whole.orders), whole.next_page_token) == (150, "")


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("tg_use_id = 42 AND state =", "position 27: expected a value after '='"),
        ("state = PAID and tg_use_id = 1", "position 14: write AND in upper case, not and"),
        ("amount > 5", "position 1: unknown field 'amount' (fields: tg_use_id, state, label, "
         "create_time, paid_time, fulfilled, subscription_state, metadata.KEY)"),
        ('label = "x', "position 9: a string is not closed (a double quote is missing)"),
        ("state = PAID\x00", "position 13: control characters and lone surrogates are not "
         "allowed (found U+0000)"),
        ("x" * 1001, "position 1001: a filter holds at most 1000 characters"),
    ],
)  # fmt: skip
async def test_a_bad_filter_is_invalid_argument_naming_position_and_reason(
    stub, shop, text: str, description: str
):
    code, violations = await refusal(page(stub, shop, text))
    assert (code, violations) == (grpc.StatusCode.INVALID_ARGUMENT, [("filter", description)])


async def test_bad_page_sizes_and_tokens_are_invalid_arguments(stub, service: PortexApp, shop):
    await _seed(service, shop, 3)
    size_problem = ("page_size", "must be from 1 to 1000")
    for size in (-1, 1001):
        assert await refusal(page(stub, shop, size=size)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [size_problem],
        )
    code, violations = await refusal(page(stub, shop, token="bm90LWEtdG9rZW4"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in violations] == ["page_token"]
    assert violations[0][1].startswith("is not a page token of this list")
    token = (await page(stub, shop, "state = PENDING", size=1)).next_page_token
    code, violations = await refusal(page(stub, shop, "state = PAID", size=1, token=token))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations[0][0] == "page_token"
    assert violations[0][1].startswith("was made for other filters")
    # A token of the right shape whose position is no time (crafted): refused, not a 5xx.
    crafted = encode_page_token((10**18, 10**18, 1), {"filter": ""})
    code, violations = await refusal(page(stub, shop, token=crafted))
    assert (code, [field for field, _ in violations]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["page_token"],
    )
    # Every bad field at once.
    _, violations = await refusal(page(stub, shop, "state", size=-5, token="x"))
    assert [field for field, _ in violations] == ["page_size", "filter", "page_token"]


async def test_no_filter_gets_anything_but_an_answer_or_invalid_argument(stub, shop):
    loop = asyncio.get_running_loop()
    codes: set[grpc.StatusCode] = set()

    async def check(text: str) -> None:
        try:
            await page(stub, shop, text, size=5)
        except grpc.aio.AioRpcError as error:
            codes.add(error.code())
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, error.details())
        else:
            codes.add(grpc.StatusCode.OK)

    pieces = st.sampled_from(
        [
            "tg_use_id", "state", "label", "create_time", "paid_time", "fulfilled", "metadata.",
            'metadata."k"', "AND", " ", "=", "!=", "<", ">=", "PAID", "EXPIRED", "true", "42",
            "9" * 30, '"2026-12-03T10:00:00Z"', '"9999-12-31T23:59:59-23:59"', '"x\\"y"',
            '"\u00e9\u2028"', "\\", '"', "\ufffd", "-1", ":", "(", "\u0660",
        ]
    )  # fmt: skip

    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(st.one_of(st.lists(pieces, max_size=12).map("".join), st.text(max_size=40)))
    def property_holds(text: str) -> None:
        asyncio.run_coroutine_threadsafe(check(text), loop).result(timeout=30)

    await asyncio.to_thread(property_holds)
    assert codes == {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


async def test_a_listing_judges_expiry_at_its_first_pages_time(stub, service: PortexApp, shop):
    """The page token carries the time the first page fixed: an order that expires between
    two pages is still selected (and shown) as PENDING by the later page."""
    await _seed(service, shop, 2)
    response = await page(stub, shop, "state = PENDING", size=1)
    second_id = (await listed(stub, shop, "state = PENDING"))[1]
    # It expires now: after the first page's time, before the next page's.
    await service.pool.execute(
        "UPDATE orders SET expires_at = clock_timestamp() WHERE tg_payment_id = $1", second_id
    )
    async with service.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM orders WHERE tg_payment_id = $1 FOR UPDATE", second_id)
        later = await page(stub, shop, "state = PENDING", size=1, token=response.next_page_token)
        assert [(o.tg_payment_id, o.state) for o in later.orders] == [(second_id, Order.PENDING)]
        # A new listing judges now.
        assert second_id not in await listed(stub, shop, "state = PENDING")
