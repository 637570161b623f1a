"""Long-polling leases and offsets, in PostgreSQL.

Two consumers of one bot token break checkouts (Telegram answers the second getUpdates with 409 and
updates go to whichever asked last), so each bot has one lease row: a replica holds it while it
polls, renews it every cycle, and another replica takes it over once it lapses (the holder died).
The next offset lives in the same row, so a restart neither loses nor replays updates; replays
after a crash mid-batch are harmless, as updates are de-duplicated by update_id anyway.
"""

from __future__ import annotations

import asyncpg


class PollLeases:
    def __init__(self, pool: asyncpg.Pool, owner: str, lease_seconds: float) -> None:
        self._pool = pool
        self.owner = owner
        self._lease_seconds = lease_seconds

    async def acquire(self, bot_id: int) -> tuple[int, tuple[str, ...] | None] | None:
        """Takes or renews the bot's lease: the next offset and, when the app's own bot uses the
        relay, the update kinds it asked for (() for Telegram's default set); None if another
        live replica holds the lease."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO poll_state (bot_id, lease_owner, lease_until)
            VALUES ($1, $2, now() + make_interval(secs => $3))
            ON CONFLICT (bot_id) DO UPDATE
                SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                WHERE poll_state.lease_owner = $2
                   OR poll_state.lease_until IS NULL
                   OR poll_state.lease_until < now()
            RETURNING next_offset, (SELECT coalesce(allowed_updates, '{}') FROM relay_bots
                                    WHERE relay_bots.bot_id = $1) AS relay_allowed
            """,
            bot_id,
            self.owner,
            float(self._lease_seconds),
        )
        if row is None:
            return None
        allowed = row["relay_allowed"]
        return int(row["next_offset"]), None if allowed is None else tuple(allowed)

    async def advance(self, bot_id: int, next_offset: int) -> bool:
        """Stores the offset after a processed batch; False if the lease was lost meanwhile."""
        status = await self._pool.execute(
            """
            UPDATE poll_state SET next_offset = greatest(next_offset, $3)
            WHERE bot_id = $1 AND lease_owner = $2
            """,
            bot_id,
            self.owner,
            next_offset,
        )
        return status.endswith(" 1")

    async def release(self, bot_id: int) -> None:
        await self._pool.execute(
            "UPDATE poll_state SET lease_until = NULL WHERE bot_id = $1 AND lease_owner = $2",
            bot_id,
            self.owner,
        )
