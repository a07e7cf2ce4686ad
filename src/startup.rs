//! Building and running the server: database, bootstrap user, listener, shutdown.

use crate::api::{self, auth, AppState};
use crate::config::{BootstrapUser, Settings};
use crate::db::{Db, DbError, NewUser};
use crate::secrets::SecretBox;
use crate::sync::{default_targets, SyncEngine};
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A server that is bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    engine: Option<SyncEngine>,
}

impl Application {
    /// Connects to the database (running migrations), creates the bootstrap user and
    /// binds the listener. Port 0 picks a free port; see [`Application::port`].
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.local_files.check()?;
        crate::config::create_data_dir(&settings.data_dir)
            .with_context(|| format!("Failed to create the data directory {}", settings.data_dir.display()))?;
        crate::telemetry::metrics::init();
        let db = Db::connect(&settings.database_url).await?;
        let secrets = secret_box(&db, settings.secret_key.as_deref(), &settings.data_dir).await?;
        let db = db.with_secrets(secrets.clone());
        let sealed = db.seal_stored_tokens().await.context("Failed to hash the stored tokens")?;
        if sealed > 0 {
            tracing::info!(tokens = sealed, "stored tokens hashed (and legacy tokens sealed) in place");
        }
        if let Some(user) = &settings.bootstrap_user {
            ensure_user(&db, user).await.context("Failed to create the LABEL_STUDIO_USERNAME user")?;
        }
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(db.pool()).await?;
        if users == 0 {
            tracing::warn!(
                "no users yet: create one with `labelport user create --email ...` or set LABEL_STUDIO_USERNAME \
                 (and LABEL_STUDIO_PASSWORD / LABEL_STUDIO_USER_TOKEN)"
            );
        }
        let secret = jwt_secret(&db, &secrets).await?;
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .await
            .with_context(|| format!("Failed to listen on {}:{}", settings.host, settings.port))?;
        let changes = Arc::new(tokio::sync::Notify::new());
        let engine = settings.sync.run_worker.then(|| engine(&db, &settings, &secrets, changes.clone()));
        let targets = settings.target_context();
        let state =
            AppState { db, settings: Arc::new(settings), jwt: auth::JwtKeys::new(&secret), changes, secrets, targets };
        Ok(Application { listener, state, engine })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The shared state (database handle etc.), e.g. for tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves (and runs the sync worker) until `shutdown` resolves, then finishes
    /// in-flight requests; a running sync job stops at its next checkpoint and
    /// resumes from there on the next start.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state, engine } = self;
        let db = state.db.clone();
        let stop = CancellationToken::new();
        let worker = engine.map(|e| tokio::spawn(e.run_until_stopped(stop.clone())));
        tracing::info!(address = %listener.local_addr()?, "labelport is listening");
        let http = state.settings.http.clone();
        crate::serve::serve_until_stopped(listener, api::router(state), http, shutdown).await;
        stop.cancel();
        if let Some(worker) = worker {
            if let Err(e) = worker.await {
                tracing::error!(error.message = %e, "the sync worker ended abnormally");
            }
        }
        db.close().await;
        Ok(())
    }
}

/// The sync engine for these settings.
pub fn engine(db: &Db, settings: &Settings, secrets: &SecretBox, wake: Arc<tokio::sync::Notify>) -> SyncEngine {
    let targets = default_targets(settings.target_context(), secrets.clone());
    SyncEngine::new(db.clone(), settings.sync.clone(), targets, wake)
}

/// The key for stored secrets, checked against the value sealed with it at first
/// start: another key refuses to start instead of handing out garbage credentials.
pub async fn secret_box(db: &Db, key: Option<&str>, data_dir: &std::path::Path) -> anyhow::Result<SecretBox> {
    crate::config::create_data_dir(data_dir)
        .with_context(|| format!("Failed to create the data directory {}", data_dir.display()))?;
    let secrets = SecretBox::load(key, data_dir)?;
    let stored = db.server_secret(crate::secrets::KEY_CHECK, || secrets.check_value()).await?;
    if !secrets.matches(&stored) {
        anyhow::bail!(
            "the secret key ({} or {} in the data directory) is not the key the stored storage credentials were \
             encrypted with: start with the original key, or re-encrypt them with `labelport secrets rotate`",
            crate::secrets::KEY_ENV,
            crate::secrets::KEY_FILE
        );
    }
    Ok(secrets)
}

/// Name of the JWT signing secret in `server_secrets`.
pub const JWT_SECRET: &str = "jwt_secret";

/// The JWT signing secret, stored sealed with the secret key: 256 random bits on a
/// new installation. One stored in plain text by an older version is sealed in place
/// and kept, so that the personal access tokens already issued stay valid.
pub async fn jwt_secret(db: &Db, secrets: &SecretBox) -> anyhow::Result<String> {
    let stored = db.server_secret(JWT_SECRET, || secrets.seal(crate::db::generate_jwt_secret().as_bytes())).await?;
    let secret = if stored.starts_with("v1:") {
        String::from_utf8(secrets.open(&stored)?).context("the JWT secret is not text")?
    } else {
        if db.replace_server_secret(JWT_SECRET, &stored, &secrets.seal(stored.as_bytes())).await? {
            tracing::info!("the JWT signing secret is now stored sealed");
        }
        stored
    };
    if secret.len() < 64 {
        // Kept so that issued personal access tokens stay valid (docs/SECURITY.md).
        tracing::warn!(
            bits = secret.len() * 4,
            "the JWT signing secret was made by an older version and is shorter than 256 bits"
        );
    }
    Ok(secret)
}

/// Runs only the sync worker (no HTTP), for scale-out on a shared PostgreSQL database.
pub async fn run_worker_until_stopped(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    settings.local_files.check()?;
    crate::telemetry::metrics::init();
    let db = Db::connect(&settings.database_url).await?;
    let secrets = secret_box(&db, settings.secret_key.as_deref(), &settings.data_dir).await?;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        engine(&db, &settings, &secrets, Arc::new(tokio::sync::Notify::new())).run_until_stopped(stop.clone()),
    );
    shutdown.await;
    stop.cancel();
    worker.await?;
    db.close().await;
    Ok(())
}

/// Shortest `LABEL_STUDIO_USER_TOKEN` applied: Label Studio requires more than 5 characters.
const MIN_BOOTSTRAP_TOKEN_CHARS: usize = 6;

/// Creates the user named by `LABEL_STUDIO_USERNAME` if missing, with the
/// `LABEL_STUDIO_USER_TOKEN` legacy token when one of more than 5 characters is set.
/// As in Label Studio, an existing user is left alone: a token reset through the API
/// must not come back at the next start.
pub async fn ensure_user(db: &Db, user: &BootstrapUser) -> anyhow::Result<()> {
    match db.user_by_email(&user.email).await {
        Ok(_) => {
            tracing::info!(email = %user.email, "bootstrap user exists; LABEL_STUDIO_PASSWORD and LABEL_STUDIO_USER_TOKEN apply only when it is created");
        }
        Err(DbError::NotFound) => {
            let password_hash = user.password.as_deref().map(auth::hash_password).transpose()?;
            let token = user.token.as_deref().filter(|t| t.chars().count() >= MIN_BOOTSTRAP_TOKEN_CHARS);
            if user.token.is_some() && token.is_none() {
                tracing::warn!(
                    email = %user.email,
                    "LABEL_STUDIO_USER_TOKEN is not applied: it must be longer than 5 characters; the user gets a random token"
                );
            }
            db.create_user(NewUser {
                email: &user.email,
                password_hash,
                legacy_token: token,
                organization_id: None,
                new_organization: false,
            })
            .await?;
            tracing::info!(email = %user.email, "bootstrap user created");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received, finishing in-flight requests");
}
