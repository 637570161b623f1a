-- Signing-secret rotation (issue 21): the rotated-out secret keeps signing callbacks, as a second
-- signature, until its overlap ends, so receivers can switch to the new secret without a failed
-- delivery. Kept next to the current secret so that every read of one reads the other.
ALTER TABLE applications
    ADD COLUMN previous_signing_secret text,
    ADD COLUMN previous_signing_secret_until timestamptz,
    ADD CONSTRAINT applications_previous_signing_secret_until
        CHECK ((previous_signing_secret IS NULL) = (previous_signing_secret_until IS NULL));

-- Failed deliveries, listed for an operator newest first (admin callbacks --failed), a page per
-- range scan of this small index; when each was given up.
ALTER TABLE callback_deliveries ADD COLUMN failed_at timestamptz;
CREATE INDEX callback_deliveries_failed ON callback_deliveries (event_id) WHERE state = 'failed';
