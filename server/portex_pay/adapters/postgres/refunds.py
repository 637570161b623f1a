"""Refunds as objects, in PostgreSQL: the Refunds port (one refund by its charge, ListRefunds'
pages, RetryRefund).

Every statement is scoped to the calling application: another application's refund is not
found, exactly as one that does not exist. A page is one statement, a range scan of the index
`refunds_listing` (application_id, created_at DESC, then the charge id byte by byte, DESC) that
starts after the previous page's last row (keyset paging). Its WHERE clause holds only the
filters that are set, so every query the planner sees has its index bounds in plain sight (a
generic plan of `$n IS NULL OR ...` would scan an application's refunds from the start). A retry
is one statement with its event (adapters/postgres/events_writer.py).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.events_writer import with_refund_event
from portex_pay.domain.events import EventType
from portex_pay.domain.refunds import (
    RETRYABLE,
    Refund,
    RefundFilter,
    RefundPosition,
    RefundReasonCode,
    RefundState,
)


def refund_from_row(row: asyncpg.Record) -> Refund:
    return Refund(
        telegram_payment_charge_id=row["telegram_payment_charge_id"],
        tg_payment_id=row["tg_payment_id"],
        tg_use_id=row["tg_use_id"],
        amount=row["amount"],
        state=RefundState(row["state"]),
        reason=row["reason"],
        reason_code=RefundReasonCode(row["reason_code"]),
        reason_text=row["reason_text"],
        attempts=row["attempts"],
        retries=row["retries"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


_RETRY = with_refund_event(
    """
    UPDATE refunds SET state = 'pending', attempts = 0, retries = retries + 1,
        next_attempt_at = now()
    WHERE telegram_payment_charge_id = $1 AND application_id = $2 AND state = ANY($3::text[])
    RETURNING *
    """,
    EventType.REFUND_RETRIED,
)


class RefundRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, application_id: UUID, charge_id: str) -> Refund | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM refunds WHERE telegram_payment_charge_id = $1 AND application_id = $2",
            charge_id,
            application_id,
        )
        return None if row is None else refund_from_row(row)

    async def retry(self, application_id: UUID, charge_id: str) -> Refund | None:
        """The application's failed refund is pending again, due now, with a fresh budget of
        attempts and one more retry, announced as `refund.retried`, in one statement; None when
        it has no such refund in a state RetryRefund sends again (the caller reads it to tell
        why)."""
        row = await self._pool.fetchrow(
            _RETRY, charge_id, application_id, sorted(state.value for state in RETRYABLE)
        )
        return None if row is None else refund_from_row(row)

    async def list(
        self,
        application_id: UUID,
        refund_filter: RefundFilter,
        after: RefundPosition | None,
        limit: int,
    ) -> list[Refund]:
        """Up to `limit` of the application's refunds that pass the filter, newest first
        (creation time, then charge id byte by byte, both descending), after `after` when
        given."""
        query, args = list_query(application_id, refund_filter, after, limit)
        return [refund_from_row(row) for row in await self._pool.fetch(query, *args)]


def list_query(
    application_id: UUID, refund_filter: RefundFilter, after: RefundPosition | None, limit: int
) -> tuple[str, list[Any]]:
    """The statement of one page and its arguments: only the filters that are set."""
    conditions = ["application_id = $1"]
    args: list[Any] = [application_id]

    def where(condition: str, *values: Any) -> None:
        # `{}` in the condition are the next parameters' numbers, in order.
        numbers = [f"${len(args) + index}" for index in range(1, len(values) + 1)]
        conditions.append(condition.format(*numbers))
        args.extend(values)

    if refund_filter.tg_payment_id is not None:
        where("tg_payment_id = {}", refund_filter.tg_payment_id)
    if refund_filter.state is not None:
        where("state = {}", refund_filter.state.value)
    if refund_filter.created_from is not None:
        where("created_at >= {}", refund_filter.created_from)
    if refund_filter.created_before is not None:
        where("created_at < {}", refund_filter.created_before)
    if after is not None:
        where(
            '(created_at, telegram_payment_charge_id COLLATE "C") < ({}, {})',
            after.created_at,
            after.telegram_payment_charge_id,
        )
    query = f"""
        SELECT * FROM refunds WHERE {" AND ".join(conditions)}
        ORDER BY created_at DESC, telegram_payment_charge_id COLLATE "C" DESC
        LIMIT {int(limit)}
    """
    return query, args
