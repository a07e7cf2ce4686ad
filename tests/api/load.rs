//! Load: concurrent clients create, update and delete annotations while a full sync
//! runs. No request answers 5xx, and once quiet the storage equals the database:
//! each annotation's latest content, deleted ones gone
//! (`can_delete_objects`). `bench/load.py` runs the 200-client version and reports
//! latency and export lag.

use crate::backend_fn_tests;
use crate::faults::{assert_directory_equals, wait_in_progress};
use crate::helpers::{spawn_app_with, Backend, TestApp};
use crate::storages::{create_storage, get_storage, imported_annotations, wait_caught_up, wait_sync};
use labelport::sync::document::{annotation_document_bytes, DocumentStyle, Users};
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

backend_fn_tests!(
    concurrent_clients_editing_annotations_during_a_full_sync_leave_the_storage_equal_to_the_database,
    a_save_made_during_a_long_full_sync_is_exported_before_the_sync_ends,
);

const CLIENTS: usize = 50;
const OPERATIONS_PER_CLIENT: usize = 12;
const ANNOTATIONS: usize = 400;

async fn concurrent_clients_editing_annotations_during_a_full_sync_leave_the_storage_equal_to_the_database(
    backend: Backend,
) {
    // Arrange: a sync of several slowed pages, started by creating the storage.
    let app = spawn_app_with(backend, |s| {
        s.sync.batch_size = 25;
        s.sync.write_delay = Duration::from_millis(100);
    })
    .await;
    let (project, imported) = imported_annotations(&app, "load", ANNOTATIONS).await;
    let tasks: Vec<i64> = rows(&app, project).await.iter().map(|(_, t)| t.id).collect();
    let dir = app.files_root.join("load");
    std::fs::create_dir_all(&dir).unwrap();
    let storage = create_storage(&app, project, &dir.display().to_string(), json!({"can_delete_objects": true})).await;
    let id = storage["id"].as_i64().unwrap();
    wait_in_progress(&app, id, 0).await;

    // Act: clients edit while the sync runs (at least 16 pages of 100 ms); each owns every CLIENTS-th imported
    // annotation and the ones it creates, so no two clients touch one annotation.
    let app = Arc::new(app);
    let (tasks, imported) = (Arc::new(tasks), Arc::new(imported));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (app, tasks, imported) = (app.clone(), tasks.clone(), imported.clone());
            tokio::spawn(async move { client(&app, i, &tasks, &imported).await })
        })
        .collect();
    for c in clients {
        c.await.expect("a client failed");
    }
    let s = wait_sync(&app, id).await;
    wait_caught_up(&app, id).await;

    // Assert
    assert_eq!(s["status"], "completed", "{s}");
    assert_storage_equals_database(&app, project, &dir).await;
}

/// A full sync of many pages is under way; an annotation it has already written is
/// saved again. Auto-export does not wait for the end of the sync: the pass applies
/// the saves made since it started about every second, between two pages.
async fn a_save_made_during_a_long_full_sync_is_exported_before_the_sync_ends(backend: Backend) {
    // Arrange: 60 slowed pages (at least 6 s), started by creating the storage.
    let app = spawn_app_with(backend, |s| {
        s.sync.batch_size = 10;
        s.sync.write_delay = Duration::from_millis(100);
    })
    .await;
    let (project, imported) = imported_annotations(&app, "catch-up", 600).await;
    let dir = app.files_root.join("catch-up");
    std::fs::create_dir_all(&dir).unwrap();
    let id = create_storage(&app, project, &dir.display().to_string(), json!({})).await["id"].as_i64().unwrap();
    wait_in_progress(&app, id, 20).await;

    // Act: save the first annotation again, written by the pass already.
    let first = imported[0];
    let saved = json!([{"v": "saved during the sync"}]);
    let r = app.patch(&format!("/api/annotations/{first}/"), &json!({ "result": saved })).await;
    assert_eq!(r.status(), StatusCode::OK);

    // Assert: its file holds the save while the sync still runs, and after it.
    let file = dir.join(first.to_string());
    let in_file = || serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap()).unwrap()["result"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while in_file() != saved {
        assert!(std::time::Instant::now() < deadline, "the save never reached the file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = get_storage(&app, id).await;
    assert_eq!(s["status"], "in_progress", "exported before the sync ended: {s}");
    assert_eq!(wait_sync(&app, id).await["status"], "completed");
    wait_caught_up(&app, id).await;
    assert_eq!(in_file(), saved);
    assert_storage_equals_database(&app, project, &dir).await;
}

/// One client's work: creates, updates and deletes at random; every answer must be
/// the expected success, and never a 5xx.
async fn client(app: &TestApp, i: usize, tasks: &[i64], imported: &[i64]) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
    let mut mine: Vec<i64> = imported.iter().skip(i).step_by(CLIENTS).copied().collect();
    for n in 0..OPERATIONS_PER_CLIENT {
        let marker = format!("client {i} op {n}");
        let result = json!([{"from_name": "s", "to_name": "t", "type": "choices", "value": {"choices": [marker]}}]);
        let roll = rng.gen_range(0..10);
        let (method, path, body, expected) = if roll < 4 || mine.is_empty() {
            let task = tasks[rng.gen_range(0..tasks.len())];
            (
                Method::POST,
                format!("/api/tasks/{task}/annotations/"),
                Some(json!({"result": result})),
                StatusCode::CREATED,
            )
        } else if roll < 8 {
            let a = mine[rng.gen_range(0..mine.len())];
            (Method::PATCH, format!("/api/annotations/{a}/"), Some(json!({"result": result})), StatusCode::OK)
        } else {
            let a = mine.swap_remove(rng.gen_range(0..mine.len()));
            (Method::DELETE, format!("/api/annotations/{a}/"), None, StatusCode::NO_CONTENT)
        };
        let mut request = app.req(method.clone(), &path).timeout(Duration::from_secs(60));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.expect("an answer");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(!status.is_server_error(), "{method} {path}: {status} {text}");
        assert_eq!(status, expected, "{method} {path}: {text}");
        if method == Method::POST {
            let created: Value = serde_json::from_str(&text).unwrap();
            mine.push(created["id"].as_i64().unwrap());
        }
    }
}

/// A document without its task-derived and time-relative parts, and the task's id.
fn own_part(doc: &Value) -> Value {
    let mut own = doc.clone();
    let task = own.as_object_mut().unwrap().remove("task");
    own.as_object_mut().unwrap().remove("created_ago");
    own["task_id"] = task.map_or(Value::Null, |t| t["id"].clone());
    own
}

/// Every annotation of the project with its task, read from the database.
async fn rows(app: &TestApp, project: i64) -> Vec<labelport::db::ExportRow> {
    let mut out: Vec<labelport::db::ExportRow> = Vec::new();
    loop {
        let after = out.last().map_or(0, |(a, _)| a.id);
        let page = app.state.db.export_page(project, after, 500).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The directory holds exactly the project's annotations, each with its latest
/// content: the document the database renders now, but for what depends on the task
/// or the clock (a sibling annotation saved later changes the task's counters and
/// `updated_at` without rewriting this document, as in Label Studio).
async fn assert_storage_equals_database(app: &TestApp, project: i64, dir: &Path) {
    let rows = rows(app, project).await;
    let ids: Vec<i64> = rows.iter().map(|(a, _)| a.id).collect();
    assert_directory_equals(dir, &ids);
    let mut users = Users::new();
    for id in rows.iter().filter_map(|(a, _)| a.completed_by) {
        if let std::collections::hash_map::Entry::Vacant(slot) = users.entry(id) {
            slot.insert(app.state.db.user_by_id(id).await.unwrap());
        }
    }
    for (a, t) in &rows {
        let expected = annotation_document_bytes(a, t, &users, DocumentStyle::Indented);
        let found: Value = serde_json::from_slice(&std::fs::read(dir.join(a.id.to_string())).unwrap()).unwrap();
        let expected: Value = serde_json::from_slice(&expected).unwrap();
        assert_eq!(own_part(&found), own_part(&expected), "annotation {} is not its latest document", a.id);
    }
}
