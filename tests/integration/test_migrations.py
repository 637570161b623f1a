"""Migrations: ordered, idempotent, safe under concurrent replicas, atomic on failure."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from portex_pay.adapters.postgres.migrations import (
    Migration,
    MigrationError,
    load_migrations,
    migrate,
)


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
