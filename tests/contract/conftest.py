"""The contract harness: every test in tests/contract runs twice, against the in-memory fakes the
unit tests trust (tests/unit/fakes.py) and against the PostgreSQL adapters, through one `backend`
fixture (as adap/flower's `linkstate_test.py` runs one StateTest against each implementation).

The PostgreSQL side has a database of its own on the test server (`database_url`), migrated once
and emptied before each test, so that no worker of the in-process service sweeps, leases or
reads what a contract test wrote.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.dead_letters import DeadLetterRepository
from portex_pay.adapters.postgres.events import EventLog
from portex_pay.adapters.postgres.ledger_store import LedgerStore
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.adapters.postgres.pool import connect, create_pool
from portex_pay.adapters.postgres.refunds import RefundRepository
from portex_pay.domain.telegram import bot_id_of_token
from tests.conftest import DATA_KEYS
from tests.contract.backend import Backend
from tests.unit.fakes import (
    FakeDeadLetters,
    InMemoryEventLog,
    InMemoryOrders,
    InMemoryPayments,
    InMemoryRefunds,
    MemoryDatabase,
)


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The ports under test, once per implementation."""
    found: Backend = request.getfixturevalue(f"{request.param}_backend")
    return found


@pytest.fixture
def memory_backend() -> Backend:
    db = MemoryDatabase()
    events = InMemoryEventLog(db)

    async def add_application(bot_token: str | None) -> uuid.UUID:
        application_id = uuid.uuid4()
        if bot_token is not None:
            db.bot_tokens[application_id] = bot_token
        return application_id

    async def set_unfulfilled_refund(application_id: uuid.UUID, after: timedelta | None) -> None:
        if after is None:
            db.unfulfilled_policies.pop(application_id, None)
            return
        since = db.unfulfilled_policies.get(application_id, (after, db.now))[1]
        db.unfulfilled_policies[application_id] = (after, since)

    orders = InMemoryOrders(db)
    return Backend(
        name="memory",
        orders=orders,
        payments=InMemoryPayments(db=db),
        events=events,
        dead_letters=FakeDeadLetters(db),
        refunds=InMemoryRefunds(db),
        unfulfilled=orders,
        subscriptions=orders,
        expire_subscriptions=orders.expire_subscriptions,
        set_unfulfilled_refund=set_unfulfilled_refund,
        add_application=add_application,
        prune_events=lambda: events.prune(-1.0),
        pass_time=lambda: setattr(db, "now", db.now + timedelta(seconds=1)),
    )


@pytest.fixture(scope="session")
async def contract_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database of the contract tests' own, and a pool on it."""
    name = f"contract_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def postgres_backend(contract_pool: asyncpg.Pool) -> Backend:
    pool = contract_pool
    # Emptied before (not after) each test: a failed test leaves its rows to look at.
    await pool.execute("TRUNCATE applications, telegram_updates, poll_state CASCADE")
    await pool.execute("UPDATE event_log_state SET pruned_xid = NULL, pruned_id = NULL")
    applications = ApplicationRepository(pool, DATA_KEYS)
    events = EventLog(pool)

    async def add_application(bot_token: str | None) -> uuid.UUID:
        application = await applications.create(
            f"contract-{uuid.uuid4().hex[:12]}",
            webhook_secret=secrets.token_urlsafe(16),
            signing_secret=secrets.token_urlsafe(16),
            bot_token=bot_token,
            bot_id=bot_id_of_token(bot_token) if bot_token else None,
        )
        return application.id

    async def set_unfulfilled_refund(application_id: uuid.UUID, after: timedelta | None) -> None:
        assert await applications.set_unfulfilled_refund(application_id, after) is not None

    orders = OrderRepository(pool)
    return Backend(
        name="postgres",
        orders=orders,
        payments=LedgerStore(pool, DATA_KEYS),
        events=events,
        dead_letters=DeadLetterRepository(pool),
        refunds=RefundRepository(pool),
        unfulfilled=orders,
        subscriptions=orders,
        expire_subscriptions=orders.expire_subscriptions,
        set_unfulfilled_refund=set_unfulfilled_refund,
        add_application=add_application,
        prune_events=lambda: events.prune(-1.0),
    )
