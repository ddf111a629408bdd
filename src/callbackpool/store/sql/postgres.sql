-- PostgreSQL's own statements, and its versions of shared queries (queries.sql): the
-- locks. Several app instances write at once here, so the queries named lock_... lock what
-- the transaction is about to change, in the order store/tx.py gives, and the statements
-- that touch many slots (expiry, acquisition, stale taints) skip rows another transaction
-- holds instead of waiting for them. Parameters are named (:name), as in queries.sql.

-- name: session_settings
-- Set on every new connection. Times come back in UTC; a statement or a lock wait past
-- the store's timeout fails rather than hangs.
SELECT set_config('TimeZone', 'UTC', false),
       set_config('statement_timeout', :statement_timeout, false),
       set_config('lock_timeout', :lock_timeout, false),
       set_config('idle_in_transaction_session_timeout', :idle_timeout, false);

-- name: begin_write
-- One round trip: the transaction and its clock. now() is the transaction's start and the
-- same for every statement in it.
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT now();

-- name: begin_read
-- A consistent view: every statement of the transaction sees the same snapshot.
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT now();

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: migration_timeouts
-- A migration may take longer than a request, and so may waiting for another instance's:
-- five minutes for this transaction instead of the session's request timeout.
SELECT set_config('statement_timeout', '300000', true),
       set_config('lock_timeout', '300000', true);

-- name: migration_lock
-- One migrator at a time (instances starting together); released at commit.
SELECT pg_advisory_xact_lock(7248517301246590651);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_table_exists
SELECT to_regclass('schema_migrations') IS NOT NULL AS present;

-- name: applied_migrations
SELECT name FROM schema_migrations ORDER BY name;

-- name: record_migration
INSERT INTO schema_migrations (name) VALUES (:name);

-- --- locks -------------------------------------------------------------------------------

-- name: lock_customer
-- Transactions counting one customer's leases take turns until they end (the count and the
-- lease it allows are one step): a lock on a hash of the customer, not a row.
SELECT pg_advisory_xact_lock(hashtextextended('callbackpool customer ' || :customer_key, 0));

-- name: lock_admission
-- Admissions that weigh the waiting room take turns (released at commit): the free slots
-- they count are not given away under them by another instance.
SELECT pg_advisory_xact_lock(7248517301246590652);

-- name: lock_payment
-- Two presses of Pay on one payment take turns: the second sees the first's attempt.
SELECT token FROM payments WHERE token = :token FOR UPDATE;

-- name: lock_idempotency_key
-- Two requests with one Idempotency-Key take turns: the second finds the first's payment.
SELECT pg_advisory_xact_lock(hashtextextended('callbackpool idempotency ' || :key, 0));

-- name: slot_by_path_locked
-- Callbacks on one slot take turns: each decides on what the previous one committed.
SELECT id, path, active FROM slots WHERE path = :path FOR NO KEY UPDATE;

-- name: lock_slot
SELECT id, live_lease_id FROM slots WHERE id = :slot_id FOR NO KEY UPDATE;

-- name: lock_slot_of_lease
-- The slot row first, then the lease.
SELECT s.id FROM slots AS s
 WHERE s.id = (SELECT l.slot_id FROM leases AS l WHERE l.id = :id)
   FOR NO KEY UPDATE;

-- name: lock_live_slots
-- Before a transaction acts on every live lease (the operator's release of all): it takes
-- their slots at once, in one order (ORDER BY comes before the locks), so that two such
-- transactions wait for each other instead of each holding what the other needs.
SELECT id FROM slots WHERE live_lease_id IS NOT NULL ORDER BY id FOR NO KEY UPDATE;

-- name: lock_candidates
-- The payments a return on the slot could belong to (see candidates): the caller holds the
-- slot and is about to move them.
SELECT p.token FROM leases AS l JOIN payments AS p ON p.token = l.token
 WHERE l.slot_id = :slot_id AND (l.ended_at IS NULL OR l.taint_until > :now)
 ORDER BY p.token
   FOR NO KEY UPDATE OF p;

-- name: lock_callback
-- Whoever resolves a callback holds it: a second resolver (the sweeper) waits, then sees
-- it resolved.
SELECT id FROM callbacks WHERE id = :id FOR NO KEY UPDATE;

-- name: pick_slot
-- The best free slot, as in sqlite.sql, each slot locked as it is picked. Each tier stops
-- at the first slot nobody else holds; UNION ALL under LIMIT 1 runs a tier only when the
-- tiers before it found nothing, so at most one slot row is ever locked. (A locking SELECT cannot be a
-- branch of a UNION itself, hence each tier in a subquery.)
SELECT id AS slot_id, path FROM (
    SELECT s.id, s.path FROM slots AS s
     WHERE s.live_lease_id IS NULL AND s.active AND s.sidelined_at IS NULL AND NOT s.standby
       AND (s.last_released_at IS NULL OR s.last_released_at <= :now)
       AND (s.tainted_until IS NULL OR s.tainted_until <= :now)
     ORDER BY s.reserve, s.last_released_at NULLS FIRST, s.id
     LIMIT 1
       FOR NO KEY UPDATE SKIP LOCKED) AS clean
UNION ALL
SELECT id, path FROM (
    SELECT s.id, s.path FROM slots AS s
     WHERE s.live_lease_id IS NULL AND s.active AND s.sidelined_at IS NULL AND NOT s.standby
       AND (s.last_released_at IS NULL OR s.last_released_at <= :now)
       AND NOT EXISTS (SELECT 1 FROM leases AS t
                        WHERE t.slot_id = s.id AND t.amount = :amount
                          AND t.taint_until > :now)
     ORDER BY s.reserve, s.last_released_at NULLS FIRST, s.id
     LIMIT 1
       FOR NO KEY UPDATE SKIP LOCKED) AS tainted_by_other_amounts
UNION ALL
SELECT id, path FROM (
    SELECT s.id, s.path FROM slots AS s
     WHERE s.live_lease_id IS NULL AND s.active AND s.sidelined_at IS NULL AND NOT s.standby
       AND :allow_same_amount_tainted
       AND (s.last_released_at IS NULL OR s.last_released_at <= :now)
     ORDER BY s.reserve, s.last_released_at NULLS FIRST, s.id
     LIMIT 1
       FOR NO KEY UPDATE SKIP LOCKED) AS tainted_by_this_amount
LIMIT 1;

-- name: due_slots
-- Skipping the slots another transaction holds: that one is expiring the lease, or acting
-- on the slot, and will free it. Concurrent sweepers never wait for each other.
SELECT id, live_lease_id FROM slots
 WHERE live_lease_id IS NOT NULL AND lease_expires_at <= :now
 ORDER BY id
   FOR NO KEY UPDATE SKIP LOCKED;

-- name: silent_slots
SELECT s.id, s.live_lease_id
  FROM leases AS l JOIN slots AS s ON s.live_lease_id = l.id
 WHERE l.ended_at IS NULL AND l.heartbeat_until <= :now AND l.heartbeat_until < l.expires_at
 ORDER BY s.id
   FOR NO KEY UPDATE OF s SKIP LOCKED;

-- name: drop_stale_taints
-- A taint another transaction holds is left for the next sweep: it is past its window
-- already, so nothing counts it meanwhile.
WITH stale AS (
    SELECT id FROM leases
     WHERE taint_until IS NOT NULL AND taint_until <= :now
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE leases AS l SET taint_until = NULL
  FROM stale
 WHERE l.id = stale.id;

-- name: holding_times_since
SELECT count(*) AS ended,
       coalesce(sum(extract(epoch FROM ended_at - acquired_at)), 0)::float8 AS held_seconds
  FROM leases
 WHERE ended_at IS NOT NULL AND ended_at >= :since;
