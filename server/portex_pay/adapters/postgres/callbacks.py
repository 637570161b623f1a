"""The callback outbox (`callback_deliveries`) in PostgreSQL: claim due deliveries, record outcomes.

Rows are written by a trigger in the same transaction as the event they deliver (migration 0002).
A dispatcher claims a batch with one statement (`FOR UPDATE SKIP LOCKED`, so concurrent replicas
take disjoint rows) that also pushes each row's `next_attempt_at` forward by a lease: the lease,
not an open transaction, is what keeps other replicas away while the HTTP call runs, so no
connection is held during delivery and a crashed dispatcher's rows come back when the lease ends.
Only the oldest pending delivery of each order is claimable, so one order's callbacks are sent in
event order even across retries and replicas (a later event waits until the earlier one is
delivered or given up). Given-up ('failed') deliveries are listed for an operator, newest first
in keyset pages, and re-queued one at a time.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.sealed import APPLICATIONS
from portex_pay.domain.callbacks import DueCallback, FailedCallback
from portex_pay.domain.sealing import DataKeys
from portex_pay.logging import register_secrets

# Long enough for a diagnosis, short enough that a chatty error cannot bloat the table.
_ERROR_MAX_CHARS = 500

_CLAIM_DUE = """
WITH due AS (
    SELECT d.event_id
    FROM callback_deliveries d
    JOIN events e ON e.id = d.event_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= now()
      -- Head of line per order: an earlier pending delivery (due, backing off or leased to
      -- another dispatcher) of the same order goes first.
      AND NOT EXISTS (
          SELECT 1
          FROM events earlier
          JOIN callback_deliveries p ON p.event_id = earlier.id
          WHERE earlier.tg_payment_id = e.tg_payment_id AND earlier.id < e.id
            AND p.state = 'pending'
      )
    ORDER BY d.next_attempt_at, d.event_id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
),
claimed AS (
    UPDATE callback_deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
    FROM due
    WHERE d.event_id = due.event_id
    RETURNING d.event_id, d.application_id, d.url, d.attempts
)
SELECT c.event_id, c.application_id, c.url, c.attempts, a.signing_secret,
       -- A rotated-out secret signs too until its overlap ends (migration 0013).
       CASE WHEN a.previous_signing_secret_until > now() THEN a.previous_signing_secret END
           AS previous_signing_secret,
       e.type AS event_type, e.occurred_at, e.tg_payment_id, e.data
FROM claimed c
JOIN events e ON e.id = c.event_id
JOIN applications a ON a.id = c.application_id
ORDER BY c.event_id
"""


def _data(value: Any) -> dict[str, Any]:
    # The service's pool decodes jsonb (pool.py); a bare connection hands over the text.
    decoded = json.loads(value) if isinstance(value, str) else value
    return decoded if isinstance(decoded, dict) else {}


_FAILED = """
SELECT d.event_id, d.application_id, e.type AS event_type, d.url, d.attempts, d.last_status,
       d.last_error, e.occurred_at, d.failed_at
FROM callback_deliveries d JOIN events e ON e.id = d.event_id
WHERE d.state = 'failed' AND d.event_id < $1 AND ($2::uuid IS NULL OR d.application_id = $2)
ORDER BY d.event_id DESC
LIMIT $3
"""

# The state the delivery was in (no row: none, or another application's), and the delivery due
# at once with a fresh schedule when that state was 'failed'. One statement: two operators
# replaying at once re-queue it once (the row lock orders them; the second sees 'pending').
_REQUEUE = """
WITH target AS (
    SELECT event_id, state, delivered_at FROM callback_deliveries
    WHERE event_id = $1 AND ($2::uuid IS NULL OR application_id = $2)
    FOR UPDATE
),
requeued AS (
    UPDATE callback_deliveries d
    SET state = 'pending', attempts = 0, next_attempt_at = now(), failed_at = NULL
    FROM target WHERE d.event_id = target.event_id AND target.state = 'failed'
    RETURNING d.event_id
)
SELECT state, delivered_at FROM target
"""


class CallbackRepository:
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, data_keys: DataKeys) -> None:
        self._pool = pool
        self._keys = data_keys

    async def claim_due(self, limit: int, lease_seconds: float) -> list[DueCallback]:
        """Claims up to `limit` due deliveries, leasing each for `lease_seconds`, oldest first."""
        rows = await self._pool.fetch(_CLAIM_DUE, limit, float(lease_seconds))
        secrets = [
            tuple(
                APPLICATIONS.open(self._keys, column, row["application_id"], row[column])
                for column in ("signing_secret", "previous_signing_secret")
            )
            for row in rows
        ]
        for pair in secrets:  # credentials now in memory: redacted from the logs
            register_secrets(pair)
        return [
            DueCallback(
                event_id=row["event_id"],
                application_id=row["application_id"],
                url=row["url"],
                attempts=row["attempts"],
                signing_secret=secret or "",
                event_type=row["event_type"],
                occurred_at=row["occurred_at"],
                tg_payment_id=row["tg_payment_id"],
                data=_data(row["data"]),
                previous_signing_secret=previous,
            )
            for row, (secret, previous) in zip(rows, secrets, strict=True)
        ]

    async def mark_delivered(self, event_id: int, status: int) -> None:
        # `state = 'pending'`: if the lease ran out and another replica settled the row first,
        # its outcome stands.
        await self._pool.execute(
            """
            UPDATE callback_deliveries
            SET state = 'delivered', attempts = attempts + 1, last_status = $2,
                last_error = NULL, delivered_at = now()
            WHERE event_id = $1 AND state = 'pending'
            """,
            event_id,
            status,
        )

    async def mark_failed_attempt(
        self, event_id: int, *, error: str, status: int | None, retry_in: float | None
    ) -> None:
        """Records a failed attempt: due again in `retry_in` seconds, or given up ('failed')
        when `retry_in` is None. The delay is added to the database's clock, like the lease, so
        replicas with skewed clocks agree on when a row is due."""
        await self._pool.execute(
            """
            UPDATE callback_deliveries
            SET attempts = attempts + 1, last_error = $2, last_status = $3,
                state = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                failed_at = CASE WHEN $4::float8 IS NULL THEN now() END,
                next_attempt_at = CASE WHEN $4::float8 IS NULL THEN next_attempt_at
                                       ELSE now() + make_interval(secs => $4::float8) END
            WHERE event_id = $1 AND state = 'pending'
            """,
            event_id,
            error[:_ERROR_MAX_CHARS],
            status,
            None if retry_in is None else float(retry_in),
        )

    async def failed(
        self, application_id: UUID | None, *, before: int | None, limit: int
    ) -> list[FailedCallback]:
        """Given-up deliveries (of one application, or all), newest event first, with event ids
        below `before` (a page's keyset cursor; None: from the newest)."""
        cursor = 2**63 - 1 if before is None else before
        rows = await self._pool.fetch(_FAILED, cursor, application_id, limit)
        return [FailedCallback(**dict(row)) for row in rows]

    async def requeue_failed(
        self, event_id: int, application_id: UUID | None
    ) -> tuple[str, datetime | None] | None:
        """Makes a given-up delivery due now with a fresh schedule; the delivery's state and
        delivered_at before (None: no such delivery, for this application when given)."""
        row = await self._pool.fetchrow(_REQUEUE, event_id, application_id)
        return None if row is None else (row["state"], row["delivered_at"])


__all__ = ["CallbackRepository", "DueCallback"]
