-- The pool's queries, one named section each, for SQLite and PostgreSQL alike. A section of
-- the same name in sqlite.sql or postgres.sql replaces the one here for that database: what
-- must differ (locks, SKIP LOCKED, lists as parameters) differs there.
--
-- Parameters are named (:name) and bound by the driver, never formatted in. :now is the
-- transaction's one clock. A parameter that may be NULL is CAST where it is first used, so
-- that PostgreSQL knows its type. Columns are named, never *: an instance still running
-- while another one's migration adds a column keeps working.
--
-- Times are read back by column name: a column (or alias) ending in _at or _until, or
-- named at, holds a time (integer microseconds on SQLite, timestamptz on PostgreSQL).
--
-- A query named lock_... takes a lock on PostgreSQL (postgres.sql); here it only reads what
-- it would lock, or does nothing: SQLite's write transactions take turns anyway. The lock
-- order is in store/tx.py.

-- name: lock_customer
SELECT 1;

-- name: lock_slot_of_lease
SELECT 1;

-- name: lock_live_slots
SELECT id FROM slots WHERE live_lease_id IS NOT NULL ORDER BY id;

-- name: lock_candidates
SELECT 1;

-- name: lock_callback
SELECT 1;

-- name: lock_admission
SELECT 1;

-- name: lock_payment
SELECT 1;

-- name: lock_idempotency_key
SELECT 1;

-- --- slots -----------------------------------------------------------------------------

-- name: reserve_in_rotation
SELECT count(*) AS n FROM slots WHERE active AND reserve AND NOT standby;

-- name: insert_slot
INSERT INTO slots (path, active, reserve, standby, created_at)
VALUES (:path, TRUE, :reserve, :standby, :now)
ON CONFLICT (path) DO NOTHING
RETURNING path;

-- name: set_slot_kind
-- A path moved between callbackPaths and reservePaths; a main path is never on standby.
UPDATE slots SET reserve = :reserve, standby = :standby
 WHERE path = :path AND reserve <> :reserve;

-- name: reactivate_slot
UPDATE slots SET active = TRUE WHERE path = :path AND NOT active RETURNING path;

-- name: active_slots
SELECT path FROM slots WHERE active ORDER BY id;

-- name: deactivate_slot
UPDATE slots SET active = FALSE WHERE path = :path AND active RETURNING path;

-- name: slot_by_path
SELECT id, path, active FROM slots WHERE path = :path;

-- name: slot_by_path_locked
-- What a write transaction runs: PostgreSQL locks the row (postgres.sql).
SELECT id, path, active FROM slots WHERE path = :path;

-- name: lock_slot
-- The slot and its live lease (locked on PostgreSQL: postgres.sql).
SELECT id, live_lease_id FROM slots WHERE id = :slot_id;

-- name: free_slot_count
-- A slot freed at a time later than this transaction's clock is not free to it.
SELECT count(*) AS n FROM slots
 WHERE live_lease_id IS NULL AND active AND sidelined_at IS NULL AND NOT standby
   AND (last_released_at IS NULL OR last_released_at <= :now);

-- name: busy_slot_count
SELECT count(*) AS n FROM slots WHERE live_lease_id IS NOT NULL;

-- name: set_reserve_standby
UPDATE slots SET standby = :standby
 WHERE reserve AND active AND standby <> :standby
RETURNING id, path;

-- name: slot_views
SELECT s.id, s.path, s.active, s.reserve, s.standby, s.usage_count, s.last_acquired_at,
       s.last_released_at, s.sidelined_at, s.sidelined_by, s.sidelined_reason, s.approvals,
       s.declines, s.silent_expiries, s.expiry_streak, s.last_return_at,
       (SELECT count(*) FROM leases AS t
         WHERE t.slot_id = s.id AND t.taint_until > :now) AS taints,
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

-- --- slot health -----------------------------------------------------------------------

-- name: record_slot_return
UPDATE slots
   SET approvals = approvals + CASE WHEN :approved THEN 1 ELSE 0 END,
       declines = declines + CASE WHEN :approved THEN 0 ELSE 1 END,
       expiry_streak = 0,
       last_return_at = :now
 WHERE id = :slot_id;

-- name: record_late_return
UPDATE slots
   SET silent_expiries = CASE WHEN silent_expiries > 0 THEN silent_expiries - 1 ELSE 0 END
 WHERE id = :slot_id;

-- name: record_slot_expiry
UPDATE slots
   SET silent_expiries = silent_expiries + 1, expiry_streak = expiry_streak + 1
 WHERE id = :slot_id
RETURNING expiry_streak;

-- name: sideline_slot
UPDATE slots
   SET sidelined_at = :now, sidelined_by = :by, sidelined_reason = :reason
 WHERE id = :slot_id AND sidelined_at IS NULL;

-- name: restore_slot
UPDATE slots
   SET sidelined_at = NULL, sidelined_by = NULL, sidelined_reason = NULL, expiry_streak = 0
 WHERE id = :slot_id AND sidelined_at IS NOT NULL;

-- --- leases ----------------------------------------------------------------------------

-- name: insert_lease
INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at)
VALUES (:slot_id, :path, :token, :amount, :now, :expires_at)
RETURNING id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
          taint_until, heartbeat_until;

-- name: occupy_slot
-- The slot was picked (and, on PostgreSQL, locked) by pick_slot.
UPDATE slots
   SET live_lease_id = :lease_id, lease_expires_at = :expires_at,
       usage_count = usage_count + 1, last_acquired_at = :now
 WHERE id = :slot_id;

-- name: free_slot
-- The lease that held the slot has ended (the parameters are the lease's columns); the slot
-- keeps the latest of its taints.
UPDATE slots
   SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = :ended_at,
       tainted_until = CASE
           WHEN CAST(:taint_until AS timestamptz) IS NULL THEN tainted_until
           WHEN tainted_until IS NULL OR tainted_until < :taint_until THEN :taint_until
           ELSE tainted_until END
 WHERE id = :slot_id AND live_lease_id = :id;

-- name: end_lease
UPDATE leases
   SET ended_at = :now, end_reason = :reason, taint_until = CAST(:taint_until AS timestamptz)
 WHERE id = :id AND ended_at IS NULL
RETURNING id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
          taint_until, heartbeat_until;

-- name: due_slots
-- The slots whose live lease has expired.
SELECT slot_id AS id, id AS live_lease_id FROM leases
 WHERE ended_at IS NULL AND expires_at <= :now;

-- name: expire_lease
UPDATE leases
   SET ended_at = expires_at, end_reason = 'expired', taint_until = expires_at + :window
 WHERE id = :id AND ended_at IS NULL AND expires_at <= :now
RETURNING id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
          taint_until, heartbeat_until;

-- name: silent_slots
-- The slots whose live lease's heartbeat lapsed before its expiry.
SELECT slot_id AS id, id AS live_lease_id FROM leases
 WHERE ended_at IS NULL AND heartbeat_until <= :now AND heartbeat_until < expires_at;

-- name: abandon_lease
-- Checked again here: a heartbeat renewed meanwhile keeps the lease.
UPDATE leases
   SET ended_at = heartbeat_until, end_reason = 'abandoned',
       taint_until = heartbeat_until + :window
 WHERE id = :id AND ended_at IS NULL AND heartbeat_until <= :now
   AND heartbeat_until < expires_at
RETURNING id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
          taint_until, heartbeat_until;

-- name: record_heartbeat
-- Only the lease row: a heartbeat never waits for a slot. A lapsed heartbeat is not revived.
UPDATE leases SET heartbeat_until = :until
 WHERE id = :id AND ended_at IS NULL
   AND (heartbeat_until IS NULL OR (heartbeat_until < :until AND heartbeat_until > :now));

-- name: drop_taint
UPDATE leases SET taint_until = NULL
 WHERE id = :id AND taint_until IS NOT NULL
RETURNING slot_id;

-- name: recompute_slot_taint
UPDATE slots
   SET tainted_until = (SELECT max(t.taint_until) FROM leases AS t
                         WHERE t.slot_id = slots.id AND t.taint_until IS NOT NULL)
 WHERE id = :slot_id;

-- name: drop_stale_taints
UPDATE leases SET taint_until = NULL WHERE taint_until IS NOT NULL AND taint_until <= :now;

-- name: earliest_lease_end
SELECT min(expires_at) AS earliest_end_at FROM leases WHERE ended_at IS NULL;

-- name: customer_claims
SELECT l.expires_at FROM payments AS p JOIN leases AS l ON l.token = p.token
 WHERE p.customer_key = :customer_key AND l.ended_at IS NULL AND l.expires_at > :now
UNION ALL
SELECT expires_at FROM tickets
 WHERE customer_key = :customer_key AND status = 'waiting' AND expires_at > :now;

-- name: get_lease
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
       taint_until, heartbeat_until
  FROM leases WHERE id = :id;

-- name: live_lease_of_payment
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
       taint_until, heartbeat_until
  FROM leases WHERE token = :token AND ended_at IS NULL;

-- name: live_lease_on_path
SELECT l.id, l.slot_id, l.path, l.token, l.amount, l.acquired_at, l.expires_at, l.ended_at,
       l.end_reason, l.taint_until, l.heartbeat_until
  FROM slots AS s JOIN leases AS l ON l.id = s.live_lease_id
 WHERE s.path = :path;

-- name: live_leases
SELECT id, slot_id, path, token, amount, acquired_at, expires_at, ended_at, end_reason,
       taint_until, heartbeat_until
  FROM leases WHERE ended_at IS NULL ORDER BY id;

-- name: lease_spans
SELECT id, path, acquired_at, ended_at, end_reason FROM (
    SELECT id, path, acquired_at, ended_at, end_reason FROM leases WHERE ended_at >= :since
    UNION ALL
    SELECT id, path, acquired_at, ended_at, end_reason FROM leases WHERE ended_at IS NULL
) AS spans
 ORDER BY acquired_at, id
 LIMIT :limit;

-- name: candidates
-- The payments a return on the slot could belong to: its live lease's and its taints'.
SELECT l.id AS l_id, l.slot_id AS l_slot_id, l.path AS l_path, l.token AS l_token,
       l.amount AS l_amount, l.acquired_at AS l_acquired_at, l.expires_at AS l_expires_at,
       l.ended_at AS l_ended_at, l.end_reason AS l_end_reason, l.taint_until AS l_taint_until,
       l.heartbeat_until AS l_heartbeat_until,
       p.token, p.amount, p.currency, p.items, p.customer, p.status, p.late, p.lease_id,
       p.callback_path, p.expires_at, p.pn_ref, p.order_id, p.auth_code, p.card_type, p.last4,
       p.result_code, p.error_message, p.callback_id, p.id, p.order_reference, p.metadata,
       p.success_url, p.cancel_url, p.max_attempts, p.idempotency_key, p.request_hash,
       p.created_at, p.updated_at
  FROM leases AS l JOIN payments AS p ON p.token = l.token
 WHERE l.slot_id = :slot_id AND (l.ended_at IS NULL OR l.taint_until > :now)
 ORDER BY l.id;

-- --- payments --------------------------------------------------------------------------

-- name: insert_payment
INSERT INTO payments (token, id, amount, currency, items, customer, customer_key, status, late,
                      lease_id, callback_path, expires_at, order_reference, metadata,
                      success_url, cancel_url, max_attempts, idempotency_key, request_hash,
                      created_at, updated_at)
VALUES (:token, :id, :amount, :currency, :items, :customer, :customer_key, :status, :late,
        :lease_id, :callback_path, :expires_at, :order_reference, :metadata, :success_url,
        :cancel_url, :max_attempts, :idempotency_key, :request_hash, :created_at, :created_at);

-- name: get_payment
SELECT token, id, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, order_reference, metadata, success_url, cancel_url, max_attempts,
       idempotency_key, request_hash, created_at, updated_at
  FROM payments WHERE token = :token;

-- name: payment_by_id
SELECT token, id, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, order_reference, metadata, success_url, cancel_url, max_attempts,
       idempotency_key, request_hash, created_at, updated_at
  FROM payments WHERE id = :id;

-- name: payment_by_idempotency_key
SELECT token, id, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, order_reference, metadata, success_url, cancel_url, max_attempts,
       idempotency_key, request_hash, created_at, updated_at
  FROM payments WHERE idempotency_key = :idempotency_key;

-- name: update_payment
-- Conditional on the status the caller saw: a repeated or raced transition writes nothing.
UPDATE payments
   SET status = :status,
       late = coalesce(CAST(:late AS boolean), late),
       lease_id = coalesce(CAST(:lease_id AS bigint), lease_id),
       callback_path = coalesce(CAST(:callback_path AS text), callback_path),
       pn_ref = coalesce(CAST(:pn_ref AS text), pn_ref),
       order_id = coalesce(CAST(:order_id AS text), order_id),
       auth_code = coalesce(CAST(:auth_code AS text), auth_code),
       card_type = coalesce(CAST(:card_type AS text), card_type),
       last4 = coalesce(CAST(:last4 AS text), last4),
       result_code = coalesce(CAST(:result_code AS text), result_code),
       error_message = coalesce(CAST(:error_message AS text), error_message),
       callback_id = coalesce(CAST(:callback_id AS bigint), callback_id),
       updated_at = :now
 WHERE token = :token AND status = :expected;

-- name: payments
-- The statuses asked for are :status_1 to :status_7 (NULL for the rest), or any.
SELECT token, id, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, order_reference, metadata, success_url, cancel_url, max_attempts,
       idempotency_key, request_hash, created_at, updated_at
  FROM payments
 WHERE (:any_status
        OR status IN (:status_1, :status_2, :status_3, :status_4, :status_5, :status_6,
                      :status_7))
   AND (CAST(:created_before AS timestamptz) IS NULL OR created_at < :created_before)
 ORDER BY created_at, lease_id, token
 LIMIT :limit;

-- name: newest_payments
-- The shop's list, newest first, after the cursor's payment (:after_created, :after_id).
SELECT token, id, amount, currency, items, customer, status, late, lease_id, callback_path,
       expires_at, pn_ref, order_id, auth_code, card_type, last4, result_code, error_message,
       callback_id, order_reference, metadata, success_url, cancel_url, max_attempts,
       idempotency_key, request_hash, created_at, updated_at
  FROM payments
 WHERE (CAST(:order_reference AS text) IS NULL OR order_reference = :order_reference)
   AND (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:after_id AS text) IS NULL OR created_at < :after_created
        OR (created_at = :after_created AND id < :after_id))
 ORDER BY created_at DESC, id DESC
 LIMIT :limit;

-- name: due_open_payments
SELECT token FROM payments WHERE status = 'open' AND expires_at <= :now ORDER BY expires_at
 LIMIT :limit;

-- name: payment_attempts
-- Each lease of a payment is one attempt at the gateway, with the return applied to it.
SELECT l.id AS lease_id, l.acquired_at, l.ended_at, l.end_reason, c.id AS callback_id,
       c.params, c.received_at
  FROM leases l
  LEFT JOIN callbacks c ON c.lease_id = l.id AND c.outcome = 'applied'
 WHERE l.token = :token
 ORDER BY l.id;

-- name: payment_counts
SELECT status, count(*) AS n FROM payments GROUP BY status;

-- --- the waiting room ------------------------------------------------------------------

-- name: insert_ticket
INSERT INTO tickets (ticket, priority, amount, currency, items, customer, customer_key, status,
                     created_at, expires_at, open_payment)
VALUES (:ticket, :priority, :amount, :currency, :items, :customer, :customer_key, 'waiting',
        :now, :expires_at, :open_payment)
RETURNING id, ticket, priority, amount, currency, items, customer, status, created_at,
          expires_at, payment_token, ended_at, open_payment;

-- name: get_ticket
SELECT id, ticket, priority, amount, currency, items, customer, status, created_at, expires_at,
       payment_token, ended_at, open_payment
  FROM tickets WHERE ticket = :ticket;

-- name: waiting_ahead
-- Served before a request of :priority: higher priorities, and the same one come earlier.
SELECT count(*) AS n FROM tickets
 WHERE status = 'waiting' AND expires_at > :now
   AND (priority > :priority
        OR (priority = :priority AND (CAST(:id AS bigint) IS NULL OR id < :id)));

-- name: touch_ticket
UPDATE tickets SET expires_at = :expires_at WHERE id = :id AND status = 'waiting';

-- name: end_ticket
UPDATE tickets
   SET status = :status, payment_token = CAST(:payment_token AS text), ended_at = :now
 WHERE id = :id AND status = 'waiting';

-- name: expire_stale_tickets
UPDATE tickets SET status = 'expired', ended_at = expires_at
 WHERE status = 'waiting' AND expires_at <= :now;

-- --- capacity figures ------------------------------------------------------------------

-- name: record_admission
-- Requests for a slot, counted per minute since the epoch.
INSERT INTO admissions AS a (minute, leased, waited, refused, granted, peak_busy)
VALUES (:minute, :leased, :waited, :refused, :granted, :busy)
ON CONFLICT (minute) DO UPDATE
   SET leased = a.leased + excluded.leased,
       waited = a.waited + excluded.waited,
       refused = a.refused + excluded.refused,
       granted = a.granted + excluded.granted,
       peak_busy = CASE WHEN a.peak_busy > excluded.peak_busy
                        THEN a.peak_busy ELSE excluded.peak_busy END;

-- name: admissions_since
SELECT coalesce(sum(leased), 0) AS leased, coalesce(sum(waited), 0) AS waited,
       coalesce(sum(refused), 0) AS refused, coalesce(sum(granted), 0) AS granted,
       coalesce(max(peak_busy), 0) AS peak_busy
  FROM admissions
 WHERE minute >= :minute;

-- name: drop_admissions_before
DELETE FROM admissions WHERE minute < :minute;

-- name: turn_aways_since
-- The turn-away chart: the refused requests of each minute.
SELECT minute, refused FROM admissions WHERE minute >= :minute AND refused > 0 ORDER BY minute;

-- name: insert_reserve_event
INSERT INTO reserve_events (at, action, paths, reason) VALUES (:now, :action, :paths, :reason);

-- name: reserve_events
SELECT at, action, paths, reason FROM reserve_events ORDER BY id DESC LIMIT :limit;

-- --- gateway returns -------------------------------------------------------------------

-- name: insert_callback
INSERT INTO callbacks (path, method, params, client_addr, receipt, received_at, outcome)
VALUES (:path, :method, :params, :client_addr, :receipt, :now, 'received')
RETURNING id;

-- name: get_callback
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks WHERE id = :id;

-- name: pn_ref_holder
SELECT callback_id, fingerprint FROM pn_refs WHERE pn_ref = :pn_ref;

-- name: claim_pn_ref
-- A concurrent claim of the same reference waits here for the first to commit, then
-- inserts nothing; the caller then reads the holder.
INSERT INTO pn_refs (pn_ref, callback_id, fingerprint)
VALUES (:pn_ref, :callback_id, :fingerprint)
ON CONFLICT (pn_ref) DO NOTHING;

-- name: finish_callback
UPDATE callbacks
   SET outcome = :outcome, redirect = :redirect, pn_ref = :pn_ref, amount = :amount,
       approved = :approved, payment_token = :payment_token, detail = :detail,
       candidates = :candidates, duplicate_of = :duplicate_of, lease_id = :lease_id
 WHERE id = :id;

-- name: open_ambiguities
SELECT id AS callback_id, candidates FROM callbacks
 WHERE path = :path AND amount = :amount
   AND outcome = 'ambiguous' AND approved AND settled_at IS NULL
   AND received_at > :received_after
 ORDER BY id;

-- name: settle_callback
UPDATE callbacks
   SET payment_token = CAST(:token AS text), settled_at = :now, settled_by = :settled_by
 WHERE id = :id;

-- name: unresolved_callbacks
SELECT id FROM callbacks WHERE outcome = 'received' AND received_at < :before ORDER BY id;

-- name: note_status_query
UPDATE callbacks
   SET query_attempts = query_attempts + 1, query_answer = :answer,
       redirect = coalesce(CAST(:redirect AS text), redirect)
 WHERE id = :id;

-- name: callbacks_to_query
SELECT id FROM callbacks
 WHERE outcome IN ('ambiguous', 'unmatched') AND settled_at IS NULL AND pn_ref IS NOT NULL
   AND query_attempts < :max_attempts
 ORDER BY id
 LIMIT :limit;

-- name: callbacks
-- The outcomes asked for are :outcome_1 to :outcome_6 (NULL for the rest), or any.
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks
 WHERE (:any_outcome
        OR outcome IN (:outcome_1, :outcome_2, :outcome_3, :outcome_4, :outcome_5, :outcome_6))
   AND (CAST(:before_id AS bigint) IS NULL OR id < :before_id)
 ORDER BY id DESC
 LIMIT :limit;

-- name: callback_counts
SELECT outcome, count(*) AS n FROM callbacks GROUP BY outcome;

-- name: open_review_callbacks
SELECT id, path, method, params, client_addr, received_at, outcome, pn_ref, amount, approved,
       payment_token, detail, candidates, redirect, duplicate_of, settled_at, settled_by,
       receipt, query_attempts, query_answer
  FROM callbacks
 WHERE outcome = 'ambiguous' AND approved AND settled_at IS NULL
 ORDER BY id
 LIMIT :limit;

-- --- reviews ---------------------------------------------------------------------------

-- name: insert_review
-- At most one decision per stored return: a second one, even at the same moment from
-- another instance, inserts nothing.
INSERT INTO reviews (decision, callback_id, payment_token, others, decided_by, reason,
                     decided_at, changes)
VALUES (:decision, :callback_id, :payment_token, :others, :decided_by, :reason, :now, :changes)
ON CONFLICT DO NOTHING
RETURNING id, decision, callback_id, payment_token, others, decided_by, reason, decided_at,
          changes;

-- name: reviews
SELECT id, decision, callback_id, payment_token, others, decided_by, reason, decided_at, changes
  FROM reviews ORDER BY id DESC LIMIT :limit;

-- --- the dashboard's signed-out sessions -------------------------------------------------

-- name: sign_out_session
INSERT INTO signed_out_sessions (session_id, expires_at)
VALUES (:session_id, :expires_at)
ON CONFLICT (session_id) DO NOTHING;

-- name: session_signed_out
SELECT 1 AS found FROM signed_out_sessions WHERE session_id = :session_id;

-- name: drop_expired_sign_outs
DELETE FROM signed_out_sessions WHERE expires_at < :now;

-- --- events (the outbox) ---------------------------------------------------------------

-- name: insert_event
-- The payment's next sequence number, in the transaction of its status change: the change
-- holds the payment (its conditional update locks the row until the commit), and UNIQUE
-- (payment_id, sequence) refuses a second event of the same number.
INSERT INTO events (id, type, payment_id, sequence, reason, data, created_at)
VALUES (:id, :type, :payment_id,
        (SELECT coalesce(max(sequence), 0) + 1 FROM events WHERE payment_id = :payment_id),
        :reason, :data, :now)
RETURNING seq, id, type, payment_id, sequence, reason, data, created_at;

-- name: event_seq
SELECT seq FROM events WHERE id = :id;

-- name: events_after
SELECT seq, id, type, payment_id, sequence, reason, data, created_at
  FROM events
 WHERE seq > :after
 ORDER BY seq
 LIMIT :limit;

-- name: drop_events_before
DELETE FROM events WHERE created_at < :before;
