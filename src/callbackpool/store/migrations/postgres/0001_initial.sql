-- The callback pool on PostgreSQL: the same tables and rules as the SQLite schema, with
-- timestamptz times, boolean flags and identity keys.

CREATE TABLE slots (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path             text        NOT NULL UNIQUE,
    active           boolean     NOT NULL DEFAULT true,
    -- The live lease and its expiry, kept on the slot so that free slots and due leases have
    -- an index, and so that the slot row is the one lock every change to its leases takes.
    live_lease_id    bigint,
    lease_expires_at timestamptz,
    -- The latest expiry of the slot's taints: the slot is clean once it has passed.
    tainted_until    timestamptz,
    usage_count      bigint      NOT NULL DEFAULT 0,
    last_acquired_at timestamptz,
    last_released_at timestamptz,
    created_at       timestamptz NOT NULL,
    CHECK ((live_lease_id IS NULL) = (lease_expires_at IS NULL))
);
-- Acquisition walks this index in least-recently-released order (never released first).
CREATE INDEX slots_free_lru ON slots (last_released_at NULLS FIRST, id)
    WHERE live_lease_id IS NULL AND active;
-- Expiry finds the slots whose live lease is due without reading the lease history.
CREATE INDEX slots_lease_expiry ON slots (lease_expires_at)
    WHERE live_lease_id IS NOT NULL;

CREATE TABLE payments (
    -- Insertion order, to order payments created at the same instant as SQLite does.
    seq           bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    token         text        PRIMARY KEY,
    amount        bigint      NOT NULL CHECK (amount > 0),
    currency      text        NOT NULL,
    -- json, not jsonb: kept as written (key order, and \u0000 which jsonb refuses).
    items         json        NOT NULL DEFAULT '[]',
    customer      json        NOT NULL DEFAULT '{}',
    status        text        NOT NULL CHECK (status IN
                      ('pending', 'completed', 'failed', 'cancelled', 'expired', 'needs_review')),
    late          boolean     NOT NULL DEFAULT false,
    lease_id      bigint,
    callback_path text,
    expires_at    timestamptz,
    pn_ref        text,
    order_id      text,
    auth_code     text,
    card_type     text,
    last4         text,
    result_code   text,
    error_message text,
    callback_id   bigint,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX payments_status_created ON payments (status, created_at, seq);
CREATE INDEX payments_created ON payments (created_at, seq);

CREATE TABLE leases (
    -- A sequence never hands out a number twice, rolled back or not: lease ids strictly
    -- increase (fencing tokens). On one slot they also commit in that order, because the
    -- id is drawn while the slot row is locked.
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_id     bigint      NOT NULL REFERENCES slots (id),
    path        text        NOT NULL,
    -- Deferred: the lease is written before its payment, in the same transaction.
    token       text        NOT NULL REFERENCES payments (token) DEFERRABLE INITIALLY DEFERRED,
    amount      bigint      NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    end_reason  text CHECK (end_reason IN ('callback', 'cancelled', 'expired', 'admin')),
    taint_until timestamptz,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL)),
    CHECK (taint_until IS NULL OR ended_at IS NOT NULL)
);
-- Invariant 1 as rules of the database: one live lease per slot, one per payment.
CREATE UNIQUE INDEX leases_one_live_per_slot ON leases (slot_id) WHERE ended_at IS NULL;
CREATE UNIQUE INDEX leases_one_live_per_payment ON leases (token) WHERE ended_at IS NULL;
CREATE INDEX leases_live_expiry ON leases (expires_at) WHERE ended_at IS NULL;
-- A slot's taints, by amount: acquisition asks "has this slot a taint of this amount?".
CREATE INDEX leases_taints ON leases (slot_id, amount, taint_until) WHERE taint_until IS NOT NULL;
CREATE INDEX leases_taint_expiry ON leases (taint_until) WHERE taint_until IS NOT NULL;
CREATE INDEX leases_token ON leases (token);

CREATE TABLE callbacks (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    path          text        NOT NULL,
    method        text        NOT NULL,
    -- Every parameter exactly as received, as a JSON list of [name, value] pairs.
    params        json        NOT NULL,
    client_addr   text,
    received_at   timestamptz NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN
                      ('received', 'applied', 'duplicate', 'unmatched', 'ambiguous', 'rejected')),
    pn_ref        text,
    amount        bigint,
    approved      boolean,
    payment_token text,
    detail        text,
    candidates    json        NOT NULL DEFAULT '[]',
    redirect      text,
    duplicate_of  bigint      REFERENCES callbacks (id),
    settled_at    timestamptz,
    settled_by    text
);
CREATE INDEX callbacks_outcome ON callbacks (outcome, id);
CREATE INDEX callbacks_unresolved ON callbacks (received_at) WHERE outcome = 'received';
CREATE INDEX callbacks_open_ambiguity ON callbacks (path, amount)
    WHERE outcome = 'ambiguous' AND approved AND settled_at IS NULL;

-- The first verified return of each gateway transaction reference (invariant 5).
CREATE TABLE pn_refs (
    pn_ref      text   PRIMARY KEY,
    callback_id bigint NOT NULL REFERENCES callbacks (id),
    fingerprint text   NOT NULL
);
