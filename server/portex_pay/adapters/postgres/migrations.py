"""Versioned SQL migrations (`migrations/NNNN_name.sql`), applied in order.

Safe when several replicas start at once: the runner holds a PostgreSQL advisory lock while it
applies, so one replica migrates and the others wait and then find nothing to do (every worker of
`serve --workers N` applies them itself before it serves, beside its supervisor). Each migration
runs in its own transaction together with its bookkeeping row, so a failed migration leaves the
schema as it was (PostgreSQL DDL is transactional). An applied migration whose file changed is an
error, not silently skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from portex_pay.adapters.postgres.pool import Conn, connect

log = structlog.get_logger(__name__)

# An arbitrary constant that names "the portex-pay schema" among advisory locks.
MIGRATION_LOCK_ID = 0x706F72746578  # "portex"
_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database's schema history does not match the migration files."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    folder = resources.files("portex_pay.adapters.postgres") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: Conn, migrations: list[Migration] | None = None) -> list[int]:
    """Applies the pending migrations; returns the versions applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} was changed after it "
                        "was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
            log.info("migration applied", version=migration.version, name=migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied_now


async def wait_for_database(dsn: str, timeout: float) -> asyncpg.Connection:
    """Connects, retrying while PostgreSQL is still starting, for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await connect(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"PostgreSQL is unreachable: {type(error).__name__}"
                ) from None
            log.info("waiting for PostgreSQL", error=type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def apply_migrations(dsn: str, connect_timeout: float) -> list[int]:
    """Applies the pending migrations on a connection of its own (waiting up to
    `connect_timeout` seconds for PostgreSQL); returns the versions applied now. Light to import
    (asyncpg, no gRPC or HTTP): `serve --workers N`'s supervisor runs it."""
    conn = await wait_for_database(dsn, connect_timeout)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
