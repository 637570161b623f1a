"""A connection released to the pool goes back without a round trip, and the next borrower finds
it as fresh: what a transaction set with SET LOCAL or locked with an xact lock is gone, and a
transaction left open is rolled back by asyncpg's client-side cleanup (adapters/postgres/pool.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from portex_pay.adapters.postgres.pool import create_pool


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # One connection: every acquire gets the same one back.
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


async def _fresh_state(pool: asyncpg.Pool) -> tuple[str, int, bool]:
    async with pool.acquire() as conn:
        timeout = await conn.fetchval("SHOW statement_timeout")
        locks = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        return timeout, locks, conn.is_in_transaction()


async def test_release_sends_nothing_and_leaves_nothing(pool: asyncpg.Pool) -> None:
    default = await _fresh_state(pool)
    assert default[1:] == (0, False)
    sent: list[str] = []

    def record(query: LoggedQuery) -> None:
        sent.append(query.query)

    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        conn.add_query_logger(record)
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = '4321ms'")
            await conn.execute("SELECT pg_advisory_xact_lock(20)")
            assert await conn.fetchval("SHOW statement_timeout") == "4321ms"
    async with pool.acquire() as conn:
        assert conn.get_server_pid() == pid  # the same connection, reused
        await conn.fetchval("SELECT 1")
        conn.remove_query_logger(record)
    await asyncio.sleep(0)  # query loggers are called soon after, not at once
    # Only our own statements: no reset went over the wire in between.
    assert [q for q in sent if q not in ("BEGIN;", "COMMIT;")] == [
        "SET LOCAL statement_timeout = '4321ms'",
        "SELECT pg_advisory_xact_lock(20)",
        "SHOW statement_timeout",
        "SELECT 1",
    ]
    assert await _fresh_state(pool) == default


async def test_a_transaction_left_open_is_rolled_back_on_release(pool: asyncpg.Pool) -> None:
    default = await _fresh_state(pool)
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SET LOCAL statement_timeout = '4321ms'")
            await conn.execute("SELECT pg_advisory_xact_lock(21)")
    finally:
        loop.set_exception_handler(None)
    assert await _fresh_state(pool) == default
    assert any("active transaction" in message for message in reported)
