-- The application's own bot beside portex-pay (issue 9): its support texts and buyer messages,
-- and the Bot API relay (updates portex-pay does not own, kept for the app's bot).
ALTER TABLE applications
    -- Answered to /paysupport and /terms; NULL: the English defaults naming the bot.
    ADD COLUMN support_text text CHECK (length(support_text) BETWEEN 1 AND 4096),
    ADD COLUMN terms_text text CHECK (length(terms_text) BETWEEN 1 AND 4096),
    -- A short message to the buyer when an order is paid / refunded (off by default);
    -- NULL templates: the defaults.
    ADD COLUMN buyer_messages boolean NOT NULL DEFAULT false,
    ADD COLUMN paid_message text CHECK (length(paid_message) BETWEEN 1 AND 4096),
    ADD COLUMN refunded_message text CHECK (length(refunded_message) BETWEEN 1 AND 4096);

-- One row per bot whose code talks to portex-pay's Bot API proxy: the relay is on from its
-- first call. `confirmed_offset` is Telegram's getUpdates offset (updates below it are
-- confirmed); a webhook (url, secret) switches the bot from getUpdates to delivery by POST.
CREATE TABLE relay_bots (
    bot_id            bigint PRIMARY KEY,
    application_id    uuid NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    allowed_updates   text[],  -- NULL: Telegram's default set
    confirmed_offset  bigint NOT NULL DEFAULT 0,
    -- Bumped by every getUpdates and webhook change: an older long poll sees it and ends (409).
    poll_generation   bigint NOT NULL DEFAULT 0,
    webhook_url       text,
    webhook_secret    text,
    -- Webhook delivery: one replica at a time per bot (in update order), with backoff.
    lease_owner       text,
    lease_until       timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    last_error_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Updates kept for the app's bot, as Telegram sent them (the bytes), for at most 24 hours.
CREATE TABLE relay_updates (
    bot_id       bigint NOT NULL REFERENCES relay_bots (bot_id) ON DELETE CASCADE,
    update_id    bigint NOT NULL,
    kind         text NOT NULL,
    raw          bytea NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, update_id)
);
CREATE INDEX relay_updates_received ON relay_updates (received_at);
