-- A refused request is counted once, in admissions.refused (0002), which the turn-away chart
-- now reads; the table of turn-aways (0003) counted the same requests a second time.

-- Its last week (the dashboard's longest window) is kept where admissions has already
-- forgotten the minute, counted back from its latest row since no clock of the pool's runs
-- here. A minute admissions still holds counted the same refusals.
INSERT INTO admissions (minute, refused)
SELECT minute / 60000000, count
  FROM turn_aways
 WHERE minute >= (SELECT max(minute) FROM turn_aways) - 7 * 24 * 60 * 60000000
ON CONFLICT (minute) DO NOTHING;

DROP TABLE turn_aways;
