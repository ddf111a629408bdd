-- A refused request is counted once, in admissions.refused (0002), which the turn-away chart
-- now reads; the table of turn-aways (0003) counted the same requests a second time. The
-- same as the SQLite migration of this name.

-- Its last week (the dashboard's longest window) is kept where admissions has already
-- forgotten the minute, counted back from its latest row since no clock of the pool's runs
-- here. A minute admissions still holds counted the same refusals.
INSERT INTO admissions (minute, refused)
SELECT floor(extract(epoch FROM minute) / 60)::bigint, count
  FROM turn_aways
 WHERE minute >= (SELECT max(minute) FROM turn_aways) - interval '7 days'
ON CONFLICT (minute) DO NOTHING;

DROP TABLE turn_aways;
