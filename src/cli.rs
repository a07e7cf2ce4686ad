//! The command line: `serve`, admin commands for users and tokens, and `storages`
//! (a client of a running server).

pub mod storages;

use crate::config::{default_database_url, HttpSettings, Settings, DEFAULT_MAX_BODY_BYTES};
use crate::db::{Db, NewUser};
use crate::startup::{shutdown_signal, Application};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// labelport: a Label Studio-compatible export-storage server.
#[derive(Debug, Parser)]
#[command(name = "labelport", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command is a client of a running server (`storages`).
    pub fn is_client(&self) -> bool {
        matches!(self.command, Command::Storages { .. })
    }
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct Common {
    /// Directory for the embedded database and other state.
    #[arg(long, global = true, env = "LABELPORT_DATA_DIR", default_value = "./labelport-data")]
    pub data_dir: PathBuf,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Interface to listen on.
        #[arg(long, env = "LABELPORT_HOST", default_value = "127.0.0.1")]
        host: String,
        /// Port to listen on (0 picks a free one).
        #[arg(long, env = "LABELPORT_PORT", default_value_t = 8080)]
        port: u16,
        /// Largest accepted request body in bytes, on every route but import (larger ones get 413).
        #[arg(long, env = "LABELPORT_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Run only the sync worker (several may share one PostgreSQL database).
    Worker {
        #[command(flatten)]
        common: Common,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Export storages of a running server, over its HTTP API.
    Storages {
        #[command(flatten)]
        remote: storages::Remote,
        #[command(subcommand)]
        command: storages::StoragesCommand,
    },
    /// Manage the key that seals stored storage credentials.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

/// `labelport secrets …`
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-encrypt every stored secret under a new key. Stop the servers and workers
    /// first, and start them again with the new key.
    Rotate {
        /// The new key (32 bytes, base64 or hex); generated when omitted. With
        /// LABELPORT_SECRET_KEY in use, set it to the printed key afterwards; with the
        /// key file in the data directory, the file is replaced.
        #[arg(long, env = "LABELPORT_NEW_SECRET_KEY", hide_env_values = true)]
        new_key: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

/// Limits and timeouts of the HTTP server (docs/SECURITY.md).
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Largest accepted body of `POST /api/projects/{id}/import`, in bytes.
    #[arg(long, env = "LABELPORT_MAX_IMPORT_BYTES", default_value_t = HttpSettings::default().max_import_bytes)]
    pub max_import_bytes: usize,
    /// Most tasks one import may create (more get 400).
    #[arg(long, env = "LABELPORT_MAX_IMPORT_TASKS", default_value_t = HttpSettings::default().max_import_tasks)]
    pub max_import_tasks: usize,
    /// Seconds a client has to send a request's headers (slow or half-sent ones are closed).
    #[arg(long, env = "LABELPORT_HEADER_TIMEOUT_SECS", default_value_t = HttpSettings::default().header_timeout.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a whole request may take, body upload included (then 408).
    #[arg(long, env = "LABELPORT_REQUEST_TIMEOUT_SECS", default_value_t = HttpSettings::default().request_timeout.as_secs())]
    pub request_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(
        long,
        env = "LABELPORT_KEEP_ALIVE_TIMEOUT_SECS",
        default_value_t = HttpSettings::default().keep_alive_timeout.as_secs()
    )]
    pub keep_alive_timeout_secs: u64,
    /// Most connections open at once.
    #[arg(long, env = "LABELPORT_MAX_CONNECTIONS", default_value_t = HttpSettings::default().max_connections)]
    pub max_connections: usize,
    /// Failed token checks per client address and minute before further failures get 429 (0: no limit).
    #[arg(
        long,
        env = "LABELPORT_AUTH_FAILURES_PER_MINUTE",
        default_value_t = HttpSettings::default().auth_failures_per_minute
    )]
    pub auth_failures_per_minute: u32,
    /// Bearer token `GET /metrics` requires; unset or empty: no token needed.
    #[arg(long, env = "LABELPORT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

impl HttpArgs {
    /// The settings these flags describe; zero durations and counts are raised to the smallest useful value.
    pub fn settings(&self) -> HttpSettings {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        HttpSettings {
            max_import_bytes: self.max_import_bytes,
            max_import_tasks: self.max_import_tasks.max(1),
            header_timeout: secs(self.header_timeout_secs),
            request_timeout: secs(self.request_timeout_secs),
            keep_alive_timeout: secs(self.keep_alive_timeout_secs),
            max_connections: self.max_connections.max(1),
            auth_failures_per_minute: self.auth_failures_per_minute,
            metrics_token: self
                .metrics_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| crate::config::SecretString(t.to_owned())),
        }
    }
}

/// `labelport user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (in the first organization unless --new-organization).
    Create {
        /// Login email.
        #[arg(long)]
        email: String,
        /// Password (stored as an argon2 hash).
        #[arg(long)]
        password: Option<String>,
        /// Put the user in a new organization of its own.
        #[arg(long)]
        new_organization: bool,
        #[command(flatten)]
        common: Common,
    },
}

/// `labelport token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a user's legacy API token (for `Authorization: Token <key>`).
    Create {
        /// The user's email.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        common: Common,
    },
}

async fn open_db(common: &Common) -> anyhow::Result<Db> {
    crate::config::create_data_dir(&common.data_dir)
        .with_context(|| format!("Failed to create the data directory {}", common.data_dir.display()))?;
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| default_database_url(&common.data_dir));
    Db::connect(&url).await
}

/// The database with the key that seals legacy tokens (checked as the server does),
/// its stored tokens hashed as the server does at start.
async fn open_db_with_secrets(common: &Common) -> anyhow::Result<Db> {
    let db = open_db(common).await?;
    let key = std::env::var(crate::secrets::KEY_ENV).ok().filter(|k| !k.trim().is_empty());
    let secrets = crate::startup::secret_box(&db, key.as_deref(), &common.data_dir).await?;
    let db = db.with_secrets(secrets);
    db.seal_stored_tokens().await?;
    Ok(db)
}

/// Runs the parsed command line. Admin commands print their result to stdout.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { host, port, max_body_bytes, http, common } => {
            let mut settings = Settings::from_env(host, port, common.data_dir, max_body_bytes);
            settings.http = http.settings();
            tracing::info!(settings = ?settings, "starting");
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Worker { common } => {
            let settings = Settings::from_env(String::new(), 0, common.data_dir, 0);
            tracing::info!(settings = ?settings, "starting a sync worker");
            crate::startup::run_worker_until_stopped(settings, shutdown_signal()).await
        }
        Command::User { command: UserCommand::Create { email, password, new_organization, common } } => {
            let db = open_db_with_secrets(&common).await?;
            let password_hash = password.as_deref().map(crate::api::auth::hash_password).transpose()?;
            let user = db
                .create_user(NewUser {
                    email: &email,
                    password_hash,
                    legacy_token: None,
                    organization_id: None,
                    new_organization,
                })
                .await
                .map_err(|e| match e {
                    crate::db::DbError::Conflict => {
                        anyhow::anyhow!("a user with email {email} already exists")
                    }
                    e => anyhow::anyhow!(e),
                })?;
            println!("created user {} (id {}, organization {})", user.email, user.id, user.organization_id);
            Ok(())
        }
        Command::Storages { remote, command } => storages::run(remote, command).await,
        Command::Secrets { command: SecretsCommand::Rotate { new_key, common } } => {
            rotate_secrets(&common, new_key.as_deref()).await
        }
        Command::Token { command: TokenCommand::Create { email, common } } => {
            let db = open_db_with_secrets(&common).await?;
            let user = db.user_by_email(&email).await.map_err(|_| anyhow::anyhow!("no user with email {email}"))?;
            println!("{}", db.legacy_token(user.id).await?);
            Ok(())
        }
    }
}

/// `labelport secrets rotate`: checks the current key, re-seals every storage's
/// secrets and the check value under the new key in one transaction, then replaces
/// the key file (when that is where the key lives).
async fn rotate_secrets(common: &Common, new_key: Option<&str>) -> anyhow::Result<()> {
    use crate::secrets::{write_key_file, SecretBox, KEY_CHECK, KEY_ENV, KEY_FILE};
    let db = open_db(common).await?;
    let env_key = std::env::var(KEY_ENV).ok().filter(|k| !k.trim().is_empty());
    let current = SecretBox::load(env_key.as_deref(), &common.data_dir)?;
    let stored = db.server_secret(KEY_CHECK, || current.check_value()).await?;
    anyhow::ensure!(
        current.matches(&stored),
        "the current key ({KEY_ENV} or {KEY_FILE}) does not open the stored secrets; nothing was changed"
    );
    let generated = new_key.is_none();
    let new_text = match new_key {
        Some(k) => k.trim().to_owned(),
        None => SecretBox::generate_key(),
    };
    let next = SecretBox::new(&SecretBox::parse_key(&new_text).context("the new key is invalid")?);
    // The new key is on disk before the database switches to it, so a crash in
    // between never leaves secrets sealed under a key that exists nowhere.
    let key_path = common.data_dir.join(KEY_FILE);
    let staged = common.data_dir.join(format!("{KEY_FILE}.new"));
    if env_key.is_none() {
        let _ = std::fs::remove_file(&staged);
        write_key_file(&staged, &new_text)?;
    }
    let count = db
        .reseal_secrets(
            |sealed| {
                let plain = current.open(sealed)?;
                Ok(next.seal(&plain))
            },
            KEY_CHECK,
            &next.check_value(),
        )
        .await?;
    if env_key.is_none() {
        std::fs::rename(&staged, &key_path).with_context(|| {
            format!("Failed to replace {}; the new key is in {}", key_path.display(), staged.display())
        })?;
        println!("re-encrypted the secrets of {count} storage(s); {} holds the new key", key_path.display());
    } else {
        println!("re-encrypted the secrets of {count} storage(s); start labelport with {KEY_ENV} set to the new key");
        if generated {
            println!("{new_text}");
        }
    }
    Ok(())
}
