-- ListOrders (issue 18): newest first by (created_at, tg_payment_id), a page at a time by keyset
-- (`(created_at, tg_payment_id) < ($a, $b)`). Each index below serves the common filters with one
-- range scan already in the list's order, so a page reads about `page_size` index entries and no
-- Sort: every filter starts with the application (tenant isolation is part of the key).
--
-- Not CONCURRENTLY: the migration runner applies each file in one transaction (migrations.py),
-- where CREATE INDEX CONCURRENTLY is not allowed. On a large orders table, build these by hand
-- with CONCURRENTLY first (same names, IF NOT EXISTS makes this file a no-op then).

-- Every order of an application; also any filter on state, create_time or fulfilled alone.
CREATE INDEX IF NOT EXISTS orders_list
    ON orders (application_id, created_at DESC, tg_payment_id DESC);

-- One user's orders (`tg_use_id = N`, with any other comparison as a filter on the range).
CREATE INDEX IF NOT EXISTS orders_list_user
    ON orders (application_id, tg_use_id, created_at DESC, tg_payment_id DESC);

-- One item's orders (`label = "..."`).
CREATE INDEX IF NOT EXISTS orders_list_label
    ON orders (application_id, label, created_at DESC, tg_payment_id DESC);

-- The stuck list: paid, never acknowledged (`state = PAID AND fulfilled = false AND paid_time <
-- T`). The predicate holds only orders that were paid and not fulfilled (refunded ones too, few),
-- so the index stays as small as the backlog; `paid_time < T` implies `paid_at IS NOT NULL`,
-- which lets the planner use it for any T, also in a generic plan.
CREATE INDEX IF NOT EXISTS orders_list_unfulfilled
    ON orders (application_id, created_at DESC, tg_payment_id DESC)
    WHERE fulfilled_at IS NULL AND paid_at IS NOT NULL;

-- `metadata.KEY = "v"`: containment (`metadata @> '{"KEY": "v"}'`). GIN has no order, so such
-- a page costs a bitmap scan of the matching orders and a top-N sort of them.
CREATE INDEX IF NOT EXISTS orders_metadata
    ON orders USING gin (metadata jsonb_path_ops);

-- QueryOrder by charge id: payments is keyed by telegram_payment_charge_id already.
