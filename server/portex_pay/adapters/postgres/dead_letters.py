"""Dead letters: updates kept with their error instead of being processed, in PostgreSQL.

One statement claims the update (so a redelivery changes nothing), stores the raw bytes and the
error, and writes the events the service announces it with (service/updates.py decides which):
a data-modifying CTE, so that all of it commits together in one round trip (service/ports.py:
atomicity).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg

from portex_pay.domain.events import EventType
from portex_pay.domain.updates import DeadLetter

# The update is claimed as telegram_updates claims every update (adapters/postgres/ledger_store.py);
# one without an update_id cannot be claimed and is kept once per raw body instead. The events are
# inserted in the order `announce` names them.
_RECORD = """
WITH claimed AS (
    INSERT INTO telegram_updates (bot_id, update_id, kind)
    SELECT $2, $3, 'dead_letter' WHERE $3::bigint IS NOT NULL
    ON CONFLICT DO NOTHING RETURNING true
),
letter AS (
    INSERT INTO dead_letters (application_id, bot_id, update_id, kind, raw, raw_sha256, error,
        attempts)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8
    WHERE $3::bigint IS NULL OR EXISTS (SELECT 1 FROM claimed)
    ON CONFLICT (bot_id, raw_sha256) DO NOTHING RETURNING id
),
announced AS (
    INSERT INTO events (application_id, tg_payment_id, type, data)
    SELECT $1, NULL, announce.event_type, jsonb_build_object(
        'dead_letter_id', letter.id, 'update_id', $3::bigint, 'kind', $4::text,
        'error', $7::text, 'reason', $9::text)
    FROM letter, unnest($10::text[]) WITH ORDINALITY AS announce (event_type, position)
    ORDER BY announce.position
)
SELECT id FROM letter
"""


class DeadLetterRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, letter: DeadLetter, announce: Sequence[EventType]) -> int | None:
        """Stores the dead letter with an event of each type in `announce`; returns its id, or
        None when it was recorded (or the update processed) before."""
        letter_id: int | None = await self._pool.fetchval(
            _RECORD,
            letter.application_id,
            letter.bot_id,
            letter.update_id,
            letter.kind,
            letter.raw,
            hashlib.sha256(letter.raw).digest(),
            letter.error,
            letter.attempts,
            letter.reason,
            [str(event_type) for event_type in announce],
        )
        return letter_id
