-- Payments created by the shop's server: an id the shop names them by, the shop's order
-- reference and metadata, where the customer goes back to, how many card attempts it
-- allows, the request's idempotency key; and the status `open` (created, no slot leased yet).
ALTER TABLE payments
    ADD COLUMN id              text,
    ADD COLUMN order_reference text,
    ADD COLUMN metadata        json    NOT NULL DEFAULT '{}',
    ADD COLUMN success_url     text,
    ADD COLUMN cancel_url      text,
    ADD COLUMN max_attempts    integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    ADD COLUMN idempotency_key text    UNIQUE,
    ADD COLUMN request_hash    text;
UPDATE payments SET id = 'pay_' || substr(md5(token || clock_timestamp()::text), 1, 24);
ALTER TABLE payments ALTER COLUMN id SET NOT NULL, ADD CONSTRAINT payments_id_key UNIQUE (id);
ALTER TABLE payments DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check CHECK (status IN
        ('open', 'pending', 'completed', 'failed', 'cancelled', 'expired', 'needs_review'));
CREATE INDEX payments_newest ON payments (created_at DESC, id DESC);
CREATE INDEX payments_order_reference ON payments (order_reference, created_at DESC)
    WHERE order_reference IS NOT NULL;

-- The lease each applied return was applied to: a payment's attempts, each with its return.
ALTER TABLE callbacks ADD COLUMN lease_id bigint;
CREATE INDEX callbacks_lease ON callbacks (lease_id) WHERE lease_id IS NOT NULL;

-- A shop's payment waiting for a slot: the ticket leases it to that payment when its turn comes.
ALTER TABLE tickets ADD COLUMN open_payment text;
