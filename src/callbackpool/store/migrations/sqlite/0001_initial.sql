-- The callback pool on SQLite. Times are integer microseconds since the Unix epoch (UTC).

CREATE TABLE slots (
    id               INTEGER PRIMARY KEY,
    path             TEXT    NOT NULL UNIQUE,
    active           INTEGER NOT NULL DEFAULT 1,
    -- The live lease and its expiry, kept on the slot so that free slots have an index.
    live_lease_id    INTEGER,
    lease_expires_at INTEGER,
    -- The latest expiry of the slot's taints: the slot is clean once it has passed.
    tainted_until    INTEGER,
    usage_count      INTEGER NOT NULL DEFAULT 0,
    last_acquired_at INTEGER,
    last_released_at INTEGER,
    created_at       INTEGER NOT NULL
);
CREATE INDEX slots_free_lru ON slots (last_released_at, id)
    WHERE live_lease_id IS NULL AND active = 1;

CREATE TABLE payments (
    token         TEXT    PRIMARY KEY,
    amount        INTEGER NOT NULL CHECK (amount > 0),
    currency      TEXT    NOT NULL,
    items         TEXT    NOT NULL DEFAULT '[]',
    customer      TEXT    NOT NULL DEFAULT '{}',
    status        TEXT    NOT NULL CHECK (status IN
                      ('pending', 'completed', 'failed', 'cancelled', 'expired', 'needs_review')),
    late          INTEGER NOT NULL DEFAULT 0,
    lease_id      INTEGER,
    callback_path TEXT,
    expires_at    INTEGER,
    pn_ref        TEXT,
    order_id      TEXT,
    auth_code     TEXT,
    card_type     TEXT,
    last4         TEXT,
    result_code   TEXT,
    error_message TEXT,
    callback_id   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX payments_status_created ON payments (status, created_at);

CREATE TABLE leases (
    -- AUTOINCREMENT: ids never repeat, even after the newest row is deleted (fencing tokens).
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    slot_id     INTEGER NOT NULL REFERENCES slots (id),
    path        TEXT    NOT NULL,
    token       TEXT    NOT NULL REFERENCES payments (token) DEFERRABLE INITIALLY DEFERRED,
    amount      INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT CHECK (end_reason IN ('callback', 'cancelled', 'expired', 'admin')),
    taint_until INTEGER,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL)),
    CHECK (taint_until IS NULL OR ended_at IS NOT NULL)
);
-- Invariant 1 as rules of the database: one live lease per slot, one per payment.
CREATE UNIQUE INDEX leases_one_live_per_slot ON leases (slot_id) WHERE ended_at IS NULL;
CREATE UNIQUE INDEX leases_one_live_per_payment ON leases (token) WHERE ended_at IS NULL;
CREATE INDEX leases_live_expiry ON leases (expires_at) WHERE ended_at IS NULL;
CREATE INDEX leases_taints ON leases (slot_id, taint_until) WHERE taint_until IS NOT NULL;
CREATE INDEX leases_taint_expiry ON leases (taint_until) WHERE taint_until IS NOT NULL;
CREATE INDEX leases_token ON leases (token);

CREATE TABLE callbacks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    path          TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    params        TEXT    NOT NULL,
    client_addr   TEXT,
    received_at   INTEGER NOT NULL,
    outcome       TEXT    NOT NULL CHECK (outcome IN
                      ('received', 'applied', 'duplicate', 'unmatched', 'ambiguous', 'rejected')),
    pn_ref        TEXT,
    amount        INTEGER,
    approved      INTEGER,
    payment_token TEXT,
    detail        TEXT,
    candidates    TEXT    NOT NULL DEFAULT '[]',
    redirect      TEXT,
    duplicate_of  INTEGER REFERENCES callbacks (id),
    settled_at    INTEGER,
    settled_by    TEXT
);
CREATE INDEX callbacks_outcome ON callbacks (outcome, id);
CREATE INDEX callbacks_open_ambiguity ON callbacks (path, amount)
    WHERE outcome = 'ambiguous' AND approved = 1 AND settled_at IS NULL;

-- The first verified return of each gateway transaction reference (invariant 5).
CREATE TABLE pn_refs (
    pn_ref      TEXT    PRIMARY KEY,
    callback_id INTEGER NOT NULL REFERENCES callbacks (id),
    fingerprint TEXT    NOT NULL
);
