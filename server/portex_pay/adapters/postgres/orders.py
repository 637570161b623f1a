"""Orders, idempotency keys and the order events, in PostgreSQL.

Every state change is one statement that also inserts its event row (data-modifying CTEs), so the
change and the event that announces it commit together, in one round trip. ListOrders' pages are
one statement each too (keyset paging over the indexes of migration 0008), with no transaction
held between pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.events_writer import with_event
from portex_pay.domain.events import EventType
from portex_pay.domain.fulfilment import FULFILLABLE, UnfulfilledOrder
from portex_pay.domain.order import EXPIRABLE, PAYABLE, Claim, Order, OrderState, sources
from portex_pay.domain.order_filter import Comparison, FilterField, Operator, OrderListQuery
from portex_pay.domain.pay import PayCommand
from portex_pay.domain.subscription import (
    GRACE,
    RENEWING,
    SubscriptionCharge,
    SubscriptionState,
    period_of,
)

_ORDER_FIELDS = tuple(f.name for f in fields(Order))

_INSERT_COLUMNS = """
    application_id, tg_use_id, amount, label, title, description, payload, photo_url,
    photo_size, photo_width, photo_height, callback_url, state, expires_at, invoice_lease_until,
    metadata, subscription_period
"""
_INSERT_VALUES = """
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending',
    now() + make_interval(secs => $13), now() + make_interval(secs => $14), $15, $18
"""

# The subscription period is $18 after the idempotent insert's key and fingerprint ($16, $17);
# the plain insert has neither, so its period is $16.
_CREATE_ORDER = with_event(
    f"INSERT INTO orders ({_INSERT_COLUMNS}) VALUES ({_INSERT_VALUES.replace('$18', '$16')})"
    " RETURNING *",
    EventType.ORDER_CREATED,
)

_CREATE_ORDER_IDEMPOTENT = with_event(
    f"""
    INSERT INTO orders (tg_payment_id, {_INSERT_COLUMNS})
    SELECT k.tg_payment_id, {_INSERT_VALUES} FROM k
    RETURNING *
    """,
    EventType.ORDER_CREATED,
    before="""
    new_id AS (
        SELECT nextval(pg_get_serial_sequence('orders', 'tg_payment_id')) AS id
    ),
    k AS (
        INSERT INTO idempotency_keys (application_id, request_id, request_hash, tg_payment_id)
        SELECT $1, $16, $17, id FROM new_id
        ON CONFLICT (application_id, request_id) DO NOTHING
        RETURNING tg_payment_id
    ),
    """,
)

_FIND_BY_REQUEST_ID = """
SELECT k.request_hash, o.*
FROM idempotency_keys k JOIN orders o USING (tg_payment_id)
WHERE k.application_id = $1 AND k.request_id = $2
"""


# The unfulfilled-order policy's sweep ($1 now, $2 the batch, $3 the fulfillable states): one
# range scan of `orders_unfulfilled` per application with the policy (migration 0010).
UNFULFILLED_PAST_DEADLINE = """
    SELECT o.application_id, o.tg_payment_id, a.bot_id
    FROM applications a
    CROSS JOIN LATERAL (
        SELECT o.application_id, o.tg_payment_id, o.paid_at FROM orders o
        -- The partial index's predicate, as constants (migration 0010), and the guard.
        WHERE o.application_id = a.id AND o.paid_at IS NOT NULL
          AND o.refunded_at IS NULL AND o.fulfilled_at IS NULL
          AND o.state = ANY($3::text[])
          AND o.paid_at >= a.unfulfilled_refund_since
          AND o.paid_at <= $1::timestamptz - a.unfulfilled_refund_after
          AND NOT EXISTS (
              SELECT 1 FROM refunds r
              WHERE r.telegram_payment_charge_id = o.telegram_payment_charge_id)
        ORDER BY o.paid_at
        LIMIT $2
    ) o
    WHERE a.unfulfilled_refund_after IS NOT NULL AND a.bot_id IS NOT NULL
    ORDER BY o.paid_at
    LIMIT $2
"""


def order_from_row(row: asyncpg.Record | dict[str, Any]) -> Order:
    values = {name: row[name] for name in _ORDER_FIELDS}
    values["state"] = OrderState(values["state"])
    if values["subscription_state"] is not None:
        values["subscription_state"] = SubscriptionState(values["subscription_state"])
    return Order(**values)


def _order_args(
    application_id: UUID, command: PayCommand, ttl_seconds: float, lease_seconds: float
) -> list[Any]:
    return [
        application_id,
        command.tg_use_id,
        command.amount,
        command.label,
        command.title,
        command.description,
        command.payload,
        command.photo_url,
        command.photo_size,
        command.photo_width,
        command.photo_height,
        command.callback_url,
        float(ttl_seconds),
        float(lease_seconds),
        dict(command.metadata),
    ]


class OrderRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        application_id: UUID,
        command: PayCommand,
        *,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Order:
        """Inserts a pending order (leased to the caller for its invoice) and its event."""
        row = await self._pool.fetchrow(
            _CREATE_ORDER,
            *_order_args(application_id, command, ttl_seconds, lease_seconds),
            command.subscription_period,
        )
        assert row is not None
        return order_from_row(row)

    async def create_idempotent(
        self,
        application_id: UUID,
        request_id: str,
        command: PayCommand,
        *,
        ttl_seconds: float,
        lease_seconds: float,
    ) -> Claim:
        """Claims `request_id` and inserts its order, or returns the order that already holds it.

        The unique (application, request_id) key decides between concurrent duplicates: the loser's
        insert does nothing, and it reads the winner's order instead.
        """
        fingerprint = command.fingerprint()
        args = _order_args(application_id, command, ttl_seconds, lease_seconds)
        row = await self._pool.fetchrow(
            _CREATE_ORDER_IDEMPOTENT, *args, request_id, fingerprint, command.subscription_period
        )
        if row is not None:
            return Claim(order_from_row(row), created=True, request_hash=fingerprint)
        existing = await self.find_by_request_id(application_id, request_id)
        assert existing is not None, "the conflicting key commits before ON CONFLICT returns"
        return existing

    async def find_by_request_id(self, application_id: UUID, request_id: str) -> Claim | None:
        row = await self._pool.fetchrow(_FIND_BY_REQUEST_ID, application_id, request_id)
        if row is None:
            return None
        return Claim(order_from_row(row), created=False, request_hash=bytes(row["request_hash"]))

    async def get(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        # Scoped by application: another application's order is indistinguishable from none.
        row = await self._pool.fetchrow(
            "SELECT * FROM orders WHERE tg_payment_id = $1 AND application_id = $2",
            tg_payment_id,
            application_id,
        )
        return None if row is None else order_from_row(row)

    async def find_resumable(self, application_id: UUID, tg_use_id: int) -> Order | None:
        row = await self._pool.fetchrow(
            """
            SELECT * FROM orders
            WHERE application_id = $1 AND tg_use_id = $2 AND state = ANY($3::text[])
              AND invoice_link IS NOT NULL AND expires_at > now()
            ORDER BY tg_payment_id DESC
            LIMIT 1
            """,
            application_id,
            tg_use_id,
            sorted(state.value for state in PAYABLE),  # Order.is_payable, in SQL
        )
        return None if row is None else order_from_row(row)

    async def take_invoice_lease(
        self, application_id: UUID, tg_payment_id: int, lease_seconds: float
    ) -> Order | None:
        """Leases an order that still needs its invoice link to this caller, if nobody holds it."""
        row = await self._pool.fetchrow(
            """
            UPDATE orders SET invoice_lease_until = now() + make_interval(secs => $3)
            WHERE tg_payment_id = $1 AND application_id = $2
              AND invoice_link IS NULL AND state = ANY($4::text[])
              AND (invoice_lease_until IS NULL OR invoice_lease_until <= now())
            RETURNING *
            """,
            tg_payment_id,
            application_id,
            float(lease_seconds),
            sources(OrderState.PENDING),  # the lease is taken to make it pending with a link
        )
        return None if row is None else order_from_row(row)

    async def release_invoice_lease(self, tg_payment_id: int) -> None:
        await self._pool.execute(
            "UPDATE orders SET invoice_lease_until = NULL "
            "WHERE tg_payment_id = $1 AND invoice_link IS NULL",
            tg_payment_id,
        )

    async def record_invoice_link(self, tg_payment_id: int, link: str) -> Order | None:
        """Stores the link; the order becomes (or stays) pending. None if it was no longer
        waiting for a link (cancelled or expired meanwhile)."""
        row = await self._pool.fetchrow(
            with_event(
                """
                UPDATE orders SET invoice_link = $2, state = 'pending',
                    invoice_lease_until = NULL, failure_code = NULL, failure_reason = NULL,
                    retry_after = NULL, updated_at = now()
                WHERE tg_payment_id = $1 AND invoice_link IS NULL
                  AND state = ANY($3::text[])
                RETURNING *
                """,
                EventType.ORDER_INVOICE_CREATED,
            ),
            tg_payment_id,
            link,
            sources(OrderState.PENDING),
        )
        return None if row is None else order_from_row(row)

    async def record_invoice_failure(
        self, tg_payment_id: int, code: str, reason: str, retry_after: int | None
    ) -> Order | None:
        row = await self._pool.fetchrow(
            with_event(
                """
                UPDATE orders SET state = 'failed', invoice_lease_until = NULL,
                    failure_code = $2, failure_reason = $3, retry_after = $4, updated_at = now()
                WHERE tg_payment_id = $1 AND invoice_link IS NULL
                  AND state = ANY($5::text[])
                RETURNING *
                """,
                EventType.ORDER_FAILED,
            ),
            tg_payment_id,
            code,
            reason,
            retry_after,
            sources(OrderState.FAILED),
        )
        return None if row is None else order_from_row(row)

    async def prune_idempotency_keys(self, older_than_seconds: float) -> int:
        status = await self._pool.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            float(older_than_seconds),
        )
        return int(status.split()[-1])

    async def cancel(self, application_id: UUID, tg_payment_id: int) -> Order | None:
        """Withdraws an unpaid, unexpired order; None when it was not in such a state (the caller
        reads the order to tell why)."""
        row = await self._pool.fetchrow(
            with_event(
                """
                UPDATE orders SET state = 'cancelled', cancelled_at = now(), updated_at = now(),
                    invoice_lease_until = NULL
                WHERE tg_payment_id = $1 AND application_id = $2
                  AND state = ANY($3::text[]) AND expires_at > now()
                RETURNING *
                """,
                EventType.ORDER_CANCELLED,
            ),
            tg_payment_id,
            application_id,
            sources(OrderState.CANCELLED),
        )
        return None if row is None else order_from_row(row)

    async def record_client_report(
        self, application_id: UUID, tg_payment_id: int, status: str
    ) -> Order | None:
        """Stores the Mini App's invoiceClosed status; the order's state does not change."""
        row = await self._pool.fetchrow(
            with_event(
                """
                UPDATE orders SET client_report = $3, updated_at = now()
                WHERE tg_payment_id = $1 AND application_id = $2
                RETURNING *
                """,
                EventType.ORDER_CLIENT_REPORT,
                extra_data="jsonb_build_object('status', $3::text)",
            ),
            tg_payment_id,
            application_id,
            status,
        )
        return None if row is None else order_from_row(row)

    async def expire_due(self, limit: int) -> int:
        """Marks up to `limit` unpaid orders past their expiry time expired, with their events.
        SKIP LOCKED lets any number of replicas sweep at once without waiting on each other or
        on an order being paid right now."""
        rows = await self._pool.fetch(
            with_event(
                """
                UPDATE orders SET state = 'expired', updated_at = now(),
                    invoice_lease_until = NULL
                WHERE tg_payment_id IN (
                    SELECT tg_payment_id FROM orders
                    WHERE state = ANY($2::text[]) AND expires_at <= now()
                    ORDER BY expires_at
                    LIMIT $1
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING *
                """,
                EventType.ORDER_EXPIRED,
            ),
            limit,
            sources(OrderState.EXPIRED),
        )
        return len(rows)

    async def expire_subscriptions(self, limit: int) -> int:
        """Marks up to `limit` subscriptions whose period ended more than the grace ago without
        a renewal EXPIRED, each with `subscription.expired` (SKIP LOCKED, like expire_due: a
        renewal being recorded right now wins)."""
        rows = await self._pool.fetch(
            with_event(
                """
                UPDATE orders SET subscription_state = 'expired', updated_at = now()
                WHERE tg_payment_id IN (
                    SELECT tg_payment_id FROM orders
                    WHERE subscription_state = ANY($2::text[])
                      AND current_period_end <= now() - make_interval(secs => $3)
                    ORDER BY current_period_end
                    LIMIT $1
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING *
                """,
                EventType.SUBSCRIPTION_EXPIRED,
            ),
            limit,
            sorted(state.value for state in RENEWING),
            GRACE.total_seconds(),
        )
        return len(rows)

    async def subscription_charges(
        self, application_id: UUID, tg_payment_id: int
    ) -> list[SubscriptionCharge]:
        """The charges that paid the order's periods (its first and its renewals), oldest period
        first; duplicates and anomalies are not periods."""
        rows = await self._pool.fetch(
            """
            SELECT p.telegram_payment_charge_id, p.amount, p.subscription_expiration_date,
                   p.received_at, p.refunded_at, o.subscription_period
            FROM payments p JOIN orders o ON o.tg_payment_id = p.tg_payment_id
            WHERE p.tg_payment_id = $1 AND p.application_id = $2 AND o.application_id = $2
              AND p.disposition IN ('accepted', 'renewal')
            ORDER BY p.subscription_expiration_date NULLS FIRST, p.received_at
            """,
            tg_payment_id,
            application_id,
        )
        return [
            SubscriptionCharge(
                telegram_payment_charge_id=row["telegram_payment_charge_id"],
                amount=row["amount"],
                period=None
                if row["subscription_expiration_date"] is None
                else period_of(row["subscription_expiration_date"], row["subscription_period"]),
                paid_at=row["received_at"],
                refunded_at=row["refunded_at"],
            )
            for row in rows
        ]

    # --- Fulfilment (AcknowledgeOrder) and the unfulfilled-order policy --------------------------

    async def acknowledge(
        self, application_id: UUID, tg_payment_id: int, request_id: str | None
    ) -> Order | None:
        """Records the delivery of a paid order's goods not acknowledged before, with its
        `order.fulfilled` event, in one statement (a compare-and-set: of concurrent calls one
        applies); None when it did not apply (the caller reads the order to tell why)."""
        row = await self._pool.fetchrow(
            with_event(
                """
                UPDATE orders SET fulfilled_at = now(), fulfilment_request_id = $3,
                    updated_at = now()
                WHERE tg_payment_id = $1 AND application_id = $2
                  AND state = ANY($4::text[]) AND fulfilled_at IS NULL
                RETURNING *
                """,
                EventType.ORDER_FULFILLED,
            ),
            tg_payment_id,
            application_id,
            request_id,
            sorted(state.value for state in FULFILLABLE),
        )
        return None if row is None else order_from_row(row)

    async def unfulfilled_past_deadline(self, now: datetime, limit: int) -> list[UnfulfilledOrder]:
        """Up to `limit` paid orders, oldest payment first, that nobody acknowledged within their
        application's deadline (`applications.unfulfilled_refund_after`) as of `now`, paid since
        its policy was switched on, whose charge has no refund yet. One index range scan per
        application with the policy (`orders_unfulfilled`); applications without it are not
        read."""
        rows = await self._pool.fetch(
            UNFULFILLED_PAST_DEADLINE,
            now,
            limit,
            sorted(state.value for state in FULFILLABLE),
        )
        return [
            UnfulfilledOrder(row["application_id"], row["tg_payment_id"], row["bot_id"])
            for row in rows
        ]

    # ------------------------------------------------------------------ reads (issue 18)

    async def list(self, application_id: UUID, query: OrderListQuery) -> list[Order]:
        """One page of the application's orders (ListOrders), in one statement."""
        sql, args = list_statement(application_id, query)
        rows = await self._pool.fetch(sql, *args)
        return [order_from_row(row) for row in rows]

    async def find_by_charge(self, application_id: UUID, charge_id: str) -> Order | None:
        """The application's order a charge was recorded for, whatever the charge's disposition
        (accepted, duplicate, anomaly) and whether it was refunded since: `payments` keeps every
        charge Telegram reported, with its order."""
        row = await self._pool.fetchrow(
            """
            SELECT o.* FROM payments p JOIN orders o ON o.tg_payment_id = p.tg_payment_id
            WHERE p.telegram_payment_charge_id = $1
              AND p.application_id = $2 AND o.application_id = $2
            """,
            charge_id,
            application_id,
        )
        return None if row is None else order_from_row(row)


# ---------------------------------------------------------------------------- ListOrders in SQL

_SQL_OPERATORS = {
    Operator.EQ: "=",
    Operator.NE: "<>",
    Operator.LT: "<",
    Operator.LE: "<=",
    Operator.GT: ">",
    Operator.GE: ">=",
}


class _Parameters:
    """The `$n` values of a statement being composed; values never enter its text."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _seen_state_is(state: OrderState, param: _Parameters, as_of: str) -> str:
    """`Order.state_at(as_of) = state` in SQL (`as_of` an SQL parameter): an order whose stored
    state is expirable and whose expiry has passed is seen EXPIRED, any other its stored state.
    The expirable states come from the domain's EXPIRABLE as a parameter, as the transition
    guards come from the table, so this cannot drift from QueryOrder's rule. Written as
    comparisons of the columns (not one CASE expression) so that the planner estimates them from
    the columns' statistics and keeps the ordered index scans of migration 0008."""
    expirable = param(sorted(each.value for each in EXPIRABLE))
    past_expiry = f"state = ANY({expirable}::text[]) AND expires_at <= {as_of}"
    if state is OrderState.EXPIRED:
        return f"(state = {param(state.value)}::text OR ({past_expiry}))"
    return f"(state = {param(state.value)}::text AND NOT ({past_expiry}))"


def _condition(comparison: Comparison, param: _Parameters, as_of: Callable[[], str]) -> str:
    """One comparison as an SQL condition, with `OrderFilter.matches`' meaning: `!=` is the
    negation of `=` (NULLs included), the ordering operators select non-NULL values only."""
    op, value = _SQL_OPERATORS[comparison.operator], comparison.value
    match comparison.field:
        case FilterField.TG_USE_ID:
            return f"tg_use_id {op} {param(value)}::bigint"
        case FilterField.STATE:
            assert isinstance(value, OrderState)
            seen = _seen_state_is(value, param, as_of())
            return seen if comparison.operator is Operator.EQ else f"NOT {seen}"
        case FilterField.LABEL:
            return f"label {op} {param(value)}::text"
        case FilterField.CREATE_TIME:
            return f"created_at {op} {param(value)}::timestamptz"
        case FilterField.PAID_TIME:
            if comparison.operator is Operator.NE:
                return f"paid_at IS DISTINCT FROM {param(value)}::timestamptz"
            return f"paid_at {op} {param(value)}::timestamptz"
        case FilterField.FULFILLED:
            # Literal, not a parameter: the partial index of the stuck list needs to see it.
            return "fulfilled_at IS NOT NULL" if value else "fulfilled_at IS NULL"
        case FilterField.SUBSCRIPTION_STATE:
            # The stored state, as QueryOrder shows it; a one-off order's NULL only `!=` selects.
            # `=` uses the partial index orders_list_subscription (migration 0011).
            assert isinstance(value, SubscriptionState)
            if comparison.operator is Operator.NE:
                return f"subscription_state IS DISTINCT FROM {param(value.value)}::text"
            return f"subscription_state = {param(value.value)}::text"
        case FilterField.METADATA:
            contains = f"metadata @> {param({comparison.key: value})}::jsonb"
            return contains if comparison.operator is Operator.EQ else f"NOT ({contains})"
    raise AssertionError(f"unknown field {comparison.field}")


def list_statement(application_id: UUID, query: OrderListQuery) -> tuple[str, list[Any]]:
    """The statement (and its arguments) that reads one page of ListOrders: the application's
    orders the filter selects, newest first, after the previous page's last one."""
    param = _Parameters()
    conditions = [f"application_id = {param(application_id)}::uuid"]
    if query.after is not None:
        created_at, tg_payment_id = query.after
        conditions.append(
            f"(created_at, tg_payment_id) < ({param(created_at)}::timestamptz, "
            f"{param(tg_payment_id)}::bigint)"
        )
    as_of: list[str] = []

    def as_of_parameter() -> str:  # one parameter for every state comparison, when there is one
        if not as_of:
            as_of.append(param(query.as_of) + "::timestamptz")
        return as_of[0]

    conditions.extend(_condition(c, param, as_of_parameter) for c in query.filter.comparisons)
    sql = f"""
        SELECT * FROM orders
        WHERE {" AND ".join(conditions)}
        ORDER BY created_at DESC, tg_payment_id DESC
        LIMIT {param(query.limit)}
    """
    return sql, param.values
