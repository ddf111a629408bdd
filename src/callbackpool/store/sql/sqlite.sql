-- SQLite's own versions of shared queries (queries.sql). Times are integer microseconds
-- since the Unix epoch.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       TEXT    PRIMARY KEY,
    applied_at INTEGER NOT NULL
);

-- name: migrations_table_exists
SELECT count(*) > 0 AS present
  FROM sqlite_master
 WHERE type = 'table' AND name = 'schema_migrations';

-- name: applied_migrations
SELECT name FROM schema_migrations ORDER BY name;

-- name: record_migration
INSERT INTO schema_migrations (name, applied_at) VALUES (:name, :applied_at);

-- name: holding_times_since
SELECT count(*) AS ended, coalesce(sum(ended_at - acquired_at), 0) / 1e6 AS held_seconds
  FROM leases
 WHERE ended_at IS NOT NULL AND ended_at >= :since;

-- name: pick_slot
-- SQLite's own: a partial index serves it only where its conditions are written as the
-- index's are (active = 1), and only in its own order (NULL first, SQLite's ascending).
-- The best free slot: main slots before reserve ones (an activated reserve drains first),
-- each least recently released first; one untainted, else one tainted by other amounts
-- only, else (if allowed) any. A slot freed at a time later than this transaction's clock
-- is not free yet by it: lease histories never overlap in time.
SELECT id AS slot_id, path FROM (
    SELECT 1 AS tier, id, path FROM (
        SELECT s.id, s.path FROM slots AS s
         WHERE s.live_lease_id IS NULL AND s.active = 1 AND s.standby = 0 AND s.sidelined_at IS NULL
           AND (s.last_released_at IS NULL OR s.last_released_at <= :now)
           AND (s.tainted_until IS NULL OR s.tainted_until <= :now)
         ORDER BY s.reserve, s.last_released_at, s.id
         LIMIT 1) AS clean
    UNION ALL
    SELECT 2 AS tier, id, path FROM (
        SELECT s.id, s.path FROM slots AS s
         WHERE s.live_lease_id IS NULL AND s.active = 1 AND s.standby = 0 AND s.sidelined_at IS NULL
           AND (s.last_released_at IS NULL OR s.last_released_at <= :now)
           AND NOT EXISTS (SELECT 1 FROM leases AS t
                            WHERE t.slot_id = s.id AND t.amount = :amount
                              AND t.taint_until > :now)
         ORDER BY s.reserve, s.last_released_at, s.id
         LIMIT 1) AS tainted_by_other_amounts
    UNION ALL
    SELECT 3 AS tier, id, path FROM (
        SELECT s.id, s.path FROM slots AS s
         WHERE s.live_lease_id IS NULL AND s.active = 1 AND s.standby = 0 AND s.sidelined_at IS NULL
           AND :allow_same_amount_tainted
           AND (s.last_released_at IS NULL OR s.last_released_at <= :now)
         ORDER BY s.reserve, s.last_released_at, s.id
         LIMIT 1) AS tainted_by_this_amount
) AS tiers
 ORDER BY tier
 LIMIT 1;
