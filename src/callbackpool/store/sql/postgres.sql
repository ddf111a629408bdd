-- Queries of the PostgreSQL store, one named section each. Parameters are named
-- (%(name)s) and bound by the driver, never formatted in. %(now)s is the transaction's one
-- clock (the database's now(), or the injected clock in tests): every expiry test uses it.
--
-- A table's columns are named, never *: an instance still running while another one's
-- migration adds a column keeps working (its prepared statements keep their result types).
--
-- Lock order, so that transactions wait on each other without deadlocking: a callback row,
-- then slot rows, then lease rows, then payment rows. Every change to a slot's leases first
-- locks the slot row; statements that touch many slots (expiry, acquisition, stale taints)
-- skip rows another transaction holds instead of waiting for them.

-- name: session_settings
-- Set on every new connection. Times come back in UTC; a statement or a lock wait past
-- the store's timeout fails rather than hangs.
SELECT set_config('TimeZone', 'UTC', false),
       set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('idle_in_transaction_session_timeout', %(idle_timeout)s, false);

-- name: begin_write
-- One round trip: the transaction and its clock. now() is the transaction's start and the
-- same for every statement in it.
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT now();

-- name: begin_write_not_durable
-- The same, committed without waiting for the WAL flush (synchronous_commit off, for this
-- transaction only): a server crash may lose it, unless a later durable commit flushed the
-- WAL past it, as the next durable commit of any session does.
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT now();
SELECT set_config('synchronous_commit', 'off', true);

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
INSERT INTO schema_migrations (name) VALUES (%(name)s);

-- name: reserve_in_rotation
SELECT EXISTS (SELECT 1 FROM slots WHERE active AND reserve AND NOT standby) AS in_rotation;

-- name: insert_slots
-- A new reserve path joins the reserve in the state it is in.
INSERT INTO slots (path, active, reserve, standby, created_at)
SELECT path, true, reserve, reserve AND NOT %(in_rotation)s, %(now)s
  FROM unnest(%(paths)s::text[], %(reserves)s::boolean[]) AS wanted (path, reserve)
ON CONFLICT (path) DO NOTHING
RETURNING path;

-- name: set_slot_kinds
-- A path moved between callbackPaths and reservePaths; a main path is never on standby.
UPDATE slots AS s
   SET reserve = wanted.reserve, standby = wanted.reserve AND NOT %(in_rotation)s
  FROM unnest(%(paths)s::text[], %(reserves)s::boolean[]) AS wanted (path, reserve)
 WHERE s.path = wanted.path AND s.reserve <> wanted.reserve;

-- name: reactivate_slots
UPDATE slots SET active = true
 WHERE path = ANY (%(paths)s::text[]) AND NOT active
RETURNING path;

-- name: deactivate_slots
UPDATE slots SET active = false
 WHERE active AND NOT path = ANY (%(paths)s::text[])
RETURNING id, path;

-- name: slot_by_path
SELECT id, path, active FROM slots WHERE path = %(path)s;

-- name: slot_by_path_locked
-- Callbacks on one slot take turns: each decides on what the previous one committed.
SELECT id, path, active FROM slots WHERE path = %(path)s
   FOR NO KEY UPDATE;

-- name: expire_due_leases
-- Slots whose live lease is due, skipping those another transaction holds (that one is
-- expiring it, or acting on the slot, and will free it): concurrent sweepers never end the
-- same lease twice, and never wait for each other.
WITH due AS (
    SELECT s.id, s.live_lease_id
      FROM slots AS s
     WHERE s.live_lease_id IS NOT NULL AND s.lease_expires_at <= %(now)s
       FOR NO KEY UPDATE SKIP LOCKED
), ended AS (
    UPDATE leases AS l
       SET ended_at = l.expires_at, end_reason = 'expired',
           taint_until = l.expires_at + %(window)s
      FROM due
     WHERE l.id = due.live_lease_id AND l.ended_at IS NULL
    RETURNING l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at,
              l.ended_at, l.end_reason, l.taint_until, l.heartbeat_until
), freed AS (
    UPDATE slots AS s
       SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = ended.ended_at,
           tainted_until = greatest(s.tainted_until, ended.taint_until)
      FROM ended
     WHERE s.id = ended.slot_id AND s.live_lease_id = ended.id
)
SELECT * FROM ended ORDER BY id;

-- name: expire_due_lease_on_slot
-- The caller is about to act on this slot's lease and payment (a cancel, a release, a look
-- at a payment past its expiry): it waits for its turn on the slot, so that what it reads
-- next is what a callback or a sweeper holding the slot committed. Then the slot's live
-- lease is ended if it is due.
WITH slot AS (
    SELECT s.id, s.live_lease_id, s.lease_expires_at
      FROM slots AS s
     WHERE s.id = %(slot_id)s
       FOR NO KEY UPDATE
), ended AS (
    UPDATE leases AS l
       SET ended_at = l.expires_at, end_reason = 'expired',
           taint_until = l.expires_at + %(window)s
      FROM slot
     WHERE l.id = slot.live_lease_id AND slot.lease_expires_at <= %(now)s
       AND l.ended_at IS NULL
    RETURNING l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at,
              l.ended_at, l.end_reason, l.taint_until, l.heartbeat_until
), freed AS (
    UPDATE slots AS s
       SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = ended.ended_at,
           tainted_until = greatest(s.tainted_until, ended.taint_until)
      FROM ended
     WHERE s.id = ended.slot_id AND s.live_lease_id = ended.id
)
SELECT * FROM ended;

-- name: acquire_slot
-- One statement: pick and lock the best free slot (DESIGN.md §4), lease it, occupy it.
-- Each tier walks slots_free_lru in least-recently-released order and stops at the first
-- slot nobody else holds. UNION ALL under LIMIT 1 runs a tier only when the tiers before it
-- found nothing, so at most one slot row is ever locked. (A locking SELECT cannot be a
-- branch of a UNION itself, hence each tier in a subquery.)
-- A slot freed at a time later than this transaction's clock (by a transaction that began
-- after this one but committed first) is not free yet by this clock: taking it would start
-- the new lease before the old one ended. So lease histories never overlap in time.
WITH picked AS (
    SELECT id, path FROM (
        SELECT s.id, s.path
          FROM slots AS s
         WHERE s.live_lease_id IS NULL AND s.active AND s.sidelined_at IS NULL AND NOT s.standby
           AND (s.last_released_at IS NULL OR s.last_released_at <= %(now)s)
           AND (s.tainted_until IS NULL OR s.tainted_until <= %(now)s)
         ORDER BY s.reserve, s.last_released_at NULLS FIRST, s.id
         LIMIT 1
           FOR NO KEY UPDATE SKIP LOCKED
    ) AS clean
    UNION ALL
    SELECT id, path FROM (
        SELECT s.id, s.path
          FROM slots AS s
         WHERE s.live_lease_id IS NULL AND s.active AND s.sidelined_at IS NULL AND NOT s.standby
           AND (s.last_released_at IS NULL OR s.last_released_at <= %(now)s)
           AND NOT EXISTS (SELECT 1 FROM leases AS t
                            WHERE t.slot_id = s.id AND t.amount = %(amount)s
                              AND t.taint_until > %(now)s)
         ORDER BY s.reserve, s.last_released_at NULLS FIRST, s.id
         LIMIT 1
           FOR NO KEY UPDATE SKIP LOCKED
    ) AS tainted_by_other_amounts
    UNION ALL
    SELECT id, path FROM (
        SELECT s.id, s.path
          FROM slots AS s
         WHERE s.live_lease_id IS NULL AND s.active AND s.sidelined_at IS NULL AND NOT s.standby
           AND %(allow_same_amount_tainted)s
           AND (s.last_released_at IS NULL OR s.last_released_at <= %(now)s)
         ORDER BY s.reserve, s.last_released_at NULLS FIRST, s.id
         LIMIT 1
           FOR NO KEY UPDATE SKIP LOCKED
    ) AS tainted_by_this_amount
    LIMIT 1
), lease AS (
    INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at)
    SELECT picked.id, picked.path, %(token)s, %(amount)s, %(now)s, %(expires_at)s
      FROM picked
    RETURNING id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
              taint_until, heartbeat_until
), occupied AS (
    UPDATE slots AS s
       SET live_lease_id = lease.id, lease_expires_at = lease.expires_at,
           usage_count = s.usage_count + 1, last_acquired_at = lease.acquired_at
      FROM lease
     WHERE s.id = lease.slot_id
)
SELECT * FROM lease;

-- name: end_lease
-- The slot row first (see the lock order above), then the lease, then the slot is freed.
WITH slot AS (
    SELECT s.id
      FROM slots AS s
     WHERE s.id = (SELECT l.slot_id FROM leases AS l WHERE l.id = %(id)s)
       FOR NO KEY UPDATE
), ended AS (
    UPDATE leases AS l
       SET ended_at = %(now)s, end_reason = %(reason)s, taint_until = %(taint_until)s
      FROM slot
     WHERE l.id = %(id)s AND l.slot_id = slot.id AND l.ended_at IS NULL
    RETURNING l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at,
              l.ended_at, l.end_reason, l.taint_until, l.heartbeat_until
), freed AS (
    UPDATE slots AS s
       SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = ended.ended_at,
           tainted_until = greatest(s.tainted_until, ended.taint_until)
      FROM ended
     WHERE s.id = ended.slot_id AND s.live_lease_id = ended.id
)
SELECT * FROM ended;

-- name: drop_taint
-- The slot row first, then the lease; the slot's taint horizon becomes the latest of the
-- taints left (the statement's snapshot still shows the dropped one: leave it out by id).
WITH slot AS (
    SELECT s.id
      FROM slots AS s
     WHERE s.id = (SELECT l.slot_id FROM leases AS l WHERE l.id = %(id)s)
       FOR NO KEY UPDATE
), dropped AS (
    UPDATE leases AS l SET taint_until = NULL
      FROM slot
     WHERE l.id = %(id)s AND l.slot_id = slot.id AND l.taint_until IS NOT NULL
    RETURNING l.slot_id
)
UPDATE slots AS s
   SET tainted_until = (SELECT max(t.taint_until) FROM leases AS t
                         WHERE t.slot_id = s.id AND t.taint_until IS NOT NULL
                           AND t.id <> %(id)s)
  FROM dropped
 WHERE s.id = dropped.slot_id;

-- name: drop_stale_taints
-- A taint another transaction holds is left for the next sweep: it is past its window
-- already, so nothing counts it meanwhile.
WITH stale AS (
    SELECT id FROM leases
     WHERE taint_until IS NOT NULL AND taint_until <= %(now)s
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE leases AS l SET taint_until = NULL
  FROM stale
 WHERE l.id = stale.id;

-- name: earliest_lease_end
SELECT min(expires_at) AS earliest FROM leases WHERE ended_at IS NULL;

-- name: lock_customer
-- Transactions counting one customer's leases take turns until they end (the count and the
-- lease it allows are one step): a lock on a hash of the customer, not a row.
SELECT pg_advisory_xact_lock(hashtextextended('callbackpool customer ' || %(customer_key)s, 0));

-- name: customer_claims
SELECT l.expires_at FROM payments AS p JOIN leases AS l ON l.token = p.token
 WHERE p.customer_key = %(customer_key)s AND l.ended_at IS NULL AND l.expires_at > %(now)s
UNION ALL
SELECT expires_at FROM tickets
 WHERE customer_key = %(customer_key)s AND status = 'waiting' AND expires_at > %(now)s;

-- name: live_lease_of_payment
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason, taint_until,
       heartbeat_until
  FROM leases WHERE token = %(token)s AND ended_at IS NULL;

-- name: live_lease_on_path
SELECT l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at, l.ended_at,
       l.end_reason, l.taint_until, l.heartbeat_until
  FROM slots AS s JOIN leases AS l ON l.id = s.live_lease_id
 WHERE s.path = %(path)s;

-- name: live_leases_locked
-- Before a transaction acts on every live lease (the operator's release of all): it takes
-- their slots at once, in one order (ORDER BY comes before the locks), so that two such
-- transactions wait for each other instead of each holding what the other needs. Only the
-- leases on slots it now holds are returned.
WITH held AS (
    SELECT s.id, s.live_lease_id
      FROM slots AS s
     WHERE s.live_lease_id IS NOT NULL
     ORDER BY s.id
       FOR NO KEY UPDATE
)
SELECT l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at, l.ended_at,
       l.end_reason, l.taint_until, l.heartbeat_until
  FROM held JOIN leases AS l ON l.id = held.live_lease_id
 ORDER BY l.id;

-- name: live_leases
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason, taint_until,
       heartbeat_until
  FROM leases WHERE ended_at IS NULL ORDER BY id;

-- name: candidates
SELECT l.id AS l_id, l.slot_id AS l_slot_id, l.path AS l_path, l.token AS l_token,
       l.amount AS l_amount, l.acquired_at AS l_acquired_at, l.expires_at AS l_expires_at,
       l.ended_at AS l_ended_at, l.end_reason AS l_end_reason, l.taint_until AS l_taint_until,
       l.heartbeat_until AS l_heartbeat_until,
       p.token, p.amount, p.currency, p.items, p.customer, p.status, p.late, p.lease_id,
       p.callback_path, p.expires_at, p.pn_ref, p.order_id, p.auth_code, p.card_type, p.last4,
       p.result_code, p.error_message, p.callback_id, p.created_at, p.updated_at
  FROM leases AS l JOIN payments AS p ON p.token = l.token
 WHERE l.slot_id = %(slot_id)s AND (l.ended_at IS NULL OR l.taint_until > %(now)s)
 ORDER BY l.id;

-- name: candidates_locked
-- The candidates' payments are locked: the caller holds the slot and is about to move them.
SELECT l.id AS l_id, l.slot_id AS l_slot_id, l.path AS l_path, l.token AS l_token,
       l.amount AS l_amount, l.acquired_at AS l_acquired_at, l.expires_at AS l_expires_at,
       l.ended_at AS l_ended_at, l.end_reason AS l_end_reason, l.taint_until AS l_taint_until,
       l.heartbeat_until AS l_heartbeat_until,
       p.token, p.amount, p.currency, p.items, p.customer, p.status, p.late, p.lease_id,
       p.callback_path, p.expires_at, p.pn_ref, p.order_id, p.auth_code, p.card_type, p.last4,
       p.result_code, p.error_message, p.callback_id, p.created_at, p.updated_at
  FROM leases AS l JOIN payments AS p ON p.token = l.token
 WHERE l.slot_id = %(slot_id)s AND (l.ended_at IS NULL OR l.taint_until > %(now)s)
 ORDER BY l.id
   FOR NO KEY UPDATE OF p;

-- name: slot_views
SELECT s.id, s.path, s.active, s.reserve, s.standby, s.usage_count, s.last_acquired_at,
       s.last_released_at,
       s.sidelined_at, s.sidelined_by, s.sidelined_reason, s.approvals, s.declines,
       s.silent_expiries, s.expiry_streak, s.last_return_at,
       (SELECT count(*) FROM leases AS t
         WHERE t.slot_id = s.id AND t.taint_until > %(now)s) AS taints,
       l.id AS l_id, l.slot_id AS l_slot_id, l.path AS l_path, l.token AS l_token,
       l.amount AS l_amount, l.acquired_at AS l_acquired_at, l.expires_at AS l_expires_at,
       l.ended_at AS l_ended_at, l.end_reason AS l_end_reason, l.taint_until AS l_taint_until,
       l.heartbeat_until AS l_heartbeat_until
  FROM slots AS s LEFT JOIN leases AS l ON l.id = s.live_lease_id
 ORDER BY s.id;

-- name: usage
SELECT s.path, s.active, s.usage_count, s.last_acquired_at, s.last_released_at,
       (SELECT count(*) FROM leases AS l
         WHERE l.slot_id = s.id AND l.end_reason = 'callback') AS callbacks,
       (SELECT count(*) FROM leases AS l
         WHERE l.slot_id = s.id AND l.end_reason = 'expired') AS expiries
  FROM slots AS s
 ORDER BY s.id;

-- name: insert_payment
INSERT INTO payments (token, amount, currency, items, customer, customer_key, status, late,
                      lease_id, callback_path, expires_at, created_at, updated_at)
VALUES (%(token)s, %(amount)s, %(currency)s, %(items)s, %(customer)s, %(customer_key)s,
        %(status)s, %(late)s, %(lease_id)s, %(callback_path)s, %(expires_at)s, %(created_at)s,
        %(created_at)s);

-- name: get_payment
SELECT token, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, created_at, updated_at
  FROM payments WHERE token = %(token)s;

-- name: update_payment
-- Conditional on the status the caller saw: a repeated or raced transition writes nothing.
UPDATE payments
   SET status = %(status)s,
       late = coalesce(%(late)s, late),
       pn_ref = coalesce(%(pn_ref)s, pn_ref),
       order_id = coalesce(%(order_id)s, order_id),
       auth_code = coalesce(%(auth_code)s, auth_code),
       card_type = coalesce(%(card_type)s, card_type),
       last4 = coalesce(%(last4)s, last4),
       result_code = coalesce(%(result_code)s, result_code),
       error_message = coalesce(%(error_message)s, error_message),
       callback_id = coalesce(%(callback_id)s, callback_id),
       updated_at = %(now)s
 WHERE token = %(token)s AND status = %(expected)s;

-- name: payments
SELECT token, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, created_at, updated_at
  FROM payments
 WHERE (%(statuses)s::text[] IS NULL OR status = ANY (%(statuses)s::text[]))
   AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
 ORDER BY created_at, seq
 LIMIT %(limit)s;

-- name: insert_callback
INSERT INTO callbacks (path, method, params, client_addr, receipt, received_at, outcome)
VALUES (%(path)s, %(method)s, %(params)s, %(client_addr)s, %(receipt)s, %(now)s, 'received')
RETURNING id;

-- name: get_callback
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks WHERE id = %(id)s;

-- name: get_callback_locked
-- Whoever resolves a callback holds it: a second resolver (the sweeper) waits, then sees
-- it resolved.
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks WHERE id = %(id)s
   FOR NO KEY UPDATE;

-- name: pn_ref_holder
SELECT callback_id, fingerprint FROM pn_refs WHERE pn_ref = %(pn_ref)s;

-- name: claim_pn_ref
-- A concurrent claim of the same reference waits here for the first to commit, then
-- inserts nothing; the caller then reads the holder.
INSERT INTO pn_refs (pn_ref, callback_id, fingerprint)
VALUES (%(pn_ref)s, %(callback_id)s, %(fingerprint)s)
ON CONFLICT (pn_ref) DO NOTHING;

-- name: finish_callback
UPDATE callbacks
   SET outcome = %(outcome)s, redirect = %(redirect)s, pn_ref = %(pn_ref)s,
       amount = %(amount)s, approved = %(approved)s, payment_token = %(payment_token)s,
       detail = %(detail)s, candidates = %(candidates)s, duplicate_of = %(duplicate_of)s
 WHERE id = %(id)s;

-- name: open_ambiguities
SELECT id, candidates FROM callbacks
 WHERE path = %(path)s AND amount = %(amount)s
   AND outcome = 'ambiguous' AND approved AND settled_at IS NULL
   AND received_at > %(received_after)s
 ORDER BY id;

-- name: settle_callback
UPDATE callbacks
   SET payment_token = %(token)s, settled_at = %(now)s, settled_by = %(settled_by)s
 WHERE id = %(id)s;

-- name: note_status_query
UPDATE callbacks
   SET query_attempts = query_attempts + 1, query_answer = %(answer)s,
       redirect = coalesce(%(redirect)s, redirect)
 WHERE id = %(id)s;

-- name: callbacks_to_query
SELECT id FROM callbacks
 WHERE outcome IN ('ambiguous', 'unmatched') AND settled_at IS NULL AND pn_ref IS NOT NULL
   AND query_attempts < %(max_attempts)s
 ORDER BY id
 LIMIT %(limit)s;

-- name: unresolved_callbacks
SELECT id FROM callbacks
 WHERE outcome = 'received' AND received_at < %(before)s
 ORDER BY id;

-- name: callbacks
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks
 WHERE (%(outcomes)s::text[] IS NULL OR outcome = ANY (%(outcomes)s::text[]))
   AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
 ORDER BY id DESC
 LIMIT %(limit)s;

-- name: get_lease
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason, taint_until,
       heartbeat_until
  FROM leases WHERE id = %(id)s;

-- name: lease_spans
SELECT id, path, acquired_at, ended_at, end_reason FROM (
    SELECT id, path, acquired_at, ended_at, end_reason FROM leases
     WHERE ended_at >= %(since)s
    UNION ALL
    SELECT id, path, acquired_at, ended_at, end_reason FROM leases
     WHERE ended_at IS NULL
) AS spans
 ORDER BY acquired_at, id
 LIMIT %(limit)s;

-- name: record_slot_return
UPDATE slots
   SET approvals = approvals + CASE WHEN %(approved)s THEN 1 ELSE 0 END,
       declines = declines + CASE WHEN %(approved)s THEN 0 ELSE 1 END,
       expiry_streak = 0,
       last_return_at = %(now)s
 WHERE id = %(slot_id)s;

-- name: record_late_return
UPDATE slots SET silent_expiries = greatest(silent_expiries - 1, 0) WHERE id = %(slot_id)s;

-- name: record_slot_expiry
UPDATE slots
   SET silent_expiries = silent_expiries + 1, expiry_streak = expiry_streak + 1
 WHERE id = %(slot_id)s
RETURNING expiry_streak;

-- name: sideline_slot
UPDATE slots
   SET sidelined_at = %(now)s, sidelined_by = %(by)s, sidelined_reason = %(reason)s
 WHERE id = %(slot_id)s AND sidelined_at IS NULL;

-- name: restore_slot
UPDATE slots
   SET sidelined_at = NULL, sidelined_by = NULL, sidelined_reason = NULL, expiry_streak = 0
 WHERE id = %(slot_id)s AND sidelined_at IS NOT NULL;

-- name: payment_counts
SELECT status, count(*) AS n FROM payments GROUP BY status;

-- name: callback_counts
SELECT outcome, count(*) AS n FROM callbacks GROUP BY outcome;

-- name: open_review_callbacks
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks
 WHERE outcome = 'ambiguous' AND approved AND settled_at IS NULL
 ORDER BY id
 LIMIT %(limit)s;

-- name: insert_review
-- At most one decision per stored return: a second one, even at the same moment from
-- another instance, inserts nothing.
INSERT INTO reviews (decision, callback_id, payment_token, others, decided_by, reason,
                     decided_at, changes)
VALUES (%(decision)s, %(callback_id)s, %(payment_token)s, %(others)s, %(decided_by)s,
        %(reason)s, %(now)s, %(changes)s)
ON CONFLICT DO NOTHING
RETURNING id, decision, callback_id, payment_token, others, decided_by, reason, decided_at, changes;

-- name: review_of_callback
SELECT id, decision, callback_id, payment_token, others, decided_by, reason, decided_at, changes
  FROM reviews WHERE callback_id = %(callback_id)s;

-- name: reviews
SELECT id, decision, callback_id, payment_token, others, decided_by, reason, decided_at, changes
  FROM reviews ORDER BY id DESC LIMIT %(limit)s;

-- name: abandon_silent_leases
-- Live leases whose heartbeat lapsed before their expiry, found through their slot rows,
-- skipping those another transaction holds (as expire_due_leases). The lease's row is
-- checked again when updated: a heartbeat renewed meanwhile keeps it.
WITH due AS (
    SELECT s.id, s.live_lease_id
      FROM leases AS l JOIN slots AS s ON s.live_lease_id = l.id
     WHERE l.ended_at IS NULL AND l.heartbeat_until <= %(now)s
       AND l.heartbeat_until < l.expires_at
       FOR NO KEY UPDATE OF s SKIP LOCKED
), ended AS (
    UPDATE leases AS l
       SET ended_at = l.heartbeat_until, end_reason = 'abandoned',
           taint_until = l.heartbeat_until + %(window)s
      FROM due
     WHERE l.id = due.live_lease_id AND l.ended_at IS NULL
       AND l.heartbeat_until <= %(now)s AND l.heartbeat_until < l.expires_at
    RETURNING l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at,
              l.ended_at, l.end_reason, l.taint_until, l.heartbeat_until
), freed AS (
    UPDATE slots AS s
       SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = ended.ended_at,
           tainted_until = greatest(s.tainted_until, ended.taint_until)
      FROM ended
     WHERE s.id = ended.slot_id AND s.live_lease_id = ended.id
)
SELECT * FROM ended ORDER BY id;

-- name: abandon_silent_lease_on_slot
-- As expire_due_lease_on_slot: wait for the slot, then end its live lease if abandoned.
WITH slot AS (
    SELECT s.id, s.live_lease_id
      FROM slots AS s
     WHERE s.id = %(slot_id)s
       FOR NO KEY UPDATE
), ended AS (
    UPDATE leases AS l
       SET ended_at = l.heartbeat_until, end_reason = 'abandoned',
           taint_until = l.heartbeat_until + %(window)s
      FROM slot
     WHERE l.id = slot.live_lease_id AND l.ended_at IS NULL
       AND l.heartbeat_until <= %(now)s AND l.heartbeat_until < l.expires_at
    RETURNING l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at,
              l.ended_at, l.end_reason, l.taint_until, l.heartbeat_until
), freed AS (
    UPDATE slots AS s
       SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = ended.ended_at,
           tainted_until = greatest(s.tainted_until, ended.taint_until)
      FROM ended
     WHERE s.id = ended.slot_id AND s.live_lease_id = ended.id
)
SELECT * FROM ended;

-- name: record_heartbeat
-- Only the lease row: a heartbeat never waits for a slot. A lapsed heartbeat is not revived.
UPDATE leases SET heartbeat_until = %(until)s
 WHERE id = %(id)s AND ended_at IS NULL
   AND (heartbeat_until IS NULL
        OR (heartbeat_until < %(until)s AND heartbeat_until > %(now)s));

-- name: lock_admission
-- Admissions that weigh the waiting room take turns (released at commit): the free slots
-- they count are not given away under them by another instance.
SELECT pg_advisory_xact_lock(7248517301246590652);

-- name: free_slot_count
SELECT count(*) AS n FROM slots
 WHERE live_lease_id IS NULL AND active AND sidelined_at IS NULL AND NOT standby
   AND (last_released_at IS NULL OR last_released_at <= %(now)s);

-- name: busy_slot_count
SELECT count(*) AS n FROM slots WHERE live_lease_id IS NOT NULL;

-- name: set_reserve_standby
UPDATE slots SET standby = %(standby)s
 WHERE reserve AND active AND standby <> %(standby)s
RETURNING id, path;

-- name: insert_ticket
INSERT INTO tickets (ticket, priority, amount, currency, items, customer, customer_key, status,
                     created_at, expires_at)
VALUES (%(ticket)s, %(priority)s, %(amount)s, %(currency)s, %(items)s, %(customer)s,
        %(customer_key)s, 'waiting', %(now)s, %(expires_at)s)
RETURNING id, ticket, priority, amount, currency, items, customer, status, created_at, expires_at,
       payment_token, ended_at;

-- name: get_ticket
SELECT id, ticket, priority, amount, currency, items, customer, status, created_at, expires_at,
       payment_token, ended_at
  FROM tickets WHERE ticket = %(ticket)s;

-- name: waiting_ahead
SELECT count(*) AS n FROM tickets
 WHERE status = 'waiting' AND expires_at > %(now)s
   AND (priority > %(priority)s
        OR (priority = %(priority)s AND (%(id)s::bigint IS NULL OR id < %(id)s::bigint)));

-- name: touch_ticket
UPDATE tickets SET expires_at = %(expires_at)s WHERE id = %(id)s AND status = 'waiting';

-- name: end_ticket
UPDATE tickets SET status = %(status)s, payment_token = %(payment_token)s, ended_at = %(now)s
 WHERE id = %(id)s AND status = 'waiting';

-- name: expire_stale_tickets
UPDATE tickets SET status = 'expired', ended_at = expires_at
 WHERE status = 'waiting' AND expires_at <= %(now)s;

-- name: record_admission
INSERT INTO admissions AS a (minute, leased, waited, refused, granted, peak_busy)
VALUES (%(minute)s, %(leased)s, %(waited)s, %(refused)s, %(granted)s, coalesce(%(busy)s, 0))
ON CONFLICT (minute) DO UPDATE
   SET leased = a.leased + excluded.leased,
       waited = a.waited + excluded.waited,
       refused = a.refused + excluded.refused,
       granted = a.granted + excluded.granted,
       peak_busy = greatest(a.peak_busy, excluded.peak_busy);

-- name: admissions_since
SELECT coalesce(sum(leased), 0) AS leased, coalesce(sum(waited), 0) AS waited,
       coalesce(sum(refused), 0) AS refused, coalesce(sum(granted), 0) AS granted,
       coalesce(max(peak_busy), 0) AS peak_busy
  FROM admissions
 WHERE minute >= %(minute)s;

-- name: drop_admissions_before
DELETE FROM admissions WHERE minute < %(minute)s;

-- name: turn_aways_since
-- The turn-away chart: the refused requests of each minute, from the admission counts.
SELECT minute, refused FROM admissions
 WHERE minute >= %(minute)s AND refused > 0
 ORDER BY minute;

-- name: holding_times_since
SELECT count(*) AS ended,
       coalesce(sum(extract(epoch FROM ended_at - acquired_at)), 0)::float8 AS held
  FROM leases
 WHERE ended_at IS NOT NULL AND ended_at >= %(since)s;

-- name: insert_reserve_event
INSERT INTO reserve_events (at, action, paths, reason)
VALUES (%(now)s, %(action)s, %(paths)s, %(reason)s);

-- name: reserve_events
SELECT at, action, paths, reason FROM reserve_events ORDER BY id DESC LIMIT %(limit)s;
