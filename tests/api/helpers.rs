//! Test harness: the real server on port 0 with a temp data dir, on SQLite or on a
//! fresh PostgreSQL database (dropped afterwards), and one HTTP client.

use labelport::api::AppState;
use labelport::config::{HttpSettings, LocalFilesSettings, Settings, SyncSettings, TargetSettings};
use labelport::db::NewUser;
use labelport::startup::Application;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use tempfile::TempDir;

/// The `LABELPORT_SECRET_KEY` of test servers (32 bytes, hex).
pub const TEST_SECRET_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed `async fn(TestApp)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await).await
                }
            )*
        }
    };
}

/// Like [`backend_tests!`], for `async fn(Backend)`s that start their own server.
#[macro_export]
macro_rules! backend_fn_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// PostgreSQL server used by the tests (trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("LABELPORT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh PostgreSQL database, dropped (with its connections) on drop.
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let name = format!("labelport_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_admin_url()))
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 for the tests (LABELPORT_TEST_POSTGRES overrides)");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        PgDatabase { name }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", postgres_admin_url(), self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_admin_url())).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    /// Legacy token of the bootstrap user `admin@example.com`.
    pub token: String,
    pub client: reqwest::Client,
    pub state: AppState,
    /// `LOCAL_FILES_DOCUMENT_ROOT` of this server (exists, empty at start).
    pub files_root: PathBuf,
    _data_dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _pg: Option<PgDatabase>,
}

/// Starts a server on `backend` with default test settings.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts a server, letting the test adjust the settings first.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    init_test_logging();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let files_root = data_dir.path().join("files");
    std::fs::create_dir_all(&files_root).unwrap();
    let files_root = files_root.canonicalize().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgDatabase::create().await),
    };
    let token = labelport::db::generate_legacy_token();
    let mut settings = Settings {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: data_dir.path().join("data"),
        database_url: match &pg {
            Some(pg) => pg.url(),
            None => labelport::config::default_database_url(&data_dir.path().join("data")),
        },
        max_body_bytes: 1024 * 1024,
        http: HttpSettings { max_import_bytes: 4 * 1024 * 1024, ..HttpSettings::default() },
        bootstrap_user: Some(labelport::config::BootstrapUser {
            email: "admin@example.com".into(),
            password: None,
            token: Some(token.clone()),
        }),
        local_files: LocalFilesSettings { serving_enabled: true, document_root: files_root.display().to_string() },
        sync: SyncSettings { poll_interval: std::time::Duration::from_millis(50), ..SyncSettings::from_env() },
        // The emulators of the tests listen on loopback.
        targets: TargetSettings { ssrf_protection: false, ..TargetSettings::from_env() },
        // One key for every test server, so servers sharing a database can start.
        secret_key: Some(TEST_SECRET_KEY.into()),
    };
    configure(&mut settings);
    let token = settings.bootstrap_user.as_ref().and_then(|u| u.token.clone()).unwrap_or(token);
    let app = Application::build(settings).await.expect("server builds");
    let port = app.port();
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        token,
        client: reqwest::Client::new(),
        state,
        files_root,
        _data_dir: data_dir,
        shutdown: Some(tx),
        server: Some(server),
        _pg: pg,
    }
}

fn init_test_logging() {
    if std::env::var("TEST_LOG").is_ok() {
        labelport::telemetry::init();
    }
}

impl TestApp {
    /// A request with the admin's legacy token.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.address))
            .header("Authorization", format!("Token {}", self.token))
    }

    /// A request without credentials.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.address))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.req(Method::GET, path).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.req(Method::POST, path).json(body).send().await.expect("request")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.req(Method::PATCH, path).json(body).send().await.expect("request")
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.req(Method::PUT, path).json(body).send().await.expect("request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.req(Method::DELETE, path).send().await.expect("request")
    }

    /// Creates a project and returns its id.
    pub async fn create_project(&self, title: &str) -> i64 {
        let r = self.post("/api/projects/", &serde_json::json!({ "title": title })).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// Imports tasks (each `{"data": ...}` or flat) and returns their ids.
    pub async fn import(&self, project: i64, tasks: &Value) -> Vec<i64> {
        let r = self.post(&format!("/api/projects/{project}/import?return_task_ids=true"), tasks).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let body: Value = r.json().await.unwrap();
        body["task_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
    }

    /// Creates an annotation and returns its JSON.
    pub async fn annotate(&self, task: i64, body: &Value) -> Value {
        let r = self.post(&format!("/api/tasks/{task}/annotations/"), body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    /// A user in a new organization of its own; returns its legacy token.
    pub async fn user_in_other_organization(&self, email: &str) -> String {
        let user = self
            .state
            .db
            .create_user(NewUser {
                email,
                password_hash: None,
                legacy_token: None,
                organization_id: None,
                new_organization: true,
            })
            .await
            .unwrap();
        self.state.db.legacy_token(user.id).await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Checks a JSON error body in Label Studio's shape and returns it.
pub async fn assert_error(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "errors are JSON"
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["status_code"].as_u64(), Some(status.as_u16() as u64), "{body}");
    assert!(body["id"].is_string(), "{body}");
    assert!(body["detail"].is_string(), "{body}");
    assert!(body.get("exc_info").is_some(), "{body}");
    body
}

/// What [`BeforePut`] runs before each write, given the key.
pub type PutHook = Box<dyn Fn(&str) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// An in-memory target that runs a hook before each write and is otherwise `inner`:
/// a target that hangs, panics or has its storage changed at a write.
pub struct BeforePut {
    pub inner: labelport::storage::InMemory,
    pub hook: PutHook,
}

impl std::fmt::Display for BeforePut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BeforePut({})", self.inner)
    }
}

#[async_trait::async_trait]
impl labelport::storage::StorageTarget for BeforePut {
    async fn validate(&self) -> labelport::storage::Result<()> {
        self.inner.validate().await
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> labelport::storage::Result<()> {
        (self.hook)(key).await;
        self.inner.put(key, body).await
    }
    async fn delete(&self, key: &str) -> labelport::storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn size(&self, key: &str) -> labelport::storage::Result<Option<u64>> {
        self.inner.size(key).await
    }
}
