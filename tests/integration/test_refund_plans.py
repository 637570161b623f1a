"""What a page of ListRefunds and a sweep of the unfulfilled-order policy cost in PostgreSQL, read
from EXPLAIN ANALYZE on a database of their own seeded with tens of thousands of rows: a page, the
first or one deep in the list, is one range scan of `refunds_listing` that reads no more rows
than it returns (plus the one that tells a next page exists), with no sort; the sweep reads
`orders_unfulfilled` only for the application with the policy, and nothing of the one without."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.orders import UNFULFILLED_PAST_DEADLINE
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.postgres.refunds import list_query
from portex_pay.domain.fulfilment import FULFILLABLE
from portex_pay.domain.refunds import RefundFilter, RefundPosition
from portex_pay.service.clock import utcnow

ROWS = 20_000  # per application
PAGE = 100


@pytest.fixture(scope="module")
async def seeded(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, UUID, UUID]]:
    """A database of its own, seeded once for the module: two applications with ROWS paid
    orders each, half of them refunded, the first with the unfulfilled-order policy (switched on
    before its orders were paid), the second without."""
    name = f"plans_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await create_pool(database_url.rsplit("/", 1)[0] + f"/{name}", min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        apps = []
        for n, policy in ((1, timedelta(hours=1)), (2, None)):
            apps.append(
                await pool.fetchval(
                    """
                    INSERT INTO applications (name, webhook_secret, signing_secret, bot_token,
                        bot_id, unfulfilled_refund_after, unfulfilled_refund_since)
                    VALUES ($1, 's', 's', $2, $3, $4::interval,
                        CASE WHEN $4 IS NULL THEN NULL ELSE now() - interval '30 days' END)
                    RETURNING id
                    """,
                    f"plans-{n}",
                    f"{n}:token",
                    n,
                    policy,
                )
            )
        for app in apps:
            await _seed(pool, app)
        await pool.execute("ANALYZE")
        yield pool, apps[0], apps[1]
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _seed(pool: asyncpg.Pool, app: UUID) -> None:
    """ROWS orders paid over the last 20 days (never acknowledged), each with its charge; the
    older half refunded, with refunds asked over those days."""
    await pool.execute(
        """
        WITH o AS (
            INSERT INTO orders (application_id, tg_use_id, amount, label, title, description,
                state, expires_at, telegram_payment_charge_id, paid_at, created_at)
            SELECT $1::uuid, 42, 5, 'l', 't', 'd', 'paid', now(), $1::uuid::text || '-' || g,
                now() - g * interval '1 minute', now() - g * interval '1 minute'
            FROM generate_series(1, $2) g
            RETURNING tg_payment_id, telegram_payment_charge_id, paid_at
        ),
        p AS (
            INSERT INTO payments (telegram_payment_charge_id, tg_payment_id, application_id,
                tg_use_id, amount, currency, invoice_payload, raw)
            SELECT telegram_payment_charge_id, tg_payment_id, $1::uuid, 42, 5, 'XTR', 'v1', '{}'
            FROM o
            RETURNING telegram_payment_charge_id, tg_payment_id
        )
        INSERT INTO refunds (telegram_payment_charge_id, tg_payment_id, application_id, bot_id,
            tg_use_id, amount, reason, state, created_at)
        SELECT p.telegram_payment_charge_id, p.tg_payment_id, $1::uuid, 1, 42, 5, 'requested',
            'succeeded', o.paid_at + interval '1 second'
        FROM p JOIN o USING (tg_payment_id)
        """,
        app,
        ROWS,
    )
    # The older half was refunded: those orders left the policy's index.
    await pool.execute(
        """
        UPDATE orders SET state = 'refunded', refunded_at = now()
        WHERE application_id = $1 AND paid_at < now() - interval '10000 minutes'
        """,
        app,
    )
    await pool.execute(
        """
        DELETE FROM refunds r USING orders o
        WHERE r.tg_payment_id = o.tg_payment_id AND o.application_id = $1 AND o.state = 'paid'
        """,
        app,
    )


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def _explain(pool: asyncpg.Pool, query: str, *args: Any) -> list[dict[str, Any]]:
    plan = await pool.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
    if isinstance(plan, str):  # the pool decodes json; a bare connection would not
        plan = json.loads(plan)
    return _nodes(plan[0]["Plan"])


async def test_a_page_of_refunds_is_one_range_scan_of_its_index(seeded) -> None:
    pool, app, _ = seeded
    rows = await pool.fetch(
        """
        SELECT created_at, telegram_payment_charge_id FROM refunds WHERE application_id = $1
        ORDER BY created_at DESC, telegram_payment_charge_id COLLATE "C" DESC
        """,
        app,
    )
    deep = rows[len(rows) // 2]  # a page from the middle of the list
    pages = [
        (RefundFilter(), None),
        (RefundFilter(), RefundPosition(deep["created_at"], deep["telegram_payment_charge_id"])),
        (RefundFilter(created_before=deep["created_at"]), None),
    ]
    for refund_filter, after in pages:
        query, args = list_query(app, refund_filter, after, PAGE + 1)
        nodes = await _explain(pool, query, *args)
        kinds = [node["Node Type"] for node in nodes]
        assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
        (scan,) = [node for node in nodes if node.get("Relation Name") == "refunds"]
        assert scan["Index Name"] == "refunds_listing"
        assert scan["Actual Rows"] == PAGE + 1
        assert scan.get("Rows Removed by Filter", 0) == 0


async def test_the_sweep_reads_only_the_applications_with_the_policy(seeded) -> None:
    pool, app, other = seeded
    now = utcnow() + timedelta(days=1)
    nodes = await _explain(
        pool, UNFULFILLED_PAST_DEADLINE, now, 100, sorted(s.value for s in FULFILLABLE)
    )
    # The orders are reached through their index: one index scan or (when the planner's
    # estimates say so) one bitmap index scan under a bitmap heap scan; either way one range of
    # the index, for the application with the policy only.
    (heap,) = [node for node in nodes if node.get("Relation Name") == "orders"]
    assert heap["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), heap
    scan = heap["Plans"][0] if heap["Node Type"] == "Bitmap Heap Scan" else heap
    assert scan["Index Name"] == "orders_unfulfilled"
    assert scan["Actual Loops"] == 1  # the application with the policy only
    assert heap["Actual Rows"] <= 100
    found = await pool.fetch(
        UNFULFILLED_PAST_DEADLINE, now, 100, sorted(s.value for s in FULFILLABLE)
    )
    assert len(found) == 100
    assert {row["application_id"] for row in found} == {app}
    assert other not in {row["application_id"] for row in found}
