-- Trust (issue 5). Times are integer microseconds since the Unix epoch (UTC).

-- The key of a return's success page (the redirect names the return, never a payment token).
-- Returns stored before this migration get one of SQLite's random keys.
ALTER TABLE callbacks ADD COLUMN receipt TEXT;
UPDATE callbacks SET receipt = lower(hex(randomblob(16))) WHERE receipt IS NULL;
