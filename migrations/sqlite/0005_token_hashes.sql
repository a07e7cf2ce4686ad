-- Tokens at rest (issue #12). Keep in step with the migration of the same number
-- of the other database.
--
-- users.legacy_token now holds 'sha256:' || hex(SHA-256(token)), still under its
-- unique index, and legacy_token_sealed the token sealed with the secret key (shown
-- back by GET /api/current-user/token). personal_access_tokens.token holds only the
-- unsigned part of the JWT (header.payload, what GET /api/token/ lists) and
-- token_hash the hash of the whole token.
--
-- Rows written by older versions are hashed and sealed in place by the server at
-- start, in one transaction (Db::seal_stored_tokens): SQLite has no SHA-256
-- function, and sealing needs the key, which the database never holds.
ALTER TABLE users ADD COLUMN legacy_token_sealed TEXT;
ALTER TABLE personal_access_tokens ADD COLUMN token_hash TEXT;
CREATE UNIQUE INDEX personal_access_tokens_hash ON personal_access_tokens(token_hash);
