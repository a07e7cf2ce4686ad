//! Crash safety: SIGKILL the server in the middle of a sync, or stop it with SIGTERM,
//! restart it, and the job resumes from its checkpoint and completes; every file
//! parses and the directory equals the database.

use crate::helpers::{Backend, PgDatabase};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef01234567";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(data: &Path, files: &Path, database_url: Option<&str>, slow: bool) -> Server {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelport"));
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--data-dir"])
        .arg(data)
        .env("LABEL_STUDIO_USERNAME", "admin@example.com")
        .env("LABEL_STUDIO_USER_TOKEN", TOKEN)
        .env("LOCAL_FILES_SERVING_ENABLED", "true")
        .env("LOCAL_FILES_DOCUMENT_ROOT", files)
        .env("LABELPORT_SYNC_BATCH", "100")
        .env("LABELPORT_LEASE_SECONDS", "2")
        .env("LABELPORT_POLL_MS", "50")
        .env("LABELPORT_WRITE_DELAY_MS", if slow { "40" } else { "0" })
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    match database_url {
        Some(url) => cmd.env("DATABASE_URL", url),
        None => cmd.env_remove("DATABASE_URL"),
    };
    let child = cmd.spawn().expect("start the labelport binary");
    let server = Server { child, base: format!("http://127.0.0.1:{port}") };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/health", server.base)).send().await {
            if r.status() == StatusCode::OK {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "server did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, url).header("Authorization", format!("Token {TOKEN}"));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.expect("request");
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

pub(crate) fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

/// Every file that exists parses and names its annotation: no partial documents.
pub(crate) fn assert_all_files_complete(dir: &Path) -> BTreeSet<i64> {
    let mut ids = BTreeSet::new();
    for path in files_in(dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(".labelport-tmp-") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name} is not complete JSON: {e}"));
        assert_eq!(doc["id"].as_i64().map(|i| i.to_string()), Some(name.clone()));
        ids.insert(doc["id"].as_i64().unwrap());
    }
    ids
}

/// How the server is stopped mid-sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful stop, which must exit cleanly and soon.
    Term,
}

/// Sends SIGTERM and waits (bounded) for a successful exit.
async fn terminate(mut server: Server) {
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not stop within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "graceful exit status, got {exit:?}");
}

async fn a_sync_stopped_mid_way_resumes_after_restart_and_completes(backend: Backend, how: Stop) {
    // Arrange: a project with enough annotations that a slowed sync takes seconds.
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files").canonicalize().unwrap_or_else(|_| {
        std::fs::create_dir_all(tmp.path().join("files/out")).unwrap();
        tmp.path().join("files").canonicalize().unwrap()
    });
    let out = files.join("out");
    let data = tmp.path().join("data");
    let pg = match backend {
        Backend::Postgres => Some(PgDatabase::create().await),
        Backend::Sqlite => None,
    };
    let url = pg.as_ref().map(PgDatabase::url);
    let server = start(&data, &files, url.as_deref(), true).await;
    let base = server.base.clone();
    let project = call(reqwest::Method::POST, format!("{base}/api/projects/"), Some(json!({"title": "crash"}))).await;
    let project = project["id"].as_i64().unwrap();
    let tasks: Vec<Value> = (0..3000)
        .map(|i| json!({"data": {"text": format!("task {i} h\u{e9}llo")}, "annotations": [{"result": [{"value": {"n": i}}]}]}))
        .collect();
    call(reqwest::Method::POST, format!("{base}/api/projects/{project}/import"), Some(Value::Array(tasks))).await;

    // Act: the sync starts on creation; kill the server while it is in progress.
    let storage = call(
        reqwest::Method::POST,
        format!("{base}/api/storages/export/localfiles"),
        Some(json!({"project": project, "path": out.display().to_string()})),
    )
    .await;
    let id = storage["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = call(reqwest::Method::GET, format!("{base}/api/storages/export/localfiles/{id}"), None).await;
        if s["status"] == "in_progress" && s["last_sync_count"].as_i64().unwrap_or(0) >= 300 {
            break;
        }
        assert_ne!(s["status"], "completed", "the sync finished before it could be interrupted; slow it down");
        assert!(Instant::now() < deadline, "the sync never got going: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match how {
        Stop::Kill => drop(server),
        Stop::Term => terminate(server).await,
    }
    let before = assert_all_files_complete(&out);
    assert!(!before.is_empty() && before.len() < 3000, "killed mid-way: {} files", before.len());

    // Restart on the same data and wait for the job to finish.
    let server = start(&data, &files, url.as_deref(), false).await;
    let base = server.base.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let s = call(reqwest::Method::GET, format!("{base}/api/storages/export/localfiles/{id}"), None).await;
        if s["status"] == "completed" {
            break s;
        }
        assert!(s["status"] == "in_progress" || s["status"] == "queued", "unexpected state {s}");
        assert!(Instant::now() < deadline, "the job did not resume: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Assert: resumed (not re-queued), and the directory equals the database.
    assert_eq!(done["meta"]["attempts"], 1, "the job was resumed, not requested again");
    assert_eq!(done["last_sync_count"], 3000);
    let on_disk = assert_all_files_complete(&out);
    let mut in_db = BTreeSet::new();
    for page in 1..=3 {
        // Pages hold at most 1000 tasks.
        let url = format!("{base}/api/tasks/?project={project}&page_size=1000&page={page}");
        let listed = call(reqwest::Method::GET, url, None).await;
        in_db.extend(listed["tasks"].as_array().unwrap().iter().flat_map(|t| {
            t["annotations_ids"].as_str().unwrap().split(',').map(|i| i.parse::<i64>().unwrap()).collect::<Vec<_>>()
        }));
    }
    assert_eq!(in_db.len(), 3000);
    assert_eq!(on_disk, in_db, "the directory equals the database");
    assert!(
        files_in(&out).iter().all(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".labelport-tmp-")),
        "no temporary files remain"
    );
    drop(server);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_sync_killed_mid_way_resumes_after_restart_and_completes() {
    a_sync_stopped_mid_way_resumes_after_restart_and_completes(Backend::Sqlite, Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_sync_killed_mid_way_resumes_after_restart_and_completes() {
    a_sync_stopped_mid_way_resumes_after_restart_and_completes(Backend::Postgres, Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_sync_stopped_by_sigterm_mid_way_resumes_after_restart_and_completes() {
    a_sync_stopped_mid_way_resumes_after_restart_and_completes(Backend::Sqlite, Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_sync_stopped_by_sigterm_mid_way_resumes_after_restart_and_completes() {
    a_sync_stopped_mid_way_resumes_after_restart_and_completes(Backend::Postgres, Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_gracefully() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("files")).unwrap();
    let server = start(&tmp.path().join("data"), &tmp.path().join("files"), None, false).await;
    terminate(server).await;
}
