-- Orders that internal services can find and fulfil, refunds with reasons that can be retried,
-- and the unfulfilled-order policy (issue 18). Indexes for ListOrders come with it in 0008.

-- The application's key-value data (Stripe's limits, checked by the service), and the delivery
-- of the goods, acknowledged by the application (AcknowledgeOrder).
ALTER TABLE orders
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN fulfilled_at timestamptz,
    ADD COLUMN fulfilment_request_id text;

-- Copied onto every order made for the item at the Mini App edge.
ALTER TABLE catalog_items
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';

-- Paid orders left unfulfilled this long are refunded (NOT_FULFILLED); NULL: never (the default).
ALTER TABLE applications
    ADD COLUMN unfulfilled_refund_after interval
        CHECK (unfulfilled_refund_after > interval '0');

-- `reason` says who started a refund; `reason_code` and `reason_text` say why (RefundPayment's
-- caller, or portex-pay for its own refunds). `unfulfilled`: the application's policy; `outside`:
-- a refund made outside portex-pay, found by the Star ledger. `retries`: RetryRefund calls.
ALTER TABLE refunds DROP CONSTRAINT refunds_reason_check;
ALTER TABLE refunds
    ADD CONSTRAINT refunds_reason_check CHECK (reason IN (
        'requested', 'duplicate_charge', 'cancelled_order', 'anomaly', 'unfulfilled', 'outside')),
    ADD COLUMN reason_code text NOT NULL DEFAULT 'requested_by_customer' CHECK (reason_code IN (
        'requested_by_customer', 'duplicate', 'fraudulent', 'not_fulfilled', 'order_cancelled',
        'other')),
    ADD COLUMN reason_text text,
    ADD COLUMN retries integer NOT NULL DEFAULT 0;

UPDATE refunds SET reason_code = CASE reason
    WHEN 'duplicate_charge' THEN 'duplicate'
    WHEN 'cancelled_order' THEN 'order_cancelled'
    WHEN 'anomaly' THEN 'other'
    ELSE 'requested_by_customer' END;
