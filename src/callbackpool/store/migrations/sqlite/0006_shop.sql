-- Payments created by the shop's server: an id the shop names them by, the shop's order
-- reference and metadata, where the customer goes back to, how many card attempts it
-- allows, the request's idempotency key; and the status `open` (created, no slot leased
-- yet). A CHECK constraint cannot be changed in place on SQLite: the table is made anew
-- (the migration runs with foreign keys off and checks them before it commits).
CREATE TABLE payments_new (
    token           TEXT    PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    items           TEXT    NOT NULL DEFAULT '[]',
    customer        TEXT    NOT NULL DEFAULT '{}',
    customer_key    TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('open', 'pending', 'completed', 'failed',
                                                       'cancelled', 'expired', 'needs_review')),
    late            INTEGER NOT NULL DEFAULT 0,
    lease_id        INTEGER,
    callback_path   TEXT,
    expires_at      INTEGER,
    pn_ref          TEXT,
    order_id        TEXT,
    auth_code       TEXT,
    card_type       TEXT,
    last4           TEXT,
    result_code     TEXT,
    error_message   TEXT,
    callback_id     INTEGER,
    order_reference TEXT,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    success_url     TEXT,
    cancel_url      TEXT,
    max_attempts    INTEGER NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    idempotency_key TEXT    UNIQUE,
    request_hash    TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
INSERT INTO payments_new (token, id, amount, currency, items, customer, customer_key, status,
                          late, lease_id, callback_path, expires_at, pn_ref, order_id,
                          auth_code, card_type, last4, result_code, error_message, callback_id,
                          created_at, updated_at)
SELECT token, 'pay_' || lower(hex(randomblob(12))), amount, currency, items, customer,
       customer_key, status, late, lease_id, callback_path, expires_at, pn_ref, order_id,
       auth_code, card_type, last4, result_code, error_message, callback_id, created_at,
       updated_at
  FROM payments;
DROP TABLE payments;
ALTER TABLE payments_new RENAME TO payments;
CREATE INDEX payments_status_created ON payments (status, created_at);
CREATE INDEX payments_customer_key ON payments (customer_key) WHERE customer_key IS NOT NULL;
CREATE INDEX payments_newest ON payments (created_at DESC, id DESC);
CREATE INDEX payments_order_reference ON payments (order_reference, created_at DESC)
    WHERE order_reference IS NOT NULL;

-- The lease each applied return was applied to: a payment's attempts, each with its return.
ALTER TABLE callbacks ADD COLUMN lease_id INTEGER;
CREATE INDEX callbacks_lease ON callbacks (lease_id) WHERE lease_id IS NOT NULL;

-- A shop's payment waiting for a slot: the ticket leases it to that payment when its turn comes.
ALTER TABLE tickets ADD COLUMN open_payment TEXT;
