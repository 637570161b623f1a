"""The event log, read as a stream: cursors, catch-up reads, the NOW position, retention.

Events are ordered by `(xid, id)`: the writing transaction's id (`pg_current_xact_id()`, recorded
with each event) and the row id. A read returns only events whose transaction is older than the
oldest one still running (`pg_snapshot_xmin(pg_current_snapshot())`, taken in the same statement):
those transactions have all ended, so nothing can appear later at or below a position a reader has
passed. Sequence numbers alone would not do: ids are assigned at insert, transactions commit in
another order, and a reader could skip a row that commits late.
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from portex_pay.domain.events import Cursor, Event


def _event(row: asyncpg.Record) -> Event:
    return Event(
        cursor=Cursor(int(row["xid_text"]), row["id"]),
        application_id=row["application_id"],
        tg_payment_id=row["tg_payment_id"],
        type=row["type"],
        data=row["data"],
        occurred_at=row["occurred_at"],
    )


class EventLog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read_after(
        self,
        cursor: Cursor,
        *,
        limit: int,
        application_id: UUID | None = None,
        tg_payment_id: int | None = None,
    ) -> list[Event]:
        """Up to `limit` events after `cursor`, in stream order, below the safe horizon."""
        rows = await self._pool.fetch(
            """
            SELECT xid::text AS xid_text, id, application_id, tg_payment_id, type, data,
                occurred_at
            FROM events
            WHERE (xid, id) > ($1::text::xid8, $2::bigint)
              AND xid < pg_snapshot_xmin(pg_current_snapshot())
              AND ($3::uuid IS NULL OR application_id = $3)
              AND ($4::bigint IS NULL OR tg_payment_id = $4)
            -- The table's xid8, numerically: not the text alias above ("1000" < "999").
            ORDER BY events.xid, events.id
            LIMIT $5
            """,
            str(cursor.xid),
            cursor.id,
            application_id,
            tg_payment_id,
            limit,
        )
        return [_event(row) for row in rows]

    async def now(self) -> Cursor:
        """The position "now": every event readable so far lies at or before it; every event
        that becomes readable later lies after it."""
        xmin = await self._pool.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
        return Cursor(int(xmin), 0)

    async def pruned_up_to(self) -> Cursor | None:
        row = await self._pool.fetchrow(
            "SELECT pruned_xid::text AS xid, pruned_id FROM event_log_state"
        )
        if row is None or row["xid"] is None:
            return None
        return Cursor(int(row["xid"]), row["pruned_id"])

    async def prune(self, older_than_seconds: float, *, batch: int = 5000) -> int:
        """Deletes up to `batch` events older than the retention period and records how far
        pruning has reached, in one statement."""
        count = await self._pool.fetchval(
            """
            WITH doomed AS (
                SELECT id FROM events
                WHERE occurred_at < now() - make_interval(secs => $1)
                ORDER BY xid, id
                LIMIT $2
            ),
            deleted AS (
                DELETE FROM events e USING doomed WHERE e.id = doomed.id
                RETURNING e.xid, e.id
            ),
            newest AS (
                SELECT xid, id FROM deleted ORDER BY xid DESC, id DESC LIMIT 1
            ),
            recorded AS (
                UPDATE event_log_state s SET pruned_xid = newest.xid, pruned_id = newest.id
                FROM newest
                WHERE s.pruned_xid IS NULL OR (newest.xid, newest.id) > (s.pruned_xid, s.pruned_id)
            )
            SELECT count(*) FROM deleted
            """,
            float(older_than_seconds),
            batch,
        )
        return int(count)
