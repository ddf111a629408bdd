-- Trust (issue 5). The same as the SQLite migration of this name.

-- The key of a return's success page (the redirect names the return, never a payment token).
-- Returns stored before this migration get a random one.
ALTER TABLE callbacks ADD COLUMN receipt text;
UPDATE callbacks SET receipt = replace(gen_random_uuid()::text, '-', '') WHERE receipt IS NULL;

-- Whom a payment counts against for the cap on live leases per customer (the e-mail address,
-- trimmed and lower-cased).
ALTER TABLE payments ADD COLUMN customer_key text;
UPDATE payments SET customer_key = lower(btrim(customer ->> 'email'))
 WHERE json_typeof(customer -> 'email') = 'string' AND btrim(customer ->> 'email') <> '';
CREATE INDEX payments_customer_key ON payments (customer_key) WHERE customer_key IS NOT NULL;

-- The gateway's status query (where one is configured): how often it was asked about a
-- return, and what it answered. The sweeper asks again about the few still open.
ALTER TABLE callbacks
    ADD COLUMN query_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN query_answer   text;
CREATE INDEX callbacks_to_query ON callbacks (id)
    WHERE outcome IN ('ambiguous', 'unmatched') AND settled_at IS NULL;

-- A place in the waiting room counts against its customer's cap as a lease does.
ALTER TABLE tickets ADD COLUMN customer_key text;
UPDATE tickets SET customer_key = lower(btrim(customer ->> 'email'))
 WHERE status = 'waiting' AND json_typeof(customer -> 'email') = 'string'
   AND btrim(customer ->> 'email') <> '';
CREATE INDEX tickets_customer_key ON tickets (customer_key)
    WHERE customer_key IS NOT NULL AND status = 'waiting';
