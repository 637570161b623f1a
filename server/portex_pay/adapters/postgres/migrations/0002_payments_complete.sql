-- Payments complete: Telegram update ingestion, payments, refunds, callbacks.

-- How each application receives its bot's updates; NULL follows PORTEX_TELEGRAM_UPDATES.
ALTER TABLE applications
    ADD COLUMN updates_mode text CHECK (updates_mode IN ('webhook', 'polling'));

ALTER TABLE orders
    ADD COLUMN client_report text
        CHECK (client_report IN ('paid', 'cancelled', 'failed', 'pending')),
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN refunded_at timestamptz;

-- What happened to each charge Telegram reported: the charge that paid the order ('accepted'), a
-- further charge of an already settled order ('duplicate'), or one that does not match its order
-- ('anomaly'). Nothing Telegram reports is discarded.
ALTER TABLE payments
    ADD COLUMN disposition text NOT NULL DEFAULT 'accepted'
        CHECK (disposition IN ('accepted', 'duplicate', 'anomaly')),
    ADD COLUMN anomaly text,
    ADD COLUMN refunded_at timestamptz;

-- Every update processed, by bot: a redelivered update_id changes nothing.
CREATE TABLE telegram_updates (
    bot_id       bigint NOT NULL,
    update_id    bigint NOT NULL,
    kind         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, update_id)
);
CREATE INDEX telegram_updates_received ON telegram_updates (received_at);

-- Long polling: one poller per bot across all replicas (a lease), and the next offset to ask for,
-- so a restart neither loses nor replays updates.
CREATE TABLE poll_state (
    bot_id       bigint PRIMARY KEY,
    next_offset  bigint NOT NULL DEFAULT 0,
    lease_owner  text,
    lease_until  timestamptz
);

-- Refund outbox: the intent is recorded first, a worker delivers it with backoff.
CREATE TABLE refunds (
    telegram_payment_charge_id  text PRIMARY KEY REFERENCES payments (telegram_payment_charge_id),
    tg_payment_id    bigint REFERENCES orders (tg_payment_id),
    application_id   uuid REFERENCES applications (id),
    bot_id           bigint NOT NULL,
    tg_use_id        bigint NOT NULL,
    amount           bigint NOT NULL,
    reason           text NOT NULL
        CHECK (reason IN ('requested', 'duplicate_charge', 'cancelled_order', 'anomaly')),
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX refunds_due ON refunds (next_attempt_at) WHERE state = 'pending';
CREATE INDEX refunds_order ON refunds (tg_payment_id);

-- Callback outbox: one delivery per event of an order that has a callback_url.
CREATE TABLE callback_deliveries (
    event_id         bigint PRIMARY KEY REFERENCES events (id),
    application_id   uuid NOT NULL REFERENCES applications (id),
    url              text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    last_status      integer,
    delivered_at     timestamptz
);
CREATE INDEX callback_deliveries_due ON callback_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- The callback outbox row is written by the database in the same transaction as the event, so no
-- code path that records an order change can forget it. Callbacks announce the order's changes
-- (`order.*` events); checkout decisions and payment records stay in the event log.
CREATE FUNCTION enqueue_callback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tg_payment_id IS NOT NULL AND NEW.type LIKE 'order.%' THEN
        INSERT INTO callback_deliveries (event_id, application_id, url)
        SELECT NEW.id, NEW.application_id, o.callback_url
        FROM orders o
        WHERE o.tg_payment_id = NEW.tg_payment_id AND o.callback_url IS NOT NULL;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_enqueue_callback AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION enqueue_callback();
