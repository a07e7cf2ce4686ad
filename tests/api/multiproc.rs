//! Several labelport processes on one PostgreSQL database (issue #9): two `serve`
//! and one `worker`, real binaries. The one running a sync is killed (SIGKILL) or
//! frozen (SIGSTOP) mid-way: another takes the job over after the lease, nothing is
//! lost, and a frozen worker that wakes does not replace newer work.

use crate::crash::{assert_all_files_complete, call, free_port, TOKEN};
use crate::helpers::PgDatabase;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One labelport process; killed (and woken first, if frozen) on drop.
struct Process {
    name: &'static str,
    child: Child,
    /// The HTTP address of a `serve` process.
    base: Option<String>,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn signal(&self, name: &str) {
        let _ = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
    }

    /// Whether `owner` (a lease owner or job worker name) is this process's engine.
    fn owns(&self, owner: &str) -> bool {
        owner.starts_with(&format!("{}-", self.name))
    }
}

/// Two `serve` (s1, s2) and one `worker` (w) on one database, sharing the data
/// directory (the secret key) and the files root; short leases, slow writes.
struct Cluster {
    processes: Vec<Process>,
    pool: PgPool,
    out: PathBuf,
    _pg: PgDatabase,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let files = tmp.path().join("files");
        std::fs::create_dir_all(files.join("out")).unwrap();
        let files = files.canonicalize().unwrap();
        let data = tmp.path().join("data");
        let pg = PgDatabase::create().await;
        let pool = PgPool::connect(&pg.url()).await.unwrap();
        let mut processes = Vec::new();
        // One at a time: the first runs the migrations and creates the key.
        for name in ["s1", "s2", "w"] {
            processes.push(spawn(name, &data, &files, &pg.url()).await);
        }
        Cluster { processes, pool, out: files.join("out"), _pg: pg, _tmp: tmp }
    }

    fn process(&self, name: &str) -> &Process {
        self.processes.iter().find(|p| p.name == name).unwrap()
    }

    /// A `serve` process other than `not`.
    fn api_other_than(&self, not: &str) -> String {
        self.processes.iter().find(|p| p.name != not && p.base.is_some()).unwrap().base.clone().unwrap()
    }

    /// A project of `n` annotated tasks and a local-files storage whose create-time
    /// sync is under way, written by one process: (project, storage).
    async fn project_syncing(&self, n: usize) -> (i64, i64) {
        let base = self.process("s1").base.clone().unwrap();
        let project = call(Method::POST, format!("{base}/api/projects/"), Some(json!({"title": "multi"}))).await;
        let project = project["id"].as_i64().unwrap();
        let tasks: Vec<Value> =
            (0..n).map(|i| json!({"data": {"n": i}, "annotations": [{"result": [{"v": "first"}]}]})).collect();
        call(Method::POST, format!("{base}/api/projects/{project}/import"), Some(Value::Array(tasks))).await;
        let storage = call(
            Method::POST,
            format!("{base}/api/storages/export/localfiles"),
            Some(json!({"project": project, "path": self.out.display().to_string()})),
        )
        .await;
        (project, storage["id"].as_i64().unwrap())
    }

    /// Waits until the job has checkpointed at least `processed` annotations and
    /// returns the process holding the lease, with the job's checkpoint.
    async fn running_job(&self, storage: i64, processed: i64) -> (&Process, i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let row = sqlx::query(
                "SELECT s.lease_owner, j.state, j.processed, j.checkpoint_id FROM export_storages s \
                 JOIN sync_jobs j ON j.storage_id = s.id WHERE s.id = $1 ORDER BY j.id DESC LIMIT 1",
            )
            .bind(storage)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            let state: String = row.get("state");
            assert_ne!(state, "completed", "the sync finished before it could be interrupted; slow it down");
            let owner: Option<String> = row.get("lease_owner");
            if let (Some(owner), true) = (owner, row.get::<i64, _>("processed") >= processed) {
                if state == "running" {
                    let holder = self.processes.iter().find(|p| p.owns(&owner)).expect("a known owner");
                    return (holder, row.get("checkpoint_id"));
                }
            }
            assert!(Instant::now() < deadline, "the sync never got going");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn lease_owner(&self, storage: i64) -> Option<String> {
        sqlx::query_scalar("SELECT lease_owner FROM export_storages WHERE id = $1")
            .bind(storage)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits until the storage's job completed and auto-export has applied every
    /// change (cursor at the end of the feed, no lease held); returns the storage.
    async fn settled(&self, base: &str, storage: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = call(Method::GET, format!("{base}/api/storages/export/localfiles/{storage}"), None).await;
            let row = sqlx::query(
                "SELECT s.lease_owner, s.cursor_seq, (SELECT COALESCE(MAX(seq), 0) FROM annotation_changes) AS latest \
                 FROM export_storages s WHERE s.id = $1",
            )
            .bind(storage)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            let idle = row.get::<Option<String>, _>("lease_owner").is_none();
            if s["status"] == "completed" && idle && row.get::<i64, _>("cursor_seq") >= row.get::<i64, _>("latest") {
                return s;
            }
            assert!(s["status"] == "in_progress" || s["status"] == "completed", "unexpected state {s}");
            assert!(Instant::now() < deadline, "the storage did not settle: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every annotation's `result` in the database, by id.
    async fn results_in_db(&self, project: i64) -> BTreeMap<i64, Value> {
        sqlx::query("SELECT id, result FROM annotations WHERE project_id = $1")
            .bind(project)
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("id"), serde_json::from_str(r.get::<&str, _>("result")).unwrap()))
            .collect()
    }

    /// The directory holds exactly the database's annotations, each with its latest result.
    async fn assert_directory_equals_database(&self, project: i64) {
        let on_disk = assert_all_files_complete(&self.out);
        let in_db = self.results_in_db(project).await;
        assert_eq!(on_disk, in_db.keys().copied().collect::<BTreeSet<i64>>(), "the directory equals the database");
        for (id, result) in in_db {
            let doc: Value = serde_json::from_slice(&std::fs::read(self.out.join(id.to_string())).unwrap()).unwrap();
            assert_eq!(doc["result"], result, "annotation {id}: the file holds an older version");
        }
    }
}

/// Sets an annotation's result. Sent again once if the connection breaks before an
/// answer: on a loaded machine a request to the debug build was seen to end with
/// hyper's IncompleteMessage about once in six runs (the same PATCH twice is harmless).
async fn patch(base: &str, id: i64, result: Value) {
    let url = format!("{base}/api/annotations/{id}/");
    let send = || {
        reqwest::Client::new()
            .patch(&url)
            .header("Authorization", format!("Token {TOKEN}"))
            .json(&json!({ "result": result }))
            .send()
    };
    let response = match send().await {
        Err(e) if e.is_request() => send().await,
        other => other,
    };
    let status = response.expect("PATCH an annotation").status();
    assert_eq!(status, StatusCode::OK, "PATCH {url}");
}

async fn spawn(name: &'static str, data: &Path, files: &Path, url: &str) -> Process {
    let serve = name != "w";
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelport"));
    if serve {
        cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()]);
    } else {
        cmd.arg("worker");
    }
    cmd.arg("--data-dir")
        .arg(data)
        // The lease owner's name starts with it: tells which process runs the job.
        .env("HOSTNAME", name)
        .env("DATABASE_URL", url)
        .env("LABEL_STUDIO_USERNAME", "admin@example.com")
        .env("LABEL_STUDIO_USER_TOKEN", TOKEN)
        .env("LOCAL_FILES_SERVING_ENABLED", "true")
        .env("LOCAL_FILES_DOCUMENT_ROOT", files)
        .env("LABELPORT_SYNC_BATCH", "50")
        .env("LABELPORT_LEASE_SECONDS", "2")
        // Longer than the test needs: new work arrives by NOTIFY, expired leases by timer.
        .env("LABELPORT_POLL_MS", "5000")
        .env("LABELPORT_WRITE_DELAY_MS", "40")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = cmd.spawn().expect("start the labelport binary");
    let process = Process { name, child, base: serve.then(|| format!("http://127.0.0.1:{port}")) };
    let Some(base) = &process.base else { return process };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status() == StatusCode::OK {
                return process;
            }
        }
        assert!(Instant::now() < deadline, "{name} did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_process_running_a_sync_is_killed_and_another_resumes_it() {
    // Arrange: three processes; a sync under way in one of them.
    let mut cluster = Cluster::start().await;
    let (project, storage) = cluster.project_syncing(3000).await;
    let (holder, _) = cluster.running_job(storage, 300).await;
    let killed = holder.name;
    let base = cluster.api_other_than(killed);

    // Act: SIGKILL it, and keep annotating through a survivor meanwhile.
    let index = cluster.processes.iter().position(|p| p.name == killed).unwrap();
    drop(cluster.processes.remove(index));
    let tasks = call(Method::GET, format!("{base}/api/tasks/?project={project}&page_size=20"), None).await;
    for task in tasks["tasks"].as_array().unwrap() {
        let body = json!({"result": [{"v": "added meanwhile"}]});
        call(Method::POST, format!("{base}/api/tasks/{}/annotations/", task["id"]), Some(body)).await;
    }

    // Assert: another process finished the same job (resumed, not requested again),
    // and the directory equals the database, latest versions included.
    let done = cluster.settled(&base, storage).await;
    assert_eq!(done["meta"]["attempts"], 1, "the job was resumed, not queued again");
    assert!(done["last_sync_count"].as_i64().unwrap() >= 3000, "{done}");
    let generation: i64 = sqlx::query_scalar("SELECT lease_generation FROM export_storages WHERE id = $1")
        .bind(storage)
        .fetch_one(&cluster.pool)
        .await
        .unwrap();
    assert!(generation >= 2, "the lease was claimed again after the kill");
    cluster.assert_directory_equals_database(project).await;
    assert_eq!(cluster.results_in_db(project).await.len(), 3020);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_process_frozen_mid_sync_does_not_overwrite_newer_work_when_it_wakes() {
    // Arrange: three processes; a sync under way in one of them.
    let cluster = Cluster::start().await;
    let (project, storage) = cluster.project_syncing(3000).await;
    let (frozen, checkpoint) = cluster.running_job(storage, 300).await;
    let base = cluster.api_other_than(frozen.name);

    // Act: freeze it with documents of the next pages in hand; once another process
    // has taken the job over, change those annotations and let the job and the
    // automatic export finish elsewhere. Then wake the frozen one.
    frozen.signal("STOP");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.lease_owner(storage).await.is_none_or(|owner| frozen.owns(&owner)) {
        assert!(Instant::now() < deadline, "nobody took the frozen process's job over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_hand: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM annotations WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT 200")
            .bind(project)
            .bind(checkpoint)
            .fetch_all(&cluster.pool)
            .await
            .unwrap();
    let patches = in_hand.iter().map(|id| patch(&base, *id, json!([{"v": "changed while frozen"}])));
    futures::stream::iter(patches).buffer_unordered(8).collect::<Vec<_>>().await;
    cluster.settled(&base, storage).await;
    frozen.signal("CONT");
    // Give the woken process time to do whatever it would (it must do nothing); a
    // wait, not an assertion on timing: on a slow machine the check only gets weaker.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Assert: every file holds the latest version; the woken process works on.
    cluster.settled(&base, storage).await;
    cluster.assert_directory_equals_database(project).await;
    if let Some(woken) = &frozen.base {
        let r = reqwest::get(format!("{woken}/health")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}
