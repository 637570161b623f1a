"""The outboxes' backlogs for the metrics job (service/ports.py, OutboxBacklog): in one query,
how many rows wait in each outbox and how old the oldest is.

Refunds and callbacks wait while `state = 'pending'` (their partial `*_due` indexes hold exactly
those rows, so a healthy service reads a few index entries); a callback's age is its event's, the
moment the change it announces committed. The relay's rows wait in `relay_updates` until the app's
bot has taken them (getUpdates' offset, or its webhook's 2xx), so all of them count.
"""

from __future__ import annotations

import asyncpg

from portex_pay.service.ports import OutboxSample

_BACKLOG = """
    SELECT 'refunds' AS outbox, count(*) AS depth, min(created_at) AS oldest
        FROM refunds WHERE state = 'pending'
    UNION ALL
    SELECT 'callbacks', count(*), min(e.occurred_at)
        FROM callback_deliveries d JOIN events e ON e.id = d.event_id
        WHERE d.state = 'pending'
    UNION ALL
    SELECT 'relay', count(*), min(received_at) FROM relay_updates
"""


class OutboxBacklogReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def sample(self) -> list[OutboxSample]:
        rows = await self._pool.fetch(
            f"SELECT outbox, depth, COALESCE(EXTRACT(EPOCH FROM now() - oldest), 0)::float8 AS age"
            f" FROM ({_BACKLOG}) backlog"
        )
        return [OutboxSample(row["outbox"], row["depth"], max(row["age"], 0.0)) for row in rows]
