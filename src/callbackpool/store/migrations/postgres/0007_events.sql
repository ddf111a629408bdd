-- The outbox: one event per announced status change of a payment, written in the change's
-- transaction. `seq` orders the feed; `sequence` counts a payment's events from 1;
-- `data` is the payment as the shop read it at that moment (a JSON snapshot). A delivery
-- step may add its own table (or columns) keyed by `seq` or `id`.
CREATE TABLE events (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         text        NOT NULL UNIQUE,
    type       text        NOT NULL,
    payment_id text        NOT NULL,
    sequence   integer     NOT NULL CHECK (sequence >= 1),
    reason     text        NOT NULL,
    data       json        NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (payment_id, sequence)
);
CREATE INDEX events_created ON events (created_at);
