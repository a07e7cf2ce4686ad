//! The sync engine driven step by step against the in-memory target, and the
//! lease rules that keep two workers off one storage.

use crate::backend_tests;
use crate::helpers::{spawn_app_with, Backend, BeforePut, PutHook, TestApp};
use labelport::db::{JobProgress, Lease, SyncState};
use labelport::storage::{InMemory, StorageTarget};
use labelport::sync::{ExecutionOutcome, SyncEngine, TargetFactory};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

backend_tests!(a_storage_lease_is_held_by_one_worker_at_a_time);
crate::configured_backend_tests!(
    the_change_feed_is_pruned_only_up_to_what_every_storage_has_exported,
    a_worker_whose_lease_was_claimed_again_has_every_write_refused,
    a_sync_counts_as_deleted_only_documents_it_had_written,
    a_location_change_leaves_the_old_links_to_the_pruner_which_deletes_them_in_batches,
    a_full_sync_during_which_the_location_changed_does_not_count_as_the_new_locations_export,
);

async fn no_worker(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.sync.run_worker = false).await
}

/// A table's rows read by sequential scans and its index scans so far, from
/// PostgreSQL's statistics.
async fn scans_of(stats: &sqlx::PgPool, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(seq_tup_read, 0), COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(stats)
    .await
    .unwrap()
}

/// Waits until `table` shows `index_scans` more index scans than `index_before` (an idle
/// backend reports its statistics within PostgreSQL's 10 s idle interval), then returns
/// its rows read by sequential scans; panics with `missing` after 45 s.
async fn rows_scanned_once_indexed(
    stats: &sqlx::PgPool,
    table: &str,
    index_before: i64,
    index_scans: i64,
    missing: &str,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (read, index) = scans_of(stats, table).await;
        if index - index_before >= index_scans {
            return read;
        }
        assert!(Instant::now() < deadline, "{missing}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn memory_engine(app: &TestApp, store: &InMemory) -> SyncEngine {
    let store = store.clone();
    let targets: TargetFactory = Arc::new(move |_| Ok(Arc::new(store.clone()) as Arc<dyn StorageTarget>));
    let settings = app.state.settings.sync.clone();
    SyncEngine::new(app.state.db.clone(), settings, targets, Arc::new(tokio::sync::Notify::new()))
}

async fn create_storage(app: &TestApp, project: i64) -> Value {
    let out = app.files_root.join(format!("out{project}"));
    std::fs::create_dir_all(&out).unwrap();
    let r = app
        .post("/api/storages/export/localfiles", &json!({"project": project, "path": out.display().to_string()}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn a_storage_lease_is_held_by_one_worker_at_a_time(app: TestApp) {
    let app_db = &app.state.db;
    let project = app.create_project("leases").await;
    let storage = create_storage(&app, project).await; // queues a sync: work to claim
    let id = storage["id"].as_i64().unwrap();
    // The app's own worker may hold it right now; wait until it is done and free.
    wait_for_status(&app, id, "completed").await;
    let queued = app.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
    assert_eq!(queued.status(), StatusCode::OK);
    let lease = Duration::from_secs(30);
    // Whoever claims first (possibly the app's worker), nobody else can claim until release.
    let mine = app_db.claim_storage("test-worker-a", lease).await.unwrap();
    if let Some(mine) = mine.filter(|l| l.storage_id == id) {
        assert_eq!(app_db.claim_storage("test-worker-b", lease).await.unwrap(), None, "second claim must fail");
        assert!(app_db.renew_lease(&mine, lease).await.unwrap());
        let other = Lease { owner: "test-worker-b".into(), ..mine.clone() };
        assert!(!app_db.renew_lease(&other, lease).await.unwrap(), "only the owner renews");
        app_db.release_lease(&mine).await.unwrap();
    }
    wait_for_status(&app, id, "completed").await;
}

async fn wait_for_status(app: &TestApp, id: i64, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s: Value = app.get(&format!("/api/storages/export/localfiles/{id}")).await.json().await.unwrap();
        if s["status"] == status {
            return s;
        }
        assert!(Instant::now() < deadline, "storage {id} never reached {status}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_exports_to_an_in_memory_target_step_by_step() {
    // Arrange: no background worker; we drive one engine by hand.
    let app = no_worker(Backend::Sqlite).await;
    let store = InMemory::new();
    let engine = memory_engine(&app, &store);
    let project = app.create_project("stepwise").await;
    let tasks =
        app.import(project, &json!([{"data": {"text": "a"}, "annotations": [{"result": []}]}, {"text": "b"}])).await;
    let storage = create_storage(&app, project).await;
    let id = storage["id"].as_i64().unwrap();
    assert_eq!(storage["status"], "queued");

    // Act + assert: one step runs the whole job.
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    assert_eq!(store.snapshot().len(), 1);
    let s: Value = app.get(&format!("/api/storages/export/localfiles/{id}")).await.json().await.unwrap();
    assert_eq!(s["status"], "completed");
    assert_eq!(s["last_sync_count"], 1);
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Idle);

    // A new annotation is auto-exported by the next step, without a sync.
    let a = app.annotate(tasks[1], &json!({"result": [{"v": 1}]})).await;
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let docs = store.snapshot();
    let doc: Value = serde_json::from_slice(&docs[&a["id"].to_string()]).unwrap();
    assert_eq!(doc["result"], json!([{"v": 1}]));
    assert_eq!(doc["task"]["id"], tasks[1]);
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Idle);

    // A re-sync with nothing changed writes nothing.
    let r = app.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "queued");
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let s: Value = app.get(&format!("/api/storages/export/localfiles/{id}")).await.json().await.unwrap();
    assert_eq!(s["meta"]["sync_mode"], "incremental");
    assert_eq!(s["meta"]["files_written"], 0);
    assert_eq!(s["last_sync_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_database_run_each_job_once() {
    // Arrange: two labelport processes (in-process here) sharing one database.
    let first = crate::helpers::spawn_app(Backend::Postgres).await;
    let url = first.state.settings.database_url.clone();
    let root = first.files_root.display().to_string();
    let token = first.token.clone();
    let second = spawn_app_with(Backend::Sqlite, |s| {
        s.database_url = url;
        s.local_files.document_root = root;
        s.bootstrap_user.as_mut().unwrap().token = Some(token);
    })
    .await;
    let project = first.create_project("shared").await;
    let tasks: Vec<Value> = (0..300).map(|i| json!({"data": {"n": i}, "annotations": [{"result": []}]})).collect();
    first.import(project, &Value::Array(tasks)).await;

    // Act: several storages, syncs requested through both servers.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create_storage(&first, project).await["id"].as_i64().unwrap());
    }
    for id in &ids {
        let r = second.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    // Assert: every storage completes with all 300 files; no job ran twice.
    let mut paths = Vec::new();
    for id in &ids {
        let s = wait_for_status(&first, *id, "completed").await;
        paths.push(s["path"].as_str().unwrap().to_owned());
    }
    for path in paths {
        assert_eq!(std::fs::read_dir(path).unwrap().count(), 300, "all files, no temporary ones left");
    }
    let pool = first.state.db.pool();
    for id in &ids {
        let states: Vec<String> = sqlx::query_scalar("SELECT state FROM sync_jobs WHERE storage_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(pool)
            .await
            .unwrap();
        assert!(states.iter().all(|s| s == "completed"), "{states:?}");
        assert!(!states.is_empty() && states.len() <= 2, "at most the create-time job and one coalesced request");
    }
}

async fn the_change_feed_is_pruned_only_up_to_what_every_storage_has_exported(backend: Backend) {
    // Arrange: project A has a storage that has not exported anything since it was
    // created; project B has no storage at all.
    let app = no_worker(backend).await;
    let a = app.create_project("with storage").await;
    let b = app.create_project("without storage").await;
    app.import(a, &json!([{"data": {"n": 1}, "annotations": [{"result": []}]}])).await;
    create_storage(&app, a).await;
    let pending = app.import(a, &json!([{"data": {"n": 2}, "annotations": [{"result": []}]}])).await;
    app.import(b, &json!([{"data": {"n": 3}, "annotations": [{"result": []}]}])).await;
    let db = &app.state.db;

    // Act
    let pruned = db.prune_change_feed().await.unwrap();

    // Assert: A keeps the entry its storage still needs, B keeps nothing.
    assert_eq!(pruned, 2, "A's entry from before the storage existed, and B's");
    let left = db.changes_since(a, 0, 100).await.unwrap();
    assert_eq!(left.iter().map(|c| c.task_id).collect::<Vec<_>>(), pending);
    assert!(db.changes_since(b, 0, 100).await.unwrap().is_empty());
}

async fn a_worker_whose_lease_was_claimed_again_has_every_write_refused(backend: Backend) {
    // Arrange: no background worker; a storage with a queued job. Worker A claims it
    // with a lease that ends at once, then it is claimed again: by B, and later by A
    // itself (same owner name, new generation).
    let app = no_worker(backend).await;
    let db = &app.state.db;
    let project = app.create_project("fencing").await;
    app.import(project, &json!([{"data": {"n": 1}, "annotations": [{"result": []}]}])).await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    let job = db.active_job(id).await.unwrap().expect("the create-time job is queued");
    let stale = db.claim_storage("worker-a", Duration::ZERO).await.unwrap().expect("work to claim");
    let state = SyncState {
        status: "in_progress".into(),
        meta: json!({}),
        last_sync: None,
        last_sync_count: None,
        traceback: None,
    };
    assert!(db.start_job(&job, &stale, "full", 0, 1, &state).await.unwrap(), "the current lease may start the job");
    tokio::time::sleep(Duration::from_millis(5)).await; // past the zero-length lease
    let current = db.claim_storage("worker-b", Duration::from_secs(60)).await.unwrap().expect("expired: claimable");
    assert_eq!(current.generation, stale.generation + 1, "each claim is a new generation");

    // Act: the stale lease tries every write a worker makes.
    let progress = JobProgress { checkpoint_id: 999, processed: 999, ..Default::default() };
    let link = labelport::db::Link { annotation_id: 1, key: "1".into(), version: "stale".into(), size: 1 };
    let checkpoint = db.checkpoint_job(&job, &stale, Duration::from_secs(60), &progress, &state).await.unwrap();
    let started = db.start_job(&job, &stale, "full", 0, 1, &state).await.unwrap();
    let finished = db.finish_job(&job, &stale, &progress, "completed", &state, Some(i64::MAX), Some(0)).await.unwrap();
    let cursor = db.advance_cursor(&stale, i64::MAX, None).await.unwrap();
    let links = db.upsert_links(&stale, 0, &[link]).await.unwrap();
    let unlinked = db.delete_links(&stale, 0, &[1]).await.unwrap();
    let token = db.set_target_token(&stale, Some("stale")).await.unwrap();
    let renewed = db.renew_lease(&stale, Duration::from_secs(60)).await.unwrap();
    db.release_lease(&stale).await.unwrap();

    // Assert: all refused, nothing changed, and the current holder still holds it.
    assert_eq!((checkpoint, started, finished, cursor), (false, false, false, false));
    assert_eq!((links, unlinked, token, renewed), (false, false, false, false));
    let job_now = db.job(job.id).await.unwrap();
    assert_eq!((job_now.state.as_str(), job_now.checkpoint_id, job_now.processed), ("running", 0, 0));
    let storage = db.storage_by_id(id).await.unwrap();
    assert!(storage.cursor_seq < i64::MAX && storage.target_token.is_none());
    let set = db.storage_by_id(id).await.unwrap().link_set();
    assert!(db.links(set, &[1]).await.unwrap().is_empty());
    assert_eq!(db.claim_storage("worker-c", Duration::from_secs(60)).await.unwrap(), None, "B still holds it");
    assert!(db.checkpoint_job(&job, &current, Duration::from_secs(60), &progress, &state).await.unwrap());
    assert_eq!(db.job(job.id).await.unwrap().checkpoint_id, 999, "the current lease checkpoints");

    // The same owner name claiming again does not revive its older claim.
    db.release_lease(&current).await.unwrap();
    let again = db.claim_storage("worker-a", Duration::from_secs(60)).await.unwrap().expect("released: claimable");
    let older = Lease { owner: "worker-a".into(), ..stale };
    assert!(!db.checkpoint_job(&job, &older, Duration::from_secs(60), &progress, &state).await.unwrap());
    assert!(db.checkpoint_job(&job, &again, Duration::from_secs(60), &progress, &state).await.unwrap());

    // The current lease records links: a few (one statement on PostgreSQL), then a
    // page's worth (a transaction) that replaces them.
    let links = |ids: std::ops::RangeInclusive<i64>, version: &str| -> Vec<labelport::db::Link> {
        ids.map(|i| labelport::db::Link { annotation_id: i, key: i.to_string(), version: version.into(), size: i })
            .collect()
    };
    assert!(db.upsert_links(&again, set.epoch, &links(1..=2, "few")).await.unwrap());
    assert_eq!(db.links(set, &[1, 2]).await.unwrap().iter().filter(|l| l.version == "few").count(), 2);
    assert!(db.upsert_links(&again, set.epoch, &links(1..=300, "page")).await.unwrap());
    let recorded = db.links(set, &(1..=300).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(recorded.len(), 300);
    assert!(recorded
        .iter()
        .all(|l| l.version == "page" && l.size == l.annotation_id && l.key == l.annotation_id.to_string()));
}

/// On PostgreSQL, whether a storage has changes past its cursor is read from the end of
/// the feed's index: lease claims (every auto-export round and every idle poll) do not
/// scan the change feed. They did, reading every entry of it, while the feed was long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_claims_read_the_end_of_the_change_feed_and_do_not_scan_it() {
    // Arrange: a feed of 2,000 entries, all applied, with the planner's statistics.
    let app = no_worker(Backend::Postgres).await;
    let project = app.create_project("feed").await;
    let tasks: Vec<Value> = (0..2000).map(|i| json!({"data": {"text": i}, "annotations": [{"result": []}]})).collect();
    app.import(project, &Value::Array(tasks)).await;
    create_storage(&app, project).await;
    let engine = memory_engine(&app, &InMemory::new());
    while engine.try_execute_task().await.unwrap() == ExecutionOutcome::Worked {}
    let stats = sqlx::PgPool::connect(&app.state.settings.database_url).await.unwrap();
    sqlx::query("ANALYZE annotation_changes").execute(&stats).await.unwrap();
    let (read_before, index_before) = scans_of(&stats, "annotation_changes").await;

    // Act: 50 claims that find nothing to do.
    for _ in 0..50 {
        assert_eq!(app.state.db.claim_storage("test-worker", Duration::from_secs(30)).await.unwrap(), None);
    }

    // Assert: the claims' index reads show up in the statistics, and no entry was read
    // by a scan.
    let missing = "the claims did not read the feed through its index";
    let read_after = rows_scanned_once_indexed(&stats, "annotation_changes", index_before, 50, missing).await;
    assert!(read_after - read_before < 2000, "a claim scanned the feed: {} entries read", read_after - read_before);
}

/// On PostgreSQL, an export page reads its annotations in order through the index and
/// each one's task by its key, whatever the planner's statistics say. With a plain
/// join the planner hashed the two where its statistics were stale (annotations from
/// imports too small to refresh them), reading every task of the table for each page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_export_pages_read_tasks_by_key_even_with_stale_statistics() {
    // Arrange: 2,000 tasks analysed by their import, then 7,200 more in imports too
    // small to refresh the statistics.
    let app = no_worker(Backend::Postgres).await;
    let project = app.create_project("pages").await;
    let tasks = |from: usize, n: usize| {
        Value::Array((from..from + n).map(|i| json!({"data": {"text": i}, "annotations": [{"result": []}]})).collect())
    };
    app.import(project, &tasks(0, 2000)).await;
    for k in 0..8 {
        app.import(project, &tasks(2000 + k * 900, 900)).await;
    }
    let stats = sqlx::PgPool::connect(&app.state.settings.database_url).await.unwrap();
    // The imports' own scans reach the statistics once their backends have been idle
    // for PostgreSQL's idle interval (10 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (read_before, index_before) = scans_of(&stats, "tasks").await;

    // Act: every page, as a full sync reads them.
    let (mut after, mut rows) = (0, 0);
    loop {
        let page = app.state.db.export_page(project, after, 1000).await.unwrap();
        let Some(last) = page.last().map(|(a, _)| a.id) else { break };
        assert!(page.iter().all(|(a, t)| a.task_id == t.id), "each annotation comes with its own task");
        (after, rows) = (last, rows + page.len());
    }

    // Assert: the pages' task lookups show up in the statistics (after the same
    // interval), and no task was read by a scan.
    assert_eq!(rows, 9200);
    let missing = "the pages did not look their tasks up by key";
    let read_after = rows_scanned_once_indexed(&stats, "tasks", index_before, 9200, missing).await;
    assert_eq!(read_after - read_before, 0, "a page scanned the tasks table");
}

/// A frozen process's open transaction holds its storage's row locked (PostgreSQL
/// ends it after `idle_in_transaction_session_timeout`, 10 s): a claim skips that
/// storage instead of waiting for it, and claims it once the row is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_claim_skips_a_storage_whose_row_another_session_holds_locked() {
    // Arrange: a storage with work (its create-time job); another session locks its row.
    let app = no_worker(Backend::Postgres).await;
    let db = &app.state.db;
    let project = app.create_project("locked").await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    let other = sqlx::PgPool::connect(&app.state.settings.database_url).await.unwrap();
    let mut holder = other.begin().await.unwrap();
    sqlx::query("SELECT id FROM export_storages WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .unwrap();

    // Act: claim while the row is locked, then after.
    let lease = Duration::from_secs(60);
    let while_locked = tokio::time::timeout(Duration::from_secs(30), db.claim_storage("worker-a", lease))
        .await
        .expect("the claim waited for the locked row instead of skipping it")
        .unwrap();
    holder.rollback().await.unwrap();
    let after = db.claim_storage("worker-a", lease).await.unwrap();

    // Assert
    assert_eq!(while_locked, None, "nothing else to claim");
    assert_eq!(after.map(|l| l.storage_id), Some(id), "free again: claimed");
}

/// Automatic export's state updates (its failure shown, or its recovery) apply only
/// while no job is queued or running. A sync queued concurrently on PostgreSQL must
/// not be overwritten: the update that waited for the storage's row sees the job that
/// was committed meanwhile (seen in CI: a recovery put back `failed` over `queued`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_idle_only_state_update_does_not_overwrite_a_sync_queued_meanwhile() {
    // Arrange: an idle storage; another session queues a job and shows it, uncommitted.
    let app = no_worker(Backend::Postgres).await;
    let db = app.state.db.clone();
    let project = app.create_project("race").await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    let other = sqlx::PgPool::connect(&app.state.settings.database_url).await.unwrap();
    sqlx::query("DELETE FROM sync_jobs WHERE storage_id = $1").bind(id).execute(&other).await.unwrap();
    let mut queuer = other.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO sync_jobs (storage_id, job_key, mode, state, created_at) VALUES ($1, 'k', 'full', 'queued', 0)",
    )
    .bind(id)
    .execute(&mut *queuer)
    .await
    .unwrap();
    sqlx::query("UPDATE export_storages SET status = 'queued' WHERE id = $1")
        .bind(id)
        .execute(&mut *queuer)
        .await
        .unwrap();

    // Act: the idle-only update starts (it waits for the row), then the job commits.
    let recovered = SyncState {
        status: "failed".into(),
        meta: json!({}),
        last_sync: None,
        last_sync_count: None,
        traceback: Some("an older failure".into()),
    };
    let update = tokio::spawn(async move { db.set_sync_state_if_idle(id, &recovered).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    queuer.commit().await.unwrap();
    let applied = tokio::time::timeout(Duration::from_secs(30), update).await.unwrap().unwrap().unwrap();

    // Assert
    let storage = app.state.db.storage_by_id(id).await.unwrap();
    assert_eq!(storage.status, "queued", "the queued sync shows");
    assert!(!applied, "not idle: nothing applied");
}

/// A worker of its own on `app`'s PostgreSQL database that polls once a minute (and
/// holds leases for two), so only `NOTIFY` wakes it in time; started, and listening.
async fn listening_engine(
    app: &TestApp,
    store: &InMemory,
) -> (SyncEngine, tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    let mut settings = app.state.settings.sync.clone();
    settings.poll_interval = Duration::from_secs(60);
    settings.listen = true;
    // Long leases: an idle loop also wakes when a lease it saw expires.
    settings.lease = Duration::from_secs(120);
    let target = store.clone();
    let targets: TargetFactory = Arc::new(move |_| Ok(Arc::new(target.clone()) as Arc<dyn StorageTarget>));
    let db = labelport::db::Db::connect(&app.state.settings.database_url).await.unwrap();
    let engine = SyncEngine::new(db, settings, targets, Arc::new(tokio::sync::Notify::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(engine.clone().run_until_stopped(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !engine.is_listening() {
        assert!(Instant::now() < deadline, "the worker never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (engine, stop, running)
}

async fn wait_for_document(store: &InMemory, key: &str, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !store.snapshot().contains_key(key) {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On PostgreSQL, new work reaches an idle worker by `NOTIFY`: with polling slowed to
/// once a minute, a storage created and an annotation saved through another process's
/// API are still exported at once (the engine polls rarely while it listens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_idle_worker_is_woken_by_notify_not_by_polling() {
    // Arrange: an API process without a worker, and a worker that polls once a minute.
    let app = no_worker(Backend::Postgres).await;
    let store = InMemory::new();
    let (_engine, stop, running) = listening_engine(&app, &store).await;

    // Act
    let project = app.create_project("notify").await;
    let tasks = app.import(project, &json!([{"text": "a"}])).await;
    create_storage(&app, project).await;
    let key = app.annotate(tasks[0], &json!({"result": []})).await["id"].to_string();

    // Assert
    wait_for_document(&store, &key, "the save did not reach the idle worker without polling").await;
    stop.cancel();
    running.await.unwrap();
}

/// A save made while another worker holds the storage wakes the idle worker in vain
/// (it cannot claim); the holder announces the work it leaves behind when it gives
/// the lease back, so the idle worker exports it without waiting for its poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_work_left_behind_at_a_release_is_announced() {
    // Arrange: a storage whose create-time job is done, held by another worker.
    let app = no_worker(Backend::Postgres).await;
    let store = InMemory::new();
    let project = app.create_project("release").await;
    let tasks = app.import(project, &json!([{"text": "a"}])).await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    let (_engine, stop, running) = listening_engine(&app, &store).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.db.active_job(id).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the create-time job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // its lease given back
                                                          // (Claims only take storages with work; this one has none yet.)
    let other = sqlx::PgPool::connect(&app.state.settings.database_url).await.unwrap();
    let generation: i64 = sqlx::query_scalar(
        "UPDATE export_storages SET lease_owner = 'other', lease_expires_at = $2, \
         lease_generation = lease_generation + 1 WHERE id = $1 AND lease_owner IS NULL RETURNING lease_generation",
    )
    .bind(id)
    .bind(i64::MAX / 4)
    .fetch_one(&other)
    .await
    .expect("the storage is free to hold");
    let held = Lease { storage_id: id, owner: "other".into(), generation };

    // Act: a save while the lease is held, then the lease is given back.
    let key = app.annotate(tasks[0], &json!({"result": []})).await["id"].to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!store.snapshot().contains_key(&key), "exported while another worker held the storage");
    app.state.db.release_lease(&held).await.unwrap();

    // Assert
    wait_for_document(&store, &key, "the work left behind was not announced at the release").await;
    stop.cancel();
    running.await.unwrap();
}

/// A store that can list in bulk, counting its listings.
struct Listed {
    inner: InMemory,
    listings: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listed({})", self.inner)
    }
}

#[async_trait::async_trait]
impl StorageTarget for Listed {
    async fn validate(&self) -> labelport::storage::Result<()> {
        self.inner.validate().await
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> labelport::storage::Result<()> {
        self.inner.put(key, body).await
    }
    async fn delete(&self, key: &str) -> labelport::storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn size(&self, key: &str) -> labelport::storage::Result<Option<u64>> {
        self.inner.size(key).await
    }
    async fn list_sizes(&self) -> labelport::storage::Result<Option<std::collections::HashMap<String, u64>>> {
        self.listings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(self.inner.snapshot().into_iter().map(|(k, v)| (k, v.len() as u64)).collect()))
    }
}

/// A new storage has written nothing it could skip: its first full sync does not list
/// the location (which may hold any number of others' objects); a later one does, and
/// rewrites only what went missing.
#[tokio::test]
async fn a_first_full_sync_does_not_list_the_target_and_a_later_one_does() {
    // Arrange: a location that already holds someone else's object.
    let app = no_worker(Backend::Sqlite).await;
    let store = InMemory::new();
    store.put("theirs.json", bytes::Bytes::from_static(b"{}")).await.unwrap();
    let target = Arc::new(Listed { inner: store.clone(), listings: Default::default() });
    let factory_target = target.clone();
    let targets: TargetFactory = Arc::new(move |_| Ok(factory_target.clone() as Arc<dyn StorageTarget>));
    let engine = SyncEngine::new(
        app.state.db.clone(),
        app.state.settings.sync.clone(),
        targets,
        Arc::new(tokio::sync::Notify::new()),
    );
    let project = app.create_project("listing").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let ids: Vec<String> = [
        app.annotate(tasks[0], &json!({"result": []})).await["id"].to_string(),
        app.annotate(tasks[1], &json!({"result": []})).await["id"].to_string(),
    ]
    .into();
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();

    // Act: the create-time job; then one document goes missing and a full sync runs.
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let first_listings = target.listings.load(std::sync::atomic::Ordering::SeqCst);
    store.delete(&ids[0]).await.unwrap();
    let r = app.post(&format!("/api/storages/export/localfiles/{id}/sync?full=true"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);

    // Assert
    assert_eq!(first_listings, 0, "the first sync listed the target");
    assert_eq!(target.listings.load(std::sync::atomic::Ordering::SeqCst), 1, "the second sync lists once");
    let docs = store.snapshot();
    assert!(ids.iter().all(|k| docs.contains_key(k)), "the missing document was written again: {docs:?}");
    assert!(docs.contains_key("theirs.json"), "others' objects stay");
}

/// A target that blocks the thread it runs on while publishing: run on a
/// single-threaded runtime of its own, the whole engine stops there (lease
/// keep-alive included), as a process frozen by SIGSTOP would, until thawed.
/// Frozen before the lease check, or between the check and the write it guards.
struct Frozen {
    inner: InMemory,
    after_check: bool,
    frozen: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    thaw: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frozen({})", self.inner)
    }
}

#[async_trait::async_trait]
impl StorageTarget for Frozen {
    async fn validate(&self) -> labelport::storage::Result<()> {
        self.inner.validate().await
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> labelport::storage::Result<()> {
        self.inner.put(key, body).await
    }
    async fn put_many_guarded(
        &self,
        items: Vec<(String, bytes::Bytes)>,
        may_publish: labelport::storage::MayPublish,
    ) -> Vec<labelport::storage::Result<()>> {
        if self.after_check && !may_publish() {
            return items.iter().map(|_| Err(labelport::storage::held_back())).collect();
        }
        self.frozen.lock().unwrap().send(()).unwrap();
        self.thaw.lock().unwrap().recv().unwrap(); // blocks the runtime's only thread
        if self.after_check {
            return self.inner.put_many(items).await;
        }
        self.inner.put_many_guarded(items, may_publish).await
    }
    async fn delete(&self, key: &str) -> labelport::storage::Result<()> {
        self.inner.delete(key).await
    }
    async fn size(&self, key: &str) -> labelport::storage::Result<Option<u64>> {
        self.inner.size(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_does_not_overwrite_what_the_next_worker_wrote() {
    frozen_past_the_lease(false, Meanwhile::Edited).await;
}

/// The window no check can close: the worker passed its check and froze right
/// before the write. It writes late when it wakes, sees that its claim ended
/// meanwhile, and puts the document back in the change feed: the storage's holder
/// writes the current version again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_between_its_check_and_its_write_has_the_late_document_repaired() {
    frozen_past_the_lease(true, Meanwhile::Edited).await;
}

/// As above, but the annotation was deleted meanwhile (the storage may delete): the
/// late document is removed again, though no link to it was left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_document_of_an_annotation_deleted_meanwhile_is_removed_again() {
    frozen_past_the_lease(true, Meanwhile::Deleted).await;
}

/// What happens to the annotation while the first worker is frozen.
#[derive(Clone, Copy, PartialEq)]
enum Meanwhile {
    Edited,
    Deleted,
}

async fn frozen_past_the_lease(after_check: bool, meanwhile: Meanwhile) {
    // Arrange: two engines on one database and one store; the lease lasts a second.
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.sync.run_worker = false;
        s.sync.lease = Duration::from_secs(1);
    })
    .await;
    let store = InMemory::new();
    let next = memory_engine(&app, &store);
    let project = app.create_project("frozen").await;
    let tasks = app.import(project, &json!([{"text": "a"}])).await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    let r = app.patch(&format!("/api/storages/export/localfiles/{id}"), &json!({"can_delete_objects": true})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(next.try_execute_task().await.unwrap(), ExecutionOutcome::Worked, "the create-time job");
    let annotation = app.annotate(tasks[0], &json!({"result": [{"v": "old"}]})).await;
    let key = annotation["id"].to_string();
    let (frozen_tx, frozen) = std::sync::mpsc::channel();
    let (thaw, thaw_rx) = std::sync::mpsc::channel();
    let target = Arc::new(Frozen {
        inner: store.clone(),
        after_check,
        frozen: std::sync::Mutex::new(frozen_tx),
        thaw: std::sync::Mutex::new(thaw_rx),
    });
    let (url, settings) = (app.state.settings.database_url.clone(), app.state.settings.sync.clone());
    let first = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let db = labelport::db::Db::connect(&url).await.unwrap();
            let targets: TargetFactory = Arc::new(move |_| Ok(target.clone() as Arc<dyn StorageTarget>));
            let engine = SyncEngine::new(db, settings, targets, Arc::new(tokio::sync::Notify::new()));
            engine.try_execute_task().await.map_err(|e| e.to_string())
        })
    });

    // Act: the first worker claims the auto-export of the old version and freezes
    // right before writing it; meanwhile the annotation changes, the lease runs out
    // and the next worker exports the new version. Then the first one wakes.
    tokio::task::spawn_blocking(move || frozen.recv().unwrap()).await.unwrap();
    let r = match meanwhile {
        Meanwhile::Edited => app.patch(&format!("/api/annotations/{key}/"), &json!({"result": [{"v": "new"}]})).await,
        Meanwhile::Deleted => app.delete(&format!("/api/annotations/{key}/")).await,
    };
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    while next.try_execute_task().await.unwrap() == ExecutionOutcome::Idle {
        assert!(Instant::now() < deadline, "the frozen worker's lease never became claimable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let current = |store: &InMemory| -> Option<Value> {
        store.snapshot().get(&key).map(|doc| serde_json::from_slice::<Value>(doc).unwrap()["result"].clone())
    };
    let expected = match meanwhile {
        Meanwhile::Edited => Some(json!([{"v": "new"}])),
        Meanwhile::Deleted => None,
    };
    assert_eq!(current(&store), expected, "the next worker exported the change");
    thaw.send(()).unwrap();
    let outcome = tokio::task::spawn_blocking(move || first.join().unwrap()).await.unwrap();

    // Assert: the woken worker stopped without error, without writing or with its
    // late write repaired by the next step of the storage's holder.
    assert_eq!(outcome, Ok(ExecutionOutcome::Worked));
    if after_check {
        assert_eq!(current(&store), Some(json!([{"v": "old"}])), "the late write did happen");
        assert_eq!(next.try_execute_task().await.unwrap(), ExecutionOutcome::Worked, "the repair");
    }
    assert_eq!(current(&store), expected, "the stale worker's write outlived the repair");
    let s: Value = app.get(&format!("/api/storages/export/localfiles/{id}")).await.json().await.unwrap();
    assert_eq!(s["status"], "completed", "the stopped worker shows no failure: {s}");
    assert_eq!(next.try_execute_task().await.unwrap(), ExecutionOutcome::Idle, "nothing left behind");
}

/// An annotation created and deleted between two syncs never had a document: the
/// incremental sync still sends its delete (a late write may have left one), but
/// `files_deleted` counts only the document it had written and now removed.
async fn a_sync_counts_as_deleted_only_documents_it_had_written(backend: Backend) {
    // Arrange: two annotations exported by a first sync to a storage that may delete.
    let app = no_worker(backend).await;
    let store = InMemory::new();
    let engine = memory_engine(&app, &store);
    let project = app.create_project("deletes").await;
    let annotated = json!([
        {"data": {"text": "a"}, "annotations": [{"result": []}]},
        {"data": {"text": "b"}, "annotations": [{"result": []}]},
    ]);
    let tasks = app.import(project, &annotated).await;
    let out = app.files_root.join("deletes");
    std::fs::create_dir_all(&out).unwrap();
    let body = json!({"project": project, "path": out.display().to_string(), "can_delete_objects": true});
    let r = app.post("/api/storages/export/localfiles", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let exported: Vec<String> = store.snapshot().keys().cloned().collect();
    assert_eq!(exported.len(), 2);

    // Act: one exported annotation deleted, another created and deleted unexported;
    // then an incremental sync applies the feed.
    let r = app.delete(&format!("/api/annotations/{}/", exported[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let fleeting = app.annotate(tasks[1], &json!({"result": []})).await["id"].as_i64().unwrap();
    let r = app.delete(&format!("/api/annotations/{fleeting}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "queued");
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);

    // Assert
    let s: Value = app.get(&format!("/api/storages/export/localfiles/{id}")).await.json().await.unwrap();
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["meta"]["sync_mode"], "incremental", "{s}");
    assert_eq!(s["meta"]["files_deleted"], 1, "{s}");
    assert_eq!(s["meta"]["files_written"], 0, "{s}");
    assert_eq!(store.snapshot().keys().cloned().collect::<Vec<_>>(), [exported[1].clone()]);
}

/// A store whose writes panic while `armed` is set: a bug in a target, or anywhere in a step.
fn panicking(inner: InMemory, armed: Arc<std::sync::atomic::AtomicBool>) -> BeforePut {
    let hook: PutHook = Box::new(move |key| {
        if armed.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("injected bug writing {key}");
        }
        Box::pin(async {})
    });
    BeforePut { inner, hook }
}

/// A step that panics (a bug) fails its job with the panic's message instead of
/// being retried for ever or ending the worker's loop; a panicking automatic export
/// shows as failed and backs off; once the bug is gone, a sync completes. Annotation
/// mode writes on spawned tasks, task mode in the step itself: both are covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_panics_fails_its_job_with_the_panic_message_and_the_worker_goes_on() {
    for mode in ["annotation", "task"] {
        // Arrange: a storage whose target panics at every write.
        let app = no_worker(Backend::Sqlite).await;
        let store = InMemory::new();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let shared = Arc::new(panicking(store.clone(), armed.clone()));
        let targets: TargetFactory = Arc::new(move |_| Ok(shared.clone() as Arc<dyn StorageTarget>));
        let settings = app.state.settings.sync.clone();
        let engine = SyncEngine::new(app.state.db.clone(), settings, targets, Arc::new(tokio::sync::Notify::new()));
        let project = app.create_project("panics").await;
        let tasks = app.import(project, &json!([{"data": {"text": "a"}, "annotations": [{"result": []}]}])).await;
        let out = app.files_root.join("panics");
        std::fs::create_dir_all(&out).unwrap();
        let body = json!({"project": project, "path": out.display().to_string(), "export_mode": mode});
        let r = app.post("/api/storages/export/localfiles", &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        let url = format!("/api/storages/export/localfiles/{id}");

        // Act + assert: the job fails with the message, and the step returns.
        assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked, "{mode}");
        let s: Value = app.get(&url).await.json().await.unwrap();
        assert_eq!(s["status"], "failed", "{mode}: {s}");
        let traceback = s["traceback"].as_str().unwrap_or_default();
        assert!(traceback.contains("internal error") && traceback.contains("injected bug writing"), "{mode}: {s}");
        assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Idle, "{mode}: not retried");

        // A save's automatic export that panics shows as failed too, and is held off.
        app.annotate(tasks[0], &json!({"result": [{"v": 1}]})).await;
        assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked, "{mode}");
        let s: Value = app.get(&url).await.json().await.unwrap();
        assert_eq!(s["status"], "failed", "{mode}: {s}");
        assert!(s["traceback"].as_str().unwrap_or_default().contains("injected bug writing"), "{mode}: {s}");
        assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Idle, "{mode}: backing off");

        // With the bug gone, a sync writes everything.
        armed.store(false, std::sync::atomic::Ordering::SeqCst);
        let r = app.post(&format!("{url}/sync"), &json!({})).await;
        assert_eq!(r.status(), StatusCode::OK);
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            engine.try_execute_task().await.unwrap();
            let s: Value = app.get(&url).await.json().await.unwrap();
            if s["status"] == "completed" {
                break s;
            }
            assert!(Instant::now() < deadline, "{mode}: never completed: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let expected = if mode == "task" { 1 } else { 2 };
        assert_eq!(store.snapshot().len(), expected, "{mode}: {s}");
    }
}

/// Changing a storage's location does not delete its links in the request (that held
/// SQLite's write lock for ~0.5 s per million links): they stay, are no longer used
/// (the next sync writes every document to the new location), and the pruner deletes
/// them later in bounded batches.
async fn a_location_change_leaves_the_old_links_to_the_pruner_which_deletes_them_in_batches(backend: Backend) {
    // Arrange: five annotations exported, five links.
    let app = no_worker(backend).await;
    let db = &app.state.db;
    let store = InMemory::new();
    let engine = memory_engine(&app, &store);
    let project = app.create_project("relocated").await;
    let five: Vec<Value> = (0..5).map(|i| json!({"data": {"i": i}, "annotations": [{"result": []}]})).collect();
    app.import(project, &json!(five)).await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let first = db.storage_by_id(id).await.unwrap().link_set();
    let ids: Vec<i64> = store.snapshot().keys().map(|k| k.parse().unwrap()).collect();
    assert_eq!(db.links(first, &ids).await.unwrap().len(), 5);
    let relocate = |to: &str| {
        let path = app.files_root.join(to);
        std::fs::create_dir_all(&path).unwrap();
        json!({"project": project, "path": path.display().to_string()})
    };

    // Act: the location changes.
    let r = app.patch(&format!("/api/storages/export/localfiles/{id}"), &relocate("elsewhere")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Assert: the old links are still there but not the storage's any more, so a
    // sync rewrites every document and records them anew.
    let second = db.storage_by_id(id).await.unwrap().link_set();
    assert_eq!(second.epoch, first.epoch + 1);
    assert_eq!(db.links(first, &ids).await.unwrap().len(), 5, "not deleted by the request");
    assert!(db.links(second, &ids).await.unwrap().is_empty());
    assert!(!db.has_links(second).await.unwrap());
    for key in store.snapshot().keys() {
        store.delete(key).await.unwrap();
    }
    let r = app.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    assert_eq!(store.snapshot().len(), 5, "every document written to the new location");
    assert_eq!(db.links(second, &ids).await.unwrap().len(), 5);
    assert_eq!(db.prune_stale_links(2).await.unwrap(), 0, "rewritten links are the new location's");

    // Moved again without a sync: the pruner deletes the five, two per transaction,
    // and then has nothing left to do.
    let r = app.patch(&format!("/api/storages/export/localfiles/{id}"), &relocate("third")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(db.links(second, &ids).await.unwrap().len(), 5);
    assert_eq!(db.prune_stale_links(2).await.unwrap(), 5);
    assert!(db.links(second, &ids).await.unwrap().is_empty());
    assert_eq!(db.prune_stale_links(2).await.unwrap(), 0);

    // Deleting the storage deletes its links too (in batches, before its row).
    let r = app.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let links_of = |storage: i64| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM export_links WHERE storage_id = $1")
            .bind(storage)
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    assert_eq!(links_of(id).await, 5);
    let r = app.delete(&format!("/api/storages/export/localfiles/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(links_of(id).await, 0);
}

/// A store that changes its storage's location to `to` (as a `PATCH` does) at its first write.
fn moved_midway(inner: InMemory, db: labelport::db::Db, storage: i64, to: String) -> BeforePut {
    let moved = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook: PutHook = Box::new(move |_| {
        let (db, to, moved) = (db.clone(), to.clone(), moved.clone());
        Box::pin(async move {
            if !moved.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let mut fields = db.storage_by_id(storage).await.unwrap().fields;
                fields.path = Some(to);
                db.update_storage(storage, &fields, true, None).await.unwrap();
            }
        })
    });
    BeforePut { inner, hook }
}

/// A full sync that was writing to the old location when the location changed does not
/// mark the new one as exported: the next sync is a full one and writes every document
/// (an incremental one would have left the new location without them).
async fn a_full_sync_during_which_the_location_changed_does_not_count_as_the_new_locations_export(backend: Backend) {
    // Arrange: three annotations, a storage whose location changes at the first write.
    let app = no_worker(backend).await;
    let project = app.create_project("moved midway").await;
    let three: Vec<Value> = (0..3).map(|i| json!({"data": {"i": i}, "annotations": [{"result": []}]})).collect();
    app.import(project, &json!(three)).await;
    let id = create_storage(&app, project).await["id"].as_i64().unwrap();
    let to = app.files_root.join("moved");
    std::fs::create_dir_all(&to).unwrap();
    let store = InMemory::new();
    let target = Arc::new(moved_midway(store.clone(), app.state.db.clone(), id, to.display().to_string()));
    let targets: TargetFactory = Arc::new(move |_| Ok(target.clone() as Arc<dyn StorageTarget>));
    let engine =
        SyncEngine::new(app.state.db.clone(), app.state.settings.sync.clone(), targets, Arc::new(Default::default()));

    // Act: the full sync runs, the location changing under it.
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);

    // Assert: not the new location's baseline; its links are not the new location's.
    let storage = app.state.db.storage_by_id(id).await.unwrap();
    assert!(!storage.baseline_done, "the export went to the old location");
    assert!(!app.state.db.has_links(storage.link_set()).await.unwrap());
    let r = app.post(&format!("/api/storages/export/localfiles/{id}/sync"), &json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(engine.try_execute_task().await.unwrap(), ExecutionOutcome::Worked);
    let s: Value = app.get(&format!("/api/storages/export/localfiles/{id}")).await.json().await.unwrap();
    assert_eq!(s["meta"]["sync_mode"], "full", "{s}");
    assert_eq!(s["meta"]["files_written"], 3, "{s}");
    assert!(app.state.db.storage_by_id(id).await.unwrap().baseline_done);
}
