-- Hostile customers: signing out of the dashboard revokes the session (its cookie is signed,
-- and would open the dashboard until it expires). A revoked session is kept until then, so
-- that every instance refuses it. The same as the SQLite migration of this name.
CREATE TABLE signed_out_sessions (
    session_id text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
