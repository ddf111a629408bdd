-- Operations (issue 6): per-slot health, slots out of rotation, operators' review decisions.

-- Health figures of each slot's path, kept on the slot so the dashboard reads them at once.
ALTER TABLE slots ADD COLUMN approvals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN declines INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN silent_expiries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN expiry_streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE slots ADD COLUMN last_return_at INTEGER;
-- Out of rotation (slot health or an operator): never leased until an operator restores it.
-- The free-slot index still serves: its condition is implied by the pickers' queries.
ALTER TABLE slots ADD COLUMN sidelined_at INTEGER;
ALTER TABLE slots ADD COLUMN sidelined_by TEXT;
ALTER TABLE slots ADD COLUMN sidelined_reason TEXT;

-- The figures of the history already recorded.
UPDATE slots SET
    approvals = (SELECT count(*) FROM callbacks AS c
                  WHERE c.path = slots.path AND c.approved = 1
                    AND c.outcome IN ('applied', 'ambiguous', 'unmatched')),
    declines = (SELECT count(*) FROM callbacks AS c
                 WHERE c.path = slots.path AND c.approved = 0
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
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    decision      TEXT    NOT NULL CHECK (decision IN ('attributed', 'none', 'payment')),
    callback_id   INTEGER REFERENCES callbacks (id),
    payment_token TEXT    REFERENCES payments (token),
    others        TEXT    CHECK (others IN ('expired', 'failed', 'needs_review')),
    decided_by    TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    decided_at    INTEGER NOT NULL,
    -- [[token, from, to], ...]: every status change the decision made.
    changes       TEXT    NOT NULL DEFAULT '[]',
    CHECK ((decision = 'payment') = (callback_id IS NULL))
);
CREATE UNIQUE INDEX reviews_one_per_callback ON reviews (callback_id) WHERE callback_id IS NOT NULL;

-- The dashboard's charts read leases by when they ended.
CREATE INDEX IF NOT EXISTS leases_ended ON leases (ended_at) WHERE ended_at IS NOT NULL;

-- Requests for a slot turned away (the pool full), per minute: the dashboard's turn-away chart.
CREATE TABLE turn_aways (
    minute INTEGER PRIMARY KEY,  -- microseconds since the epoch of the minute's start
    count  INTEGER NOT NULL
);
