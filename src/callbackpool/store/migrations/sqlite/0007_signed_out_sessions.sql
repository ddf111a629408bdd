-- Hostile customers: signing out of the dashboard revokes the session (its cookie is signed,
-- and would open the dashboard until it expires). A revoked session is kept until then, so
-- that every instance refuses it. Times are integer microseconds since the Unix epoch (UTC).
CREATE TABLE signed_out_sessions (
    session_id TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
