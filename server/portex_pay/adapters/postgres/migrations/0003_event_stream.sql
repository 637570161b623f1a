-- The event stream: a gap-free cursor, a wake-up hint, retention.

-- Stream order is (xid, id): readers deliver only events whose transaction is older than every
-- running one (pg_snapshot_xmin), so an event that commits late is never skipped: any event that
-- becomes visible later has an xid at or above the horizon the reader has reached.
CREATE INDEX events_stream ON events (xid, id);
CREATE INDEX events_application_stream ON events (application_id, xid, id);
DROP INDEX events_application;

-- A wake-up hint for the stream hubs, at most one per transaction: PostgreSQL folds identical
-- notifications of one transaction into one, and every notification serialises commits, so it
-- carries no payload. Readers always read the table; the hint only says "look now".
CREATE FUNCTION notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portex_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_events();

-- Retention: the newest position pruned so far; a cursor at or before it has lost events.
CREATE TABLE event_log_state (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_xid  xid8,
    pruned_id   bigint
);
INSERT INTO event_log_state DEFAULT VALUES;

-- Pruning an event takes its (delivered or abandoned) callback with it.
ALTER TABLE callback_deliveries
    DROP CONSTRAINT callback_deliveries_event_id_fkey,
    ADD CONSTRAINT callback_deliveries_event_id_fkey
        FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE;
