"""The asyncpg connection pool, sized by configuration, with JSON codecs installed, and released
connections handed back without a reset round trip (see `_keep_session`)."""

from __future__ import annotations

import json

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from portex_pay.service.outage import register_transient_errors

# A connection of our own or one borrowed from the pool.
Conn = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to send to PostgreSQL.

    asyncpg's default reset costs a round trip per release (`SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`) and undoes session state that our pool connections never
    create: they never LISTEN (the event listener has a connection of its own, listener.py), never
    SET a session parameter (only SET LOCAL, which ends with its transaction), never take a
    session-level advisory lock (migrations take theirs on a connection of their own), and never
    leave a cursor open past its transaction. asyncpg still does its client-side cleanup before
    calling this (Connection._reset: drops listener callbacks, rolls back a transaction left open).
    Any of those appearing on a pool connection would leak into the next borrower:
    tests/unit/test_pool_session.py scans the code for them and
    tests/integration/test_pool_reset.py checks a reused connection.
    """


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        # A connection that sat idle for a while may have been cut by PostgreSQL or a proxy;
        # recycling bounds how long a dead one can linger in the pool.
        max_inactive_connection_lifetime=60.0,
    )
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    """A single connection outside the pool (migrations, admin commands)."""
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


# What "PostgreSQL cannot do the work now" looks like from asyncpg.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # includes CannotConnectNowError
    asyncpg.InterfaceError,  # includes ConnectionDoesNotExistError
    asyncpg.InternalClientError,  # includes ProtocolError: a connection that died under a query
    asyncpg.TransactionRollbackError,  # serialization_failure, deadlock_detected
    asyncpg.QueryCanceledError,  # statement_timeout, a cancelled query
    asyncpg.LockNotAvailableError,  # lock_timeout
    asyncpg.OperatorInterventionError,  # admin_shutdown, crash_shutdown
    asyncpg.InsufficientResourcesError,  # too_many_connections, disk_full
    ConnectionError,
    OSError,
    TimeoutError,
)

# Every process that talks to PostgreSQL imports this module: from then on the use cases and the
# API layers (service/outage.py) know these errors for an outage.
register_transient_errors(*TRANSIENT_ERRORS)
