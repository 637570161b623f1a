"""Counting what PostgreSQL executes, for the benches that report statements per call
(bench/ledger.py, bench/round_trips.py): a throwaway cluster that loads pg_stat_statements, and
its counts since the last reset."""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from portex_pay_devtools.pgcluster import PgCluster


async def with_statement_counts(prefix: str, bench: Callable[[str], Awaitable[None]]) -> None:
    """Runs `bench(dsn)` against a throwaway cluster with pg_stat_statements loaded (it must be
    loaded at server start, hence the restart) and utility statements (BEGIN, COMMIT) counted."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        cluster = PgCluster(Path(tmp) / "pg", ephemeral=True)
        cluster.start()
        try:
            with (cluster.data_dir / "postgresql.conf").open("a") as conf:
                conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
                conf.write("pg_stat_statements.track_utility = on\n")
            cluster.stop()
            cluster.start()
            await bench(cluster.dsn)
        finally:
            cluster.destroy()


async def statement_counts(conn: asyncpg.Connection, width: int = 100) -> dict[str, int]:
    """Executions per statement in this database since the last reset, by its first `width`
    characters (white space folded; statements sharing them are summed), the measuring
    connection's own left out."""
    rows = await conn.fetch(
        """
        SELECT query, calls FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query NOT ILIKE '%pg_stat_statements%'
        """
    )
    counts: dict[str, int] = {}
    for row in rows:  # statements alike in their first characters are summed, not lost
        key = " ".join(row["query"].split())[:width]
        counts[key] = counts.get(key, 0) + row["calls"]
    return counts
