//! Organizations, users, legacy tokens, personal access tokens and server secrets.
//!
//! Tokens at rest (issue #12): `users.legacy_token` holds only [`token_hash`] of the
//! legacy token (users are looked up through its unique index) and
//! `legacy_token_sealed` the token sealed with the secret key, so that
//! `GET /api/current-user/token` can show it as Label Studio does. A personal access
//! token (a signed JWT) is stored as the SHA-256 of the whole token plus its unsigned
//! part (`header.payload`, what `GET /api/token/` lists): neither authenticates.

use super::{Arg, Db, DbError, DbResult, DbRow, FromDbRow};
use crate::time::{now_micros, Micros};
use sqlx::Row;

/// A user and the organization they act in.
#[derive(Debug, Clone)]
pub struct User {
    /// User id.
    pub id: i64,
    /// The user's (only) organization.
    pub organization_id: i64,
    /// Login email.
    pub email: String,
    /// Username (often empty).
    pub username: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// When the user was created.
    pub date_joined: Micros,
    /// Last activity.
    pub last_activity: Micros,
}

const USER_COLUMNS: &str = "id, organization_id, email, username, first_name, last_name, \
                            date_joined, last_activity";

impl FromDbRow for User {
    fn from_row(row: &impl DbRow) -> User {
        User {
            id: row.int("id"),
            organization_id: row.int("organization_id"),
            email: row.text("email"),
            username: row.text("username"),
            first_name: row.text("first_name"),
            last_name: row.text("last_name"),
            date_joined: row.int("date_joined"),
            last_activity: row.int("last_activity"),
        }
    }
}

impl User {
    /// Label Studio's initials: first letters of both names, the one name's first
    /// letter, or the first two characters of the email.
    pub fn initials(&self) -> String {
        let first = |s: &str| s.chars().next().map(String::from).unwrap_or_default();
        match (self.first_name.is_empty(), self.last_name.is_empty()) {
            (false, false) => first(&self.first_name) + &first(&self.last_name),
            (false, true) => first(&self.first_name),
            (true, false) => first(&self.last_name),
            (true, true) => self.email.chars().take(2).collect(),
        }
    }
}

/// An organization.
#[derive(Debug, Clone)]
pub struct Organization {
    /// Organization id.
    pub id: i64,
    /// Display title.
    pub title: String,
    /// Email of its first user (LS's `active_organization_meta.email`).
    pub owner_email: String,
}

/// What is needed to create a user.
pub struct NewUser<'a> {
    /// Login email (unique).
    pub email: &'a str,
    /// argon2 hash of the password, if the user has one.
    pub password_hash: Option<String>,
    /// Legacy token; generated when `None`.
    pub legacy_token: Option<&'a str>,
    /// Organization to join; `None` joins the first organization (created if none exists).
    pub organization_id: Option<i64>,
    /// Create a new organization for this user instead of joining one.
    pub new_organization: bool,
}

/// What the database knows of a personal access token (by its `jti`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalTokenState {
    /// The user it was issued to.
    pub user_id: i64,
    /// Whether it was revoked (blacklisted).
    pub revoked: bool,
}

impl FromDbRow for PersonalTokenState {
    fn from_row(row: &impl DbRow) -> PersonalTokenState {
        PersonalTokenState { user_id: row.int("user_id"), revoked: row.opt_int("revoked_at").is_some() }
    }
}

/// A new random legacy token: 40 hex characters, like Label Studio's.
pub fn generate_legacy_token() -> String {
    random_hex::<20>()
}

/// A new JWT signing secret: 256 random bits, as 64 hex characters.
pub fn generate_jwt_secret() -> String {
    random_hex::<32>()
}

fn random_hex<const N: usize>() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// How a token is stored and looked up: `sha256:` and the hex SHA-256 of its text.
/// Tokens are random (160 bits or more), so an unsalted fast hash is enough.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(token.as_bytes())))
}

/// The unsigned part of a JWT (`header.payload`): what the token list shows.
fn unsigned_part(jwt: &str) -> &str {
    jwt.rsplit_once('.').map_or(jwt, |(head, _)| head)
}

impl Db {
    fn token_box(&self) -> DbResult<&crate::secrets::SecretBox> {
        self.secrets.as_ref().ok_or_else(|| DbError::Other(anyhow::anyhow!("the database handle has no secret key")))
    }

    /// A user's legacy API token (`Authorization: Token <key>`), opened from its sealed
    /// copy only when asked for (not at every request's authentication); empty when
    /// the handle has no key ([`Db::with_secrets`]).
    pub async fn legacy_token(&self, user_id: i64) -> DbResult<String> {
        let sealed: Option<String> = sqlx::query_scalar("SELECT legacy_token_sealed FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        match (&self.secrets, sealed) {
            (Some(secrets), Some(sealed)) => {
                let plain = secrets.open(&sealed).map_err(|e| DbError::Other(e.into()))?;
                String::from_utf8(plain).map_err(|e| DbError::Other(e.into()))
            }
            _ => Ok(String::new()),
        }
    }

    /// Hashes and seals the tokens still stored in plain text by older versions;
    /// returns how many were. Idempotent: run at every start, in one transaction.
    pub async fn seal_stored_tokens(&self) -> DbResult<usize> {
        let secrets = self.token_box()?;
        let mut tx = self.write_tx().await?;
        let users: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, legacy_token FROM users WHERE legacy_token NOT LIKE 'sha256:%'")
                .fetch_all(&mut *tx)
                .await?;
        for (id, token) in &users {
            sqlx::query("UPDATE users SET legacy_token = $1, legacy_token_sealed = $2 WHERE id = $3")
                .bind(token_hash(token))
                .bind(secrets.seal(token.as_bytes()))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let pats: Vec<(String, String)> =
            sqlx::query_as("SELECT jti, token FROM personal_access_tokens WHERE token_hash IS NULL")
                .fetch_all(&mut *tx)
                .await?;
        for (jti, token) in &pats {
            sqlx::query("UPDATE personal_access_tokens SET token = $1, token_hash = $2 WHERE jti = $3")
                .bind(unsigned_part(token))
                .bind(token_hash(token))
                .bind(jti)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(users.len() + pats.len())
    }

    /// Creates a user (and, if needed, its organization).
    pub async fn create_user(&self, new: NewUser<'_>) -> DbResult<User> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let existing_org: Option<i64> = if new.new_organization {
            None
        } else if let Some(id) = new.organization_id {
            Some(sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1").bind(id).fetch_one(&mut *tx).await?)
        } else {
            sqlx::query_scalar("SELECT MIN(id) FROM organizations").fetch_one(&mut *tx).await?
        };
        let org = match existing_org {
            Some(id) => id,
            None => {
                sqlx::query_scalar("INSERT INTO organizations (title, created_at) VALUES ($1, $2) RETURNING id")
                    .bind("Label Studio")
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        let token = new.legacy_token.map(str::to_owned).unwrap_or_else(generate_legacy_token);
        let sealed = self.token_box()?.seal(token.as_bytes());
        let row = sqlx::query(&format!(
            "INSERT INTO users (organization_id, email, password_hash, legacy_token, legacy_token_sealed, \
             date_joined, last_activity) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {USER_COLUMNS}"
        ))
        .bind(org)
        .bind(new.email)
        .bind(new.password_hash)
        .bind(token_hash(&token))
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(User::from_row(&row))
    }

    /// Looks a user up by email.
    pub async fn user_by_email(&self, email: &str) -> DbResult<User> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"))
            .bind(email)
            .fetch_one(&self.pool)
            .await?;
        Ok(User::from_row(&row))
    }

    /// Looks a user up by id.
    pub async fn user_by_id(&self, id: i64) -> DbResult<User> {
        self.read_one(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), vec![Arg::Int(id)]).await
    }

    /// The users of these ids (repeated or not) that exist, in one statement.
    pub async fn users_by_ids(&self, ids: &[i64]) -> DbResult<Vec<User>> {
        let ids: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id IN ({})", self.id_list_param(1));
        let ids = serde_json::to_string(&ids).map_err(|e| DbError::Other(e.into()))?;
        self.read(sql, vec![Arg::Text(ids)]).await
    }

    /// Looks a user up by legacy token.
    pub async fn user_by_legacy_token(&self, token: &str) -> DbResult<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE legacy_token = $1");
        self.read_one(sql, vec![Arg::Text(token_hash(token))]).await
    }

    /// Replaces a user's legacy token.
    pub async fn set_legacy_token(&self, user_id: i64, token: &str) -> DbResult<()> {
        let sealed = self.token_box()?.seal(token.as_bytes());
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET legacy_token = $1, legacy_token_sealed = $2 WHERE id = $3")
            .bind(token_hash(token))
            .bind(sealed)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(&self, user_id: i64, hash: &str) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The organization with its owner's email.
    pub async fn organization(&self, id: i64) -> DbResult<Organization> {
        let row = sqlx::query(
            "SELECT o.id, o.title, COALESCE((SELECT u.email FROM users u WHERE u.organization_id = o.id \
             ORDER BY u.id LIMIT 1), '') AS owner_email FROM organizations o WHERE o.id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Organization { id: row.get("id"), title: row.get("title"), owner_email: row.get("owner_email") })
    }

    /// Whether `user_id` is a member of `organization_id`.
    pub async fn user_in_organization(&self, user_id: i64, organization_id: i64) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1 AND organization_id = $2")
            .bind(user_id)
            .bind(organization_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Reads a server-wide secret, creating it with `make` on first use. All processes
    /// sharing the database agree on the value.
    pub async fn server_secret(&self, name: &str, make: impl FnOnce() -> String) -> DbResult<String> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(make())
            .execute(&mut *tx)
            .await?;
        let value = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Replaces a server-wide secret if it still has the value `old` (compare and set,
    /// so that processes starting at once agree); returns whether it did.
    pub async fn replace_server_secret(&self, name: &str, old: &str, new: &str) -> DbResult<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE server_secrets SET value = $1 WHERE name = $2 AND value = $3")
            .bind(new)
            .bind(name)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a new personal access token; fails with [`DbError::Conflict`] if the user
    /// already has a live one.
    pub async fn create_personal_token(
        &self,
        user_id: i64,
        jti: &str,
        token: &str,
        expires_at: Micros,
    ) -> DbResult<()> {
        let now = now_micros();
        let mut tx = self.write_tx().await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM personal_access_tokens WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(user_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if live > 0 {
            return Err(DbError::Conflict);
        }
        sqlx::query(
            "INSERT INTO personal_access_tokens (jti, user_id, token, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(jti)
        .bind(user_id)
        .bind(unsigned_part(token))
        .bind(token_hash(token))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The unsigned parts (`header.payload`) of the user's live personal access
    /// tokens, oldest first.
    pub async fn personal_tokens(&self, user_id: i64) -> DbResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT token FROM personal_access_tokens WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at",
        )
        .bind(user_id)
        .bind(now_micros())
        .fetch_all(&self.pool)
        .await?)
    }

    /// The owner of a personal access token and whether it is revoked: `None` if unknown.
    pub async fn personal_token_state(&self, jti: &str) -> DbResult<Option<PersonalTokenState>> {
        let sql = "SELECT user_id, revoked_at FROM personal_access_tokens WHERE jti = $1";
        Ok(self.read(sql.to_owned(), vec![Arg::Text(jti.to_owned())]).await?.into_iter().next())
    }

    /// Whether `token` is, byte for byte, a personal access token this server issued.
    pub async fn is_personal_token(&self, token: &str) -> DbResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM personal_access_tokens WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Revokes a personal access token.
    pub async fn revoke_personal_token(&self, jti: &str) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE personal_access_tokens SET revoked_at = $1 WHERE jti = $2 AND revoked_at IS NULL")
            .bind(now_micros())
            .bind(jti)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
