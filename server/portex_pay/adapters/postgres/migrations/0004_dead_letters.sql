-- Dead letters: Telegram updates that cannot be processed for a reason that will not go away
-- (bad data, a bug), or that kept failing. Each is kept with the raw update and the error and
-- acknowledged, so one bad update never blocks the bot's later ones.
CREATE TABLE dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    application_id  uuid NOT NULL REFERENCES applications (id),
    bot_id          bigint NOT NULL,
    -- NULL when the update has no usable update_id.
    update_id       bigint,
    kind            text NOT NULL,
    -- The update exactly as received (bytes: it may hold what text and jsonb refuse, like NUL).
    raw             bytea NOT NULL,
    raw_sha256      bytea NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A redelivery of the same bytes adds nothing (updates with an update_id are also claimed in
-- telegram_updates).
CREATE UNIQUE INDEX dead_letters_raw ON dead_letters (bot_id, raw_sha256);
CREATE INDEX dead_letters_application ON dead_letters (application_id, id);
