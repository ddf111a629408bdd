-- Acquisition's walk over the free slots, now that a slot can be out of rotation two ways: a
-- reserve path on standby (0002) and a sidelined slot (0003). Main paths come before reserve
-- ones, so that an activated reserve empties first.
DROP INDEX slots_free_lru;
CREATE INDEX slots_free_lru ON slots (reserve, last_released_at NULLS FIRST, id)
    WHERE live_lease_id IS NULL AND active AND sidelined_at IS NULL AND NOT standby;
