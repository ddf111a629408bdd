-- The outbox: one event per announced status change of a payment, written in the change's
-- transaction. `seq` orders the feed; `sequence` counts a payment's events from 1;
-- `data` is the payment as the shop read it at that moment (a JSON snapshot). A delivery
-- step may add its own table (or columns) keyed by `seq` or `id`.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    type       TEXT    NOT NULL,
    payment_id TEXT    NOT NULL,
    sequence   INTEGER NOT NULL CHECK (sequence >= 1),
    reason     TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (payment_id, sequence)
);
CREATE INDEX events_created ON events (created_at);
