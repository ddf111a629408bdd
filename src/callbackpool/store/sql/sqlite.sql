-- Queries of the SQLite store, one named section each. Parameters are named (:name), never
-- formatted in. Times are integer microseconds since the Unix epoch.

-- name: expire_due_leases
UPDATE leases
   SET ended_at = expires_at, end_reason = 'expired', taint_until = expires_at + :window
 WHERE ended_at IS NULL AND expires_at <= :now
RETURNING *;

-- name: expire_due_lease_on_slot
UPDATE leases
   SET ended_at = expires_at, end_reason = 'expired', taint_until = expires_at + :window
 WHERE ended_at IS NULL AND expires_at <= :now AND slot_id = :slot_id
RETURNING *;

-- Main slots before reserve ones (so that an activated reserve drains first), each least
-- recently released first.
-- name: pick_clean_slot
SELECT id, path FROM slots
 WHERE live_lease_id IS NULL AND active = 1 AND standby = 0 AND sidelined_at IS NULL
   AND (tainted_until IS NULL OR tainted_until <= :now)
 ORDER BY reserve, last_released_at, id
 LIMIT 1;

-- name: pick_slot_tainted_by_other_amounts
SELECT s.id, s.path FROM slots AS s
 WHERE s.live_lease_id IS NULL AND s.active = 1 AND s.standby = 0 AND s.sidelined_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM leases AS l
                    WHERE l.slot_id = s.id AND l.taint_until > :now AND l.amount = :amount)
 ORDER BY s.reserve, s.last_released_at, s.id
 LIMIT 1;

-- name: pick_any_free_slot
SELECT id, path FROM slots
 WHERE live_lease_id IS NULL AND active = 1 AND standby = 0 AND sidelined_at IS NULL
 ORDER BY reserve, last_released_at, id
 LIMIT 1;

-- name: free_slot_count
SELECT count(*) AS n FROM slots
 WHERE live_lease_id IS NULL AND active = 1 AND standby = 0 AND sidelined_at IS NULL;

-- name: busy_slot_count
SELECT count(*) AS n FROM slots WHERE live_lease_id IS NOT NULL;

-- name: set_reserve_standby
UPDATE slots SET standby = :standby
 WHERE reserve = 1 AND active = 1 AND standby <> :standby
RETURNING path;

-- name: abandon_silent_leases
UPDATE leases
   SET ended_at = heartbeat_until, end_reason = 'abandoned',
       taint_until = heartbeat_until + :window
 WHERE ended_at IS NULL AND heartbeat_until <= :now AND heartbeat_until < expires_at
RETURNING *;

-- name: abandon_silent_lease_on_slot
UPDATE leases
   SET ended_at = heartbeat_until, end_reason = 'abandoned',
       taint_until = heartbeat_until + :window
 WHERE ended_at IS NULL AND heartbeat_until <= :now AND heartbeat_until < expires_at
   AND slot_id = :slot_id
RETURNING *;

-- A lapsed heartbeat is not revived: the lease counts as abandoned from that moment.
-- name: record_heartbeat
UPDATE leases SET heartbeat_until = :until
 WHERE id = :id AND ended_at IS NULL
   AND (heartbeat_until IS NULL OR (heartbeat_until < :until AND heartbeat_until > :now));

-- name: insert_lease
INSERT INTO leases (slot_id, path, token, amount, acquired_at, expires_at)
VALUES (:slot_id, :path, :token, :amount, :now, :expires_at)
RETURNING id;

-- name: occupy_slot
UPDATE slots
   SET live_lease_id = :lease_id, lease_expires_at = :expires_at,
       usage_count = usage_count + 1, last_acquired_at = :now
 WHERE id = :slot_id;

-- name: end_lease
UPDATE leases
   SET ended_at = :now, end_reason = :reason, taint_until = :taint_until
 WHERE id = :id AND ended_at IS NULL
RETURNING *;

-- name: free_slot
UPDATE slots
   SET live_lease_id = NULL, lease_expires_at = NULL, last_released_at = :released_at,
       tainted_until = CASE
           WHEN :taint_until IS NULL THEN tainted_until
           WHEN tainted_until IS NULL OR tainted_until < :taint_until THEN :taint_until
           ELSE tainted_until END
 WHERE id = :slot_id AND live_lease_id = :lease_id;

-- name: drop_taint
UPDATE leases SET taint_until = NULL
 WHERE id = :id AND taint_until IS NOT NULL
RETURNING slot_id;

-- name: recompute_slot_taint
UPDATE slots
   SET tainted_until = (SELECT max(taint_until) FROM leases
                         WHERE slot_id = :slot_id AND taint_until IS NOT NULL)
 WHERE id = :slot_id;

-- name: drop_stale_taints
UPDATE leases SET taint_until = NULL
 WHERE taint_until IS NOT NULL AND taint_until <= :now;

-- name: earliest_lease_end
SELECT min(expires_at) FROM leases WHERE ended_at IS NULL;

-- name: customer_claims
SELECT l.expires_at FROM payments AS p JOIN leases AS l ON l.token = p.token
 WHERE p.customer_key = :customer_key AND l.ended_at IS NULL AND l.expires_at > :now
UNION ALL
SELECT expires_at FROM tickets
 WHERE customer_key = :customer_key AND status = 'waiting' AND expires_at > :now;

-- name: live_lease_of_payment
SELECT * FROM leases WHERE token = :token AND ended_at IS NULL;

-- name: live_lease_on_path
SELECT l.* FROM slots AS s JOIN leases AS l ON l.id = s.live_lease_id WHERE s.path = :path;

-- name: live_leases
SELECT * FROM leases WHERE ended_at IS NULL ORDER BY id;

-- name: candidates
SELECT l.id AS l_id, l.slot_id AS l_slot_id, l.path AS l_path, l.token AS l_token,
       l.amount AS l_amount, l.acquired_at AS l_acquired_at, l.expires_at AS l_expires_at,
       l.ended_at AS l_ended_at, l.end_reason AS l_end_reason, l.taint_until AS l_taint_until,
       l.heartbeat_until AS l_heartbeat_until,
       p.*
  FROM leases AS l JOIN payments AS p ON p.token = l.token
 WHERE l.slot_id = :slot_id AND (l.ended_at IS NULL OR l.taint_until > :now)
 ORDER BY l.id;

-- name: slots
SELECT id, path, active, reserve, standby FROM slots ORDER BY id;

-- name: slot_by_path
SELECT id, path, active FROM slots WHERE path = :path;

-- name: insert_slot
INSERT INTO slots (path, active, reserve, standby, created_at)
VALUES (:path, 1, :reserve, :standby, :now);

-- name: set_slot_active
UPDATE slots SET active = :active WHERE path = :path;

-- name: set_slot_kind
UPDATE slots SET reserve = :reserve, standby = :standby WHERE path = :path;

-- name: slot_views
SELECT s.id, s.path, s.active, s.reserve, s.standby, s.usage_count, s.last_acquired_at,
       s.last_released_at,
       s.sidelined_at, s.sidelined_by, s.sidelined_reason, s.approvals, s.declines,
       s.silent_expiries, s.expiry_streak, s.last_return_at,
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

-- name: insert_payment
INSERT INTO payments (token, amount, currency, items, customer, customer_key, status, late,
                      lease_id, callback_path, expires_at, created_at, updated_at)
VALUES (:token, :amount, :currency, :items, :customer, :customer_key, :status, :late,
        :lease_id, :callback_path, :expires_at, :now, :now);

-- name: get_payment
SELECT * FROM payments WHERE token = :token;

-- name: update_payment
UPDATE payments
   SET status = :status,
       late = coalesce(:late, late),
       pn_ref = coalesce(:pn_ref, pn_ref),
       order_id = coalesce(:order_id, order_id),
       auth_code = coalesce(:auth_code, auth_code),
       card_type = coalesce(:card_type, card_type),
       last4 = coalesce(:last4, last4),
       result_code = coalesce(:result_code, result_code),
       error_message = coalesce(:error_message, error_message),
       callback_id = coalesce(:callback_id, callback_id),
       updated_at = :now
 WHERE token = :token AND status = :expected;

-- name: insert_callback
INSERT INTO callbacks (path, method, params, client_addr, receipt, received_at, outcome)
VALUES (:path, :method, :params, :client_addr, :receipt, :now, 'received')
RETURNING id;

-- name: get_callback
SELECT * FROM callbacks WHERE id = :id;

-- name: pn_ref_holder
SELECT callback_id, fingerprint FROM pn_refs WHERE pn_ref = :pn_ref;

-- name: claim_pn_ref
INSERT INTO pn_refs (pn_ref, callback_id, fingerprint)
VALUES (:pn_ref, :callback_id, :fingerprint)
ON CONFLICT (pn_ref) DO NOTHING;

-- name: finish_callback
UPDATE callbacks
   SET outcome = :outcome, redirect = :redirect, pn_ref = :pn_ref, amount = :amount,
       approved = :approved, payment_token = :payment_token, detail = :detail,
       candidates = :candidates, duplicate_of = :duplicate_of
 WHERE id = :id;

-- name: open_ambiguities
SELECT id, candidates FROM callbacks
 WHERE path = :path AND amount = :amount
   AND outcome = 'ambiguous' AND approved = 1 AND settled_at IS NULL
   AND received_at > :received_after
 ORDER BY id;

-- name: settle_callback
UPDATE callbacks
   SET payment_token = :token, settled_at = :now, settled_by = :settled_by
 WHERE id = :id;

-- name: unresolved_callbacks
SELECT id FROM callbacks WHERE outcome = 'received' AND received_at < :before ORDER BY id;

-- name: note_status_query
UPDATE callbacks
   SET query_attempts = query_attempts + 1, query_answer = :answer,
       redirect = coalesce(:redirect, redirect)
 WHERE id = :id;

-- name: callbacks_to_query
SELECT id FROM callbacks
 WHERE outcome IN ('ambiguous', 'unmatched') AND settled_at IS NULL AND pn_ref IS NOT NULL
   AND query_attempts < :max_attempts
 ORDER BY id
 LIMIT :limit;

-- name: payments
SELECT * FROM payments
 WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
   AND (:created_before IS NULL OR created_at < :created_before)
 ORDER BY created_at
 LIMIT :limit;

-- name: callbacks
SELECT * FROM callbacks
 WHERE (:outcomes IS NULL OR outcome IN (SELECT value FROM json_each(:outcomes)))
   AND (:before_id IS NULL OR id < :before_id)
 ORDER BY id DESC
 LIMIT :limit;

-- name: insert_ticket
INSERT INTO tickets (ticket, priority, amount, currency, items, customer, customer_key, status,
                     created_at, expires_at)
VALUES (:ticket, :priority, :amount, :currency, :items, :customer, :customer_key, 'waiting',
        :now, :expires_at)
RETURNING *;

-- name: get_ticket
SELECT * FROM tickets WHERE ticket = :ticket;

-- name: waiting_ahead
SELECT count(*) AS n FROM tickets
 WHERE status = 'waiting' AND expires_at > :now
   AND (priority > :priority OR (priority = :priority AND (:id IS NULL OR id < :id)));

-- name: touch_ticket
UPDATE tickets SET expires_at = :expires_at WHERE id = :id AND status = 'waiting';

-- name: end_ticket
UPDATE tickets SET status = :status, payment_token = :payment_token, ended_at = :now
 WHERE id = :id AND status = 'waiting';

-- name: expire_stale_tickets
UPDATE tickets SET status = 'expired', ended_at = expires_at
 WHERE status = 'waiting' AND expires_at <= :now;

-- name: record_admission
INSERT INTO admissions (minute, leased, waited, refused, granted, peak_busy)
VALUES (:minute, :leased, :waited, :refused, :granted, coalesce(:busy, 0))
ON CONFLICT (minute) DO UPDATE
   SET leased = leased + excluded.leased,
       waited = waited + excluded.waited,
       refused = refused + excluded.refused,
       granted = granted + excluded.granted,
       peak_busy = max(peak_busy, excluded.peak_busy);

-- name: admissions_since
SELECT coalesce(sum(leased), 0) AS leased, coalesce(sum(waited), 0) AS waited,
       coalesce(sum(refused), 0) AS refused, coalesce(sum(granted), 0) AS granted,
       coalesce(max(peak_busy), 0) AS peak_busy
  FROM admissions
 WHERE minute >= :minute;

-- name: drop_admissions_before
DELETE FROM admissions WHERE minute < :minute;

-- name: turn_aways_since
-- The turn-away chart: the refused requests of each minute, from the admission counts.
SELECT minute, refused FROM admissions WHERE minute >= :minute AND refused > 0 ORDER BY minute;

-- name: holding_times_since
SELECT count(*) AS ended, coalesce(sum(ended_at - acquired_at), 0) AS held
  FROM leases
 WHERE ended_at IS NOT NULL AND ended_at >= :since;

-- name: insert_reserve_event
INSERT INTO reserve_events (at, action, paths, reason)
VALUES (:now, :action, :paths, :reason);

-- name: reserve_events
SELECT at, action, paths, reason FROM reserve_events ORDER BY id DESC LIMIT :limit;
-- name: get_lease
SELECT * FROM leases WHERE id = :id;

-- name: lease_spans
SELECT id, path, acquired_at, ended_at, end_reason FROM leases
 WHERE ended_at >= :since
UNION ALL
SELECT id, path, acquired_at, ended_at, end_reason FROM leases
 WHERE ended_at IS NULL
 ORDER BY acquired_at, id
 LIMIT :limit;

-- name: record_slot_return
UPDATE slots
   SET approvals = approvals + :approved,
       declines = declines + 1 - :approved,
       expiry_streak = 0,
       last_return_at = :now
 WHERE id = :slot_id;

-- name: record_late_return
UPDATE slots SET silent_expiries = max(silent_expiries - 1, 0) WHERE id = :slot_id;

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

-- name: payment_counts
SELECT status, count(*) AS n FROM payments GROUP BY status;

-- name: callback_counts
SELECT outcome, count(*) AS n FROM callbacks GROUP BY outcome;

-- name: open_review_callbacks
SELECT * FROM callbacks
 WHERE outcome = 'ambiguous' AND approved = 1 AND settled_at IS NULL
 ORDER BY id
 LIMIT :limit;

-- name: insert_review
INSERT INTO reviews (decision, callback_id, payment_token, others, decided_by, reason,
                     decided_at, changes)
VALUES (:decision, :callback_id, :payment_token, :others, :decided_by, :reason, :now, :changes)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: review_of_callback
SELECT * FROM reviews WHERE callback_id = :callback_id;

-- name: reviews
SELECT * FROM reviews ORDER BY id DESC LIMIT :limit;
