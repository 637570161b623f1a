"""Migrations: ordered, idempotent, safe under concurrent replicas, atomic on failure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from portex_pay.adapters.postgres.migrations import (
    Migration,
    MigrationError,
    load_migrations,
    migrate,
)
from portex_pay.adapters.postgres.orders import order_from_row
from portex_pay.domain.order import OrderState


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_all_migrations_apply_once_and_a_second_run_does_nothing(empty_db: str):
    conn = await asyncpg.connect(empty_db)
    try:
        assert await migrate(conn) == [m.version for m in load_migrations()]
        assert await migrate(conn) == []
    finally:
        await conn.close()
    assert {"applications", "api_keys", "orders", "idempotency_keys", "payments", "events"} <= (
        await _tables(empty_db)
    )


async def test_replicas_migrating_at_once_apply_each_version_once(empty_db: str):
    conns = [await asyncpg.connect(empty_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(v for result in results for v in result)
        assert applied == [m.version for m in load_migrations()]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(load_migrations())
    finally:
        for conn in conns:
            await conn.close()


async def test_a_failed_migration_leaves_the_schema_unchanged(empty_db: str):
    broken = Migration(1, "broken", "CREATE TABLE half_done (id int); SELECT 1/0;")
    conn = await asyncpg.connect(empty_db)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, [broken])
        assert "half_done" not in await _tables(empty_db)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
        # The lock was released: a fixed migration applies.
        fixed = Migration(1, "fixed", "CREATE TABLE half_done (id int);")
        assert await migrate(conn, [fixed]) == [1]
    finally:
        await conn.close()


async def test_an_applied_migration_that_changed_is_an_error(empty_db: str):
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn, [Migration(1, "one", "CREATE TABLE t1 (id int);")])
        with pytest.raises(MigrationError):
            await migrate(conn, [Migration(1, "one", "CREATE TABLE t1 (id bigint);")])
    finally:
        await conn.close()


async def test_subscriptions_upgrade_a_database_with_one_off_orders(empty_db: str):
    """Migration 0011 on a database that holds paid and pending one-off orders (and their
    charge): they stay valid, read as one-off orders (no subscription), and their charge keeps
    its disposition."""
    before = [m for m in load_migrations() if m.version < 11]
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn, before)
        app_id = await conn.fetchval(
            "INSERT INTO applications (name, webhook_secret, signing_secret)"
            " VALUES ('old', 'w', 's') RETURNING id"
        )
        paid, pending = [
            await conn.fetchval(
                """
                INSERT INTO orders (application_id, tg_use_id, amount, label, title, description,
                    state, expires_at, telegram_payment_charge_id, paid_at)
                VALUES ($1, 7, 5, 'l', 't', 'd', $2, now() + interval '1 hour', $3, $4)
                RETURNING tg_payment_id
                """,
                app_id,
                state,
                charge,
                paid_at,
            )
            for state, charge, paid_at in (
                ("paid", "stxOld", datetime.now(UTC)),
                ("pending", None, None),
            )
        ]
        await conn.execute(
            """
            INSERT INTO payments (telegram_payment_charge_id, tg_payment_id, application_id,
                tg_use_id, amount, currency, invoice_payload, raw)
            VALUES ('stxOld', $1, $2, 7, 5, 'XTR', 'v1.x', '{}')
            """,
            paid,
            app_id,
        )
        assert await migrate(conn) == [m.version for m in load_migrations() if m.version >= 11]
        rows = await conn.fetch(
            "SELECT * FROM orders WHERE tg_payment_id = ANY($1::bigint[]) ORDER BY tg_payment_id",
            [paid, pending],
        )
        orders = [order_from_row(row) for row in rows]
        assert [o.state for o in orders] == [OrderState.PAID, OrderState.PENDING]
        assert all(o.subscription_period is None for o in orders)
        assert all(o.subscription_state is None for o in orders)
        payment = await conn.fetchrow("SELECT * FROM payments WHERE tg_payment_id = $1", paid)
        assert payment is not None
        assert (payment["disposition"], payment["is_recurring"]) == ("accepted", False)
        assert payment["subscription_expiration_date"] is None
        # A renewal disposition is now allowed; a state outside the set is not.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE orders SET subscription_state = 'active' WHERE tg_payment_id = $1", paid
            )
    finally:
        await conn.close()
