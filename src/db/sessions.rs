//! Sessions of the admin page: a random token in an HttpOnly cookie, stored here only
//! as its SHA-256 hash, with an expiry.

use super::{Db, DbResult};
use crate::time::{now_micros, Micros};

impl Db {
    /// The password hash of the user with this email: `None` if there is no such user
    /// or the user has no password.
    pub async fn password_hash_by_email(&self, email: &str) -> DbResult<Option<(i64, String)>> {
        let row: Option<(i64, Option<String>)> = sqlx::query_as("SELECT id, password_hash FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|(id, hash)| hash.map(|h| (id, h))))
    }

    /// Stores a new session; expired sessions are removed on the way.
    pub async fn create_session(&self, token_hash: &str, user_id: i64, expires_at: Micros) -> DbResult<()> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO admin_sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user id of a live (unexpired) session.
    pub async fn session_user_id(&self, token_hash: &str) -> DbResult<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT user_id FROM admin_sessions WHERE token_hash = $1 AND expires_at > $2")
            .bind(token_hash)
            .bind(now_micros())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Ends a session (signing out).
    pub async fn delete_session(&self, token_hash: &str) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1").bind(token_hash).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
