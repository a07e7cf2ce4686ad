//! Auto-export to a broken target: one that hangs never holds up the other
//! storages, and failed attempts are counted in `/metrics`. (Showing the failure on
//! the storage, retrying with backoff and clearing it on recovery are tested per
//! target type: `storages_sync.rs`, `s3_storage.rs`, `gcs_storage.rs`.)

use crate::backend_fn_tests;
use crate::helpers::{spawn_app_with, Backend, BeforePut, PutHook, TestApp};
use crate::storages::{annotate, annotated_project, create_storage, get_storage, make_dir, wait_completed, wait_for};
use labelport::storage::{InMemory, StorageTarget};
use labelport::sync::{SyncEngine, TargetFactory};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

backend_fn_tests!(
    a_hanging_target_never_delays_the_auto_export_of_another_storage,
    failed_auto_export_attempts_are_counted_in_the_metrics,
);

/// An in-memory target whose writes, once `hang` is set, never finish (an endpoint
/// that accepts connections and never answers).
fn hanging(inner: InMemory, hang: Arc<AtomicBool>) -> BeforePut {
    let hook: PutHook = Box::new(move |_| {
        let hang = hang.clone();
        Box::pin(async move {
            if hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        })
    });
    BeforePut { inner, hook }
}

async fn a_hanging_target_never_delays_the_auto_export_of_another_storage(backend: Backend) {
    // Arrange: our own engine, whose targets are in memory; the storage whose path
    // names `hanging` gets the hanging one. Created first, it is claimed first.
    let app = spawn_app_with(backend, |s| s.sync.run_worker = false).await;
    let (hanging, healthy, hang) = (InMemory::new(), InMemory::new(), Arc::new(AtomicBool::new(false)));
    let targets: TargetFactory = {
        let (hanging, healthy, hang) = (hanging.clone(), healthy.clone(), hang.clone());
        Arc::new(move |storage| {
            Ok(if storage.fields.path.as_deref().is_some_and(|p| p.ends_with("hanging")) {
                Arc::new(self::hanging(hanging.clone(), hang.clone())) as Arc<dyn StorageTarget>
            } else {
                Arc::new(healthy.clone())
            })
        })
    };
    let engine =
        SyncEngine::new(app.state.db.clone(), app.state.settings.sync.clone(), targets, app.state.changes.clone());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(engine.run_until_stopped(stop.clone()));
    let (project, tasks, _) = annotated_project(&app, &["a"]).await;
    let (_, a) = make_dir(&app, "hanging");
    let (_, b) = make_dir(&app, "healthy");
    let a = create_storage(&app, project, &a, json!({})).await["id"].as_i64().unwrap();
    let b = create_storage(&app, project, &b, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, a).await;
    wait_completed(&app, b).await;

    // Act: the first target hangs; an annotation is saved.
    hang.store(true, Ordering::SeqCst);
    let id = annotate(&app, tasks[0], "later").await.to_string();

    // Assert: the healthy storage gets it while the other one's write still hangs.
    wait_for("the healthy storage's auto-export", || healthy.snapshot().contains_key(&id)).await;
    assert!(!hanging.snapshot().contains_key(&id));
    worker.abort();
    drop(stop);
}

async fn failed_auto_export_attempts_are_counted_in_the_metrics(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    // Arrange: a synced storage whose directory then disappears.
    let (project, tasks, _) = annotated_project(&app, &["a"]).await;
    let (dir, p) = make_dir(&app, "counted");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let before = failures(&app).await;
    std::fs::remove_dir_all(&dir).unwrap();

    // Act
    annotate(&app, tasks[0], "later").await;

    // Assert: the failure shows on the storage and in the counter.
    let deadline = std::time::Instant::now() + crate::storages::TIMEOUT;
    while get_storage(&app, id).await["status"] != "failed" {
        assert!(std::time::Instant::now() < deadline, "the failure never showed");
        tokio::time::sleep(crate::storages::POLL).await;
    }
    let after = failures(&app).await;
    assert!(after > before, "labelport_auto_export_failures_total went from {before} to {after}");
}

/// `labelport_auto_export_failures_total{storage_type="localfiles"}` (0 when absent).
/// The recorder is per process, so tests compare before and after.
async fn failures(app: &TestApp) -> f64 {
    let r = app.anon(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("labelport_auto_export_failures_total{") && l.contains("storage_type=\"localfiles\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
