"""Telegram updates, payments and refunds, in PostgreSQL.

Exactly-once comes from unique keys, not from check-then-insert: `telegram_updates (bot_id,
update_id)` makes a redelivered update change nothing, and `payments.telegram_payment_charge_id`
makes a charge count once even when it arrives under another update_id (reconciliation, a
re-sent update). Each update is processed in one transaction: the de-duplication row, the payment,
the order's change, its events and any refund intent commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.orders import order_from_row, with_event
from portex_pay.adapters.postgres.pool import Conn
from portex_pay.domain.checkout import (
    Charge,
    CheckoutDecision,
    Disposition,
    PaymentOutcome,
    RefundReason,
)
from portex_pay.domain.order import Order, OrderState, check_transition

# The order snapshot every order event carries (the event stream and callbacks serve it as is).
_ORDER_JSON = "to_jsonb(o.*) - 'invoice_lease_until'"


@dataclass(frozen=True, slots=True)
class CheckoutRecord:
    bot_id: int
    update_id: int
    application_id: UUID
    tg_payment_id: int | None
    query_id: str
    charge: Charge


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    bot_id: int
    update_id: int | None  # None: found by reconciliation, de-duplicated by charge id alone
    application_id: UUID
    tg_payment_id: int | None
    charge: Charge
    telegram_payment_charge_id: str
    provider_payment_charge_id: str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """What processing a successful_payment did; `outcome` is None for a repeat."""

    outcome: PaymentOutcome | None
    order: Order | None
    refund_requested: bool = False


@dataclass(frozen=True, slots=True)
class RefundedCharge:
    """What a refunded_payment update settled: whether the charge was the application's, and
    the order it had paid (now refunded), if any."""

    known: bool
    order: Order | None


@dataclass(frozen=True, slots=True)
class DueRefund:
    telegram_payment_charge_id: str
    application_id: UUID
    tg_payment_id: int | None
    tg_use_id: int
    attempts: int
    bot_token: str | None


async def insert_event(
    conn: Conn,
    application_id: UUID,
    tg_payment_id: int | None,
    event_type: str,
    data: dict[str, Any],
) -> None:
    """An event, with the order's snapshot when there is an order."""
    await conn.execute(
        f"""
        INSERT INTO events (application_id, tg_payment_id, type, data)
        SELECT $1, $2, $3, coalesce(
            (SELECT jsonb_build_object('order', {_ORDER_JSON}) FROM orders o
             WHERE o.tg_payment_id = $2), '{{}}'::jsonb) || $4::jsonb
        """,
        application_id,
        tg_payment_id,
        event_type,
        data,
    )


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


class PaymentRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, bot_id: int, update_id: int, kind: str) -> bool:
        """Claims an update for work done outside the database (a reply); False when it was
        claimed (or processed) before."""
        async with self._pool.acquire() as conn:
            return await claim_update(conn, bot_id, update_id, kind)

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
        assert row is not None
        order = order_from_row(row) if row["tg_payment_id"] is not None else None
        return bool(row["seen"]), order

    async def record_checkout(self, record: CheckoutRecord, decision: CheckoutDecision) -> bool:
        """Records the decision (and the update as processed); False if it already was."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim_update(conn, record.bot_id, record.update_id, "pre_checkout_query"):
                return False
            await insert_event(
                conn,
                record.application_id,
                record.tg_payment_id,
                "checkout.approved" if decision.ok else "checkout.declined",
                {
                    "reason": decision.reason,
                    "pre_checkout_query_id": record.query_id,
                    "payer_id": record.charge.payer_id,
                    "total_amount": record.charge.total_amount,
                    "currency": record.charge.currency,
                },
            )
            return True

    async def record_payment(
        self,
        record: PaymentRecord,
        classify: Callable[[Order | None], PaymentOutcome],
        *,
        auto_refund: bool,
    ) -> PaymentResult:
        """Processes one successful_payment exactly once (by update and by charge)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if record.update_id is not None and not await claim_update(
                conn, record.bot_id, record.update_id, "successful_payment"
            ):
                return PaymentResult(None, None)
            order = None
            if record.tg_payment_id is not None:
                # Locked: a concurrent refund, cancel or second charge waits for this one.
                row = await conn.fetchrow(
                    "SELECT * FROM orders WHERE tg_payment_id = $1 AND application_id = $2 "
                    "FOR UPDATE",
                    record.tg_payment_id,
                    record.application_id,
                )
                order = None if row is None else order_from_row(row)
            outcome = classify(order)
            inserted = await conn.fetchval(
                """
                INSERT INTO payments (telegram_payment_charge_id, tg_payment_id, application_id,
                    tg_use_id, amount, currency, invoice_payload, provider_payment_charge_id, raw,
                    disposition, anomaly)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING true
                """,
                record.telegram_payment_charge_id,
                order.tg_payment_id if order else None,
                record.application_id,
                record.charge.payer_id,
                record.charge.total_amount,
                record.charge.currency,
                record.charge.invoice_payload,
                record.provider_payment_charge_id,
                record.raw,
                outcome.disposition.value,
                outcome.anomaly.value if outcome.anomaly else None,
            )
            if not inserted:
                owner = await conn.fetchval(
                    "SELECT application_id FROM payments WHERE telegram_payment_charge_id = $1",
                    record.telegram_payment_charge_id,
                )
                if owner != record.application_id:
                    # Another application's charge id reported by this bot: never ours to
                    # apply; kept in this application's log for someone to look at.
                    await insert_event(
                        conn,
                        record.application_id,
                        None,
                        "payment.anomaly",
                        {
                            "telegram_payment_charge_id": record.telegram_payment_charge_id,
                            "reason": "FOREIGN_CHARGE",
                            "update_id": record.update_id,
                        },
                    )
                return PaymentResult(None, order)  # the same charge, seen before
            charge_data = {
                "telegram_payment_charge_id": record.telegram_payment_charge_id,
                "payer_id": record.charge.payer_id,
                "total_amount": record.charge.total_amount,
                "currency": record.charge.currency,
            }
            if outcome.disposition is Disposition.ACCEPTED:
                assert order is not None
                check_transition(order.state, OrderState.PAID)
                row = await conn.fetchrow(
                    with_event(
                        """
                        UPDATE orders SET state = 'paid', paid_at = now(), updated_at = now(),
                            telegram_payment_charge_id = $1, invoice_lease_until = NULL
                        WHERE tg_payment_id = $2 RETURNING *
                        """,
                        "order.paid",
                        extra_data="jsonb_build_object('telegram_payment_charge_id', $1::text)",
                    ),
                    record.telegram_payment_charge_id,
                    order.tg_payment_id,
                )
                assert row is not None
                return PaymentResult(outcome, order_from_row(row))
            event_type = (
                "payment.duplicate"
                if outcome.disposition is Disposition.DUPLICATE
                else "payment.anomaly"
            )
            await insert_event(
                conn,
                record.application_id,
                order.tg_payment_id if order else None,
                event_type,
                {**charge_data, "reason": outcome.anomaly or outcome.refund},
            )
            refund = outcome.refund is not None and auto_refund
            if refund:
                assert outcome.refund is not None
                await self._request_refund(
                    conn,
                    record.telegram_payment_charge_id,
                    record.bot_id,
                    record.application_id,
                    order.tg_payment_id if order else None,
                    record.charge.payer_id,
                    record.charge.total_amount,
                    outcome.refund,
                )
            return PaymentResult(outcome, order, refund_requested=refund)

    async def _request_refund(
        self,
        conn: Conn,
        charge_id: str,
        bot_id: int,
        application_id: UUID,
        tg_payment_id: int | None,
        tg_use_id: int,
        amount: int,
        reason: RefundReason,
    ) -> bool:
        inserted = await conn.fetchval(
            """
            INSERT INTO refunds (telegram_payment_charge_id, tg_payment_id, application_id,
                bot_id, tg_use_id, amount, reason)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (telegram_payment_charge_id) DO NOTHING RETURNING true
            """,
            charge_id,
            tg_payment_id,
            application_id,
            bot_id,
            tg_use_id,
            amount,
            reason.value,
        )
        if inserted:
            await insert_event(
                conn,
                application_id,
                tg_payment_id,
                "refund.requested",
                {"telegram_payment_charge_id": charge_id, "reason": reason.value},
            )
        return bool(inserted)

    async def request_refund(
        self, application_id: UUID, tg_payment_id: int, bot_id: int
    ) -> tuple[Order, dict[str, Any]] | None:
        """Records the intent to refund a paid order's charge (idempotent). None if no such
        order; the caller checks the state of the returned order."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM orders WHERE tg_payment_id = $1 AND application_id = $2 FOR UPDATE",
                tg_payment_id,
                application_id,
            )
            if row is None:
                return None
            order = order_from_row(row)
            if order.state is OrderState.PAID and order.telegram_payment_charge_id:
                await self._request_refund(
                    conn,
                    order.telegram_payment_charge_id,
                    bot_id,
                    application_id,
                    order.tg_payment_id,
                    order.tg_use_id,
                    order.amount,
                    RefundReason.REQUESTED,
                )
            refund = await conn.fetchrow(
                "SELECT * FROM refunds WHERE tg_payment_id = $1 AND reason = 'requested'",
                tg_payment_id,
            )
            return order, (dict(refund) if refund else {})

    async def claim_due_refunds(self, limit: int, lease_seconds: float) -> list[DueRefund]:
        """Claims due refunds (SKIP LOCKED: replicas share the work) by pushing their next
        attempt past the lease; no connection is held while Telegram is called."""
        rows = await self._pool.fetch(
            """
            WITH due AS (
                SELECT telegram_payment_charge_id FROM refunds
                WHERE state = 'pending' AND next_attempt_at <= now()
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
        )
        return [
            DueRefund(
                telegram_payment_charge_id=row["telegram_payment_charge_id"],
                application_id=row["application_id"],
                tg_payment_id=row["tg_payment_id"],
                tg_use_id=row["tg_use_id"],
                attempts=row["attempts"],
                bot_token=row["bot_token"],
            )
            for row in rows
        ]

    async def refund_attempt_failed(
        self, charge_id: str, error: str, retry_in: float | None
    ) -> None:
        """Backs off (or, with `retry_in` None, gives up: state failed) after a failed call."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """
                UPDATE refunds SET attempts = attempts + 1, last_error = $2,
                    state = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                    next_attempt_at = now() + make_interval(secs => coalesce($3, 0))
                WHERE telegram_payment_charge_id = $1 AND state = 'pending'
                RETURNING application_id, tg_payment_id, state
                """,
                charge_id,
                error,
                retry_in,
            )
            if row is not None and row["state"] == "failed":
                await insert_event(
                    conn,
                    row["application_id"],
                    row["tg_payment_id"],
                    "refund.failed",
                    {"telegram_payment_charge_id": charge_id, "error": error},
                )

    async def settle_refund(self, application_id: UUID, charge_id: str) -> bool:
        """Telegram refunded the application's charge: the refund succeeds, the payment is marked
        refunded and, if it was the charge that paid the order, the order becomes refunded.
        Idempotent (the worker's confirmation and Telegram's refunded_payment update may both
        arrive). False when the application has no such charge."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await self._settle_refund(conn, application_id, charge_id)

    async def _settle_refund(self, conn: Conn, application_id: UUID, charge_id: str) -> bool:
        # Scoped to the application whose bot reported it: charge ids are Telegram's, and a bot
        # must never settle another application's payment.
        payment = await conn.fetchrow(
            """
            UPDATE payments SET refunded_at = coalesce(refunded_at, now())
            WHERE telegram_payment_charge_id = $1 AND application_id = $2
            RETURNING tg_payment_id, disposition
            """,
            charge_id,
            application_id,
        )
        if payment is None:
            return False
        await conn.execute(
            """
            UPDATE refunds SET state = 'succeeded', completed_at = now(), attempts = attempts + 1
            WHERE telegram_payment_charge_id = $1 AND application_id = $2
              AND state <> 'succeeded'
            """,
            charge_id,
            application_id,
        )
        if payment["tg_payment_id"] is not None and (
            payment["disposition"] == Disposition.ACCEPTED.value
        ):
            await conn.fetchrow(
                with_event(
                    """
                    UPDATE orders SET state = 'refunded', refunded_at = now(), updated_at = now()
                    WHERE tg_payment_id = $1 AND state = 'paid'
                      AND telegram_payment_charge_id = $2
                    RETURNING *
                    """,
                    "order.refunded",
                    extra_data="jsonb_build_object('telegram_payment_charge_id', $2::text)",
                ),
                payment["tg_payment_id"],
                charge_id,
            )
        return True

    async def record_refunded_payment(
        self, bot_id: int, update_id: int, application_id: UUID, charge_id: str
    ) -> RefundedCharge | None:
        """A refunded_payment update: settles the refund (whoever initiated it); what was
        refunded, or None for a repeated update. A charge the application does not have (another
        application's, or one never reported to us) changes nothing and is recorded as a
        `payment.anomaly`."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim_update(conn, bot_id, update_id, "refunded_payment"):
                return None
            if await self._settle_refund(conn, application_id, charge_id):
                row = await conn.fetchrow(
                    "SELECT * FROM orders WHERE application_id = $1 AND state = 'refunded' "
                    "AND telegram_payment_charge_id = $2",
                    application_id,
                    charge_id,
                )
                return RefundedCharge(True, None if row is None else order_from_row(row))
            await insert_event(
                conn,
                application_id,
                None,
                "payment.anomaly",
                {
                    "telegram_payment_charge_id": charge_id,
                    "reason": "REFUND_OF_UNKNOWN_CHARGE",
                    "update_id": update_id,
                },
            )
            return RefundedCharge(False, None)
