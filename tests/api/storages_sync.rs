//! Export-storage syncs over HTTP: the sync endpoint and its bookkeeping, the bytes
//! written, task mode, incremental syncs, auto-export and deletion (contract §4, §5;
//! issue 3). Endpoint validation is in `storages.rs`, whose helpers are used here.

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp};
use crate::storages::{
    annotate, annotated_project, create_storage, does_not_exist, files_in, get_storage, is_iso_time, is_meta_time,
    json_of, keys, make_dir, non_field_error, wait_caught_up, wait_completed, wait_for, wait_sync, LF, STORAGE_KEYS,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

backend_tests!(
    syncing_an_unknown_storage_is_404_json,
    a_non_synchronizable_storage_answers_the_sync_endpoint_with_label_studios_raw_message,
    a_non_synchronizable_storage_is_still_synced_on_creation_and_auto_exported,
    syncing_after_the_directory_was_removed_is_a_400_and_leaves_the_status_unchanged,
    an_annotation_save_succeeds_when_its_storage_directory_is_gone,
    syncing_after_the_directory_was_replaced_by_a_file_is_a_400,
    a_directory_swapped_for_an_escaping_symlink_after_creation_is_never_written_through,
    changing_the_path_writes_nothing_until_the_next_sync_which_exports_everything_there,
    attempts_keep_counting_across_sequential_syncs,
    a_completed_sync_has_label_studios_meta_keys_in_order_then_ours,
    an_exported_file_is_named_by_the_annotation_id_and_holds_label_studios_bytes,
    an_auto_exported_file_holds_the_same_bytes_as_a_synced_one,
    a_cancelled_annotation_is_exported_too,
    task_mode_writes_one_json_file_per_task_with_all_its_annotations,
    task_mode_rewrites_the_task_file_when_one_annotation_is_deleted_and_removes_it_with_the_last,
    a_resync_with_nothing_changed_writes_nothing_and_leaves_every_file_untouched,
    a_full_resync_with_nothing_changed_writes_nothing_either,
    the_total_a_resync_reports_follows_creates_deletes_task_deletes_and_imports,
    changing_one_annotation_rewrites_exactly_its_file,
    a_full_sync_restores_a_file_deleted_by_hand,
    a_full_sync_rewrites_documents_whose_task_changed,
    creating_and_patching_an_annotation_exports_it_without_a_sync,
    deleting_an_annotation_removes_its_file_only_when_can_delete_objects_is_true,
    deleting_a_task_removes_its_annotations_files_when_can_delete_objects_is_true,
    deleting_the_project_leaves_the_files,
);

crate::configured_backend_tests!(
    the_sync_endpoint_answers_at_once_while_the_sync_runs_in_the_background,
    a_sync_requested_while_one_is_queued_or_running_does_not_start_a_second,
    deleting_a_storage_while_it_syncs_is_safe_and_the_server_keeps_working,
    a_listed_storage_left_in_progress_without_a_live_job_and_an_old_ping_shows_failed,
);

/// A server whose syncs are slow enough to be observed while running: 2 annotations
/// per page, one writer, 50 ms before each written batch.
async fn slow_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.sync.write_delay = Duration::from_millis(50);
        s.sync.batch_size = 2;
        s.sync.writers = 1;
    })
    .await
}

async fn sync(app: &TestApp, id: i64, query: &str) -> Value {
    json_of(app.post(&format!("{LF}/{id}/sync{query}"), &json!({})).await, StatusCode::OK).await
}

/// Rows a table keeps for a storage (read straight from the database).
async fn rows_of_storage(app: &TestApp, table: &str, storage: i64) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table} WHERE storage_id = $1"))
        .bind(storage)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
}

/// Sync jobs recorded for a storage.
async fn job_count(app: &TestApp, storage: i64) -> i64 {
    rows_of_storage(app, "sync_jobs", storage).await
}

/// Links (what the storage holds a file for) the database keeps for a storage.
async fn link_count(app: &TestApp, storage: i64) -> i64 {
    rows_of_storage(app, "export_links", storage).await
}

/// What identifies one version of a file on disk: inode, mtime and content. A write
/// (temp file + rename) changes the inode even when the content is the same.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i64, i64, Vec<u8>)> {
    files_in(dir)
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let m = std::fs::metadata(&path).unwrap();
            (name, (m.ino(), m.mtime(), m.mtime_nsec(), std::fs::read(&path).unwrap()))
        })
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// Rebuilds the annotation-mode document of contract §5.3 from the API (annotation,
/// task, current user), with `created_ago` left as `null` for the caller to fill.
async fn expected_document(app: &TestApp, annotation: i64) -> Value {
    let a = json_of(app.get(&format!("/api/annotations/{annotation}/")).await, StatusCode::OK).await;
    let t = json_of(app.get(&format!("/api/tasks/{}/", a["task"])).await, StatusCode::OK).await;
    let me = json_of(app.get("/api/current-user/whoami").await, StatusCode::OK).await;
    assert_eq!(a["completed_by"], me["id"], "the tests annotate as the admin");
    let completed_by =
        json!({"id": me["id"], "first_name": me["first_name"], "last_name": me["last_name"], "email": me["email"]});
    let task_updated_by =
        t["updated_by"].as_array().and_then(|l| l.first()).map_or(Value::Null, |u| u["user_id"].clone());
    let task = json!({
        "id": t["id"],
        "data": t["data"],
        "meta": t["meta"],
        "created_at": t["created_at"],
        "updated_at": t["updated_at"],
        "is_labeled": t["is_labeled"],
        "allow_skip": true,
        "overlap": t["overlap"],
        "inner_id": t["inner_id"],
        "total_annotations": t["total_annotations"],
        "cancelled_annotations": t["cancelled_annotations"],
        "total_predictions": t["total_predictions"],
        "precomputed_agreement": null,
        "comment_count": t["comment_count"],
        "unresolved_comment_count": t["unresolved_comment_count"],
        "last_comment_updated_at": t["last_comment_updated_at"],
        "project": t["project"],
        "updated_by": task_updated_by,
        "file_upload": null,
        "comment_authors": [],
    });
    json!({
        "id": a["id"],
        "result": a["result"],
        "created_username": a["created_username"],
        "created_ago": null,
        "completed_by": completed_by,
        "task": task,
        "was_cancelled": a["was_cancelled"],
        "ground_truth": a["ground_truth"],
        "created_at": a["created_at"],
        "updated_at": a["updated_at"],
        "draft_created_at": a["draft_created_at"],
        "lead_time": a["lead_time"],
        "import_id": a["import_id"],
        "last_action": a["last_action"],
        "bulk_created": a["bulk_created"],
        "project": a["project"],
        "updated_by": a["updated_by"],
        "parent_prediction": a["parent_prediction"],
        "parent_annotation": a["parent_annotation"],
        "last_created_by": a["last_created_by"],
    })
}

/// Checks a written annotation file byte for byte against the document rebuilt from
/// the API; `created_ago` (which changes over time) is taken from the file after
/// checking its form.
async fn assert_exported_bytes(app: &TestApp, dir: &Path, annotation: i64) {
    let path = dir.join(annotation.to_string());
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.is_ascii(), "pure ASCII on disk");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("{\n  \"id\": "), "2-space indentation: {text}");
    assert!(text.ends_with("\n}"), "ends with `}}` and no newline: {text:?}");
    let written: Value = serde_json::from_str(&text).unwrap();
    let ago = written["created_ago"].as_str().expect("created_ago is a string");
    let (number, unit) = ago.split_once('\u{a0}').expect("number and unit joined by U+00A0");
    assert!(number.parse::<u32>().is_ok() && unit.starts_with("minute"), "{ago:?}");
    let mut expected = expected_document(app, annotation).await;
    expected["created_ago"] = json!(ago);
    assert_eq!(text, crate::pyjson::dumps_indented(&expected), "{}", path.display());
}

// ---------------------------------------------------------------------------------
// The sync endpoint
// ---------------------------------------------------------------------------------

async fn syncing_an_unknown_storage_is_404_json(app: TestApp) {
    // Act
    let r = app.post(&format!("{LF}/999999/sync"), &json!({})).await;
    let bad = app.post(&format!("{LF}/abc/sync"), &json!({})).await;

    // Assert
    let err = assert_error(r, StatusCode::NOT_FOUND).await;
    assert_eq!(err["detail"], "No LocalFilesExportStorage matches the given query.");
    assert_error(bad, StatusCode::NOT_FOUND).await;
}

async fn a_non_synchronizable_storage_answers_the_sync_endpoint_with_label_studios_raw_message(app: TestApp) {
    // Arrange
    let project = app.create_project("not sync").await;
    let (_, p) = make_dir(&app, "ns");
    let id = create_storage(&app, project, &p, json!({"synchronizable": false})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;

    // Act
    let r = app.post(&format!("{LF}/{id}/sync"), &json!({})).await;

    // Assert
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    let text = r.text().await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"message": format!("Storage {id} is not synchronizable")})
    );
    assert_eq!(get_storage(&app, id).await, before, "nothing was queued");
}

async fn a_non_synchronizable_storage_is_still_synced_on_creation_and_auto_exported(app: TestApp) {
    // Arrange
    let (project, tasks, annotations) = annotated_project(&app, &["one"]).await;
    let (dir, p) = make_dir(&app, "ns2");

    // Act
    let created = create_storage(&app, project, &p, json!({"synchronizable": false})).await;
    let id = created["id"].as_i64().unwrap();
    let done = wait_completed(&app, id).await;
    let later = annotate(&app, tasks[0], "again").await;

    // Assert
    assert_eq!(created["synchronizable"], false);
    assert_eq!(created["status"], "queued");
    assert_eq!(done["last_sync_count"], 1);
    assert!(dir.join(annotations[0].to_string()).is_file());
    wait_for("the auto-exported file", || dir.join(later.to_string()).is_file()).await;
}

async fn syncing_after_the_directory_was_removed_is_a_400_and_leaves_the_status_unchanged(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one"]).await;
    let (dir, p) = make_dir(&app, "gone/out3");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    std::fs::remove_dir_all(&dir).unwrap();

    // Act
    let r = app.post(&format!("{LF}/{id}/sync"), &json!({})).await;

    // Assert
    assert_eq!(non_field_error(r).await, does_not_exist(&p));
    assert_eq!(get_storage(&app, id).await, before);
    assert_eq!(job_count(&app, id).await, 1, "no job was queued");
}

async fn an_annotation_save_succeeds_when_its_storage_directory_is_gone(app: TestApp) {
    // Arrange
    let (project, tasks, _) = annotated_project(&app, &["one"]).await;
    let (dir, p) = make_dir(&app, "vanished");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    std::fs::remove_dir_all(&dir).unwrap();

    // Act: `annotate` requires 201 (LS answers 500 here, contract §8.6).
    let created = annotate(&app, tasks[0], "after").await;
    let r = app.patch(&format!("/api/annotations/{created}/"), &json!({"lead_time": 2})).await;

    // Assert: the requests succeeded; the storage shows the failed auto-export instead.
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + crate::storages::TIMEOUT;
    loop {
        let s = get_storage(&app, id).await;
        if s["status"] == "failed" {
            let traceback = s["traceback"].as_str().unwrap();
            assert!(traceback.starts_with("Automatic export failed; retrying with backoff."), "{traceback}");
            break;
        }
        assert_eq!(s["status"], "completed", "{s}");
        assert!(std::time::Instant::now() < deadline, "the failure never showed: {s}");
        tokio::time::sleep(crate::storages::POLL).await;
    }
    assert!(!dir.exists(), "the directory is not recreated");
}

async fn syncing_after_the_directory_was_replaced_by_a_file_is_a_400(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one"]).await;
    let (dir, p) = make_dir(&app, "becomes-file");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();

    // Act
    let r = app.post(&format!("{LF}/{id}/sync"), &json!({})).await;

    // Assert
    assert_eq!(non_field_error(r).await, format!("Absolute local path \"{p}\" is not a directory"));
    assert_eq!(get_storage(&app, id).await, before);
    assert_eq!(std::fs::read_to_string(&dir).unwrap(), "not a directory");
}

async fn a_directory_swapped_for_an_escaping_symlink_after_creation_is_never_written_through(app: TestApp) {
    // Arrange
    let (project, tasks, _) = annotated_project(&app, &["one"]).await;
    let (dir, p) = make_dir(&app, "swapped");
    let (witness_dir, q) = make_dir(&app, "witness");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let witness = create_storage(&app, project, &q, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    wait_completed(&app, witness).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(outside.path(), &dir).unwrap();

    // Act
    let later = annotate(&app, tasks[0], "after the swap").await;
    let synced = app.post(&format!("{LF}/{id}/sync"), &json!({})).await;
    let full = app.post(&format!("{LF}/{id}/sync?full=true"), &json!({})).await;

    // Assert
    let root = app.files_root.display().to_string();
    let message = format!(
        "Absolute local path \"{p}\" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. For example: \"{root}/dataset1\"."
    );
    assert_eq!(non_field_error(synced).await, message);
    assert_eq!(non_field_error(full).await, message);
    let after = get_storage(&app, id).await;
    assert_eq!(after["last_sync_job"], before["last_sync_job"], "no sync was queued");
    assert_eq!(after["meta"]["attempts"], before["meta"]["attempts"], "no sync was queued");
    // The other storage of the project has exported the later annotation by now.
    wait_for("the witness storage's auto-export", || witness_dir.join(later.to_string()).is_file()).await;
    assert!(files_in(outside.path()).is_empty(), "nothing was written outside the root");
}

async fn changing_the_path_writes_nothing_until_the_next_sync_which_exports_everything_there(app: TestApp) {
    // Arrange
    let (project, _, annotations) = annotated_project(&app, &["one", "two"]).await;
    let (old_dir, p) = make_dir(&app, "moved/old");
    let (new_dir, q) = make_dir(&app, "moved/new");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let old_files = snapshot(&old_dir);

    // Act
    let patched = json_of(app.patch(&format!("{LF}/{id}"), &json!({"path": q})).await, StatusCode::OK).await;
    let untouched = files_in(&new_dir);
    sync(&app, id, "").await;
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(patched["path"], q);
    assert_eq!(patched["status"], "completed", "PATCH does not queue a sync");
    assert!(untouched.is_empty(), "PATCH writes nothing: {untouched:?}");
    assert_eq!(s["meta"]["sync_mode"], "full", "a new location needs a full export: {s}");
    assert_eq!(s["meta"]["files_written"], 2, "{s}");
    let mut expected: Vec<String> = annotations.iter().map(i64::to_string).collect();
    expected.sort();
    assert_eq!(files_in(&new_dir), expected);
    assert_eq!(snapshot(&old_dir), old_files, "the old directory is left as it was");
}

async fn the_sync_endpoint_answers_at_once_while_the_sync_runs_in_the_background(backend: Backend) {
    // Arrange
    let app = slow_app(backend).await;
    let texts: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let (project, _, _) = annotated_project(&app, &texts.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (dir, p) = make_dir(&app, "async");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    std::fs::remove_file(dir.join(files_in(&dir)[0].clone())).unwrap();

    // Act
    let s = sync(&app, id, "?full=true").await;

    // Assert
    assert_eq!(keys(&s), STORAGE_KEYS);
    assert!(["queued", "in_progress"].contains(&s["status"].as_str().unwrap()), "{s}");
    assert_eq!(s["meta"]["attempts"], 2);
    assert!(is_meta_time(s["meta"]["time_queued"].as_str().unwrap()));
    assert_eq!(s["last_sync"], Value::Null);
    assert_eq!(s["last_sync_count"], Value::Null);
    let done = wait_completed(&app, id).await;
    assert_eq!(done["meta"]["attempts"], 2);
    assert_eq!(files_in(&dir).len(), 10);
}

async fn a_sync_requested_while_one_is_queued_or_running_does_not_start_a_second(backend: Backend) {
    // Arrange: 30 annotations at 2 per 50 ms page keep the first sync busy for ~750 ms.
    let app = slow_app(backend).await;
    let texts: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let (project, _, _) = annotated_project(&app, &texts.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (dir, p) = make_dir(&app, "double");
    let created = create_storage(&app, project, &p, json!({})).await;
    let id = created["id"].as_i64().unwrap();

    // Act
    let second = sync(&app, id, "").await;
    let third = sync(&app, id, "?full=true").await;

    // Assert
    for s in [&second, &third] {
        assert!(["queued", "in_progress"].contains(&s["status"].as_str().unwrap()), "{s}");
        assert_eq!(s["meta"]["attempts"], 1, "not incremented: {s}");
        assert_eq!(s["meta"]["time_queued"], created["meta"]["time_queued"], "{s}");
        assert_eq!(s["last_sync_job"], created["last_sync_job"], "{s}");
    }
    let done = wait_completed(&app, id).await;
    assert_eq!(done["meta"]["attempts"], 1, "{done}");
    assert_eq!(done["meta"]["files_written"], 30, "{done}");
    assert_eq!(done["last_sync_count"], 30);
    assert_eq!(job_count(&app, id).await, 1, "exactly one job ran");
    assert_eq!(files_in(&dir).len(), 30);
}

async fn attempts_keep_counting_across_sequential_syncs(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one", "two"]).await;
    let (_, p) = make_dir(&app, "attempts");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    assert_eq!(wait_completed(&app, id).await["meta"]["attempts"], 1);

    for expected in 2..=4 {
        // Act
        let queued = sync(&app, id, if expected == 3 { "?full=true" } else { "" }).await;
        let done = wait_completed(&app, id).await;

        // Assert
        assert_eq!(queued["meta"]["attempts"], expected, "{queued}");
        assert_eq!(done["meta"]["attempts"], expected, "{done}");
        assert_eq!(done["last_sync_count"], 2, "{done}");
        assert_eq!(done["meta"]["total_annotations"], 2, "{done}");
    }
    assert_eq!(job_count(&app, id).await, 4);
}

async fn a_completed_sync_has_label_studios_meta_keys_in_order_then_ours(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one", "two", "three"]).await;
    let (_, p) = make_dir(&app, "meta");

    // Act
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(keys(&s), STORAGE_KEYS);
    let meta = &s["meta"];
    assert_eq!(
        keys(meta),
        [
            "attempts",
            "time_queued",
            "time_in_progress",
            "time_last_ping",
            "time_completed",
            "duration",
            "total_annotations",
            "sync_mode",
            "files_written",
            "files_deleted",
            "write_errors"
        ]
    );
    let times: Vec<&str> = ["time_queued", "time_in_progress", "time_last_ping", "time_completed"]
        .iter()
        .map(|k| meta[*k].as_str().unwrap_or_else(|| panic!("{k}: {meta}")))
        .collect();
    for t in &times {
        assert!(is_meta_time(t), "{t}");
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "timestamps in order: {times:?}");
    assert!(meta["duration"].is_f64() && meta["duration"].as_f64().unwrap() >= 0.0, "{meta}");
    assert_eq!(meta["attempts"], 1);
    assert_eq!(meta["total_annotations"], 3);
    assert_eq!(meta["sync_mode"], "full");
    assert_eq!(meta["files_written"], 3);
    assert_eq!(meta["files_deleted"], 0);
    assert_eq!(meta["write_errors"], 0);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["last_sync_count"], 3);
    assert_eq!(s["traceback"], Value::Null);
    let last_sync = s["last_sync"].as_str().unwrap();
    assert!(is_iso_time(last_sync), "{last_sync}");
    let last_sync = labelport::time::parse_any(last_sync).unwrap();
    let completed = labelport::time::parse_any(meta["time_completed"].as_str().unwrap()).unwrap();
    assert!((last_sync - completed).abs() < 1_000_000, "last_sync is the completion time");
}

// ---------------------------------------------------------------------------------
// What is written
// ---------------------------------------------------------------------------------

async fn an_exported_file_is_named_by_the_annotation_id_and_holds_label_studios_bytes(app: TestApp) {
    // Arrange: non-ASCII text, nested data, a float lead time.
    let project = app.create_project("bytes").await;
    let tasks = app
        .import(
            project,
            &json!([
                {"data": {"text": "h\u{e9}llo \u{2713} \u{1F600}", "nested": {"list": [1, 2.5, null, true], "empty": {}}}, "meta": {"src": "\u{e9}"}},
                {"text": "plain"}
            ]),
        )
        .await;
    let body = json!({
        "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positiv\u{e9}"]}}],
        "lead_time": 1.5,
    });
    let first = app.annotate(tasks[0], &body).await["id"].as_i64().unwrap();
    let second = app.annotate(tasks[1], &json!({"result": [], "lead_time": 3})).await["id"].as_i64().unwrap();
    let (dir, p) = make_dir(&app, "cprobe/out1");

    // Act
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Assert
    let mut expected_names = vec![first.to_string(), second.to_string()];
    expected_names.sort();
    assert_eq!(files_in(&dir), expected_names, "named by annotation id, no extension");
    assert_exported_bytes(&app, &dir, first).await;
    assert_exported_bytes(&app, &dir, second).await;
    let text = std::fs::read_to_string(dir.join(first.to_string())).unwrap();
    assert!(text.contains("\"text\": \"h\\u00e9llo \\u2713 \\ud83d\\ude00\""), "{text}");
    let second_text = std::fs::read_to_string(dir.join(second.to_string())).unwrap();
    assert!(second_text.contains("\n  \"result\": [],\n"), "{second_text}");
    assert!(second_text.contains("\n  \"lead_time\": 3.0,\n"), "an integral lead time is a float: {second_text}");
    let doc = read_json(&dir.join(first.to_string()));
    assert!(doc["task"].get("annotations").is_none(), "the nested task has no annotations");
    assert!(doc["completed_by"].is_object());
}

async fn an_auto_exported_file_holds_the_same_bytes_as_a_synced_one(app: TestApp) {
    // Arrange
    let project = app.create_project("auto bytes").await;
    let task = app.import(project, &json!([{"text": "w\u{f6}rld"}])).await[0];
    let (dir, p) = make_dir(&app, "autobytes");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act
    let annotation = annotate(&app, task, "x").await;
    wait_for("the auto-exported file", || dir.join(annotation.to_string()).is_file()).await;
    wait_caught_up(&app, id).await;

    // Assert
    assert_exported_bytes(&app, &dir, annotation).await;
}

async fn a_cancelled_annotation_is_exported_too(app: TestApp) {
    // Arrange
    let project = app.create_project("cancelled").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let skipped = app.annotate(tasks[0], &json!({"result": [], "was_cancelled": true})).await["id"].as_i64().unwrap();
    let (dir, p) = make_dir(&app, "cancelled");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();

    // Act
    let s = wait_completed(&app, id).await;
    let later = app.annotate(tasks[1], &json!({"result": [], "was_cancelled": true})).await["id"].as_i64().unwrap();

    // Assert
    assert_eq!(s["last_sync_count"], 1);
    assert_eq!(read_json(&dir.join(skipped.to_string()))["was_cancelled"], true);
    wait_for("the auto-exported cancelled annotation", || dir.join(later.to_string()).is_file()).await;
}

async fn task_mode_writes_one_json_file_per_task_with_all_its_annotations(app: TestApp) {
    // Arrange: 4 annotations on 3 tasks.
    let project = app.create_project("task mode").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}, {"text": "c"}])).await;
    let a1 = annotate(&app, tasks[0], "x").await;
    let a2 = annotate(&app, tasks[0], "y").await;
    let a3 = annotate(&app, tasks[1], "z").await;
    let a4 = app.annotate(tasks[2], &json!({"result": [], "was_cancelled": true})).await["id"].as_i64().unwrap();
    let (dir, p) = make_dir(&app, "taskmode");

    // Act
    let created = create_storage(&app, project, &p, json!({"export_mode": "task"})).await;
    let s = wait_completed(&app, created["id"].as_i64().unwrap()).await;

    // Assert
    assert_eq!(created["export_mode"], "task");
    assert_eq!(s["export_mode"], "task");
    assert_eq!(s["last_sync_count"], 4, "counts annotations, not files");
    assert_eq!(s["meta"]["total_annotations"], 4);
    let mut names: Vec<String> = tasks.iter().map(|t| format!("{t}.json")).collect();
    names.sort();
    assert_eq!(files_in(&dir), names);
    let doc = read_json(&dir.join(format!("{}.json", tasks[0])));
    assert_eq!(
        keys(&doc),
        [
            "id",
            "annotations",
            "drafts",
            "predictions",
            "data",
            "meta",
            "created_at",
            "updated_at",
            "allow_skip",
            "inner_id",
            "total_annotations",
            "cancelled_annotations",
            "total_predictions",
            "comment_count",
            "unresolved_comment_count",
            "last_comment_updated_at",
            "project",
            "updated_by",
            "comment_authors"
        ]
    );
    assert_eq!(doc["id"], tasks[0]);
    assert_eq!(doc["data"], json!({"text": "a"}));
    let ids: Vec<i64> = doc["annotations"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [a1, a2]);
    let first = &doc["annotations"][0];
    assert_eq!(
        keys(first),
        [
            "id",
            "completed_by",
            "result",
            "was_cancelled",
            "ground_truth",
            "created_at",
            "updated_at",
            "draft_created_at",
            "lead_time",
            "prediction",
            "result_count",
            "unique_id",
            "import_id",
            "last_action",
            "bulk_created",
            "task",
            "project",
            "updated_by",
            "parent_prediction",
            "parent_annotation",
            "last_created_by"
        ]
    );
    assert_eq!(keys(&first["completed_by"]), ["id", "email", "first_name", "last_name"]);
    assert_eq!(first["task"], tasks[0]);
    assert_eq!(first["prediction"], json!({}));
    assert_eq!(first["result_count"], 1);
    assert!(uuid::Uuid::parse_str(first["unique_id"].as_str().unwrap()).is_ok());
    let third = read_json(&dir.join(format!("{}.json", tasks[1])));
    assert_eq!(third["annotations"][0]["id"], a3);
    let cancelled = read_json(&dir.join(format!("{}.json", tasks[2])));
    assert_eq!(cancelled["annotations"][0]["id"], a4, "cancelled annotations are included");
    let raw = std::fs::read(dir.join(format!("{}.json", tasks[0]))).unwrap();
    assert!(raw.is_ascii() && raw.ends_with(b"\n}") && raw.starts_with(b"{\n  \"id\": "));
}

async fn task_mode_rewrites_the_task_file_when_one_annotation_is_deleted_and_removes_it_with_the_last(app: TestApp) {
    // Arrange
    let project = app.create_project("task mode delete").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let a1 = annotate(&app, tasks[0], "x").await;
    let a2 = annotate(&app, tasks[0], "y").await;
    let a3 = annotate(&app, tasks[1], "z").await;
    let (dir, p) = make_dir(&app, "taskdel");
    let id = create_storage(&app, project, &p, json!({"export_mode": "task", "can_delete_objects": true})).await["id"]
        .as_i64()
        .unwrap();
    wait_completed(&app, id).await;
    let file = dir.join(format!("{}.json", tasks[0]));
    let other = dir.join(format!("{}.json", tasks[1]));
    let ids_in = |path: &Path| -> Vec<i64> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str::<Value>(&text).unwrap()["annotations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_i64().unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    assert_eq!(ids_in(&file), [a1, a2]);

    // Act + Assert: auto-export of a new annotation rewrites its task's file.
    let a4 = annotate(&app, tasks[1], "w").await;
    wait_for("the task file with the new annotation", || ids_in(&other) == [a3, a4]).await;

    // Act + Assert: deleting one annotation rewrites the file with the others.
    assert_eq!(app.delete(&format!("/api/annotations/{a1}/")).await.status(), StatusCode::NO_CONTENT);
    wait_for("the task file without the deleted annotation", || ids_in(&file) == [a2]).await;

    // Act + Assert: deleting the last one removes the file.
    assert_eq!(app.delete(&format!("/api/annotations/{a2}/")).await.status(), StatusCode::NO_CONTENT);
    wait_for("the task file to be removed", || !file.exists()).await;
    assert_eq!(ids_in(&other), [a3, a4]);
    assert_eq!(files_in(&dir), [format!("{}.json", tasks[1])]);
}

// ---------------------------------------------------------------------------------
// Incremental syncs
// ---------------------------------------------------------------------------------

async fn a_resync_with_nothing_changed_writes_nothing_and_leaves_every_file_untouched(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one", "two", "three"]).await;
    let (dir, p) = make_dir(&app, "incr");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let first = wait_completed(&app, id).await;
    assert_eq!(first["meta"]["files_written"], 3);
    let before = snapshot(&dir);

    // Act
    sync(&app, id, "").await;
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(s["meta"]["sync_mode"], "incremental", "{s}");
    assert_eq!(s["meta"]["files_written"], 0, "{s}");
    assert_eq!(s["meta"]["files_deleted"], 0, "{s}");
    assert_eq!(s["meta"]["write_errors"], 0, "{s}");
    assert_eq!(s["last_sync_count"], 3, "{s}");
    assert_eq!(s["meta"]["total_annotations"], 3, "{s}");
    assert_eq!(snapshot(&dir), before, "no file was rewritten");
}

async fn a_full_resync_with_nothing_changed_writes_nothing_either(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one", "two", "three"]).await;
    let (dir, p) = make_dir(&app, "fullnoop");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let before = snapshot(&dir);

    // Act
    sync(&app, id, "?full=true").await;
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(s["meta"]["sync_mode"], "full", "{s}");
    assert_eq!(s["meta"]["files_written"], 0, "{s}");
    assert_eq!(s["last_sync_count"], 3, "{s}");
    assert_eq!(snapshot(&dir), before, "no file was rewritten");
}

async fn the_total_a_resync_reports_follows_creates_deletes_task_deletes_and_imports(app: TestApp) {
    // Arrange: the total is a kept count (not counted per sync): every path that adds or
    // removes annotations must keep it right, and another project's must not touch it.
    let (project, tasks, annotations) = annotated_project(&app, &["one", "two", "three"]).await;
    let (other, other_tasks, _) = annotated_project(&app, &["elsewhere"]).await;
    let (_dir, p) = make_dir(&app, "totals");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    assert_eq!(wait_completed(&app, id).await["meta"]["total_annotations"], 3);
    let total_after_sync = || async {
        sync(&app, id, "").await;
        let s = wait_completed(&app, id).await;
        assert_eq!(s["last_sync_count"], s["meta"]["total_annotations"], "{s}");
        s["meta"]["total_annotations"].as_i64().unwrap()
    };

    // Act and assert, one kind of change at a time
    annotate(&app, tasks[0], "second").await;
    let cancelled = json!({"result": [], "was_cancelled": true});
    app.annotate(tasks[1], &cancelled).await;
    assert_eq!(total_after_sync().await, 5, "created, a cancelled one included");
    let r = app.delete(&format!("/api/annotations/{}/", annotations[2])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(total_after_sync().await, 4, "one annotation deleted");
    let r = app.delete(&format!("/api/tasks/{}/", tasks[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(total_after_sync().await, 2, "a task with two annotations deleted");
    let imported = json!([
        {"data": {"text": "i1"}, "annotations": [{"result": []}, {"result": []}]},
        {"data": {"text": "i2"}, "annotations": [{"result": []}], "predictions": [{"result": []}]},
        {"data": {"text": "i3"}},
    ]);
    app.import(project, &imported).await;
    assert_eq!(total_after_sync().await, 5, "three annotations imported (predictions are not counted)");
    annotate(&app, other_tasks[0], "other").await;
    let r = app.delete(&format!("/api/projects/{other}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(total_after_sync().await, 5, "another project's changes leave it alone");
    let full = {
        sync(&app, id, "?full=true").await;
        wait_completed(&app, id).await
    };
    assert_eq!(full["meta"]["total_annotations"], 5, "{full}");
    assert_eq!(full["last_sync_count"], 5, "{full}");
}

async fn changing_one_annotation_rewrites_exactly_its_file(app: TestApp) {
    // Arrange
    let (project, _, annotations) = annotated_project(&app, &["one", "two", "three"]).await;
    let (dir, p) = make_dir(&app, "changeone");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let before = snapshot(&dir);
    let changed = annotations[1];
    let file = dir.join(changed.to_string());
    let old = std::fs::read(&file).unwrap();

    // Act
    let new_result =
        json!([{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Changed"]}}]);
    let r = app.patch(&format!("/api/annotations/{changed}/"), &json!({"result": new_result})).await;
    assert_eq!(r.status(), StatusCode::OK);
    wait_for("the auto-export of the change", || std::fs::read(&file).unwrap() != old).await;
    sync(&app, id, "").await;
    let s = wait_completed(&app, id).await;

    // Assert
    let after = snapshot(&dir);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (name, version) in &after {
        if *name == changed.to_string() {
            assert_ne!(version, &before[name], "{name} was rewritten");
        } else {
            assert_eq!(version, &before[name], "{name} was left alone");
        }
    }
    assert_eq!(read_json(&file)["result"], new_result);
    assert!(s["meta"]["files_written"].as_i64().unwrap() <= 1, "{s}");
    assert_eq!(s["meta"]["sync_mode"], "incremental");
    assert_exported_bytes(&app, &dir, changed).await;
}

async fn a_full_sync_restores_a_file_deleted_by_hand(app: TestApp) {
    // Arrange
    let (project, _, annotations) = annotated_project(&app, &["one", "two", "three"]).await;
    let (dir, p) = make_dir(&app, "restore");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let before = snapshot(&dir);
    let victim = annotations[0].to_string();
    std::fs::remove_file(dir.join(&victim)).unwrap();

    // Act
    sync(&app, id, "?full=true").await;
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(s["meta"]["sync_mode"], "full");
    assert_eq!(s["meta"]["files_written"], 1, "{s}");
    let after = snapshot(&dir);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (name, version) in &after {
        if *name == victim {
            assert_eq!(read_json(&dir.join(name))["id"], annotations[0]);
        } else {
            assert_eq!(version, &before[name], "{name} was left alone");
        }
    }
    assert_exported_bytes(&app, &dir, annotations[0]).await;
}

async fn a_full_sync_rewrites_documents_whose_task_changed(app: TestApp) {
    // Arrange: the first annotation's nested task counts 1 annotation when written;
    // a second annotation on the same task changes the task (contract §5.3: "the next
    // sync rewrites it with the settled values").
    let project = app.create_project("settled").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    let first = annotate(&app, task, "x").await;
    let (dir, p) = make_dir(&app, "settled");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let second = annotate(&app, task, "y").await;
    wait_for("the auto-exported second annotation", || dir.join(second.to_string()).is_file()).await;

    // Act
    sync(&app, id, "?full=true").await;
    wait_completed(&app, id).await;

    // Assert
    assert_eq!(read_json(&dir.join(first.to_string()))["task"]["total_annotations"], 2);
    assert_exported_bytes(&app, &dir, first).await;
    assert_exported_bytes(&app, &dir, second).await;
}

// ---------------------------------------------------------------------------------
// Auto-export and deletion
// ---------------------------------------------------------------------------------

async fn creating_and_patching_an_annotation_exports_it_without_a_sync(app: TestApp) {
    // Arrange
    let project = app.create_project("auto").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    let (dir, p) = make_dir(&app, "auto");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let synced = wait_completed(&app, id).await;
    assert!(files_in(&dir).is_empty());

    // Act + Assert: create.
    let annotation = annotate(&app, task, "first").await;
    let file = dir.join(annotation.to_string());
    wait_for("the auto-exported file", || file.is_file()).await;
    assert_eq!(read_json(&file)["result"][0]["value"]["choices"], json!(["first"]));

    // Act + Assert: update.
    let r = app
        .patch(
            &format!("/api/annotations/{annotation}/"),
            &json!({"result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["second"]}}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    wait_for("the updated file", || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v["result"][0]["value"]["choices"] == json!(["second"]))
    })
    .await;
    let now = get_storage(&app, id).await;
    assert_eq!(now["meta"], synced["meta"], "no sync ran");
    assert_eq!(now["status"], "completed");
}

async fn deleting_an_annotation_removes_its_file_only_when_can_delete_objects_is_true(app: TestApp) {
    // Arrange
    let (project, _, annotations) = annotated_project(&app, &["one", "two"]).await;
    let mut storages = Vec::new();
    for (name, flag) in [("deltrue", json!(true)), ("delnull", json!(null)), ("delfalse", json!(false))] {
        let (dir, p) = make_dir(&app, name);
        let id = create_storage(&app, project, &p, json!({"can_delete_objects": flag})).await["id"].as_i64().unwrap();
        wait_completed(&app, id).await;
        assert_eq!(files_in(&dir).len(), 2);
        storages.push((id, dir));
    }
    let gone = annotations[0].to_string();

    // Act
    let r = app.delete(&format!("/api/annotations/{}/", annotations[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Assert
    let (true_id, true_dir) = &storages[0];
    wait_for("the file to be deleted", || !true_dir.join(&gone).exists()).await;
    wait_caught_up(&app, *true_id).await;
    assert_eq!(files_in(true_dir), [annotations[1].to_string()]);
    for (id, dir) in &storages[1..] {
        wait_caught_up(&app, *id).await;
        assert!(dir.join(&gone).is_file(), "{} keeps the file", dir.display());
        assert_eq!(files_in(dir).len(), 2);
    }
}

async fn deleting_a_task_removes_its_annotations_files_when_can_delete_objects_is_true(app: TestApp) {
    // Arrange
    let project = app.create_project("task delete").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let a1 = annotate(&app, tasks[0], "x").await;
    let a2 = annotate(&app, tasks[0], "y").await;
    let a3 = annotate(&app, tasks[1], "z").await;
    let (dir, p) = make_dir(&app, "taskgone");
    let (kept_dir, q) = make_dir(&app, "taskkept");
    let id = create_storage(&app, project, &p, json!({"can_delete_objects": true})).await["id"].as_i64().unwrap();
    let kept = create_storage(&app, project, &q, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    wait_completed(&app, kept).await;

    // Act
    let r = app.delete(&format!("/api/tasks/{}/", tasks[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Assert
    wait_for("the task's annotation files to be deleted", || {
        !dir.join(a1.to_string()).exists() && !dir.join(a2.to_string()).exists()
    })
    .await;
    wait_caught_up(&app, id).await;
    assert_eq!(files_in(&dir), [a3.to_string()]);
    wait_caught_up(&app, kept).await;
    assert_eq!(files_in(&kept_dir).len(), 3);
}

async fn deleting_the_project_leaves_the_files(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one", "two"]).await;
    let (dir, p) = make_dir(&app, "projgone");
    let id = create_storage(&app, project, &p, json!({"can_delete_objects": true})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let before = snapshot(&dir);

    // Act
    let r = app.delete(&format!("/api/projects/{project}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Assert: once the worker has demonstrably done later work, the files are still there.
    assert_error(app.get(&format!("{LF}/{id}")).await, StatusCode::NOT_FOUND).await;
    let (later_project, later_tasks, _) = annotated_project(&app, &["x"]).await;
    let (later_dir, q) = make_dir(&app, "later");
    let later = create_storage(&app, later_project, &q, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, later).await;
    let marker = annotate(&app, later_tasks[0], "marker").await;
    wait_for("a later auto-export", || later_dir.join(marker.to_string()).is_file()).await;
    assert_eq!(snapshot(&dir), before);
    assert_eq!(link_count(&app, id).await, 0, "the storage's links went with it");
    assert_eq!(link_count(&app, later).await, 2);
}

// ---------------------------------------------------------------------------------
// Deleting a storage while it syncs
// ---------------------------------------------------------------------------------

async fn deleting_a_storage_while_it_syncs_is_safe_and_the_server_keeps_working(backend: Backend) {
    // Arrange
    let app = slow_app(backend).await;
    let texts: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let (project, tasks, _) = annotated_project(&app, &texts.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let (dir, p) = make_dir(&app, "doomed");
    let id = create_storage(&app, project, &p, json!({"can_delete_objects": true})).await["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + crate::storages::TIMEOUT;
    loop {
        let s = get_storage(&app, id).await;
        if s["status"] == "in_progress" {
            break;
        }
        assert_eq!(s["status"], "queued", "the slowed sync must still be running: {s}");
        assert!(std::time::Instant::now() < deadline, "the sync never started");
        tokio::time::sleep(crate::storages::POLL).await;
    }

    // Act
    let r = app.delete(&format!("{LF}/{id}")).await;

    // Assert
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let detail = "No LocalFilesExportStorage matches the given query.";
    assert_eq!(assert_error(app.get(&format!("{LF}/{id}")).await, StatusCode::NOT_FOUND).await["detail"], detail);
    let r = app.post(&format!("{LF}/{id}/sync"), &json!({})).await;
    assert_eq!(assert_error(r, StatusCode::NOT_FOUND).await["detail"], detail);
    assert_eq!(json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await, json!([]));
    let (fresh_dir, q) = make_dir(&app, "fresh");
    let fresh = create_storage(&app, project, &q, json!({})).await["id"].as_i64().unwrap();
    let s = wait_sync(&app, fresh).await;
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["last_sync_count"], 30);
    assert_eq!(files_in(&fresh_dir).len(), 30);
    let extra = annotate(&app, tasks[0], "after").await;
    wait_for("auto-export after the deletion", || fresh_dir.join(extra.to_string()).is_file()).await;
    // The document is in place before its link is recorded: wait for the round to end.
    wait_caught_up(&app, fresh).await;
    assert!(files_in(&dir).len() <= 30, "the deleted storage's directory got no more than its annotations");
    assert!(!dir.join(extra.to_string()).exists(), "the deleted storage is not auto-exported to");
    assert_eq!(link_count(&app, id).await, 0, "no link outlives its storage, nor is written after it");
    assert_eq!(link_count(&app, fresh).await, 31);
}

/// The stale-job rule (contract §4.4) as storage lists apply it: a storage left
/// `in_progress` by a worker that died (no live job, last ping older than 25 s) shows
/// `failed` with Label Studio's traceback; one whose ping is fresh, or whose job is
/// still queued or running, stays as it is.
async fn a_listed_storage_left_in_progress_without_a_live_job_and_an_old_ping_shows_failed(backend: Backend) {
    // Arrange: three storages in progress, as a worker left them; no worker runs here.
    let app = spawn_app_with(backend, |s| s.sync.run_worker = false).await;
    let project = app.create_project("stale").await;
    let mut ids = Vec::new();
    for name in ["dead", "fresh", "live"] {
        let (_, path) = make_dir(&app, name);
        ids.push(create_storage(&app, project, &path, json!({"title": name})).await["id"].as_i64().unwrap());
    }
    let db = app.state.db.pool();
    let old = "2020-01-01T00:00:00.000000Z";
    let fresh = labelport::time::iso(labelport::time::now_micros());
    for (id, ping) in [(ids[0], old), (ids[1], fresh.as_str()), (ids[2], old)] {
        sqlx::query("UPDATE export_storages SET status = 'in_progress', meta = $1 WHERE id = $2")
            .bind(json!({"time_last_ping": ping}).to_string())
            .bind(id)
            .execute(db)
            .await
            .unwrap();
        // Only the third keeps a live job (creation queued one for each).
        let job_state = if id == ids[2] { "running" } else { "completed" };
        sqlx::query("UPDATE sync_jobs SET state = $1 WHERE storage_id = $2")
            .bind(job_state)
            .bind(id)
            .execute(db)
            .await
            .unwrap();
    }

    // Act
    let listed = json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await;

    // Assert
    let by_id = |id: i64| listed.as_array().unwrap().iter().find(|s| s["id"] == id).unwrap().clone();
    assert_eq!(by_id(ids[0])["status"], "failed");
    let traceback = by_id(ids[0])["traceback"].as_str().unwrap().to_owned();
    assert!(
        traceback.starts_with("It appears the job was failed because the last ping time is too old"),
        "{traceback}"
    );
    assert_eq!(by_id(ids[1])["status"], "in_progress", "a fresh ping");
    assert_eq!(by_id(ids[2])["status"], "in_progress", "a live job");
    assert_eq!(get_storage(&app, ids[0]).await["status"], "failed", "stored, not only shown");
}
