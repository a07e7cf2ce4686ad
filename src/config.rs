//! Settings: CLI flags and environment variables, resolved once at start.
//!
//! Label Studio's own variables are honoured so deployments move over unchanged;
//! like Label Studio, each may carry a `LABEL_STUDIO_` or `HEARTEX_` prefix.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything the server needs to start.
#[derive(Clone)]
pub struct Settings {
    /// Interface to listen on.
    pub host: String,
    /// Port to listen on (0 = any free port).
    pub port: u16,
    /// Directory for the SQLite database and other state.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Largest accepted request body, in bytes (all routes but import).
    pub max_body_bytes: usize,
    /// Connection limits and timeouts of the HTTP server, and the import body limit.
    pub http: HttpSettings,
    /// User created (if missing) at start, from `LABEL_STUDIO_USERNAME` etc.
    pub bootstrap_user: Option<BootstrapUser>,
    /// Local-files storage settings.
    pub local_files: LocalFilesSettings,
    /// Sync engine settings.
    pub sync: SyncSettings,
    /// Cloud target settings (SSRF protection, concurrency, retries).
    pub targets: TargetSettings,
    /// Key sealing stored secrets (`LABELPORT_SECRET_KEY`); `None`: the key file in
    /// the data directory. Processes sharing one database must share the key.
    pub secret_key: Option<String>,
}

/// How cloud targets (S3, GCS, Azure, Redis) are reached.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    /// Refuse endpoints that resolve to loopback, private, link-local or reserved
    /// addresses (`SSRF_PROTECTION_ENABLED`, default true, as in Label Studio).
    pub ssrf_protection: bool,
    /// Requests in flight at once per target (`LABELPORT_TARGET_CONCURRENCY`, default 32).
    pub max_in_flight: usize,
    /// Attempts per request on throttling, 5xx and connection errors, with
    /// exponential backoff and jitter (`LABELPORT_TARGET_ATTEMPTS`, default 8).
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt up to 20 s (`LABELPORT_TARGET_BACKOFF_MS`, default 100).
    pub backoff: std::time::Duration,
    /// Time limit of one request (`LABELPORT_TARGET_TIMEOUT_SECS`, default 30).
    pub request_timeout: std::time::Duration,
}

impl TargetSettings {
    /// From the environment, with defaults.
    pub fn from_env() -> TargetSettings {
        let num =
            |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default);
        TargetSettings {
            ssrf_protection: env_flag(std::env::var("SSRF_PROTECTION_ENABLED").ok(), true),
            max_in_flight: num("LABELPORT_TARGET_CONCURRENCY", 32).clamp(1, 1024) as usize,
            max_attempts: num("LABELPORT_TARGET_ATTEMPTS", 8).clamp(1, 100) as u32,
            backoff: std::time::Duration::from_millis(num("LABELPORT_TARGET_BACKOFF_MS", 100).clamp(1, 60_000)),
            request_timeout: std::time::Duration::from_secs(num("LABELPORT_TARGET_TIMEOUT_SECS", 30).clamp(1, 3600)),
        }
    }
}

/// How the sync engine works.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Run the sync worker in this process (`labelport serve`); off for API-only
    /// nodes (`LABELPORT_RUN_WORKER=false`).
    pub run_worker: bool,
    /// On PostgreSQL, learn of new work from other processes through `LISTEN/NOTIFY`
    /// (`LABELPORT_PG_LISTEN`, default true); polling stays as the fallback. Turn it
    /// off behind a pooler that cannot hold a listening session (PgBouncer in
    /// transaction mode).
    pub listen: bool,
    /// Sync a new storage right away (`SYNC_ON_TARGET_STORAGE_CREATION`, default true).
    pub sync_on_create: bool,
    /// fsync each file and its directory before reporting a write done
    /// (`LABELPORT_FSYNC`, default false: survives process crashes, not power cuts).
    pub fsync: bool,
    /// How long a worker's claim on a storage lasts without renewal
    /// (`LABELPORT_LEASE_SECONDS`, default 15); another worker takes over a dead
    /// worker's job this long after its last renewal.
    pub lease: std::time::Duration,
    /// How often idle workers look for work they were not told about
    /// (`LABELPORT_POLL_MS`, default 200).
    pub poll_interval: std::time::Duration,
    /// Annotations read per page (and per checkpoint) of a full sync.
    pub batch_size: i64,
    /// Write batches in flight at once.
    pub writers: usize,
    /// New storages export one file per task (`FUTURE_SAVE_TASK_TO_STORAGE`).
    pub task_mode_default: bool,
    /// Task files end in `.json` (`FUTURE_SAVE_TASK_TO_STORAGE_JSON_EXT`, default true).
    pub task_json_extension: bool,
    /// Debug/test knob: sleep this long before each written batch (`LABELPORT_WRITE_DELAY_MS`).
    pub write_delay: std::time::Duration,
    /// Storages a process works on at once (`LABELPORT_SYNC_PARALLEL_STORAGES`), so a
    /// slow or unreachable target never holds up the others.
    pub parallel_storages: usize,
}

impl SyncSettings {
    /// From the environment, with defaults.
    pub fn from_env() -> SyncSettings {
        let num =
            |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default);
        SyncSettings {
            run_worker: env_flag(std::env::var("LABELPORT_RUN_WORKER").ok(), true),
            listen: env_flag(std::env::var("LABELPORT_PG_LISTEN").ok(), true),
            sync_on_create: env_flag(ls_env("SYNC_ON_TARGET_STORAGE_CREATION"), true),
            fsync: env_flag(std::env::var("LABELPORT_FSYNC").ok(), false),
            lease: std::time::Duration::from_secs(num("LABELPORT_LEASE_SECONDS", 15).max(1)),
            poll_interval: std::time::Duration::from_millis(num("LABELPORT_POLL_MS", 200).max(10)),
            batch_size: num("LABELPORT_SYNC_BATCH", 1000).clamp(1, 10_000) as i64,
            // Creates and renames in one directory serialise on its inode lock: more
            // writers than cores only spin.
            writers: num(
                "LABELPORT_SYNC_WRITERS",
                std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u64,
            )
            .clamp(1, 64) as usize,
            task_mode_default: env_flag(ls_env("FUTURE_SAVE_TASK_TO_STORAGE"), false),
            task_json_extension: env_flag(ls_env("FUTURE_SAVE_TASK_TO_STORAGE_JSON_EXT"), true),
            write_delay: std::time::Duration::from_millis(num("LABELPORT_WRITE_DELAY_MS", 0)),
            parallel_storages: num("LABELPORT_SYNC_PARALLEL_STORAGES", 4).clamp(1, 64) as usize,
        }
    }
}

/// Default largest request body on every route but import: 1 MiB. No Label Studio
/// body other than an import comes near it, and the JSON tree of a body takes many
/// times the body's size in memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Limits that keep one client from exhausting memory, connections or file
/// descriptors (docs/SECURITY.md explains each).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest accepted body of `POST /api/projects/{id}/import`, in bytes.
    pub max_import_bytes: usize,
    /// Most tasks one import may create; more are refused with 400.
    pub max_import_tasks: usize,
    /// Time a client has to send a request's line and headers, counted from when the
    /// server starts waiting for it (a new connection, or the end of the previous response).
    pub header_timeout: std::time::Duration,
    /// Time for a whole request, body upload included; after it the client gets a 408.
    pub request_timeout: std::time::Duration,
    /// A connection with no request in progress and no bytes moved for this long is closed.
    pub keep_alive_timeout: std::time::Duration,
    /// Most connections open at once; past it new ones wait, and idle ones are closed
    /// to make room.
    pub max_connections: usize,
    /// Failed token checks allowed per client address and minute before further
    /// failures are answered 429 (0: no limit).
    pub auth_failures_per_minute: u32,
    /// Bearer token `GET /metrics` requires (`LABELPORT_METRICS_TOKEN`); `None`: open.
    pub metrics_token: Option<SecretString>,
}

/// A secret read from the settings; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(pub String);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            max_import_bytes: 100 * 1024 * 1024,
            max_import_tasks: 100_000,
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(300),
            keep_alive_timeout: std::time::Duration::from_secs(5),
            max_connections: 512,
            auth_failures_per_minute: 30,
            metrics_token: None,
        }
    }
}

/// The user named by `LABEL_STUDIO_USERNAME`, `LABEL_STUDIO_PASSWORD`, `LABEL_STUDIO_USER_TOKEN`.
#[derive(Clone)]
pub struct BootstrapUser {
    /// Email / username.
    pub email: String,
    /// Password, if given.
    pub password: Option<String>,
    /// Legacy token to set, if given.
    pub token: Option<String>,
}

impl fmt::Debug for BootstrapUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapUser")
            .field("email", &self.email)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `LOCAL_FILES_SERVING_ENABLED` and `LOCAL_FILES_DOCUMENT_ROOT`.
#[derive(Debug, Clone)]
pub struct LocalFilesSettings {
    /// Whether local-files storages may be used at all.
    pub serving_enabled: bool,
    /// Root under which every local-files storage path must lie.
    pub document_root: String,
}

impl LocalFilesSettings {
    /// Refuses local files enabled without a document root, or with `/`: every user
    /// could then write into any directory the server can write (issue #12).
    pub fn check(&self) -> anyhow::Result<()> {
        let root = crate::storage::local_path::document_root(self);
        // `/`, `//` and an empty root all have no parent: the whole file system.
        if self.serving_enabled && Path::new(&root).parent().is_none() {
            anyhow::bail!(
                "LOCAL_FILES_SERVING_ENABLED is true but LOCAL_FILES_DOCUMENT_ROOT is unset or `/`, which would let \
                 every user write into any directory this server can write: set LOCAL_FILES_DOCUMENT_ROOT to the \
                 directory that holds the local-files storages (e.g. /data/labels)"
            );
        }
        Ok(())
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("http", &self.http)
            .field("bootstrap_user", &self.bootstrap_user)
            .field("local_files", &self.local_files)
            .field("sync", &self.sync)
            .field("targets", &self.targets)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Hides the password of a database URL.
/// Hides the password of a database URL, given as user info or as a `password`
/// (or `sslpassword`) query parameter.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else { return url.to_owned() };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret = |k: &str| k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
    if u.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) { "***".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Creates the data directory readable by its owner only (it holds the database, the
/// secret key file and the JWT secret); an existing directory keeps its mode.
pub fn create_data_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Reads a Label Studio setting with its optional prefixes.
pub fn ls_env(name: &str) -> Option<String> {
    [format!("LABEL_STUDIO_{name}"), format!("HEARTEX_{name}"), name.to_owned()]
        .iter()
        .find_map(|key| std::env::var(key).ok())
}

/// Django-style truthiness of an environment value.
pub fn env_flag(value: Option<String>, default: bool) -> bool {
    match value.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if ["1", "true", "yes", "y", "on"].contains(&v.as_str()) => true,
        Some(v) if ["0", "false", "no", "n", "off", ""].contains(&v.as_str()) => false,
        _ => default,
    }
}

/// The default database: a SQLite file in the data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("labelport.db").display())
}

impl Settings {
    /// What storage targets need from these settings.
    pub fn target_context(&self) -> crate::storage::spec::TargetContext {
        crate::storage::spec::TargetContext {
            local_files: self.local_files.clone(),
            fsync: self.sync.fsync,
            targets: self.targets.clone(),
        }
    }

    /// Settings for `data_dir` with everything else from the environment.
    pub fn from_env(host: String, port: u16, data_dir: PathBuf, max_body_bytes: usize) -> Settings {
        let database_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| default_database_url(&data_dir));
        let bootstrap_user =
            std::env::var("LABEL_STUDIO_USERNAME").ok().filter(|e| !e.trim().is_empty()).map(|email| BootstrapUser {
                email,
                password: std::env::var("LABEL_STUDIO_PASSWORD").ok().filter(|p| !p.is_empty()),
                token: std::env::var("LABEL_STUDIO_USER_TOKEN").ok().filter(|t| !t.is_empty()),
            });
        Settings {
            host,
            port,
            data_dir,
            database_url,
            max_body_bytes,
            http: HttpSettings::default(),
            bootstrap_user,
            local_files: LocalFilesSettings {
                serving_enabled: env_flag(ls_env("LOCAL_FILES_SERVING_ENABLED"), false),
                document_root: ls_env("LOCAL_FILES_DOCUMENT_ROOT").unwrap_or_else(|| "/".into()),
            },
            sync: SyncSettings::from_env(),
            targets: TargetSettings::from_env(),
            secret_key: std::env::var(crate::secrets::KEY_ENV).ok().filter(|k| !k.trim().is_empty()),
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn database_passwords_are_hidden_wherever_the_url_carries_them() {
        assert_eq!(redact_url("postgres://u:secret@db/x"), "postgres://u:***@db/x");
        let q = redact_url("postgres://u@db/x?sslmode=require&password=secret&PassWord=two");
        assert!(!q.contains("secret") && !q.contains("two"), "{q}");
        assert!(q.contains("sslmode=require"), "{q}");
        assert_eq!(redact_url("sqlite:///data/labelport.db"), "sqlite:///data/labelport.db");
    }

    #[test]
    fn a_new_data_directory_is_private_to_its_owner() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/b");
        create_data_dir(&dir).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
    }
}
