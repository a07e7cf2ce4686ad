-- Sessions of the admin page (cookie sign-in, src/api/admin.rs). Only a SHA-256 hash
-- of each session token is stored, so a leaked database does not leak sessions.
-- Keep in step with the other backend's migration of the same number.
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_user ON admin_sessions(user_id);
