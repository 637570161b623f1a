-- Refunds listed, and the unfulfilled-order policy swept (issue 18).

-- ListRefunds: an application's refunds newest first, a page per index range scan (keyset:
-- created_at, then the charge id, both descending). Charge ids compare byte by byte (COLLATE
-- "C"): the refunds of one transaction share created_at, and their order must not depend on the
-- database's locale.
CREATE INDEX refunds_listing
    ON refunds (application_id, created_at DESC, telegram_payment_charge_id COLLATE "C" DESC);

-- The unfulfilled-order policy's sweep: an application's paid orders nobody acknowledged, oldest
-- payment first. Only those rows are indexed (paid, not refunded, not acknowledged): an
-- acknowledged or refunded order leaves the index. The predicate is written in timestamps, which
-- the sweep repeats as constants, so that every plan of it (generic ones too; its state guard is
-- a parameter) can use the index.
CREATE INDEX orders_unfulfilled ON orders (application_id, paid_at)
    WHERE paid_at IS NOT NULL AND refunded_at IS NULL AND fulfilled_at IS NULL;

-- When the policy was switched on (NULL while it is off): it refunds only orders paid since, so
-- that switching it on never reaches back to orders paid under no such promise.
ALTER TABLE applications
    ADD COLUMN unfulfilled_refund_since timestamptz,
    ADD CONSTRAINT applications_unfulfilled_refund_since
        CHECK ((unfulfilled_refund_after IS NULL) = (unfulfilled_refund_since IS NULL));
