-- Trust (issue 5). Times are integer microseconds since the Unix epoch (UTC).

-- The key of a return's success page (the redirect names the return, never a payment token).
-- Returns stored before this migration get one of SQLite's random keys.
ALTER TABLE callbacks ADD COLUMN receipt TEXT;
UPDATE callbacks SET receipt = lower(hex(randomblob(16))) WHERE receipt IS NULL;

-- Whom a payment counts against for the cap on live leases per customer (the e-mail address,
-- trimmed and lower-cased). SQLite's lower() folds ASCII letters only: a payment made before
-- this migration by an address with other capitals may escape the cap until its lease ends.
ALTER TABLE payments ADD COLUMN customer_key TEXT;
UPDATE payments SET customer_key = lower(trim(json_extract(customer, '$.email')))
 WHERE json_type(customer, '$.email') = 'text'
   AND trim(json_extract(customer, '$.email')) <> '';
CREATE INDEX payments_customer_key ON payments (customer_key) WHERE customer_key IS NOT NULL;

-- The gateway's status query (where one is configured): how often it was asked about a
-- return, and what it answered. The sweeper asks again about the few still open.
ALTER TABLE callbacks ADD COLUMN query_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE callbacks ADD COLUMN query_answer TEXT;
CREATE INDEX callbacks_to_query ON callbacks (id)
    WHERE outcome IN ('ambiguous', 'unmatched') AND settled_at IS NULL;

-- A place in the waiting room counts against its customer's cap as a lease does.
ALTER TABLE tickets ADD COLUMN customer_key TEXT;
UPDATE tickets SET customer_key = lower(trim(json_extract(customer, '$.email')))
 WHERE status = 'waiting' AND json_type(customer, '$.email') = 'text'
   AND trim(json_extract(customer, '$.email')) <> '';
CREATE INDEX tickets_customer_key ON tickets (customer_key)
    WHERE customer_key IS NOT NULL AND status = 'waiting';
