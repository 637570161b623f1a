-- The Star ledger (issue 18): every Star transaction of every bot, as getStarTransactions lists
-- it, and a checkpoint per bot so that the worker reads each transaction once.

-- One row per transaction and bot. A refund has the id of the payment it returns (Bot API,
-- StarTransaction.id), so the direction is part of the key. `position` is the transaction's index
-- in Telegram's chronological list when it was read (a pending withdrawal is read again there).
-- `partner_type` is any kind Telegram sends, newer ones included; `raw` keeps the whole of it.
CREATE TABLE star_transactions (
    application_id        uuid NOT NULL REFERENCES applications (id),
    bot_id                bigint NOT NULL,
    id                    text NOT NULL,
    direction             text NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    position              bigint NOT NULL CHECK (position >= 0),
    amount                bigint NOT NULL CHECK (amount >= 0),
    nanostar_amount       integer NOT NULL DEFAULT 0
        CHECK (nanostar_amount BETWEEN 0 AND 999999999),
    date                  timestamptz NOT NULL,
    partner_type          text NOT NULL,
    transaction_type      text,
    partner_id            bigint,
    invoice_payload       text,
    subscription_period   integer,
    paid_media_payload    text,
    gift_id               text,
    withdrawal_state      text,
    withdrawal_date       timestamptz,
    withdrawal_url        text,
    commission_per_mille  integer,
    affiliate_user_id     bigint,
    affiliate_chat_id     bigint,
    request_count         integer,
    match                 text NOT NULL CHECK (match IN ('payment', 'refund', 'none', 'unmatched')),
    tg_payment_id         bigint REFERENCES orders (tg_payment_id),
    raw                   jsonb NOT NULL,
    recorded_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bot_id, id, direction)
);
-- ListStarTransactions: newest first, one index range scan a page, with or without kinds.
CREATE INDEX star_transactions_listing
    ON star_transactions (application_id, bot_id, date DESC, id DESC, direction DESC);
CREATE INDEX star_transactions_kind
    ON star_transactions (application_id, bot_id, partner_type, date DESC, id DESC, direction DESC);
-- The accounting export (`portex-pay admin export --what transactions`): oldest first, every bot
-- the application has had.
CREATE INDEX star_transactions_export
    ON star_transactions (application_id, date, id COLLATE "C", direction);
-- Withdrawals Fragment has not settled yet: read again until they have.
CREATE INDEX star_transactions_pending_withdrawals
    ON star_transactions (bot_id, position) WHERE withdrawal_state = 'pending';

-- The reader of each bot: how many transactions it has read (the next getStarTransactions
-- offset), when it last read, and its lease (one reader per bot across replicas, held for a run).
CREATE TABLE star_ledger_state (
    bot_id       bigint PRIMARY KEY,
    checkpoint   bigint NOT NULL DEFAULT 0 CHECK (checkpoint >= 0),
    read_at      timestamptz,
    lease_owner  text,
    lease_until  timestamptz
);
