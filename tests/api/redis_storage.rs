//! The `redis` export storage (contract §6.6, issue 8) against real redis-servers:
//! the conformance suite, the endpoint family with Label Studio's fields and
//! messages, what a sync writes, auto-export and deletion, SSRF, passwords, and a
//! server killed and restarted mid-sync.
//!
//! Most tests share the run's redis-server (`LABELPORT_TEST_REDIS`) and lease a
//! database of their own on it ([`TestDb`]), so parallel tests never see each
//! other's keys (annotation ids repeat across test servers). Tests that need a
//! password or kill the server start a redis-server of their own ([`OwnRedis`]).

use crate::emulators::redis_address;
use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::storages::{
    annotate, annotated_project, create_storage, json_of, keys, make_dir, non_field_error, validation_errors,
    wait_completed,
};
use crate::{backend_tests, configured_backend_tests};
use bytes::Bytes;
use labelport::storage::redis::DB_REQUIRED;
use labelport::storage::spec::{TargetConfig, TargetContext};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const RS: &str = "/api/storages/export/redis";

/// Keys of a redis storage, in Label Studio's order, plus our `export_mode`.
const REDIS_KEYS: &[&str] = &[
    "id",
    "type",
    "synchronizable",
    "path",
    "host",
    "port",
    "regex_filter",
    "use_blob_urls",
    "last_sync",
    "last_sync_count",
    "last_sync_job",
    "status",
    "traceback",
    "meta",
    "title",
    "description",
    "created_at",
    "can_delete_objects",
    "db",
    "project",
    "export_mode",
];

backend_tests!(
    a_redis_storage_has_label_studios_fields_order_and_defaults_and_never_returns_the_password,
    db_zero_or_null_is_refused_with_label_studios_message,
    patching_a_redis_storage_does_not_check_the_connection,
    an_unreachable_server_is_a_400_with_the_cause_on_create_and_the_generic_message_on_validate,
    a_sync_writes_every_annotation_under_its_bare_id_with_the_engines_document,
    task_mode_writes_one_key_per_task,
    annotations_are_auto_exported_on_create_and_update_and_deleted_only_with_can_delete_objects,
    a_full_sync_restores_a_key_deleted_by_hand_and_rewrites_nothing_else,
    a_password_protected_server_needs_the_right_password_which_is_never_shown_nor_stored_in_plain_text,
);

configured_backend_tests!(
    with_ssrf_protection_on_reserved_hosts_are_refused_on_create_and_validate,
    a_server_killed_and_restarted_mid_sync_loses_nothing_the_job_completes,
    a_server_without_persistence_restarted_mid_sync_is_refilled_by_the_next_sync,
    a_server_gone_longer_than_the_retries_ends_the_job_with_errors_and_the_next_sync_writes_the_rest,
);

// ---------------------------------------------------------------------------------
// Redis fixtures
// ---------------------------------------------------------------------------------

/// A database of the shared test redis-server, leased for one test: the lease is a
/// key in database 0 (`SET NX` with a TTL), released on drop; the database is
/// flushed when leased. Database 0 is never leased (Label Studio refuses `db` 0).
struct TestDb {
    host: String,
    port: u16,
    db: i64,
    lease: String,
    connection: Mutex<redis::Connection>,
}

fn lease_key(db: i64) -> String {
    format!("labelport-test:db-lease:{db}")
}

impl TestDb {
    fn lease() -> TestDb {
        let address = redis_address();
        let (host, port) = address.rsplit_once(':').expect("LABELPORT_TEST_REDIS is host:port");
        let port: u16 = port.parse().expect("a port");
        let token = uuid::Uuid::new_v4().to_string();
        let mut admin = redis::Client::open(format!("redis://{host}:{port}/0"))
            .and_then(|c| c.get_connection())
            .expect("the test redis-server answers");
        let deadline = Instant::now() + Duration::from_secs(120);
        let start = (uuid::Uuid::new_v4().as_u128() % 15) as i64;
        loop {
            for i in 0..15 {
                let db = 1 + (start + i) % 15;
                let won: Option<String> = redis::cmd("SET")
                    .arg(lease_key(db))
                    .arg(&token)
                    .arg("NX")
                    .arg("EX")
                    .arg(600)
                    .query(&mut admin)
                    .expect("SET NX");
                if won.is_some() {
                    let mut connection = redis::Client::open(format!("redis://{host}:{port}/{db}"))
                        .and_then(|c| c.get_connection())
                        .expect("connect to the leased database");
                    redis::cmd("FLUSHDB").exec(&mut connection).expect("FLUSHDB");
                    return TestDb {
                        host: host.to_owned(),
                        port,
                        db,
                        lease: token,
                        connection: Mutex::new(connection),
                    };
                }
            }
            assert!(Instant::now() < deadline, "no free database on the test redis-server");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Storage fields pointing at this database.
    fn fields(&self) -> Value {
        json!({"host": self.host, "port": self.port.to_string(), "db": self.db})
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET").arg(key).query(&mut *self.connection.lock().unwrap()).expect("GET")
    }

    fn keys(&self) -> BTreeSet<String> {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut *self.connection.lock().unwrap()).expect("KEYS");
        keys.into_iter().collect()
    }

    fn cmd(&self, cmd: &mut redis::Cmd) -> redis::Value {
        cmd.query(&mut *self.connection.lock().unwrap()).expect("a redis command")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let script = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        if let Ok(mut admin) =
            redis::Client::open(format!("redis://{}:{}/0", self.host, self.port)).and_then(|c| c.get_connection())
        {
            let _: redis::RedisResult<i64> =
                redis::cmd("EVAL").arg(script).arg(1).arg(lease_key(self.db)).arg(&self.lease).query(&mut admin);
        }
    }
}

/// A redis-server of a test's own on a free loopback port, killed on drop.
struct OwnRedis {
    port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts `redis-server --port <free> --save '' --appendonly no <extra>`.
    fn start(extra: &[&str]) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut args: Vec<String> =
            ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = OwnRedis { port, args, dir: tempfile::tempdir().unwrap(), child: None };
        server.restart();
        server
    }

    /// (Re)starts the server on the same port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/emulators installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no shutdown, no save.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn connection(&self, db: i64, password: Option<&str>) -> redis::Connection {
        let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
        redis::Client::open(format!("redis://{auth}127.0.0.1:{}/{db}", self.port))
            .and_then(|c| c.get_connection())
            .expect("connect to the test's own redis-server")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn key_set(connection: &mut redis::Connection) -> BTreeSet<String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(connection).expect("KEYS");
    keys.into_iter().collect()
}

// ---------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------

async fn create(app: &TestApp, project: i64, fields: Value) -> Value {
    let mut body = json!({ "project": project });
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    json_of(app.post(RS, &body).await, StatusCode::CREATED).await
}

async fn get(app: &TestApp, id: i64) -> Value {
    json_of(app.get(&format!("{RS}/{id}")).await, StatusCode::OK).await
}

/// Polls a redis storage until its sync has finished.
async fn wait_done(app: &TestApp, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = get(app, id).await;
        if ["completed", "completed_with_errors", "failed"].contains(&s["status"].as_str().unwrap_or_default()) {
            return s;
        }
        assert!(Instant::now() < deadline, "storage {id} did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_redis_completed(app: &TestApp, id: i64) -> Value {
    let s = wait_done(app, id).await;
    assert_eq!(s["status"], "completed", "{s}");
    s
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every text column of every export storage and sync job, for secret checks.
async fn stored_text(app: &TestApp) -> String {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT COALESCE(title, '') || COALESCE(description, '') || COALESCE(path, '') || CAST(config AS TEXT) \
         || COALESCE(CAST(secrets AS TEXT), '') || COALESCE(traceback, '') || CAST(meta AS TEXT) FROM export_storages",
    )
    .fetch_all(app.state.db.pool())
    .await
    .unwrap();
    rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------
// Conformance
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_target_passes_the_conformance_suite() {
    let db = TestDb::lease();
    let config = TargetConfig { values: db.fields().as_object().unwrap().clone(), ..TargetConfig::default() };
    let ctx = TargetContext {
        local_files: labelport::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
        fsync: false,
        targets: labelport::config::TargetSettings {
            ssrf_protection: false,
            ..labelport::config::TargetSettings::from_env()
        },
    };
    let target = labelport::storage::spec::build("redis", &config, &ctx).expect("the redis target builds");
    let read = |key: &str| db.get(key);
    labelport::storage::conformance::run_all(target.as_ref(), Some(&read)).await;

    // Beyond the suite: batched writes, sizes and deletes of more than one pipeline.
    let items: Vec<(String, Bytes)> =
        (1..=1203).map(|i| (i.to_string(), Bytes::from(format!("{{\"id\": {i}}}")))).collect();
    let results = target.put_many(items.clone()).await;
    assert!(results.iter().all(Result::is_ok));
    for (key, body) in items.iter().step_by(97) {
        assert_eq!(db.get(key).as_deref(), Some(body.as_ref()));
    }
    let mut asked: Vec<String> = items.iter().map(|(k, _)| k.clone()).collect();
    asked.push("missing-1".into());
    asked.push("../bad".into());
    let sizes = target.sizes(asked).await;
    for (i, (_, body)) in items.iter().enumerate() {
        assert_eq!(sizes[i].as_ref().unwrap(), &Some(body.len() as u64));
    }
    assert_eq!(sizes[items.len()].as_ref().unwrap(), &None);
    assert!(sizes[items.len() + 1].is_err());
    // An empty value exists and has size 0.
    target.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(target.size("empty").await.unwrap(), Some(0));
    assert!(target.exists("empty").await.unwrap());
    // A key of another type is reported, then replaced by the next write.
    db.cmd(redis::cmd("HSET").arg("hash").arg("f").arg("v"));
    assert!(target.size("hash").await.is_err());
    target.put("hash", Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(db.get("hash").as_deref(), Some(&b"{}"[..]));
    let results = target.delete_many(items.iter().map(|(k, _)| k.clone()).chain(["a/b".to_owned()]).collect()).await;
    assert!(results[..items.len()].iter().all(Result::is_ok));
    assert!(results[items.len()].is_err(), "unsafe keys are refused");
    assert_eq!(db.keys(), BTreeSet::from(["empty".to_owned(), "hash".to_owned()]));
    assert_eq!(target.list_sizes().await.unwrap(), None, "a shared database is not listed");
    let token = target.change_token().await.unwrap().expect("a change token");
    assert_eq!(target.change_token().await.unwrap(), Some(token.clone()), "stable while nothing changes");
    db.cmd(redis::cmd("DEL").arg("empty"));
    assert_ne!(target.change_token().await.unwrap(), Some(token), "a key removed behind our back");
    assert_eq!(target.to_string(), format!("Redis({}:{}/{})", db.host, db.port, db.db));
}

// ---------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------

async fn a_redis_storage_has_label_studios_fields_order_and_defaults_and_never_returns_the_password(app: TestApp) {
    let db = TestDb::lease();
    let project = app.create_project("redis fields").await;
    // `port` as a number is stored as a string (DRF CharField); `db` defaults to 2.
    let body = json!({"project": project, "host": db.host, "port": db.port, "path": "some/path", "title": "r"});
    let minimal = json_of(app.post(RS, &body).await, StatusCode::CREATED).await;
    assert_eq!(keys(&minimal), REDIS_KEYS);
    assert_eq!(minimal["type"], "redis");
    assert_eq!(minimal["db"], 2);
    assert_eq!(minimal["port"], db.port.to_string());
    assert_eq!(minimal["host"], db.host);
    assert_eq!(minimal["path"], "some/path");
    assert_eq!(minimal["status"], "queued");
    assert_eq!(minimal["can_delete_objects"], Value::Null);
    // The project has no annotation yet, so nothing was written to db 2 (which may be
    // another test's); the storage goes, and the rest uses this test's own database.
    let id = minimal["id"].as_i64().unwrap();
    wait_redis_completed(&app, id).await;
    assert_eq!(app.delete(&format!("{RS}/{id}")).await.status(), StatusCode::NO_CONTENT);

    let password = "pw-not-to-be-seen-0451";
    let created = app
        .post(
            RS,
            &json!({"project": project, "host": db.host, "port": db.port.to_string(), "db": db.db,
                "password": password, "title": "with pw"}),
        )
        .await;
    // The shared server has no password: redis refuses an AUTH, and says so without the password.
    let message = non_field_error(created).await;
    assert!(message.contains("Cannot authenticate to Redis"), "{message}");
    assert!(!message.contains(password), "{message}");

    let s = create(&app, project, db.fields()).await;
    let id = s["id"].as_i64().unwrap();
    assert_eq!(keys(&s), REDIS_KEYS);
    assert_eq!(s["db"], db.db);
    let s = wait_redis_completed(&app, id).await;
    assert_eq!(keys(&s), REDIS_KEYS);
    let list = json_of(app.get(&format!("{RS}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(keys(&list[0]), REDIS_KEYS);
    let all = json_of(app.get(&format!("/api/storages/export?project={project}")).await, StatusCode::OK).await;
    assert!(all.as_array().unwrap().iter().any(|x| x["type"] == "redis" && x["id"] == id), "{all}");
    let form = app.get(&format!("{RS}/form")).await.text().await.unwrap();
    assert_eq!(form, labelport::storage::redis::SPEC.form);
    for text in [s.to_string(), list.to_string(), all.to_string()] {
        assert!(!text.contains("password"), "{text}");
    }
}

async fn db_zero_or_null_is_refused_with_label_studios_message(app: TestApp) {
    let db = TestDb::lease();
    let project = app.create_project("redis db").await;
    for bad in [json!(0), json!(null), json!("0")] {
        let body = json!({"project": project, "host": db.host, "port": db.port.to_string(), "db": bad});
        assert_eq!(non_field_error(app.post(RS, &body).await).await, DB_REQUIRED, "db {bad}");
        assert_eq!(non_field_error(app.post(&format!("{RS}/validate"), &body).await).await, DB_REQUIRED);
    }
    let over = json!({"project": project, "host": db.host, "db": 40000});
    let errors = validation_errors(app.post(RS, &over).await).await;
    assert_eq!(errors, json!({"db": ["Ensure this value is less than or equal to 32767."]}));
    let id = create(&app, project, db.fields()).await["id"].as_i64().unwrap();
    wait_redis_completed(&app, id).await;
    let r = app.patch(&format!("{RS}/{id}"), &json!({"db": 0})).await;
    assert_eq!(non_field_error(r).await, DB_REQUIRED);
    assert_eq!(get(&app, id).await["db"], db.db);
    assert!(db.keys().is_empty(), "no annotations, nothing written");
}

async fn patching_a_redis_storage_does_not_check_the_connection(app: TestApp) {
    let db = TestDb::lease();
    let project = app.create_project("redis patch").await;
    let id = create(&app, project, db.fields()).await["id"].as_i64().unwrap();
    wait_redis_completed(&app, id).await;
    // As in Label Studio, PATCH/PUT of gcs/azure/redis do not reach the server.
    let patched = json_of(
        app.patch(&format!("{RS}/{id}"), &json!({"host": "no-such-host.invalid", "title": "moved"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["host"], "no-such-host.invalid");
    assert_eq!(patched["title"], "moved");
    assert_eq!(patched["port"], db.port.to_string());
    // The next sync fails, naming the host.
    json_of(app.post(&format!("{RS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    let s = wait_done(&app, id).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(s["traceback"].as_str().unwrap().contains("no-such-host.invalid"), "{s}");
    // Back to the right host: the next sync completes.
    json_of(app.patch(&format!("{RS}/{id}"), &json!({"host": db.host})).await, StatusCode::OK).await;
    json_of(app.post(&format!("{RS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    wait_redis_completed(&app, id).await;
}

async fn an_unreachable_server_is_a_400_with_the_cause_on_create_and_the_generic_message_on_validate(app: TestApp) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let project = app.create_project("redis down").await;
    let body = json!({"project": project, "host": "127.0.0.1", "port": port.to_string(), "db": 3,
        "password": "pw-unseen-77"});
    let message = non_field_error(app.post(RS, &body).await).await;
    assert!(message.starts_with(&format!("Redis 127.0.0.1:{port}/3: ")), "{message}");
    assert!(!message.contains("pw-unseen-77"));
    let message = non_field_error(app.post(&format!("{RS}/validate"), &body).await).await;
    assert_eq!(message, "Error validating storage connection");
    let body = json!({"project": project, "host": "no-such-host.invalid", "db": 3});
    assert_eq!(non_field_error(app.post(RS, &body).await).await, "Can't resolve hostname no-such-host.invalid");
    // A database the server does not have (16 by default): refused by SELECT, nothing written.
    let (host, port) = redis_address().rsplit_once(':').map(|(h, p)| (h.to_owned(), p.to_owned())).unwrap();
    let body = json!({"project": project, "host": host, "port": port, "db": 16});
    let message = non_field_error(app.post(RS, &body).await).await;
    assert!(message.starts_with(&format!("Cannot select database 16 on Redis {host}:{port}/16: ")), "{message}");
    assert!(message.contains("DB index is out of range"), "{message}");
    let message = non_field_error(app.post(&format!("{RS}/validate"), &body).await).await;
    assert_eq!(message, "Error validating storage connection");
    let list = json_of(app.get(&format!("{RS}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(list, json!([]), "nothing was created");
}

// ---------------------------------------------------------------------------------
// What is written
// ---------------------------------------------------------------------------------

/// The redis value of each annotation is the document the engine renders, the same as
/// a local-files storage of the same project gets.
async fn a_sync_writes_every_annotation_under_its_bare_id_with_the_engines_document(app: TestApp) {
    let db = TestDb::lease();
    let (project, _, annotations) = annotated_project(&app, &["one", "d\u{e9}j\u{e0} vu \u{1f600}", "three"]).await;
    let (dir, path) = make_dir(&app, "twin");
    let twin = create_storage(&app, project, &path, json!({})).await["id"].as_i64().unwrap();
    let mut fields = db.fields();
    fields["path"] = json!("ignored/prefix");
    let id = create(&app, project, fields).await["id"].as_i64().unwrap();
    let s = wait_redis_completed(&app, id).await;
    wait_completed(&app, twin).await;
    assert_eq!(s["last_sync_count"], 3);
    assert_eq!(s["meta"]["total_annotations"], 3);
    let expected: BTreeSet<String> = annotations.iter().map(|a| a.to_string()).collect();
    assert_eq!(db.keys(), expected, "bare annotation ids: `path` is not a prefix");
    for a in &annotations {
        let stored = db.get(&a.to_string()).unwrap();
        let local = std::fs::read(dir.join(a.to_string())).unwrap();
        let doc: Value = serde_json::from_slice(&local).unwrap();
        // Compact `json.dumps(doc)` of the same document local files hold indented
        // (`created_ago` is relative to the time of writing, so it may differ).
        let parsed: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(stored, crate::pyjson::dumps(&parsed).into_bytes(), "annotation {a}: json.dumps form");
        let (mut x, mut y) = (parsed.clone(), doc.clone());
        x["created_ago"] = Value::Null;
        y["created_ago"] = Value::Null;
        assert_eq!(x, y, "annotation {a}: same document as local files");
        assert!(stored.is_ascii());
        let parsed: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(parsed["id"], *a);
        assert_eq!(parsed["project"], project);
    }
}

async fn task_mode_writes_one_key_per_task(app: TestApp) {
    let db = TestDb::lease();
    let (project, tasks, _) = annotated_project(&app, &["one", "two"]).await;
    annotate(&app, tasks[0], "again").await;
    let mut fields = db.fields();
    fields["export_mode"] = json!("task");
    let id = create(&app, project, fields).await["id"].as_i64().unwrap();
    wait_redis_completed(&app, id).await;
    let expected: BTreeSet<String> = tasks.iter().map(|t| format!("{t}.json")).collect();
    assert_eq!(db.keys(), expected);
    let doc: Value = serde_json::from_slice(&db.get(&format!("{}.json", tasks[0])).unwrap()).unwrap();
    assert_eq!(doc["annotations"].as_array().map(Vec::len), Some(2), "{doc}");
}

async fn annotations_are_auto_exported_on_create_and_update_and_deleted_only_with_can_delete_objects(app: TestApp) {
    let keep = TestDb::lease();
    let drop = TestDb::lease();
    let (project, tasks, first) = annotated_project(&app, &["one", "two"]).await;
    let kept = create(&app, project, keep.fields()).await["id"].as_i64().unwrap();
    let mut fields = drop.fields();
    fields["can_delete_objects"] = json!(true);
    let dropped = create(&app, project, fields).await["id"].as_i64().unwrap();
    wait_redis_completed(&app, kept).await;
    wait_redis_completed(&app, dropped).await;

    let later = annotate(&app, tasks[1], "later").await;
    let key = later.to_string();
    wait_until("the auto-exported key", || keep.get(&key).is_some() && drop.get(&key).is_some()).await;
    let before = keep.get(&key).unwrap();
    let r = app.patch(&format!("/api/annotations/{later}/"), &json!({"lead_time": 42.5})).await;
    assert_eq!(r.status(), StatusCode::OK);
    wait_until("the updated value", || keep.get(&key).is_some_and(|v| v != before)).await;
    let doc: Value = serde_json::from_slice(&keep.get(&key).unwrap()).unwrap();
    assert_eq!(doc["lead_time"], 42.5);

    for a in [first[0], later] {
        assert_eq!(app.delete(&format!("/api/annotations/{a}/")).await.status(), StatusCode::NO_CONTENT);
    }
    wait_until("the deletions", || drop.get(&first[0].to_string()).is_none() && drop.get(&key).is_none()).await;
    wait_caught_up_redis(&app, kept).await;
    assert!(keep.get(&first[0].to_string()).is_some(), "can_delete_objects unset: the key stays");
    assert!(keep.get(&key).is_some());
    assert_eq!(drop.keys(), BTreeSet::from([first[1].to_string()]));
    assert_eq!(get(&app, kept).await["status"], "completed");
}

async fn wait_caught_up_redis(app: &TestApp, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lag = json_of(app.get(&format!("{RS}/{id}/lag")).await, StatusCode::OK).await;
        if lag["pending_changes"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "storage {id} did not catch up: {lag}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Full syncs compare with one pipelined `STRLEN`/`EXISTS` round trip per page: a key
/// removed by hand is restored, and nothing in place is written again (a `SET` would
/// clear the TTL planted on the untouched keys).
async fn a_full_sync_restores_a_key_deleted_by_hand_and_rewrites_nothing_else(app: TestApp) {
    let db = TestDb::lease();
    let (project, _, annotations) = annotated_project(&app, &["a", "b", "c", "d"]).await;
    let id = create(&app, project, db.fields()).await["id"].as_i64().unwrap();
    wait_redis_completed(&app, id).await;
    let gone = annotations[0].to_string();
    let original = db.get(&gone).unwrap();
    db.cmd(redis::cmd("DEL").arg(&gone));
    for a in &annotations[1..] {
        db.cmd(redis::cmd("EXPIRE").arg(a.to_string()).arg(100_000));
    }
    json_of(app.post(&format!("{RS}/{id}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    let s = wait_redis_completed(&app, id).await;
    assert_eq!(db.get(&gone), Some(original), "restored byte for byte");
    for a in &annotations[1..] {
        let ttl: i64 = redis::from_redis_value(db.cmd(redis::cmd("TTL").arg(a.to_string()))).unwrap();
        assert!(ttl > 0, "annotation {a} was rewritten: {s}");
    }
    // An incremental sync with nothing changed writes nothing either.
    json_of(app.post(&format!("{RS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    wait_redis_completed(&app, id).await;
    for a in &annotations[1..] {
        let ttl: i64 = redis::from_redis_value(db.cmd(redis::cmd("TTL").arg(a.to_string()))).unwrap();
        assert!(ttl > 0, "annotation {a} was rewritten");
    }
    // A plain sync sees the key count change (the change token) and checks everything,
    // as Label Studio's sync (which rewrites everything) would restore the key too.
    let gone = annotations[1].to_string();
    let original = db.get(&gone).unwrap();
    db.cmd(redis::cmd("DEL").arg(&gone));
    json_of(app.post(&format!("{RS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    wait_redis_completed(&app, id).await;
    assert_eq!(db.get(&gone), Some(original), "restored by a plain sync");
    for a in &annotations[2..] {
        let ttl: i64 = redis::from_redis_value(db.cmd(redis::cmd("TTL").arg(a.to_string()))).unwrap();
        assert!(ttl > 0, "annotation {a} was rewritten");
    }
}

async fn a_password_protected_server_needs_the_right_password_which_is_never_shown_nor_stored_in_plain_text(
    app: TestApp,
) {
    let password = "Sekr1t-redis-pass-9931";
    let server = OwnRedis::start(&["--requirepass", password]);
    let (project, tasks, annotations) = annotated_project(&app, &["one", "two"]).await;
    let base = json!({"project": project, "host": "127.0.0.1", "port": server.port.to_string(), "db": 4});
    for wrong in [None, Some("wrong-password-1")] {
        let mut body = base.clone();
        if let Some(p) = wrong {
            body["password"] = json!(p);
        }
        let message = non_field_error(app.post(RS, &body).await).await;
        assert!(message.starts_with("Cannot authenticate to Redis 127.0.0.1:"), "{message}");
        assert!(!message.contains("wrong-password-1"), "{message}");
        let message = non_field_error(app.post(&format!("{RS}/validate"), &body).await).await;
        assert_eq!(message, "Error validating storage connection");
    }
    let mut body = base.clone();
    body["password"] = json!(password);
    let r = app.post(&format!("{RS}/validate"), &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let created = json_of(app.post(RS, &body).await, StatusCode::CREATED).await;
    let id = created["id"].as_i64().unwrap();
    let done = wait_redis_completed(&app, id).await;
    let mut connection = server.connection(4, Some(password));
    let expected: BTreeSet<String> = annotations.iter().map(|a| a.to_string()).collect();
    assert_eq!(key_set(&mut connection), expected);
    // validate with an id fills the password from the stored storage.
    let r = app
        .post(
            &format!("{RS}/validate"),
            &json!({"id": id, "project": project, "db": 4,
        "host": "127.0.0.1", "port": server.port.to_string()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let patched = json_of(app.patch(&format!("{RS}/{id}"), &json!({"title": "t"})).await, StatusCode::OK).await;
    let list = json_of(app.get(&format!("{RS}?project={project}")).await, StatusCode::OK).await;
    for text in [created.to_string(), done.to_string(), patched.to_string(), list.to_string()] {
        assert!(!text.contains(password) && !text.contains("\"password\""), "{text}");
    }
    let stored = stored_text(&app).await;
    assert!(!stored.contains(password), "the password is stored sealed: {stored}");
    // The sealed password still works for auto-export after a PATCH that did not send it.
    let later = annotate(&app, tasks[0], "later").await;
    wait_until("the auto-export with the stored password", || {
        redis::cmd("EXISTS").arg(later.to_string()).query::<i64>(&mut connection).unwrap() == 1
    })
    .await;
}

// ---------------------------------------------------------------------------------
// SSRF
// ---------------------------------------------------------------------------------

async fn with_ssrf_protection_on_reserved_hosts_are_refused_on_create_and_validate(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.targets.ssrf_protection = true).await;
    let db = TestDb::lease();
    let project = app.create_project("ssrf").await;
    for (host, block) in [("127.0.0.1", Some("127.0.0.0/8")), ("localhost", None), ("10.0.0.1", Some("10.0.0.0/8"))] {
        let body = json!({"project": project, "host": host, "port": db.port.to_string(), "db": db.db});
        let message = non_field_error(app.post(RS, &body).await).await;
        match block {
            Some(block) => {
                assert_eq!(message, format!("URL resolves to a reserved network address (block: {block})"))
            }
            None => assert!(message.starts_with("URL resolves to a reserved network address (block: "), "{message}"),
        }
        let message = non_field_error(app.post(&format!("{RS}/validate"), &body).await).await;
        assert_eq!(message, "Error validating storage connection");
    }
    let list = json_of(app.get(&format!("{RS}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(list, json!([]));
    assert!(db.keys().is_empty());
}

// ---------------------------------------------------------------------------------
// A server that goes away mid-sync
// ---------------------------------------------------------------------------------

const MANY: usize = 3000;

/// A server whose syncs take a few seconds: small pages, a pause before each batch,
/// fast retries.
async fn slow_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.sync.batch_size = 100;
        s.sync.writers = 2;
        s.sync.write_delay = Duration::from_millis(40);
        s.targets.max_attempts = 12;
        s.targets.backoff = Duration::from_millis(50);
    })
    .await
}

async fn many_annotations(app: &TestApp) -> i64 {
    let project = app.create_project("many").await;
    let tasks: Vec<Value> = (0..MANY)
        .map(|i| json!({"data": {"text": format!("task {i}")}, "annotations": [{"result": [{"value": {"n": i}}]}]}))
        .collect();
    for chunk in tasks.chunks(1000) {
        app.import(project, &json!(chunk)).await;
    }
    project
}

/// Waits until the server holds at least `n` keys, then kills it.
async fn kill_after(server: &mut OwnRedis, db: i64, n: usize) {
    let mut connection = server.connection(db, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let size: usize = redis::cmd("DBSIZE").query(&mut connection).unwrap();
        if size >= n {
            assert!(size < MANY, "the sync finished before the kill; make it slower");
            break;
        }
        assert!(Instant::now() < deadline, "the sync did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
}

/// With an append-only file fsynced on every write, what redis acknowledged survives
/// the kill: the job retries what was in flight once the server is back and
/// completes, with every key present and nothing failed.
async fn a_server_killed_and_restarted_mid_sync_loses_nothing_the_job_completes(backend: Backend) {
    let app = slow_app(backend).await;
    let mut server = OwnRedis::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let project = many_annotations(&app).await;
    let body = json!({"project": project, "host": "127.0.0.1", "port": server.port.to_string(), "db": 5});
    let id = json_of(app.post(RS, &body).await, StatusCode::CREATED).await["id"].as_i64().unwrap();
    kill_after(&mut server, 5, 500).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&app, id).await["status"], "in_progress", "the job waits for the server");
    server.restart();
    let s = wait_redis_completed(&app, id).await;
    assert_eq!(s["last_sync_count"], MANY as i64, "{s}");
    assert_eq!(s["traceback"], Value::Null, "{s}");
    let mut connection = server.connection(5, None);
    assert_eq!(key_set(&mut connection).len(), MANY, "every key is present");
    // And a full sync finds everything in place.
    json_of(app.post(&format!("{RS}/{id}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    wait_redis_completed(&app, id).await;
}

/// Without persistence, a restarted redis comes back empty: the job still completes
/// once the server answers again, and what the kill wiped is rewritten by the next
/// sync: the target saw the restart (a new `run_id`), so that sync checks every
/// document, with one round trip per page, and writes the missing ones.
async fn a_server_without_persistence_restarted_mid_sync_is_refilled_by_the_next_sync(backend: Backend) {
    let app = slow_app(backend).await;
    let mut server = OwnRedis::start(&[]);
    let project = many_annotations(&app).await;
    let body = json!({"project": project, "host": "127.0.0.1", "port": server.port.to_string(), "db": 6});
    let id = json_of(app.post(RS, &body).await, StatusCode::CREATED).await["id"].as_i64().unwrap();
    kill_after(&mut server, 6, 500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let s = wait_redis_completed(&app, id).await;
    assert_eq!(s["last_sync_count"], MANY as i64, "{s}");
    let mut connection = server.connection(6, None);
    let after_job = key_set(&mut connection).len();
    assert!(after_job < MANY, "the restarted server lost what was written before the kill");
    json_of(app.post(&format!("{RS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    let s = wait_redis_completed(&app, id).await;
    assert_eq!(key_set(&mut connection).len(), MANY, "every key is back: {s}");
}

/// A server that stays away longer than the retries: once a whole page of writes has
/// run out of attempts the job stops (`failed`, the host and the cause in the
/// traceback) instead of failing the rest one by one, and the next sync, once the
/// server is back, writes everything that is missing.
async fn a_server_gone_longer_than_the_retries_ends_the_job_with_errors_and_the_next_sync_writes_the_rest(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.sync.batch_size = 100;
        s.sync.writers = 2;
        s.sync.write_delay = Duration::from_millis(40);
        s.targets.max_attempts = 2;
        s.targets.backoff = Duration::from_millis(5);
    })
    .await;
    let mut server = OwnRedis::start(&[]);
    let project = many_annotations(&app).await;
    let body = json!({"project": project, "host": "127.0.0.1", "port": server.port.to_string(), "db": 7});
    let id = json_of(app.post(RS, &body).await, StatusCode::CREATED).await["id"].as_i64().unwrap();
    kill_after(&mut server, 7, 500).await;
    let s = wait_done(&app, id).await;
    assert_eq!(s["status"], "failed", "{s}");
    let traceback = s["traceback"].as_str().unwrap();
    assert!(traceback.contains("stopped"), "{traceback}");
    assert!(traceback.contains(&format!("Redis 127.0.0.1:{}/7", server.port)), "{traceback}");
    server.restart();
    json_of(app.post(&format!("{RS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    let s = wait_redis_completed(&app, id).await;
    let mut connection = server.connection(7, None);
    assert_eq!(key_set(&mut connection).len(), MANY, "every key is written: {s}");
}
