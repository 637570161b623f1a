"""The Star ledger in PostgreSQL: the StarLedgerStore port (service/ports.py).

`star_transactions` holds every transaction of every bot, keyed by `(bot_id, id, direction)`
(a refund has its payment's id); `star_ledger_state` holds each bot's checkpoint (the number of
transactions read: the next getStarTransactions offset, since Telegram lists them oldest first)
and its reader's lease. A page is stored with its checkpoint and everything it settles in one
`transaction()` (service/star_ledger.py); the checkpoint moves by compare-and-set on the lease and
the old checkpoint, so a reader that lost its lease, or a second reader, stores nothing. The lease
is held for a run only: the reader claims it, reads until it is caught up and releases it with
its last page; `read_at` keeps other replicas from reading the bot again within an interval.

Listing is one short query per page: keyset on `(date, id, direction)` over the
`star_transactions_listing` index (scanned backward), or, for chosen partner kinds, one range scan
of `star_transactions_kind` per kind, merged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.ledger_store import PaymentTransaction, insert_outside_refund
from portex_pay.adapters.postgres.pool import Conn
from portex_pay.domain.star_ledger import (
    HOLD,
    PAYMENT_TYPES,
    Direction,
    HeldStars,
    LedgerClaim,
    LedgerEntry,
    LedgerFigures,
    Match,
    StarTransaction,
    StarTransactionQuery,
)

# The columns a transaction is stored in, beside its application, bot, position and match.
_COLUMNS = (
    "id", "direction", "amount", "nanostar_amount", "date", "partner_type", "transaction_type",
    "partner_id", "invoice_payload", "subscription_period", "paid_media_payload", "gift_id",
    "withdrawal_state", "withdrawal_date", "withdrawal_url", "commission_per_mille",
    "affiliate_user_id", "affiliate_chat_id", "request_count", "raw",
)  # fmt: skip
_INSERT = f"""
    INSERT INTO star_transactions (application_id, bot_id, position, match, tg_payment_id,
        {", ".join(_COLUMNS)})
    VALUES ($1, $2, $3, $4, $5, {", ".join(f"${n}" for n in range(6, 6 + len(_COLUMNS)))})
    ON CONFLICT (bot_id, id, direction) DO NOTHING RETURNING true
"""
_ORDER = "date DESC, id DESC, direction DESC"


async def _advance(
    db: Conn | asyncpg.Pool,
    bot_id: int,
    owner: str,
    lease_seconds: float,
    expected: int,
    checkpoint: int,
    release: bool,
) -> bool:
    status = await db.execute(
        """
        UPDATE star_ledger_state SET checkpoint = $4, read_at = now(),
            lease_until = CASE WHEN $5 THEN NULL ELSE now() + make_interval(secs => $6) END
        WHERE bot_id = $1 AND lease_owner = $2 AND lease_until IS NOT NULL AND checkpoint = $3
        """,
        bot_id,
        owner,
        expected,
        checkpoint,
        release,
        float(lease_seconds),
    )
    return status == "UPDATE 1"


class StarTransactionRows:
    """The ledger's part of a unit of work, on its connection."""

    def __init__(self, conn: Conn, owner: str, lease_seconds: float) -> None:
        self._conn = conn
        self._owner = owner
        self._lease_seconds = lease_seconds

    async def advance(self, bot_id: int, expected: int, checkpoint: int, *, release: bool) -> bool:
        return await _advance(
            self._conn, bot_id, self._owner, self._lease_seconds, expected, checkpoint, release
        )

    async def add(
        self, application_id: UUID, bot_id: int, position: int, entry: LedgerEntry
    ) -> bool:
        t = entry.transaction
        values = [getattr(t, column) for column in _COLUMNS]
        inserted = await self._conn.fetchval(
            _INSERT,
            application_id,
            bot_id,
            position,
            entry.match.value,
            entry.tg_payment_id,
            *values,
        )
        return bool(inserted)

    async def record_outside_refund(
        self, application_id: UUID, bot_id: int, charge_id: str
    ) -> bool:
        return await insert_outside_refund(self._conn, application_id, bot_id, charge_id)


class StarLedgerTransaction(PaymentTransaction):
    """A unit of work of the money use cases that also stores Star transactions."""

    def __init__(self, conn: Conn, owner: str, lease_seconds: float) -> None:
        super().__init__(conn)
        self.star_transactions = StarTransactionRows(conn, owner, lease_seconds)


class StarLedgerRepository:
    def __init__(self, pool: asyncpg.Pool, owner: str, lease_seconds: float) -> None:
        self._pool = pool
        self.owner = owner
        self._lease_seconds = lease_seconds

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StarLedgerTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield StarLedgerTransaction(conn, self.owner, self._lease_seconds)

    async def claim(self, bot_id: int, *, min_age: float) -> LedgerClaim | None:
        """Takes the lease when it is free, lapsed or already the owner's, and the bot was not
        read within `min_age` seconds; with it, the first pending withdrawal's position."""
        row = await self._pool.fetchrow(
            """
            INSERT INTO star_ledger_state AS s (bot_id, lease_owner, lease_until)
            VALUES ($1, $2, now() + make_interval(secs => $3))
            ON CONFLICT (bot_id) DO UPDATE
                SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                WHERE (s.lease_owner = $2 OR s.lease_until IS NULL OR s.lease_until < now())
                  AND (s.read_at IS NULL OR s.read_at <= now() - make_interval(secs => $4))
            RETURNING checkpoint,
                (SELECT min(position) FROM star_transactions t
                 WHERE t.bot_id = $1 AND t.withdrawal_state = 'pending') AS pending_from
            """,
            bot_id,
            self.owner,
            float(self._lease_seconds),
            float(min_age),
        )
        if row is None:
            return None
        return LedgerClaim(row["checkpoint"], row["pending_from"])

    async def advance(self, bot_id: int, expected: int, checkpoint: int, *, release: bool) -> bool:
        return await _advance(
            self._pool, bot_id, self.owner, self._lease_seconds, expected, checkpoint, release
        )

    async def refresh_withdrawals(self, bot_id: int, transactions: list[StarTransaction]) -> int:
        """One statement: the withdrawals' new states, and the lease released."""
        withdrawals = [
            t
            for t in transactions
            if t.direction is Direction.OUTGOING and t.partner_type == "fragment"
        ]
        changed = await self._pool.fetchval(
            """
            WITH fresh AS (
                SELECT * FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::text[],
                                     $7::jsonb[]) AS f (id, state, date, url, raw)
            ), changed AS (
                UPDATE star_transactions t SET withdrawal_state = f.state,
                    withdrawal_date = f.date, withdrawal_url = f.url, raw = f.raw
                FROM fresh f
                WHERE t.bot_id = $1 AND t.id = f.id AND t.direction = 'outgoing'
                  AND (t.withdrawal_state, t.withdrawal_date, t.withdrawal_url)
                      IS DISTINCT FROM (f.state, f.date, f.url)
                RETURNING 1
            ), released AS (
                UPDATE star_ledger_state SET lease_until = NULL, read_at = now()
                WHERE bot_id = $1 AND lease_owner = $2
            )
            SELECT count(*) FROM changed
            """,
            bot_id,
            self.owner,
            [t.id for t in withdrawals],
            [t.withdrawal_state for t in withdrawals],
            [t.withdrawal_date for t in withdrawals],
            [t.withdrawal_url for t in withdrawals],
            [t.raw for t in withdrawals],
        )
        return int(changed)

    async def release(self, bot_id: int) -> None:
        await self._pool.execute(
            """
            UPDATE star_ledger_state SET lease_until = NULL
            WHERE bot_id = $1 AND lease_owner = $2
            """,
            bot_id,
            self.owner,
        )

    async def page(
        self,
        application_id: UUID,
        bot_id: int,
        query: StarTransactionQuery,
        after: tuple[int, str, str] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        """One query. Each condition is written only when the request has it, so that the plan
        is a range scan of an index (a generic plan of `$n IS NULL OR ...` would filter row by
        row instead)."""
        args: list[Any] = [application_id, bot_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        conditions = ["application_id = $1", "bot_id = $2"]
        if query.date_start is not None:
            conditions.append(f"date >= {arg(query.date_start)}")
        if query.date_end is not None:
            conditions.append(f"date < {arg(query.date_end)}")
        if after is not None:
            date, transaction_id, direction = after
            conditions.append(
                f"(date, id, direction) < ({arg(datetime.fromtimestamp(date, UTC))}, "
                f"{arg(transaction_id)}, {arg(direction)})"
            )
        where = " AND ".join(conditions)
        size = arg(limit)
        if not query.partner_types:
            sql = f"SELECT * FROM star_transactions WHERE {where} ORDER BY {_ORDER} LIMIT {size}"
        else:
            # One ordered range scan per kind (star_transactions_kind), merged: an `= ANY`
            # over several kinds could not be read in date order from any index.
            parts = [
                f"(SELECT * FROM star_transactions WHERE {where} AND partner_type = "
                f"{arg(kind)} ORDER BY {_ORDER} LIMIT {size})"
                for kind in query.partner_types
            ]
            sql = f"SELECT * FROM ({' UNION ALL '.join(parts)}) AS t ORDER BY {_ORDER} LIMIT {size}"
        rows = await self._pool.fetch(sql, *args)
        return [ledger_entry(row) for row in rows]

    async def figures(self, application_id: UUID, bot_id: int, now: datetime) -> LedgerFigures:
        row = await self._pool.fetchrow(
            """
            WITH held AS (
                SELECT max(p.date) + $5::interval AS available_at, sum(p.amount) AS amount
                FROM star_transactions p
                WHERE p.application_id = $1 AND p.bot_id = $2 AND p.direction = 'incoming'
                  AND p.partner_type = 'user' AND p.date > $3::timestamptz - $5::interval
                  AND NOT EXISTS (SELECT 1 FROM star_transactions r WHERE r.bot_id = p.bot_id
                                  AND r.id = p.id AND r.direction = 'outgoing')
                GROUP BY date_trunc('day', p.date AT TIME ZONE 'UTC')
            )
            SELECT
                coalesce(sum(amount) FILTER (WHERE direction = 'incoming'
                    AND partner_type = 'user'), 0) AS received,
                coalesce(sum(amount) FILTER (WHERE direction = 'outgoing'
                    AND partner_type = 'user'
                    AND (transaction_type IS NULL OR transaction_type = ANY($4::text[]))), 0)
                    AS refunded,
                coalesce(sum(amount) FILTER (WHERE direction = 'outgoing'
                    AND partner_type = 'fragment'
                    AND withdrawal_state IS DISTINCT FROM 'failed'), 0) AS withdrawn,
                (SELECT read_at FROM star_ledger_state WHERE bot_id = $2) AS read_at,
                (SELECT array_agg(available_at ORDER BY available_at) FROM held) AS held_at,
                (SELECT array_agg(amount ORDER BY available_at) FROM held) AS held_amounts
            FROM star_transactions
            WHERE application_id = $1 AND bot_id = $2
            """,
            application_id,
            bot_id,
            now,
            sorted(PAYMENT_TYPES),
            HOLD,
        )
        assert row is not None
        held = zip(row["held_at"] or [], row["held_amounts"] or [], strict=True)
        return LedgerFigures(
            received=int(row["received"]),
            refunded=int(row["refunded"]),
            withdrawn=int(row["withdrawn"]),
            held=[HeldStars(available_at, int(amount)) for available_at, amount in held],
            read_at=row["read_at"],
        )


def ledger_entry(row: asyncpg.Record) -> LedgerEntry:
    """A stored transaction as the ledger keeps it."""
    values = {column: row[column] for column in _COLUMNS}
    values["direction"] = Direction(values["direction"])
    transaction = StarTransaction(**values)
    return LedgerEntry(transaction, Match(row["match"]), row["tg_payment_id"])
