//! New work reaches a worker of another process through PostgreSQL `LISTEN/NOTIFY`,
//! and a listener that loses its connection comes back.

use crate::helpers::{spawn_app_with, Backend, TestApp};
use labelport::storage::InMemory;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Waits until `store` holds annotation `id` with `result`.
async fn exported(store: &InMemory, id: &Value, result: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = store.snapshot().get(&id.to_string()).map(|b| serde_json::from_slice::<Value>(b).unwrap());
        if doc.is_some_and(|d| d["result"] == *result) {
            return;
        }
        assert!(Instant::now() < deadline, "annotation {id} was not exported; only polling could have found it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn listening_sessions(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(app.state.db.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_worker_learns_of_new_work_by_notify_and_survives_losing_its_listener() {
    // Arrange: an API-only server, and a worker that would poll only once an hour and
    // is not woken by that server's own signal: only NOTIFY can tell it of new work.
    let app = spawn_app_with(Backend::Postgres, |s| {
        s.sync.run_worker = false;
        s.sync.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let store = InMemory::new();
    let engine = crate::engine::memory_engine(&app, &store);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(engine.run_until_stopped(stop.clone()));
    let project = app.create_project("notify").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let out = app.files_root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let r = app
        .post("/api/storages/export/localfiles", &json!({"project": project, "path": out.display().to_string()}))
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(30);
    while listening_sessions(&app).await == 0 {
        assert!(Instant::now() < deadline, "the worker never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act + assert: a save through the API reaches the worker.
    let first = app.annotate(tasks[0], &json!({"result": [{"v": 1}]})).await;
    exported(&store, &first["id"], &json!([{"v": 1}])).await;

    // The listener's connection is killed; the next save still reaches the worker
    // (by the reconnected listener, or by the catch-up poll that follows it).
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() \
         AND query LIKE 'LISTEN %'",
    )
    .fetch_all(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(killed, [true], "one listening session");
    let second = app.annotate(tasks[1], &json!({"result": [{"v": 2}]})).await;
    exported(&store, &second["id"], &json!([{"v": 2}])).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while listening_sessions(&app).await == 0 {
        assert!(Instant::now() < deadline, "the listener did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = app.annotate(tasks[0], &json!({"result": [{"v": 3}]})).await;
    exported(&store, &third["id"], &json!([{"v": 3}])).await;
    stop.cancel();
    worker.await.unwrap();
}
