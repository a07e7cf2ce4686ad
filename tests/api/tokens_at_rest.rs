//! Secrets at rest (issue #12 item 8): the database holds only hashes of the tokens
//! (and the legacy token sealed), tokens of older versions are hashed in place and
//! keep working, the SQLite files are private, and the JWT secret has 256 bits.

use crate::backend_tests;
use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::storages::json_of;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

backend_tests!(
    the_database_holds_no_token_in_plain_text,
    tokens_stored_in_plain_text_by_an_older_version_still_work_after_the_upgrade,
    a_new_installation_signs_with_a_256_bit_secret_stored_sealed,
);

async fn new_pat(app: &TestApp) -> String {
    let r = app.post("/api/token/", &json!({})).await;
    json_of(r, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned()
}

async fn refresh_status(app: &TestApp, pat: &str) -> StatusCode {
    app.anon(Method::POST, "/api/token/refresh/").json(&json!({ "refresh": pat })).send().await.unwrap().status()
}

async fn whoami_status(app: &TestApp, token: &str) -> StatusCode {
    let r = app.anon(Method::GET, "/api/current-user/whoami").header("Authorization", format!("Token {token}"));
    r.send().await.unwrap().status()
}

/// Every text value of the token tables, one string per row.
async fn token_tables(app: &TestApp) -> String {
    let mut all = String::new();
    let pool = app.state.db.pool();
    for row in sqlx::query("SELECT legacy_token, legacy_token_sealed FROM users").fetch_all(pool).await.unwrap() {
        all += &format!("{:?} {:?}\n", row.get::<String, _>(0), row.get::<Option<String>, _>(1));
    }
    for row in sqlx::query("SELECT token, token_hash FROM personal_access_tokens").fetch_all(pool).await.unwrap() {
        all += &format!("{:?} {:?}\n", row.get::<String, _>(0), row.get::<Option<String>, _>(1));
    }
    all
}

/// The bytes of the SQLite database and its WAL, if the app runs on SQLite.
fn sqlite_bytes(app: &TestApp) -> Vec<u8> {
    let db = app.state.settings.data_dir.join("labelport.db");
    ["", "-wal"].iter().filter_map(|suffix| std::fs::read(format!("{}{suffix}", db.display())).ok()).flatten().collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn the_database_holds_no_token_in_plain_text(app: TestApp) {
    // Arrange + Act: the bootstrap token, a reset token, a PAT and a second user
    let bootstrap = app.token.clone();
    let pat = new_pat(&app).await;
    let other = app.user_in_other_organization("other@example.com").await;
    let r = app.post("/api/current-user/reset-token/", &json!({})).await;
    let reset = json_of(r, StatusCode::OK).await["token"].as_str().unwrap().to_owned();
    let signature = pat.rsplit('.').next().unwrap().to_owned();

    // Assert: no token, and no PAT signature, in the tables or the database file
    let tables = token_tables(&app).await;
    let file = sqlite_bytes(&app);
    for (name, secret) in
        [("bootstrap", &bootstrap), ("reset", &reset), ("other", &other), ("pat", &pat), ("signature", &signature)]
    {
        assert!(!tables.contains(secret.as_str()), "{name} token in the tables:\n{tables}");
        assert!(!contains(&file, secret), "{name} token in the SQLite file");
    }
    assert!(tables.contains("sha256:"), "{tables}");
    // Still served where Label Studio serves them
    let as_admin = |path: &str| app.anon(Method::GET, path).header("Authorization", format!("Token {reset}")).send();
    let r = as_admin("/api/current-user/token").await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await["token"], reset);
    let listed = json_of(as_admin("/api/token/").await.unwrap(), StatusCode::OK).await;
    assert_eq!(listed, json!([{ "token": pat.rsplit_once('.').unwrap().0 }]));
    assert_eq!(whoami_status(&app, &reset).await, StatusCode::OK);
    assert_eq!(whoami_status(&app, &other).await, StatusCode::OK);
    assert_eq!(refresh_status(&app, &pat).await, StatusCode::OK);
}

async fn tokens_stored_in_plain_text_by_an_older_version_still_work_after_the_upgrade(app: TestApp) {
    // Arrange: rows as an older version wrote them: a 160-bit JWT secret, the legacy
    // token and the whole PAT (signed with that secret) in plain text
    let old_secret = "00112233445566778899aabbccddeeff00112233";
    let pat = signed_like(&new_pat(&app).await, old_secret);
    let legacy = "0123456789abcdef0123456789abcdef01234567";
    let pool = app.state.db.pool();
    sqlx::query("UPDATE users SET legacy_token = $1, legacy_token_sealed = NULL WHERE email = 'admin@example.com'")
        .bind(legacy)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE personal_access_tokens SET token = $1, token_hash = NULL")
        .bind(&pat)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("UPDATE server_secrets SET value = $1 WHERE name = 'jwt_secret'")
        .bind(old_secret)
        .execute(pool)
        .await
        .unwrap();

    // Act: start a new server on the same database
    let url = app.state.settings.database_url.clone();
    let upgraded = spawn_app_with(Backend::Sqlite, |s| {
        s.database_url = url;
        s.bootstrap_user = None;
    })
    .await;

    // Assert: hashed or sealed in place, and both tokens still authenticate
    let tables = token_tables(&upgraded).await;
    assert!(!tables.contains(legacy) && !tables.contains(&pat), "{tables}");
    assert!(!stored_jwt_secret(&upgraded).await.contains(old_secret), "the JWT secret is sealed in place");
    assert_eq!(whoami_status(&upgraded, legacy).await, StatusCode::OK);
    let r = upgraded.anon(Method::GET, "/api/current-user/token").header("Authorization", format!("Token {legacy}"));
    assert_eq!(json_of(r.send().await.unwrap(), StatusCode::OK).await["token"], legacy);
    assert_eq!(refresh_status(&upgraded, &pat).await, StatusCode::OK);
    let r = upgraded.anon(Method::GET, "/api/token/").header("Authorization", format!("Token {legacy}"));
    assert_eq!(
        json_of(r.send().await.unwrap(), StatusCode::OK).await,
        json!([{ "token": pat.rsplit_once('.').unwrap().0 }])
    );
}

/// `jwt` with the same header and claims, signed with `secret` (HS256).
fn signed_like(jwt: &str, secret: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let unsigned = jwt.rsplit_once('.').unwrap().0;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(unsigned.as_bytes());
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{unsigned}.{signature}")
}

async fn a_new_installation_signs_with_a_256_bit_secret_stored_sealed(app: TestApp) {
    // Act
    let stored = stored_jwt_secret(&app).await;
    let secret = labelport::startup::jwt_secret(&app.state.db, &app.state.secrets).await.unwrap();

    // Assert: 64 hex characters, not in the database as such
    assert_eq!(secret.len(), 64, "{} bits", secret.len() * 4);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(stored.starts_with("v1:") && !stored.contains(&secret), "{stored}");
    assert!(!contains(&sqlite_bytes(&app), &secret), "the secret in the SQLite file");
}

async fn stored_jwt_secret(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'jwt_secret'")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_private_to_their_owner_whatever_their_mode_was() {
    // Arrange: a database file left world-readable by an older version
    let app = spawn_app_with(Backend::Sqlite, |s| {
        std::fs::create_dir_all(&s.data_dir).unwrap();
        let db = s.data_dir.join("labelport.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        s.secret_key = None; // the key file too
    })
    .await;

    // Act: some writes, so that the WAL exists
    app.create_project("written").await;

    // Assert
    let dir = &app.state.settings.data_dir;
    for name in ["labelport.db", "labelport.db-wal", "labelport.db-shm", "secret.key"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sqlite_database_is_created_private() {
    // Arrange: SQLite alone would create it 0644 under the usual umask (022)
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;

    // Assert
    let db = app.state.settings.data_dir.join("labelport.db");
    assert_eq!(mode(&db), 0o600);
}
