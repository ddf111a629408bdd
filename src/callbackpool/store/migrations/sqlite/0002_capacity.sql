-- Capacity (issue 7): heartbeat release, the waiting room, reserve paths, admission counts.

-- Leases gain a heartbeat and the end reason 'abandoned'. SQLite cannot change a CHECK in
-- place: the table is rebuilt, with its rows, its indexes and its id sequence.
CREATE TABLE leases_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    slot_id         INTEGER NOT NULL REFERENCES slots (id),
    path            TEXT    NOT NULL,
    token           TEXT    NOT NULL REFERENCES payments (token) DEFERRABLE INITIALLY DEFERRED,
    amount          INTEGER NOT NULL,
    acquired_at     INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    end_reason      TEXT CHECK (end_reason IN
                        ('callback', 'cancelled', 'expired', 'admin', 'abandoned')),
    taint_until     INTEGER,
    -- Set at the checkout page's first poll; the lease is abandoned when it passes.
    heartbeat_until INTEGER,
    CHECK ((ended_at IS NULL) = (end_reason IS NULL)),
    CHECK (taint_until IS NULL OR ended_at IS NOT NULL)
);
INSERT INTO leases_new (id, slot_id, path, token, amount, acquired_at, expires_at, ended_at,
                        end_reason, taint_until)
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
       taint_until
  FROM leases;
-- Lease ids are fencing tokens: the sequence carries on from where it was.
UPDATE sqlite_sequence SET seq = (SELECT seq FROM sqlite_sequence WHERE name = 'leases')
 WHERE name = 'leases_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'leases');
DROP TABLE leases;
ALTER TABLE leases_new RENAME TO leases;
CREATE UNIQUE INDEX leases_one_live_per_slot ON leases (slot_id) WHERE ended_at IS NULL;
CREATE UNIQUE INDEX leases_one_live_per_payment ON leases (token) WHERE ended_at IS NULL;
CREATE INDEX leases_live_expiry ON leases (expires_at) WHERE ended_at IS NULL;
CREATE INDEX leases_live_heartbeat ON leases (heartbeat_until)
    WHERE ended_at IS NULL AND heartbeat_until IS NOT NULL;
CREATE INDEX leases_taints ON leases (slot_id, taint_until) WHERE taint_until IS NOT NULL;
CREATE INDEX leases_taint_expiry ON leases (taint_until) WHERE taint_until IS NOT NULL;
CREATE INDEX leases_token ON leases (token);
CREATE INDEX leases_ended ON leases (ended_at) WHERE ended_at IS NOT NULL;

-- Reserve paths: slots like the others, out of rotation ('standby') until the load calls
-- for them. Main slots come before reserve ones, so that the reserve drains first.
ALTER TABLE slots ADD COLUMN reserve INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN standby INTEGER NOT NULL DEFAULT 0;
DROP INDEX slots_free_lru;
CREATE INDEX slots_free_lru ON slots (reserve, last_released_at, id)
    WHERE live_lease_id IS NULL AND active = 1 AND standby = 0;

CREATE TABLE reserve_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    action TEXT    NOT NULL CHECK (action IN ('activated', 'drained')),
    paths  TEXT    NOT NULL,
    reason TEXT    NOT NULL
);

-- The waiting room: served by priority (highest first), then arrival (id).
CREATE TABLE tickets (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket        TEXT    NOT NULL UNIQUE,
    priority      INTEGER NOT NULL,
    amount        INTEGER NOT NULL CHECK (amount > 0),
    currency      TEXT    NOT NULL,
    items         TEXT    NOT NULL DEFAULT '[]',
    customer      TEXT    NOT NULL DEFAULT '{}',
    status        TEXT    NOT NULL CHECK (status IN ('waiting', 'granted', 'expired', 'cancelled')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    payment_token TEXT REFERENCES payments (token) DEFERRABLE INITIALLY DEFERRED,
    ended_at      INTEGER,
    CHECK ((status = 'granted') = (payment_token IS NOT NULL))
);
CREATE INDEX tickets_queue ON tickets (priority DESC, id) WHERE status = 'waiting';

-- Requests for a slot, per minute: how many were leased at once, waited, were refused; how
-- many waiting tickets were granted a slot; the most slots busy at once after a lease.
CREATE TABLE admissions (
    minute    INTEGER PRIMARY KEY,
    leased    INTEGER NOT NULL DEFAULT 0,
    waited    INTEGER NOT NULL DEFAULT 0,
    refused   INTEGER NOT NULL DEFAULT 0,
    granted   INTEGER NOT NULL DEFAULT 0,
    peak_busy INTEGER NOT NULL DEFAULT 0
);
