"""Telegram updates, payments and refunds, in PostgreSQL: the Payments port.

The decisions are the service's (service/ledger.py); this module holds the statements. A use case
that must be atomic runs its statements in one `PaymentTransaction` (`LedgerStore.
transaction()`), whose parts are the aggregates it touches (`updates`, `orders`, `charges`,
`refunds`, `events`): the de-duplication row, the payment, the order's change, its events and any
refund intent commit together or not at all. The refund worker's steps outside it (a claim, a
failed attempt) are one statement each, with their event (service/ports.py: atomicity).

Exactly-once comes from unique keys, not from check-then-insert: `telegram_updates (bot_id,
update_id)` makes a redelivered update change nothing, and `payments.telegram_payment_charge_id`
makes a charge count once even when it arrives under another update_id (reconciliation, a
re-sent update).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.events_writer import (
    insert_event,
    order_data,
    with_event,
    with_refund_event,
)
from portex_pay.adapters.postgres.orders import order_from_row
from portex_pay.adapters.postgres.pool import Conn
from portex_pay.adapters.postgres.refunds import refund_from_row
from portex_pay.adapters.postgres.sealed import APPLICATIONS
from portex_pay.domain.checkout import Disposition, PaymentOutcome, PaymentRecord, RefundReason
from portex_pay.domain.events import EventType
from portex_pay.domain.order import Order, OrderState, sources
from portex_pay.domain.refunds import (
    DUE,
    DueRefund,
    Refund,
    RefundCause,
    RefundState,
    attempt_sources,
)
from portex_pay.domain.refunds import sources as refund_sources
from portex_pay.domain.sealing import DataKeys
from portex_pay.domain.subscription import SubscriptionState


async def claim_update(conn: Conn, bot_id: int, update_id: int, kind: str) -> bool:
    """Marks the update processed; False when it already was (a redelivery)."""
    fresh = await conn.fetchval(
        """
        INSERT INTO telegram_updates (bot_id, update_id, kind) VALUES ($1, $2, $3)
        ON CONFLICT DO NOTHING RETURNING true
        """,
        bot_id,
        update_id,
        kind,
    )
    return bool(fresh)


ACCEPTED = PaymentOutcome(Disposition.ACCEPTED)

# A payment's row: its columns, and the arguments `_payment_args` gives them in that order.
_PAYMENT_COLUMNS = (
    "telegram_payment_charge_id, tg_payment_id, application_id, tg_use_id, amount, currency, "
    "invoice_payload, provider_payment_charge_id, raw, disposition, anomaly, is_recurring, "
    "is_first_recurring, subscription_expiration_date"
)


def _payment_row(
    record: PaymentRecord, tg_payment_id: int | None, outcome: PaymentOutcome, *, first: int = 1
) -> tuple[str, str]:
    """The payment's column list and its placeholders, numbered from `first`."""
    count = len(_payment_args(record, tg_payment_id, outcome))
    return _PAYMENT_COLUMNS, ", ".join(f"${n}" for n in range(first, first + count))


def _payment_args(
    record: PaymentRecord, tg_payment_id: int | None, outcome: PaymentOutcome
) -> tuple[Any, ...]:
    return (
        record.telegram_payment_charge_id,
        tg_payment_id,
        record.application_id,
        record.charge.payer_id,
        record.charge.total_amount,
        record.charge.currency,
        record.charge.invoice_payload,
        record.provider_payment_charge_id,
        record.raw,
        outcome.disposition.value,
        outcome.anomaly.value if outcome.anomaly else None,
        record.is_recurring,
        record.is_first_recurring,
        record.subscription_expiration_date,
    )


def _flag_and_order(row: asyncpg.Record | None, flag: str) -> tuple[bool, Order | None]:
    """A row of `SELECT <flag>, o.* FROM (SELECT 1) LEFT JOIN <an order>`: the flag, and the
    order when there was one."""
    assert row is not None
    order = order_from_row(row) if row["tg_payment_id"] is not None else None
    return bool(row[flag]), order


class ProcessedUpdates:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        return await claim_update(self._conn, bot_id, update_id, kind)


class EventWriter:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self,
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> None:
        await insert_event(self._conn, application_id, tg_payment_id, event_type, data)


class PaidOrders:
    """Orders as money changes them; every change is one statement with its event."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def lock(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        """The application's order, locked: a concurrent refund, cancel or second charge waits
        for this transaction."""
        row = await self._conn.fetchrow(
            "SELECT * FROM orders WHERE tg_payment_id = $1 AND application_id = $2 FOR UPDATE",
            tg_payment_id,
            application_id,
        )
        return None if row is None else order_from_row(row)

    async def lock_charged(self, application_id: UUID, charge_id: str) -> Order | None:
        row = await self._conn.fetchrow(
            """
            SELECT * FROM orders WHERE application_id = $1 AND tg_payment_id = (
                SELECT tg_payment_id FROM payments
                WHERE telegram_payment_charge_id = $2 AND application_id = $1
            ) FOR UPDATE
            """,
            application_id,
            charge_id,
        )
        return None if row is None else order_from_row(row)

    async def claim_and_lock(
        self, update: tuple[int, int, str], application_id: UUID, tg_payment_id: int | None
    ) -> tuple[bool, Order | None]:
        """The claim and the lock as one statement (one round trip). The lock's CTE is
        MATERIALIZED so it runs as written, whatever the planner would inline; the claim, a
        data-modifying CTE, runs to completion whether or not the outer query reads it."""
        bot_id, update_id, kind = update
        row = await self._conn.fetchrow(
            """
            WITH claimed AS (
                INSERT INTO telegram_updates (bot_id, update_id, kind) VALUES ($1, $2, $3)
                ON CONFLICT DO NOTHING RETURNING true AS fresh
            ), locked AS MATERIALIZED (
                SELECT * FROM orders WHERE tg_payment_id = $5 AND application_id = $4
                FOR UPDATE
            )
            SELECT EXISTS (SELECT 1 FROM claimed) AS fresh, locked.*
            FROM (SELECT 1) AS one LEFT JOIN locked ON true
            """,
            bot_id,
            update_id,
            kind,
            application_id,
            tg_payment_id,
        )
        return _flag_and_order(row, "fresh")

    async def pay(self, record: PaymentRecord) -> Order | None:
        """One statement: the payment row (only while the order is in a state the table lets
        become paid: the order is locked, so what this statement's snapshot sees stands), then
        the order's change and its event (only from the new payment row: a known charge id
        inserts nothing and changes nothing)."""
        assert record.tg_payment_id is not None
        columns, values = _payment_row(record, record.tg_payment_id, ACCEPTED, first=5)
        row = await self._conn.fetchrow(
            with_event(
                """
                UPDATE orders SET state = 'paid', paid_at = now(), updated_at = now(),
                    telegram_payment_charge_id = $1, invoice_lease_until = NULL,
                    subscription_state = CASE WHEN subscription_period IS NOT NULL
                        THEN 'active' END,
                    current_period_end = CASE WHEN subscription_period IS NOT NULL
                        THEN coalesce($4, now() + make_interval(secs => subscription_period))
                        END,
                    current_period_start = CASE WHEN subscription_period IS NOT NULL
                        THEN coalesce($4, now() + make_interval(secs => subscription_period))
                            - make_interval(secs => subscription_period)
                        END
                WHERE tg_payment_id = $2 AND state = ANY($3::text[])
                  AND EXISTS (SELECT 1 FROM p)
                RETURNING *
                """,
                EventType.ORDER_PAID,
                extra_data="jsonb_build_object('telegram_payment_charge_id', $1::text)",
                before=f"""
                p AS (
                    INSERT INTO payments ({columns})
                    SELECT {values} FROM orders
                    WHERE tg_payment_id = $2 AND state = ANY($3::text[])
                    ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING true
                ),""",
            ),
            record.telegram_payment_charge_id,
            record.tg_payment_id,
            sources(OrderState.PAID),
            record.subscription_expiration_date,
            *_payment_args(record, record.tg_payment_id, ACCEPTED),
        )
        return None if row is None else order_from_row(row)

    async def renew(self, tg_payment_id: int, charge_id: str, period_end: datetime) -> Order:
        """A subscription's renewal by this charge, with its `subscription.renewed` event: a
        later period extends the subscription and makes it ACTIVE (whatever it was); a late
        charge of an earlier period is recorded without moving the current one."""
        row = await self._conn.fetchrow(
            with_event(
                """
                UPDATE orders SET updated_at = now(),
                    subscription_state = CASE WHEN $3 >= current_period_end THEN 'active'
                        ELSE subscription_state END,
                    current_period_start = CASE WHEN $3 > current_period_end
                        THEN $3 - make_interval(secs => subscription_period)
                        ELSE current_period_start END,
                    current_period_end = greatest(current_period_end, $3)
                WHERE tg_payment_id = $1 AND subscription_state IS NOT NULL RETURNING *
                """,
                EventType.SUBSCRIPTION_RENEWED,
                extra_data="""jsonb_build_object('telegram_payment_charge_id', $2::text,
                    'period_end', $3::timestamptz)""",
            ),
            tg_payment_id,
            charge_id,
            period_end,
        )
        assert row is not None, "a locked subscription order"
        return order_from_row(row)

    async def set_subscription_state(
        self,
        tg_payment_id: int,
        target: SubscriptionState,
        event: EventType,
        extra: dict[str, Any],
    ) -> Order | None:
        """The subscription becomes `target`, with its event; None when it is that already (or
        the order is no started subscription)."""
        row = await self._conn.fetchrow(
            with_event(
                """
                UPDATE orders SET subscription_state = $2, updated_at = now()
                WHERE tg_payment_id = $1 AND subscription_state IS NOT NULL
                  AND subscription_state <> $2
                RETURNING *
                """,
                event,
                extra_data="$3::jsonb",
            ),
            tg_payment_id,
            target.value,
            extra,
        )
        return None if row is None else order_from_row(row)

    async def mark_refunded(self, tg_payment_id: int, charge_id: str) -> Order | None:
        """The order this charge paid becomes refunded, with its event; None when it is not
        (any more) in a state the table lets become refunded, or is a subscription's (refunding
        a period leaves a subscription's order paid: domain/subscription.py)."""
        row = await self._conn.fetchrow(
            with_event(
                """
                UPDATE orders SET state = 'refunded', refunded_at = now(), updated_at = now()
                WHERE tg_payment_id = $1 AND state = ANY($3::text[])
                  AND telegram_payment_charge_id = $2 AND subscription_period IS NULL
                RETURNING *
                """,
                EventType.ORDER_REFUNDED,
                extra_data="jsonb_build_object('telegram_payment_charge_id', $2::text)",
            ),
            tg_payment_id,
            charge_id,
            sources(OrderState.REFUNDED),
        )
        return None if row is None else order_from_row(row)

    async def paid_by(self, application_id: UUID, charge_id: str) -> Order | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM orders WHERE application_id = $1 AND telegram_payment_charge_id = $2",
            application_id,
            charge_id,
        )
        return None if row is None else order_from_row(row)


class Charges:
    """The payments table: one row per charge id, whichever update (or reconciliation) brought
    it."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self, record: PaymentRecord, tg_payment_id: int | None, outcome: PaymentOutcome
    ) -> bool:
        """Records the charge; False when the charge id is known already."""
        columns, values = _payment_row(record, tg_payment_id, outcome)
        inserted = await self._conn.fetchval(
            f"""
            INSERT INTO payments ({columns}) VALUES ({values})
            ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING true
            """,
            *_payment_args(record, tg_payment_id, outcome),
        )
        return bool(inserted)

    async def paying_amount(self, tg_payment_id: int, charge_id: str) -> int | None:
        amount: int | None = await self._conn.fetchval(
            """
            SELECT amount FROM payments WHERE telegram_payment_charge_id = $2
              AND tg_payment_id = $1 AND disposition IN ('accepted', 'renewal')
            """,
            tg_payment_id,
            charge_id,
        )
        return amount

    async def period_paid(self, tg_payment_id: int, period_end: datetime) -> bool:
        """Whether the order has a paying charge (its first or a renewal) for the period ending
        at `period_end`."""
        paid = await self._conn.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM payments WHERE tg_payment_id = $1
                AND subscription_expiration_date = $2 AND disposition IN ('accepted', 'renewal'))
            """,
            tg_payment_id,
            period_end,
        )
        return bool(paid)

    async def owner(self, charge_id: str) -> UUID | None:
        owner: UUID | None = await self._conn.fetchval(
            "SELECT application_id FROM payments WHERE telegram_payment_charge_id = $1",
            charge_id,
        )
        return owner

    async def mark_refunded(
        self, application_id: UUID, charge_id: str
    ) -> tuple[int | None, Disposition] | None:
        """Marks the application's charge refunded (once); its order id and disposition, or
        None when the application has no such charge. Scoped to the application whose bot
        reported it: charge ids are Telegram's, and a bot must never settle another
        application's payment."""
        row = await self._conn.fetchrow(
            """
            UPDATE payments SET refunded_at = coalesce(refunded_at, now())
            WHERE telegram_payment_charge_id = $1 AND application_id = $2
            RETURNING tg_payment_id, disposition
            """,
            charge_id,
            application_id,
        )
        return None if row is None else (row["tg_payment_id"], Disposition(row["disposition"]))


_ADD_REFUND = with_refund_event(
    """
    INSERT INTO refunds (telegram_payment_charge_id, tg_payment_id, application_id, bot_id,
        tg_use_id, amount, reason, reason_code, reason_text)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING *
    """,
    EventType.REFUND_REQUESTED,
)


class RefundIntents:
    """The refunds table, inside a unit of work: intents and their settlement."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self,
        charge_id: str,
        bot_id: int,
        application_id: UUID,
        tg_payment_id: int | None,
        tg_use_id: int,
        amount: int,
        cause: RefundCause,
    ) -> bool:
        """The intent to refund the charge, with its event (one statement); False when there is
        one already (whose cause stands)."""
        row = await self._conn.fetchrow(
            _ADD_REFUND,
            charge_id,
            tg_payment_id,
            application_id,
            bot_id,
            tg_use_id,
            amount,
            cause.reason.value,
            cause.code.value,
            cause.text,
        )
        return row is not None

    async def of_order(self, tg_payment_id: int) -> Refund | None:
        """The refund of the charge that paid this order, if one was asked for (by a caller,
        the unfulfilled-order policy, or found on Telegram)."""
        row = await self._conn.fetchrow(
            """
            SELECT r.* FROM orders o
            JOIN refunds r ON r.telegram_payment_charge_id = o.telegram_payment_charge_id
            WHERE o.tg_payment_id = $1
            """,
            tg_payment_id,
        )
        return None if row is None else refund_from_row(row)

    async def complete(self, application_id: UUID, charge_id: str) -> None:
        """The refund of the charge, if one was asked for, succeeded."""
        await self._conn.execute(
            """
            UPDATE refunds SET state = 'succeeded', completed_at = now(), attempts = attempts + 1
            WHERE telegram_payment_charge_id = $1 AND application_id = $2
              AND state = ANY($3::text[])
            """,
            charge_id,
            application_id,
            refund_sources(RefundState.SUCCEEDED),
        )


async def insert_outside_refund(
    conn: Conn, application_id: UUID, bot_id: int, charge_id: str
) -> bool:
    """A refund of the application's charge made outside portex-pay (the Star ledger found it,
    service/star_ledger.py), recorded as succeeded with the cause `OUTSIDE` gives; False when the
    charge is not the application's or a refund of it is recorded already. The order's change and
    its event are the settlement's (Ledger)."""
    cause = RefundCause.own(RefundReason.OUTSIDE)
    inserted = await conn.fetchval(
        """
        INSERT INTO refunds (telegram_payment_charge_id, tg_payment_id, application_id, bot_id,
            tg_use_id, amount, reason, reason_code, state, completed_at)
        SELECT telegram_payment_charge_id, tg_payment_id, application_id, $3, tg_use_id, amount,
            $4, $5, 'succeeded', now()
        FROM payments WHERE telegram_payment_charge_id = $2 AND application_id = $1
        ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING true
        """,
        application_id,
        charge_id,
        bot_id,
        cause.reason.value,
        cause.code.value,
    )
    return bool(inserted)


class PaymentTransaction:
    """One unit of work on one connection inside one transaction, in parts by aggregate."""

    def __init__(self, conn: Conn) -> None:
        self.updates = ProcessedUpdates(conn)
        self.orders = PaidOrders(conn)
        self.charges = Charges(conn)
        self.refunds = RefundIntents(conn)
        self.events = EventWriter(conn)


class LedgerStore:
    def __init__(self, pool: asyncpg.Pool, data_keys: DataKeys) -> None:
        self._pool = pool
        self._keys = data_keys  # opens the bot tokens the refunds due are sent with

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PaymentTransaction]:
        """One atomic use case: everything done through the yielded object commits together,
        or nothing does (an exception rolls it back)."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield PaymentTransaction(conn)

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        """Claims an update for work done outside the database (a reply); False when it was
        claimed (or processed) before."""
        async with self._pool.acquire() as conn:
            return await claim_update(conn, bot_id, update_id, kind)

    async def claim_with_event(
        self,
        update: tuple[int, int, str],
        application_id: UUID,
        tg_payment_id: int | None,
        event_type: EventType,
        data: dict[str, Any],
    ) -> bool:
        """The claim and its event as one statement (one round trip, atomic without BEGIN and
        COMMIT): the event is inserted only from the claim's row, so a redelivered update adds
        none. A data-modifying CTE runs to completion whether or not the outer query reads it."""
        bot_id, update_id, kind = update
        fresh = await self._pool.fetchval(
            f"""
            WITH claimed AS (
                INSERT INTO telegram_updates (bot_id, update_id, kind) VALUES ($1, $2, $3)
                ON CONFLICT DO NOTHING RETURNING true AS fresh
            ), announced AS (
                INSERT INTO events (application_id, tg_payment_id, type, data)
                SELECT $4, $5, $6, {order_data("$5")} || $7::jsonb FROM claimed
            )
            SELECT EXISTS (SELECT 1 FROM claimed)
            """,
            bot_id,
            update_id,
            kind,
            application_id,
            tg_payment_id,
            event_type,
            data,
        )
        return bool(fresh)

    async def checkout_context(
        self, bot_id: int, update_id: int, application_id: UUID, tg_payment_id: int
    ) -> tuple[bool, Order | None]:
        """(was this update already processed, the application's order) in one round trip."""
        row = await self._pool.fetchrow(
            """
            SELECT EXISTS (SELECT 1 FROM telegram_updates WHERE bot_id = $1 AND update_id = $2)
                       AS seen,
                   o.*
            FROM (SELECT 1) AS one
            LEFT JOIN orders o ON o.tg_payment_id = $4 AND o.application_id = $3
            """,
            bot_id,
            update_id,
            application_id,
            tg_payment_id,
        )
        return _flag_and_order(row, "seen")

    async def claim_due_refunds(self, limit: int, lease_seconds: float) -> list[DueRefund]:
        """Claims due refunds (SKIP LOCKED: replicas share the work) by pushing their next
        attempt past the lease; no connection is held while Telegram is called."""
        rows = await self._pool.fetch(
            """
            WITH due AS (
                SELECT telegram_payment_charge_id FROM refunds
                WHERE state = ANY($3::text[]) AND next_attempt_at <= now()
                ORDER BY next_attempt_at
                LIMIT $1
                FOR UPDATE SKIP LOCKED
            )
            UPDATE refunds r SET next_attempt_at = now() + make_interval(secs => $2)
            FROM due
            WHERE r.telegram_payment_charge_id = due.telegram_payment_charge_id
            RETURNING r.telegram_payment_charge_id, r.application_id, r.tg_payment_id, r.tg_use_id,
                r.attempts,
                (SELECT bot_token FROM applications a WHERE a.id = r.application_id)
            """,
            limit,
            float(lease_seconds),
            sorted(state.value for state in DUE),
        )
        return [
            DueRefund(
                telegram_payment_charge_id=row["telegram_payment_charge_id"],
                application_id=row["application_id"],
                tg_payment_id=row["tg_payment_id"],
                tg_use_id=row["tg_use_id"],
                attempts=row["attempts"],
                bot_token=APPLICATIONS.open(
                    self._keys, "bot_token", row["application_id"], row["bot_token"]
                ),
            )
            for row in rows
        ]

    async def refund_attempt_failed(
        self, charge_id: str, error: str, retry_in: float | None
    ) -> None:
        """Backs off (or, with `retry_in` None, gives up: state failed, announced) after a failed
        call: one statement with its event."""
        target = RefundState.FAILED if retry_in is None else RefundState.PENDING
        change = """
            UPDATE refunds SET attempts = attempts + 1, last_error = $2, state = $4,
                next_attempt_at = now() + make_interval(secs => coalesce($3, 0))
            WHERE telegram_payment_charge_id = $1 AND state = ANY($5::text[])
            RETURNING *
        """
        if target is RefundState.FAILED:
            change = with_refund_event(
                change, EventType.REFUND_FAILED, extra_data="jsonb_build_object('error', $2::text)"
            )
        await self._pool.execute(
            change, charge_id, error, retry_in, target.value, attempt_sources(target)
        )
