"""A large orders table in one statement, for ListOrders' query plans (tests) and benchmark (bench).

`seed_orders` inserts `count` orders with `INSERT ... SELECT generate_series`, spread over the
given applications and `users` users, one creation every 10 ms back from `now`, in a mix of
states like a live shop's: mostly expired and paid, some refunded, cancelled, failed and pending
(pending ones past their expiry, as before a sweep), paid orders delivered but about 2 % of them
not (the stuck list), one paid order in five a subscription (mostly active, some cancelled, lapsed
or expired), one order in ten with metadata `sku`, labels `item-0` .. `item-49`. One
user of the first application (`heavy_user`) has `heavy_orders` orders, spread over the whole
time range. With `swept`, unpaid orders past their expiry are stored expired, as the service's
expiry sweeper leaves them (else it would spend the first minutes of a benchmark sweeping them).
Then ANALYZE, so the planner knows the table's shape.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

_SEED = """
INSERT INTO orders (application_id, tg_use_id, amount, label, title, description, state,
    created_at, updated_at, expires_at, paid_at, fulfilled_at, telegram_payment_charge_id,
    metadata, subscription_period, subscription_state, current_period_start, current_period_end)
SELECT
    CASE WHEN heavy THEN ($1::uuid[])[1] ELSE ($1::uuid[])[1 + n % array_length($1, 1)] END,
    CASE WHEN heavy THEN $5 ELSE 1 + (n::bigint * 7919) % $3 END,
    5, 'item-' || n % 50, 'Gems', 'A bag of gems',
    CASE WHEN $7 AND state IN ('pending', 'failed') AND created + interval '15 minutes' <= now()
        THEN 'expired' ELSE state END,
    created, created, created + interval '15 minutes',
    CASE WHEN state IN ('paid', 'refunded') THEN created + interval '30 seconds' END,
    CASE WHEN state = 'paid' AND n % 50 <> 7 THEN created + interval '40 seconds' END,
    CASE WHEN state IN ('paid', 'refunded') THEN 'seed-' || n END,
    CASE WHEN n % 10 = 0 THEN jsonb_build_object('sku', 'SKU-' || n % 1000) ELSE '{}' END,
    CASE WHEN subscribed THEN 2592000 END,
    CASE WHEN subscribed THEN
        (ARRAY['active', 'active', 'active', 'cancelled', 'lapsed', 'expired'])[1 + n / 5 % 6] END,
    CASE WHEN subscribed THEN created + interval '30 seconds' END,
    CASE WHEN subscribed THEN created + interval '30 seconds' + interval '30 days' END
FROM (
SELECT *, state = 'paid' AND n % 5 = 1 AS subscribed
FROM (
    SELECT n,
        n % ($2 / $6) = 0 AS heavy,
        $4::timestamptz - make_interval(secs => ($2 - n) * 0.01) AS created,
        (ARRAY['expired', 'expired', 'expired', 'expired', 'expired', 'expired', 'paid', 'paid',
               'paid', 'paid', 'paid', 'paid', 'refunded', 'cancelled', 'failed', 'pending',
               'pending', 'expired', 'paid', 'paid'])[1 + (n + n / 97) % 20] AS state
    FROM generate_series(1, $2) AS n
) AS states
) AS seed
"""


async def seed_orders(
    conn: asyncpg.Connection,
    application_ids: list[UUID],
    *,
    count: int,
    users: int,
    now: datetime,
    heavy_user: int,
    heavy_orders: int,
    swept: bool = False,
) -> None:
    """Inserts the orders (one statement) and ANALYZEs the table."""
    await conn.execute(_SEED, application_ids, count, users, now, heavy_user, heavy_orders, swept)
    await conn.execute("ANALYZE orders")
