-- Capacity (issue 7): heartbeat release, the waiting room, reserve paths, admission counts.

-- Leases gain a heartbeat and the end reason 'abandoned'.
ALTER TABLE leases DROP CONSTRAINT leases_end_reason_check;
ALTER TABLE leases ADD CONSTRAINT leases_end_reason_check
    CHECK (end_reason IN ('callback', 'cancelled', 'expired', 'admin', 'abandoned'));
-- Set at the checkout page's first poll; the lease is abandoned when it passes.
ALTER TABLE leases ADD COLUMN heartbeat_until timestamptz;
CREATE INDEX leases_live_heartbeat ON leases (heartbeat_until)
    WHERE ended_at IS NULL AND heartbeat_until IS NOT NULL;

-- Reserve paths: slots like the others, out of rotation ('standby') until the load calls
-- for them (the free-slot index that knows them comes with 0004).
ALTER TABLE slots ADD COLUMN reserve boolean NOT NULL DEFAULT false;
ALTER TABLE slots ADD COLUMN standby boolean NOT NULL DEFAULT false;

CREATE TABLE reserve_events (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL,
    action text        NOT NULL CHECK (action IN ('activated', 'drained')),
    paths  json        NOT NULL,
    reason text        NOT NULL
);

-- The waiting room: served by priority (highest first), then arrival (id).
CREATE TABLE tickets (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket        text        NOT NULL UNIQUE,
    priority      integer     NOT NULL,
    amount        bigint      NOT NULL CHECK (amount > 0),
    currency      text        NOT NULL,
    items         json        NOT NULL DEFAULT '[]',
    customer      json        NOT NULL DEFAULT '{}',
    status        text        NOT NULL CHECK (status IN ('waiting', 'granted', 'expired', 'cancelled')),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    payment_token text        REFERENCES payments (token) DEFERRABLE INITIALLY DEFERRED,
    ended_at      timestamptz,
    CHECK ((status = 'granted') = (payment_token IS NOT NULL))
);
CREATE INDEX tickets_queue ON tickets (priority DESC, id) WHERE status = 'waiting';

-- Requests for a slot, per minute (since the epoch): how many were leased at once, waited,
-- were refused; how many waiting tickets were granted a slot; the most slots busy at once.
CREATE TABLE admissions (
    minute    bigint  PRIMARY KEY,
    leased    integer NOT NULL DEFAULT 0,
    waited    integer NOT NULL DEFAULT 0,
    refused   integer NOT NULL DEFAULT 0,
    granted   integer NOT NULL DEFAULT 0,
    peak_busy integer NOT NULL DEFAULT 0
);
