"""The one place events are written: every event row, whichever statement adds it.

An event beside an order carries the order as it is after the change (`data.order`, the
snapshot the event stream and callbacks serve; the invoice lease is internal and left out), so
both shapes share `ORDER_SNAPSHOT`:

- `with_event(change, type)`: a state change of orders and its event in ONE statement (a
  data-modifying CTE), so they commit together in one round trip;
- `insert_event(conn, ...)`: an event of its own (a checkout decision, an anomaly, a refund's
  progress), inside the caller's transaction;
- `order_data(order_id)`: the `data.order` part, for a statement that writes its own events
  (a data-modifying CTE that announces the rows it changed);
- `with_refund_event(change, type)`: a change of refunds and its event in ONE statement; a
  refund's event carries the refund as it is after the change (`data.refund`,
  `REFUND_SNAPSHOT`: its bot and its worker's schedule are internal) beside its order's
  `data.order`.

Event types are EventType members, constants of ours, never input.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from portex_pay.adapters.postgres.pool import Conn
from portex_pay.domain.events import EventType

ORDER_SNAPSHOT = "to_jsonb(o.*) - 'invoice_lease_until'"
REFUND_SNAPSHOT = "to_jsonb(r.*) - 'application_id' - 'bot_id' - 'next_attempt_at'"


def with_event(
    change: str, event_type: EventType, *, extra_data: str = "'{}'::jsonb", before: str = ""
) -> str:
    """One statement: `change` (an INSERT or UPDATE of orders ... RETURNING *) and, for each
    order it returns, the event announcing it. The event carries the order as it is after the
    change (the event stream and callbacks serve that snapshot). `extra_data` is an SQL jsonb
    expression merged into the event's data; `before` holds CTEs the change refers to."""
    return f"""
        WITH {before}
        o AS ({change}),
        ev AS (
            INSERT INTO events (application_id, tg_payment_id, type, data)
            SELECT o.application_id, o.tg_payment_id, '{event_type}',
                   jsonb_build_object('order', {ORDER_SNAPSHOT})
                   || {extra_data}
            FROM o
        )
        SELECT o.* FROM o
    """


def order_data(order_id: str) -> str:
    """An SQL jsonb expression: `{"order": <snapshot>}` for the order whose id is the SQL
    expression `order_id`, `{}` when there is none."""
    return f"""coalesce(
        (SELECT jsonb_build_object('order', {ORDER_SNAPSHOT}) FROM orders o
         WHERE o.tg_payment_id = {order_id}), '{{}}'::jsonb)"""


def with_refund_event(
    change: str, event_type: EventType, *, extra_data: str = "'{}'::jsonb"
) -> str:
    """One statement: `change` (an INSERT or UPDATE of refunds ... RETURNING *) and, for each
    refund it returns, the event announcing it, with the refund after the change and its order
    (`data.refund`, `data.order`, and `telegram_payment_charge_id` and `reason` as before the
    snapshot existed). `extra_data` is an SQL jsonb expression merged into the event's data."""
    return f"""
        WITH r AS ({change}),
        ev AS (
            INSERT INTO events (application_id, tg_payment_id, type, data)
            SELECT r.application_id, r.tg_payment_id, '{event_type}',
                   {order_data("r.tg_payment_id")}
                   || jsonb_build_object('refund', {REFUND_SNAPSHOT},
                          'telegram_payment_charge_id', r.telegram_payment_charge_id,
                          'reason', r.reason)
                   || {extra_data}
            FROM r
        )
        SELECT r.* FROM r
    """


async def insert_event(
    conn: Conn,
    application_id: UUID,
    tg_payment_id: int | None,
    event_type: EventType,
    data: dict[str, Any],
) -> None:
    """An event, with the order's snapshot when there is an order."""
    await conn.execute(
        f"""
        INSERT INTO events (application_id, tg_payment_id, type, data)
        SELECT $1, $2, $3, {order_data("$2")} || $4::jsonb
        """,
        application_id,
        tg_payment_id,
        event_type,
        data,
    )
