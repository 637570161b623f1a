-- Stars subscriptions (issue 19): an order made with a subscription_period is paid by its first
-- charge and renewed by later ones, each a row of `payments` (the charge id stays the key, so
-- every charge still counts once).

-- The subscription of an order: NULL columns for a one-off order (every order before this
-- migration). The first payment's charge id, which names the subscription to Telegram
-- (editUserStarSubscription), is the order's `telegram_payment_charge_id`, the charge that paid
-- it. The state is NULL until that first payment starts the subscription.
ALTER TABLE orders
    ADD COLUMN subscription_period integer CHECK (subscription_period > 0),
    ADD COLUMN subscription_state text
        CHECK (subscription_state IN ('active', 'cancelled', 'lapsed', 'expired')),
    ADD COLUMN current_period_start timestamptz,
    ADD COLUMN current_period_end timestamptz,
    ADD CONSTRAINT orders_subscription_state
        CHECK (subscription_state IS NULL OR (subscription_period IS NOT NULL
               AND current_period_start IS NOT NULL AND current_period_end IS NOT NULL));

-- A charge of a subscription says which period it paid (Telegram's subscription_expiration_date,
-- the period's end) and whether Telegram called it recurring. A renewal is its own disposition:
-- a further charge of a paid subscription for a period not paid yet, kept and never refunded.
ALTER TABLE payments
    ADD COLUMN subscription_expiration_date timestamptz,
    ADD COLUMN is_recurring boolean NOT NULL DEFAULT false,
    ADD COLUMN is_first_recurring boolean NOT NULL DEFAULT false,
    DROP CONSTRAINT payments_disposition_check,
    ADD CONSTRAINT payments_disposition_check
        CHECK (disposition IN ('accepted', 'renewal', 'duplicate', 'anomaly'));

-- One paying charge per period of a subscription: a second charge for a period already paid is
-- a duplicate (the ledger judges it so under the order's lock; this is the store's guarantee).
CREATE UNIQUE INDEX payments_subscription_period
    ON payments (tg_payment_id, subscription_expiration_date)
    WHERE disposition IN ('accepted', 'renewal') AND subscription_expiration_date IS NOT NULL;

-- ListOrders' `subscription_state = X`: a page is one index range scan.
CREATE INDEX orders_list_subscription
    ON orders (application_id, subscription_state, created_at DESC, tg_payment_id DESC)
    WHERE subscription_state IS NOT NULL;

-- The lapse sweep: subscriptions still counting on a renewal, by the end of their period.
CREATE INDEX orders_subscription_due ON orders (current_period_end)
    WHERE subscription_state IN ('active', 'cancelled', 'lapsed');

-- The catalog items of the Mini App edge may sell subscriptions.
ALTER TABLE catalog_items
    ADD COLUMN subscription_period integer CHECK (subscription_period > 0);

-- Callbacks announce the subscription's changes as well as the order's.
CREATE OR REPLACE FUNCTION enqueue_callback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tg_payment_id IS NOT NULL
       AND (NEW.type LIKE 'order.%' OR NEW.type LIKE 'subscription.%') THEN
        INSERT INTO callback_deliveries (event_id, application_id, url)
        SELECT NEW.id, NEW.application_id, o.callback_url
        FROM orders o
        WHERE o.tg_payment_id = NEW.tg_payment_id AND o.callback_url IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;
