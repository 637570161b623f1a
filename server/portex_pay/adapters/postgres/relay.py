"""The Bot API relay, in PostgreSQL: the updates kept for each application's own bot until it
confirms them (a higher getUpdates offset, or a 2xx from its webhook), for at most 24 hours.

Everything a replica needs is here, so any replica serves any bot: `confirmed_offset` is Telegram's
getUpdates offset kept per bot; `poll_generation` tells a long poll that a newer getUpdates took
over (Telegram answers the older one 409); webhook delivery is leased per bot, so one replica at a
time POSTs a bot's updates, in update order. Inserting an update, and every change a waiting long
poll must see, notifies `portex_relay` with the bot id (a wake-up hint: a poll always re-reads).

A delivery lease is named `<replica>/<claim>` in `lease_owner`: each claim is a lease of its own,
so a delivery confirms, fails or releases only under the lease it was claimed with, and a replica
can release all of its leases at once (shutdown). Setting or deleting the webhook voids the lease:
the new setting is delivered to at once, and a POST still in flight to the old webhook confirms
nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.pool import Conn
from portex_pay.adapters.postgres.sealed import RELAY_BOTS
from portex_pay.domain.relay import DEFAULT_EXCLUDED, Kept, RelayBot, RelayedUpdate
from portex_pay.domain.sealing import DataKeys
from portex_pay.logging import register_secret

CHANNEL = "portex_relay"
_DEFAULT_EXCLUDED = sorted(DEFAULT_EXCLUDED)


def _bot(row: asyncpg.Record, keys: DataKeys) -> RelayBot:
    # Stored sealed (adapters/postgres/sealed.py); redacted from every log line from now on.
    webhook_secret = RELAY_BOTS.open(keys, "webhook_secret", row["bot_id"], row["webhook_secret"])
    register_secret(webhook_secret)
    allowed = row["allowed_updates"]
    return RelayBot(
        bot_id=row["bot_id"],
        application_id=row["application_id"],
        allowed_updates=None if allowed is None else tuple(allowed),
        confirmed_offset=row["confirmed_offset"],
        webhook_url=row["webhook_url"],
        webhook_secret=webhook_secret,
        poll_generation=row["poll_generation"],
        attempts=row["attempts"],
        pending=row.get("pending") or 0,
        last_error=row["last_error"],
        last_error_at=row["last_error_at"],
        lease=row["lease_owner"],
    )


async def _notify(conn: Conn, bot_id: int) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(bot_id))


class RelayRepository:
    def __init__(self, pool: asyncpg.Pool, data_keys: DataKeys, owner: str = "") -> None:
        self._pool = pool
        self._keys = data_keys
        self.owner = owner  # names this replica on delivery leases

    def _bot(self, row: asyncpg.Record) -> RelayBot:
        return _bot(row, self._keys)

    def _new_lease(self) -> str:
        return f"{self.owner}/{secrets.token_hex(8)}"

    async def enable(self, bot_id: int, application_id: UUID) -> RelayBot:
        """Turns the relay on for the bot (its code called the proxy's update methods). Turned
        on just now, it is announced on the relay's channel (the bot id), so that every replica
        forgets it found this bot without a relay (service/relay.py, RelayService.keep)."""
        row = await self._pool.fetchrow(
            """
            WITH b AS (
                INSERT INTO relay_bots (bot_id, application_id) VALUES ($1, $2)
                ON CONFLICT (bot_id) DO UPDATE SET application_id = $2
                RETURNING *, xmax = 0 AS turned_on
            )
            SELECT b.*, CASE WHEN b.turned_on THEN pg_notify($3, $1::text) END FROM b
            """,
            bot_id,
            application_id,
            CHANNEL,
        )
        assert row is not None
        return self._bot(row)

    async def get(self, bot_id: int) -> RelayBot | None:
        row = await self._pool.fetchrow(
            """
            SELECT b.*, (SELECT count(*) FROM relay_updates u WHERE u.bot_id = b.bot_id
                         AND u.update_id >= b.confirmed_offset) AS pending
            FROM relay_bots b WHERE b.bot_id = $1
            """,
            bot_id,
        )
        return None if row is None else self._bot(row)

    async def keep(self, bot_id: int, update_id: int, kind: str | None, raw: bytes) -> Kept:
        """Keeps an update for the bot when its relay is on and it asked for this kind (any kind,
        known to this code or not: domain/relay.wants); whether it is kept (a redelivery of a
        kept or already confirmed update is kept and changes nothing), and whether the relay is
        on at all."""
        row = await self._pool.fetchrow(
            """
            WITH bot AS (  -- domain/relay.wants(), in SQL
                SELECT confirmed_offset FROM relay_bots
                WHERE bot_id = $1 AND $3::text <> '' AND CASE
                    WHEN cardinality(coalesce(allowed_updates, '{}')) = 0
                        THEN NOT ($3::text = ANY($5::text[]))
                    ELSE $3::text = ANY(allowed_updates) END
            ), kept AS (
                INSERT INTO relay_updates (bot_id, update_id, kind, raw)
                SELECT $1, $2, $3, $4 FROM bot WHERE $2 >= bot.confirmed_offset
                ON CONFLICT DO NOTHING
                RETURNING pg_notify($6, $1::text)
            )
            SELECT EXISTS (SELECT 1 FROM bot) AS kept,  -- a data-modifying CTE runs regardless
                   EXISTS (SELECT 1 FROM relay_bots WHERE bot_id = $1) AS relay_on
            """,
            bot_id,
            update_id,
            kind or "",
            raw,
            _DEFAULT_EXCLUDED,
            CHANNEL,
        )
        assert row is not None
        return Kept(row["kept"], row["relay_on"])

    async def start_poll(self, bot_id: int, offset: int | None) -> tuple[int, RelayBot]:
        """A getUpdates call: confirms the updates below `offset` (Telegram's rules: a negative
        offset keeps only the last -offset updates) and takes over from any older poll; the
        poll's generation and the bot."""
        async with self._pool.acquire() as conn, conn.transaction():
            bot = await conn.fetchrow(
                "SELECT * FROM relay_bots WHERE bot_id = $1 FOR UPDATE", bot_id
            )
            assert bot is not None, "enable() first"
            confirmed = bot["confirmed_offset"]
            if offset is not None and offset < 0:
                nth_last = await conn.fetchval(
                    """
                    SELECT update_id FROM relay_updates WHERE bot_id = $1 AND update_id >= $2
                    ORDER BY update_id DESC OFFSET $3 LIMIT 1
                    """,
                    bot_id,
                    confirmed,
                    -offset - 1,
                )
                if nth_last is not None:
                    confirmed = max(confirmed, nth_last)
            elif offset is not None and offset > confirmed:
                # Never past what was kept: an offset from the future must not swallow the
                # updates that have not arrived yet.
                newest = await conn.fetchval(
                    "SELECT max(update_id) FROM relay_updates WHERE bot_id = $1", bot_id
                )
                if newest is not None:
                    confirmed = max(confirmed, min(offset, newest + 1))
            row = await conn.fetchrow(
                """
                UPDATE relay_bots SET confirmed_offset = $2,
                    poll_generation = poll_generation + 1, updated_at = now()
                WHERE bot_id = $1 RETURNING *
                """,
                bot_id,
                confirmed,
            )
            assert row is not None
            if confirmed > bot["confirmed_offset"]:
                await conn.execute(
                    "DELETE FROM relay_updates WHERE bot_id = $1 AND update_id < $2",
                    bot_id,
                    confirmed,
                )
            await _notify(conn, bot_id)  # an older poll of this bot ends with 409
            return row["poll_generation"], self._bot(row)

    async def poll(
        self, bot_id: int, generation: int, limit: int
    ) -> tuple[bool, RelayBot | None, list[RelayedUpdate]]:
        """(still the current poll, the bot, its unconfirmed updates in order)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM relay_bots WHERE bot_id = $1", bot_id)
            if row is None or row["poll_generation"] != generation:
                return False, None if row is None else self._bot(row), []
            rows = await conn.fetch(
                """
                SELECT update_id, raw FROM relay_updates WHERE bot_id = $1 AND update_id >= $2
                ORDER BY update_id LIMIT $3
                """,
                bot_id,
                row["confirmed_offset"],
                limit,
            )
        return True, self._bot(row), [RelayedUpdate(r["update_id"], bytes(r["raw"])) for r in rows]

    async def set_allowed_updates(
        self, bot_id: int, allowed: Sequence[str]
    ) -> tuple[bool, RelayBot]:
        """(whether the setting changed, the bot)."""
        row = await self._pool.fetchrow(
            """
            WITH old AS (SELECT allowed_updates FROM relay_bots WHERE bot_id = $1)
            UPDATE relay_bots b SET allowed_updates = $2, updated_at = now() FROM old
            WHERE b.bot_id = $1
            RETURNING b.*, old.allowed_updates IS DISTINCT FROM $2 AS changed
            """,
            bot_id,
            list(allowed),
        )
        assert row is not None
        return bool(row["changed"]), self._bot(row)

    async def set_webhook(
        self, bot_id: int, url: str | None, secret: str | None, *, drop_pending: bool
    ) -> None:
        """Sets (or, with None, deletes) the bot's webhook; `drop_pending` confirms every kept
        update. Voids the delivery lease: whoever delivers next starts now, to this setting."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                UPDATE relay_bots SET webhook_url = $2, webhook_secret = $3, attempts = 0,
                    next_attempt_at = now(), last_error = NULL, last_error_at = NULL,
                    lease_owner = NULL, lease_until = NULL,
                    poll_generation = poll_generation + 1, updated_at = now()
                WHERE bot_id = $1
                """,
                bot_id,
                url,
                RELAY_BOTS.seal(self._keys, "webhook_secret", bot_id, secret),
            )
            if drop_pending:
                await conn.execute(
                    """
                    UPDATE relay_bots SET confirmed_offset = greatest(confirmed_offset,
                        (SELECT coalesce(max(update_id) + 1, 0) FROM relay_updates
                         WHERE bot_id = $1))
                    WHERE bot_id = $1
                    """,
                    bot_id,
                )
                await conn.execute("DELETE FROM relay_updates WHERE bot_id = $1", bot_id)
            await _notify(conn, bot_id)

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[RelayBot]:
        """Leases up to `limit` bots whose webhook has updates due (one replica per bot), each
        under a lease of this claim (RelayBot.lease)."""
        rows = await self._pool.fetch(
            """
            UPDATE relay_bots b SET lease_owner = $1,
                lease_until = now() + make_interval(secs => $2)
            WHERE b.bot_id IN (
                SELECT bot_id FROM relay_bots r
                WHERE r.webhook_url IS NOT NULL AND r.next_attempt_at <= now()
                  AND (r.lease_until IS NULL OR r.lease_until < now())
                  AND EXISTS (SELECT 1 FROM relay_updates u WHERE u.bot_id = r.bot_id
                              AND u.update_id >= r.confirmed_offset)
                ORDER BY r.next_attempt_at LIMIT $3
                FOR UPDATE SKIP LOCKED)
            RETURNING b.*
            """,
            self._new_lease(),
            float(lease_seconds),
            limit,
        )
        return [self._bot(row) for row in rows]

    async def due_updates(self, bot: RelayBot, limit: int) -> list[RelayedUpdate]:
        rows = await self._pool.fetch(
            """
            SELECT update_id, raw FROM relay_updates WHERE bot_id = $1 AND update_id >= $2
            ORDER BY update_id LIMIT $3
            """,
            bot.bot_id,
            bot.confirmed_offset,
            limit,
        )
        return [RelayedUpdate(r["update_id"], bytes(r["raw"])) for r in rows]

    async def delivered(self, bot: RelayBot, update_id: int) -> bool:
        """The webhook took the update (2xx): confirmed. False when the lease was lost or the
        webhook changed meanwhile (the update stays for whoever delivers now)."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """
                UPDATE relay_bots SET confirmed_offset = greatest(confirmed_offset, $3::bigint + 1),
                    attempts = 0, last_error = NULL
                WHERE bot_id = $1 AND lease_owner = $2 AND webhook_url = $4
                """,
                bot.bot_id,
                bot.lease,
                update_id,
                bot.webhook_url,
            )
            if not status.endswith(" 1"):
                return False
            await conn.execute(
                "DELETE FROM relay_updates WHERE bot_id = $1 AND update_id <= $2",
                bot.bot_id,
                update_id,
            )
            return True

    async def delivery_failed(self, bot: RelayBot, error: str, retry_in: float) -> None:
        await self._pool.execute(
            """
            UPDATE relay_bots SET attempts = attempts + 1, last_error = $3,
                last_error_at = now(), next_attempt_at = now() + make_interval(secs => $4),
                lease_until = NULL
            WHERE bot_id = $1 AND lease_owner = $2
            """,
            bot.bot_id,
            bot.lease,
            error,
            float(retry_in),
        )

    async def release(self, bot: RelayBot) -> None:
        """Ends the bot's lease, when it is still the one `bot` was claimed with."""
        await self._pool.execute(
            """
            UPDATE relay_bots SET lease_owner = NULL, lease_until = NULL
            WHERE bot_id = $1 AND lease_owner = $2
            """,
            bot.bot_id,
            bot.lease,
        )

    async def release_all(self) -> None:
        """Ends every lease this replica holds."""
        await self._pool.execute(
            """
            UPDATE relay_bots SET lease_owner = NULL, lease_until = NULL
            WHERE starts_with(lease_owner, $1)
            """,
            f"{self.owner}/",
        )

    async def prune(self, max_age_seconds: float) -> int:
        """Forgets updates older than the retention (Telegram keeps them 24 hours)."""
        status = await self._pool.execute(
            "DELETE FROM relay_updates WHERE received_at < now() - make_interval(secs => $1)",
            float(max_age_seconds),
        )
        return int(status.split()[-1])
