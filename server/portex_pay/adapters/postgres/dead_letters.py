"""Dead letters: updates kept with their error instead of being processed, in PostgreSQL.

One transaction claims the update (so a redelivery changes nothing), stores the raw bytes and the
error, and writes the events the service announces it with (service/updates.py decides which).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg

from portex_pay.adapters.postgres.events_writer import insert_event
from portex_pay.adapters.postgres.ledger_store import claim_update
from portex_pay.domain.events import EventType
from portex_pay.domain.updates import DeadLetter


class DeadLetterRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, letter: DeadLetter, announce: Sequence[EventType]) -> int | None:
        """Stores the dead letter with an event of each type in `announce`; returns its id, or
        None when it was recorded (or the update processed) before."""
        async with self._pool.acquire() as conn, conn.transaction():
            if letter.update_id is not None and not await claim_update(
                conn, letter.bot_id, letter.update_id, "dead_letter"
            ):
                return None
            letter_id: int | None = await conn.fetchval(
                """
                INSERT INTO dead_letters (application_id, bot_id, update_id, kind, raw,
                    raw_sha256, error, attempts)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (bot_id, raw_sha256) DO NOTHING RETURNING id
                """,
                letter.application_id,
                letter.bot_id,
                letter.update_id,
                letter.kind,
                letter.raw,
                hashlib.sha256(letter.raw).digest(),
                letter.error,
                letter.attempts,
            )
            if letter_id is None:
                return None
            data = {
                "dead_letter_id": letter_id,
                "update_id": letter.update_id,
                "kind": letter.kind,
                "error": letter.error,
                "reason": letter.reason,
            }
            for event_type in announce:
                await insert_event(conn, letter.application_id, None, event_type, data)
            return letter_id
