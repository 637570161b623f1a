"""ListOrders' query plans (migration 0008): on a seeded, ANALYZEd table of 200 000 orders, the
statement the adapter sends for each common filter (first page and a deep page) is one index
range scan in the list's order: no Seq Scan, no Sort, with a custom plan and with the generic plan
a prepared statement ends up with. A metadata filter uses its GIN index (then a top-N sort of
the matching orders, which GIN cannot return in order). A comparison that the statistics say
matches very few orders (e.g. still-pending orders of one item) may rightly get a bitmap scan and
a sort of those few instead; such combinations are not asserted here. A subscription state uses
the partial index of migration 0011."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.orders import list_statement
from portex_pay.adapters.postgres.pool import connect
from portex_pay.domain.order_filter import OrderListQuery, parse_order_filter
from portex_pay_devtools.order_seed import seed_orders

COUNT = 200_000
USERS = 20_000
HEAVY_USER = USERS + 1
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DEEP = (NOW - timedelta(seconds=900), 2**62)  # a page position in the middle of the table
TEN_MINUTES_AGO = (NOW - timedelta(minutes=10)).isoformat()
STUCK = f'state = PAID AND fulfilled = false AND paid_time < "{TEN_MINUTES_AGO}"'


@pytest.fixture(scope="module")
async def seeded(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, uuid.UUID]]:
    """A database of its own, migrated, with the orders of three applications."""
    name = f"plans_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await connect(database_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        await migrate(conn)
        apps = [
            await conn.fetchval(
                "INSERT INTO applications (name, webhook_secret, signing_secret) "
                "VALUES ($1, 's', 's') RETURNING id",
                f"plans-{n}",
            )
            for n in range(3)
        ]
        await seed_orders(
            conn, apps, count=COUNT, users=USERS, now=NOW, heavy_user=HEAVY_USER, heavy_orders=5000
        )
        yield conn, apps[0]
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in nodes(child))]


async def plan_of(
    conn: asyncpg.Connection, app: uuid.UUID, text: str, *, deep: bool, generic: bool
) -> dict[str, Any]:
    query = OrderListQuery(parse_order_filter(text), NOW, DEEP if deep else None, 101)
    sql, args = list_statement(app, query)
    mode = "force_generic_plan" if generic else "force_custom_plan"
    await conn.execute(f"SET plan_cache_mode = {mode}")
    explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    found: dict[str, Any] = explained[0]["Plan"]
    return found


@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
@pytest.mark.parametrize("deep", [False, True], ids=["first-page", "deep-page"])
@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("", "orders_list"),
        (f"tg_use_id = {HEAVY_USER}", "orders_list_user"),
        (f"tg_use_id = {HEAVY_USER} AND state = PAID", "orders_list_user"),
        ('label = "item-7"', "orders_list_label"),
        ('label = "item-7" AND state = PAID', "orders_list_label"),
        (STUCK, "orders_list_unfulfilled"),
        ("state = EXPIRED", "orders_list"),
        ("subscription_state = ACTIVE", "orders_list_subscription"),
        ("subscription_state = LAPSED", "orders_list_subscription"),
        (f'create_time < "{(NOW - timedelta(seconds=600)).isoformat()}"', "orders_list"),
    ],
)
async def test_a_page_of_a_common_filter_is_one_index_range_scan_without_sort(
    seeded: tuple[asyncpg.Connection, uuid.UUID], text: str, index: str, deep: bool, generic: bool
) -> None:
    conn, app = seeded
    plan = await plan_of(conn, app, text, deep=deep, generic=generic)
    types = [node["Node Type"] for node in nodes(plan)]
    assert "Seq Scan" not in types and "Sort" not in types and "Incremental Sort" not in types
    scans = [node for node in nodes(plan) if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert [scan["Index Name"] for scan in scans] == [index], types
    assert all(scan["Scan Direction"] == "Forward" for scan in scans)
    if deep:
        assert "tg_payment_id" in scans[0]["Index Cond"]  # the page position is in the range


async def test_a_metadata_filter_uses_its_gin_index(
    seeded: tuple[asyncpg.Connection, uuid.UUID],
) -> None:
    conn, app = seeded
    plan = await plan_of(conn, app, 'metadata.sku = "SKU-10"', deep=False, generic=False)
    assert "Seq Scan" not in [node["Node Type"] for node in nodes(plan)]
    assert "orders_metadata" in [node.get("Index Name") for node in nodes(plan)]
