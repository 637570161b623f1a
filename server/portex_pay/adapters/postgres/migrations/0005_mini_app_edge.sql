-- The HTTP edge for Mini Apps (the Portex JS SDK): per-application pricing, allowed browser
-- origins and callback prefixes, the price list, and the Telegram users seen through initData.
ALTER TABLE applications
    -- catalog: a browser Pay must name a catalog item at its price; open: browser amounts are
    -- accepted (test applications). The safe one is the default.
    ADD COLUMN pricing_mode text NOT NULL DEFAULT 'catalog'
        CHECK (pricing_mode IN ('catalog', 'open')),
    -- Mini App origins allowed to call the edge (CORS), e.g. https://game.example.com.
    ADD COLUMN allowed_origins text[] NOT NULL DEFAULT '{}',
    -- A browser-supplied callback_url must start with one of these.
    ADD COLUMN callback_prefixes text[] NOT NULL DEFAULT '{}';

-- Cross-application preflight: is this origin allowed by some application at all?
CREATE INDEX applications_allowed_origins ON applications USING gin (allowed_origins);

CREATE TABLE catalog_items (
    application_id  uuid NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 64),
    amount          bigint NOT NULL CHECK (amount > 0),
    title           text,
    description     text,
    photo_url       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, key)
);

CREATE TABLE telegram_users (
    application_id  uuid NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL CHECK (user_id > 0),
    first_name      text NOT NULL,
    last_name       text,
    username        text,
    language_code   text,
    is_premium      boolean NOT NULL DEFAULT false,
    photo_url       text,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (application_id, user_id)
);
