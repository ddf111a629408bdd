-- Operations (issue 6): per-slot health, slots out of rotation, operators' review decisions.
-- The same as the SQLite migration of this name.

-- Health figures of each slot's path, kept on the slot so the dashboard reads them at once.
-- Out of rotation (slot health or an operator): never leased until an operator restores it.
ALTER TABLE slots
    ADD COLUMN approvals        bigint      NOT NULL DEFAULT 0,
    ADD COLUMN declines         bigint      NOT NULL DEFAULT 0,
    ADD COLUMN silent_expiries  bigint      NOT NULL DEFAULT 0,
    ADD COLUMN expiry_streak    bigint      NOT NULL DEFAULT 0,
    ADD COLUMN last_return_at   timestamptz,
    ADD COLUMN sidelined_at     timestamptz,
    ADD COLUMN sidelined_by     text,
    ADD COLUMN sidelined_reason text;

-- Acquisition walks only slots in rotation.
DROP INDEX slots_free_lru;
CREATE INDEX slots_free_lru ON slots (last_released_at NULLS FIRST, id)
    WHERE live_lease_id IS NULL AND active AND sidelined_at IS NULL;

-- The figures of the history already recorded.
UPDATE slots SET
    approvals = (SELECT count(*) FROM callbacks AS c
                  WHERE c.path = slots.path AND c.approved
                    AND c.outcome IN ('applied', 'ambiguous', 'unmatched')),
    declines = (SELECT count(*) FROM callbacks AS c
                 WHERE c.path = slots.path AND NOT c.approved
                   AND c.outcome IN ('applied', 'ambiguous', 'unmatched')),
    last_return_at = (SELECT max(c.received_at) FROM callbacks AS c
                       WHERE c.path = slots.path
                         AND c.outcome IN ('applied', 'ambiguous', 'unmatched')),
    silent_expiries = (SELECT count(*) FROM leases AS l JOIN payments AS p ON p.token = l.token
                        WHERE l.slot_id = slots.id AND l.end_reason = 'expired'
                          AND p.status NOT IN ('completed', 'failed'));

-- An operator's decision on a payment in review: the return attributed (or to none) and
-- what became of the other candidates, or a payment ended without a return.
CREATE TABLE reviews (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision      text        NOT NULL CHECK (decision IN ('attributed', 'none', 'payment')),
    callback_id   bigint      REFERENCES callbacks (id),
    payment_token text        REFERENCES payments (token),
    others        text        CHECK (others IN ('expired', 'failed', 'needs_review')),
    decided_by    text        NOT NULL,
    reason        text        NOT NULL,
    decided_at    timestamptz NOT NULL,
    -- [[token, from, to], ...]: every status change the decision made.
    changes       json        NOT NULL DEFAULT '[]',
    CHECK ((decision = 'payment') = (callback_id IS NULL))
);
CREATE UNIQUE INDEX reviews_one_per_callback ON reviews (callback_id)
    WHERE callback_id IS NOT NULL;

-- The dashboard's charts read leases by when they ended.
CREATE INDEX leases_ended ON leases (ended_at) WHERE ended_at IS NOT NULL;

-- Requests for a slot turned away (the pool full), per minute: the turn-away chart.
CREATE TABLE turn_aways (
    minute timestamptz PRIMARY KEY,  -- the minute's start
    count  bigint      NOT NULL
);
