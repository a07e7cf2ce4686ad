//! The `gcs` export storage against fake-gcs-server (on loopback): the API surface
//! with Label Studio's fields and messages, what is written where, byte for byte,
//! incremental syncs, auto-export and deletion, sealed secrets, credentials errors,
//! the SSRF check of a key's token endpoint, a sync through injected faults, and the
//! target's conformance suite.
//!
//! The server under test finds the emulator through `STORAGE_EMULATOR_HOST`, read
//! when a target is built: each test sets (or clears) it first. nextest runs every
//! test in its own process, so tests do not see each other's setting.

use crate::emulators::{gcs_endpoint, unique_name};
use crate::fault_proxy::{self, Fault};
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::storages::{annotate, json_of, keys, non_field_error, FINAL_STATUSES, POLL, TIMEOUT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GCS: &str = "/api/storages/export/gcs";

/// A throwaway RSA key (the one of the target's unit tests).
const TEST_KEY: &str = include_str!("../../src/storage/gcs/testdata/test_key.pem");

/// Response keys of a GCS storage, in Label Studio's order (plus ours).
const GCS_KEYS: &[&str] = &[
    "id",
    "type",
    "synchronizable",
    "bucket",
    "prefix",
    "regex_filter",
    "use_blob_urls",
    "google_project_id",
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
    "project",
    "export_mode",
];

/// A service-account key whose token endpoint is `token_uri`.
fn service_account(token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "labelport-test",
        "private_key_id": "0123456789abcdef",
        "private_key": TEST_KEY,
        "client_email": "exporter@labelport-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    })
    .to_string()
}

/// Parts of the key that must never come back (the key body, its id).
fn secret_markers() -> Vec<String> {
    let body_line = TEST_KEY.lines().nth(1).unwrap().to_owned();
    vec![body_line, "0123456789abcdef".into(), "PRIVATE KEY".into()]
}

/// Points the server under test at the emulator.
fn use_emulator() {
    std::env::set_var("STORAGE_EMULATOR_HOST", gcs_endpoint());
}

/// Makes the server under test use Google's endpoint and real credentials.
fn no_emulator() {
    std::env::remove_var("STORAGE_EMULATOR_HOST");
    std::env::remove_var("GOOGLE_APPLICATION_CREDENTIALS");
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `{emulator}/storage/v1/b/{bucket}/o/{object}` with the name percent-encoded.
fn object_url(bucket: &str, name: &str) -> url::Url {
    let mut url: url::Url = gcs_endpoint().parse().unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().extend(["storage", "v1", "b", bucket, "o", name]);
    url
}

/// A new, empty bucket on the emulator; points the server at the emulator.
async fn new_bucket() -> String {
    use_emulator();
    let name = unique_name("lp");
    let r = http().post(format!("{}/storage/v1/b", gcs_endpoint())).json(&json!({"name": name})).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    name
}

/// The raw bytes of an object, read straight from the emulator.
async fn object(bucket: &str, name: &str) -> Option<Vec<u8>> {
    let mut url = object_url(bucket, name);
    url.query_pairs_mut().append_pair("alt", "media");
    let r = http().get(url).send().await.unwrap();
    match r.status() {
        StatusCode::OK => Some(r.bytes().await.unwrap().to_vec()),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET {bucket}/{name}: {other}"),
    }
}

/// Every object name in a bucket, sorted.
async fn object_names(bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url: url::Url = format!("{}/storage/v1/b/{bucket}/o", gcs_endpoint()).parse().unwrap();
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("pageToken", t);
        }
        let page: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        for item in page["items"].as_array().into_iter().flatten() {
            out.push(item["name"].as_str().unwrap().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    out.sort();
    out
}

async fn delete_object(bucket: &str, name: &str) {
    let r = http().delete(object_url(bucket, name)).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE {name}: {}", r.status());
}

fn gcs_body(project: i64, bucket: &str, extra: Value) -> Value {
    let mut body = json!({
        "project": project,
        "title": "to gcs",
        "bucket": bucket,
        // Valid JSON, unused against the emulator (no credentials there).
        "google_application_credentials": service_account("https://oauth2.googleapis.com/token"),
        "google_project_id": "labelport-test",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn create_gcs(app: &TestApp, project: i64, bucket: &str, extra: Value) -> Value {
    json_of(app.post(GCS, &gcs_body(project, bucket, extra)).await, StatusCode::CREATED).await
}

async fn get_gcs(app: &TestApp, id: i64) -> Value {
    json_of(app.get(&format!("{GCS}/{id}")).await, StatusCode::OK).await
}

/// Polls until the storage's sync finished and returns it.
async fn wait_final(app: &TestApp, id: i64) -> Value {
    let deadline = Instant::now() + TIMEOUT * 4;
    loop {
        let s = get_gcs(app, id).await;
        if FINAL_STATUSES.contains(&s["status"].as_str().unwrap_or_default()) {
            return s;
        }
        assert!(Instant::now() < deadline, "storage {id} did not finish: {s}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until the storage's sync finished, requiring `completed`.
async fn wait_gcs_completed(app: &TestApp, id: i64) -> Value {
    let s = wait_final(app, id).await;
    assert_eq!(s["status"], "completed", "{s}");
    s
}

/// Polls until `check` holds for the bucket's object names.
async fn wait_names(bucket: &str, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = object_names(bucket).await;
        if check(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; names: {found:?}");
        tokio::time::sleep(POLL * 5).await;
    }
}
/// A project with `n` annotated tasks (non-ASCII text); returns (project, annotation ids).
async fn project_with_annotations(app: &TestApp, n: usize) -> (i64, Vec<i64>) {
    crate::storages::imported_annotations(app, "gcs export", n).await
}

async fn first_task(app: &TestApp, project: i64) -> i64 {
    json_of(app.get(&format!("/api/tasks?project={project}")).await, StatusCode::OK).await["tasks"][0]["id"]
        .as_i64()
        .unwrap()
}

async fn a_gcs_storage_is_created_read_listed_patched_and_deleted_without_its_secret(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 2).await;

    // Act
    let created = create_gcs(&app, project, &bucket, json!({"prefix": "exports", "can_delete_objects": true})).await;
    let id = created["id"].as_i64().unwrap();
    let got = get_gcs(&app, id).await;
    let listed = json_of(app.get(&format!("{GCS}?project={project}")).await, StatusCode::OK).await;
    let all = json_of(app.get(&format!("/api/storages/export?project={project}")).await, StatusCode::OK).await;
    wait_gcs_completed(&app, id).await;
    let patched = json_of(app.patch(&format!("{GCS}/{id}"), &json!({"title": "renamed"})).await, StatusCode::OK).await;
    let validated = app.post(&format!("{GCS}/validate"), &gcs_body(project, &bucket, json!({}))).await;
    let form = json_of(app.get(&format!("{GCS}/form")).await, StatusCode::OK).await;

    // Assert: Label Studio's keys and order; the write-only field never comes back.
    assert_eq!(keys(&created), GCS_KEYS);
    assert_eq!(keys(&got), GCS_KEYS);
    assert_eq!(created["type"], "gcs");
    assert_eq!(created["bucket"], bucket.as_str());
    assert_eq!(created["prefix"], "exports");
    assert_eq!(created["google_project_id"], "labelport-test");
    assert_eq!(created["status"], "queued");
    assert_eq!(patched["title"], "renamed");
    assert_eq!(validated.status(), StatusCode::OK, "{:?}", validated.text().await);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(all.as_array().unwrap().iter().filter(|s| s["type"] == "gcs").count(), 1);
    assert_eq!(form[1]["fields"][0]["name"], "google_application_credentials");
    for text in [created.to_string(), got.to_string(), listed.to_string(), all.to_string(), patched.to_string()] {
        assert!(!text.contains("google_application_credentials"), "{text}");
        for secret in secret_markers() {
            assert!(!text.contains(&secret), "a secret came back: {text}");
        }
    }

    // Act + Assert: delete.
    assert_eq!(app.delete(&format!("{GCS}/{id}")).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("{GCS}/{id}")).await.status(), StatusCode::NOT_FOUND);
}

async fn the_credentials_are_stored_sealed_and_kept_across_partial_updates(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 1).await;
    let id = create_gcs(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_gcs_completed(&app, id).await;

    // Act: PATCH without the secret, validate with the id only.
    let patched = json_of(app.patch(&format!("{GCS}/{id}"), &json!({"title": "renamed"})).await, StatusCode::OK).await;
    let validated =
        app.post(&format!("{GCS}/validate"), &json!({"id": id, "project": project, "bucket": bucket})).await;

    // Assert: no column of the database holds the key in plain text.
    assert_eq!(patched["title"], "renamed");
    assert_eq!(validated.status(), StatusCode::OK, "{:?}", validated.text().await);
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT config, secrets FROM export_storages WHERE id = $1")
            .bind(id)
            .fetch_all(app.state.db.pool())
            .await
            .unwrap();
    let (config, sealed) = &rows[0];
    let sealed = sealed.as_deref().expect("the credentials are stored");
    for secret in secret_markers() {
        assert!(!config.contains(&secret) && !sealed.contains(&secret), "plain secret in the database");
    }
    let opened = app.state.secrets.open_map(Some(sealed)).unwrap();
    assert_eq!(opened["google_application_credentials"], service_account("https://oauth2.googleapis.com/token"));
    // Still usable after the partial update: a new annotation reaches the bucket.
    let new_id = annotate(&app, first_task(&app, project).await, "Negative").await;
    wait_names(&bucket, "auto-export after PATCH", |n| n.contains(&new_id.to_string())).await;
}

async fn a_sync_writes_each_annotation_as_compact_json_under_the_prefix(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 5).await;
    let local = crate::storages::make_dir(&app, "same");

    // Act: the same project to GCS and to local files.
    let id = create_gcs(&app, project, &bucket, json!({"prefix": "exports"})).await["id"].as_i64().unwrap();
    let lf = crate::storages::create_storage(&app, project, &local.1, json!({})).await["id"].as_i64().unwrap();
    let done = wait_gcs_completed(&app, id).await;
    crate::storages::wait_completed(&app, lf).await;

    // Assert: `exports/<id>`, and the bytes are `json.dumps(doc)` of the same
    // document the local-files storage writes indented.
    let mut expected: Vec<String> = ids.iter().map(|i| format!("exports/{i}")).collect();
    expected.sort();
    assert_eq!(object_names(&bucket).await, expected);
    assert_eq!(done["meta"]["files_written"], 5);
    assert_eq!(done["last_sync_count"], 5);
    for annotation in &ids {
        let bytes = object(&bucket, &format!("exports/{annotation}")).await.unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.is_ascii(), "non-ASCII is escaped");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, crate::pyjson::dumps(&parsed), "the object is json.dumps(doc)");
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(local.0.join(annotation.to_string())).unwrap()).unwrap();
        let (mut a, mut b) = (parsed.clone(), on_disk.clone());
        a["created_ago"] = Value::Null;
        b["created_ago"] = Value::Null;
        assert_eq!(a, b, "same document as local files");
        assert_eq!(keys(&parsed), keys(&on_disk), "same key order");
    }
}

async fn prefixes_are_used_verbatim_and_no_prefix_gives_bare_names(app: TestApp) {
    // Arrange
    let (project, ids) = project_with_annotations(&app, 1).await;
    let (slash, bare, odd) = (new_bucket().await, new_bucket().await, new_bucket().await);

    // Act
    let a = create_gcs(&app, project, &slash, json!({"prefix": "a/"})).await["id"].as_i64().unwrap();
    let b = create_gcs(&app, project, &bare, json!({})).await["id"].as_i64().unwrap();
    let c = create_gcs(&app, project, &odd, json!({"prefix": "sp ace+plus&%/\u{e9}"})).await["id"].as_i64().unwrap();
    wait_gcs_completed(&app, a).await;
    wait_gcs_completed(&app, b).await;
    wait_gcs_completed(&app, c).await;

    // Assert: Label Studio forms `<prefix>/<key>` without normalising.
    assert_eq!(object_names(&slash).await, vec![format!("a//{}", ids[0])]);
    assert_eq!(object_names(&bare).await, vec![ids[0].to_string()]);
    assert_eq!(object_names(&odd).await, vec![format!("sp ace+plus&%/\u{e9}/{}", ids[0])]);
    // A full resync lists the odd prefix back and finds the object in place.
    json_of(app.post(&format!("{GCS}/{c}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(wait_gcs_completed(&app, c).await["meta"]["files_written"], 0);
}

async fn changes_reach_the_bucket_incrementally_and_deletions_remove_objects(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 3).await;
    let id = create_gcs(&app, project, &bucket, json!({"can_delete_objects": true, "prefix": "p"})).await["id"]
        .as_i64()
        .unwrap();
    wait_gcs_completed(&app, id).await;
    let task = first_task(&app, project).await;

    // Act 1: a new annotation is exported by itself.
    let new_id = annotate(&app, task, "Neutral").await;
    wait_names(&bucket, "the new annotation", |n| n.contains(&format!("p/{new_id}"))).await;

    // Act 2: an update rewrites the object.
    let r = app
        .patch(&format!("/api/annotations/{new_id}/"), &json!({"result": [{"value": {"choices": ["Changed"]}}]}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let body = object(&bucket, &format!("p/{new_id}")).await.unwrap();
        if String::from_utf8_lossy(&body).contains("Changed") {
            break;
        }
        assert!(Instant::now() < deadline, "update not exported");
        tokio::time::sleep(POLL * 5).await;
    }

    // Act 3: deleting annotations deletes their objects (Label Studio cannot on GCS).
    for gone in &ids[..2] {
        let r = app.delete(&format!("/api/annotations/{gone}/")).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    wait_names(&bucket, "the deletions", |n| {
        !n.contains(&format!("p/{}", ids[0])) && !n.contains(&format!("p/{}", ids[1]))
    })
    .await;

    // Act 4: an incremental sync now has nothing to write.
    let synced = json_of(app.post(&format!("{GCS}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(synced["status"], "queued");
    let done = wait_gcs_completed(&app, id).await;
    assert_eq!(done["meta"]["sync_mode"], "incremental");
    assert_eq!(done["meta"]["files_written"], 0);
    assert_eq!(object_names(&bucket).await.len(), 2, "the third annotation and the new one");
}

async fn deleting_a_task_deletes_its_annotations_objects_in_one_go(app: TestApp) {
    // Arrange: one task with several annotations, so the deletions go out together.
    let bucket = new_bucket().await;
    let project = app.create_project("batch delete").await;
    let task = app.import(project, &json!([{"text": "x"}, {"text": "y"}])).await;
    let mut mine = Vec::new();
    for choice in ["a", "b", "c", "d"] {
        mine.push(annotate(&app, task[0], choice).await);
    }
    let other = annotate(&app, task[1], "e").await;
    let id = create_gcs(&app, project, &bucket, json!({"can_delete_objects": true})).await["id"].as_i64().unwrap();
    wait_gcs_completed(&app, id).await;
    assert_eq!(object_names(&bucket).await.len(), 5);

    // Act
    assert_eq!(app.delete(&format!("/api/tasks/{}/", task[0])).await.status(), StatusCode::NO_CONTENT);

    // Assert
    let left = wait_names(&bucket, "the task's objects to go", |n| n.len() == 1).await;
    assert_eq!(left, vec![other.to_string()]);
}

async fn a_full_resync_restores_missing_objects_and_rewrites_nothing_else(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 20).await;
    let id = create_gcs(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_gcs_completed(&app, id).await;
    delete_object(&bucket, &ids[3].to_string()).await;
    delete_object(&bucket, &ids[7].to_string()).await;

    // Act
    json_of(app.post(&format!("{GCS}/{id}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    let done = wait_gcs_completed(&app, id).await;

    // Assert: one listing told what was in place; only the two missing were written.
    assert_eq!(done["meta"]["sync_mode"], "full");
    assert_eq!(done["meta"]["files_written"], 2, "{done}");
    assert_eq!(object_names(&bucket).await.len(), 20);
}

async fn a_missing_bucket_is_a_400_naming_it_and_validate_masks_the_cause(app: TestApp) {
    // Arrange
    use_emulator();
    let project = app.create_project("missing").await;
    let body = gcs_body(project, "no-such-bucket-here", json!({}));

    // Act
    let created = app.post(GCS, &body).await;
    let validated = app.post(&format!("{GCS}/validate"), &body).await;
    let mut no_bucket = body.clone();
    no_bucket.as_object_mut().unwrap().remove("bucket");
    let without = app.post(GCS, &no_bucket).await;

    // Assert
    let message = non_field_error(created).await;
    assert!(message.starts_with("Cannot find bucket no-such-bucket-here in GCS"), "{message}");
    assert_eq!(non_field_error(validated).await, "Error validating storage connection");
    assert_eq!(non_field_error(without).await, "the GCS bucket name is empty");
    let listed = json_of(app.get(&format!("{GCS}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(listed, json!([]), "nothing was stored");
}

async fn invalid_credentials_json_gives_label_studios_message(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let project = app.create_project("bad json").await;
    let cases = [
        ("not json", "Expecting value: line 1 column 1 (char 0)"),
        (
            "{\"type\": \"service_account\",}",
            "Expecting property name enclosed in double quotes: line 1 column 28 (char 27)",
        ),
    ];
    for (text, python) in cases {
        let body = gcs_body(project, &bucket, json!({"google_application_credentials": text}));

        // Act
        let created = app.post(GCS, &body).await;
        let validated = app.post(&format!("{GCS}/validate"), &body).await;

        // Assert
        let want = format!("Google Application Credentials must be valid JSON string. {python}");
        assert_eq!(non_field_error(created).await, want);
        assert_eq!(non_field_error(validated).await, want);
    }
    // Empty means Application Default Credentials (the emulator needs none).
    let created = app.post(GCS, &gcs_body(project, &bucket, json!({"google_application_credentials": ""}))).await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

async fn a_sync_to_a_deleted_bucket_fails_naming_the_bucket(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 2).await;
    let id = create_gcs(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_gcs_completed(&app, id).await;
    for name in object_names(&bucket).await {
        delete_object(&bucket, &name).await;
    }
    let r = http().delete(format!("{}/storage/v1/b/{bucket}", gcs_endpoint())).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE bucket: {}", r.status());

    // Act
    json_of(app.post(&format!("{GCS}/{id}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    let s = wait_final(&app, id).await;

    // Assert: failed at once, with the cause and the bucket, and no secret.
    assert_eq!(s["status"], "failed", "{s}");
    let traceback = s["traceback"].as_str().unwrap();
    assert!(traceback.contains(&format!("Cannot find bucket {bucket} in GCS")), "{traceback}");
    for secret in secret_markers() {
        assert!(!traceback.contains(&secret));
    }
}

crate::backend_tests!(
    a_gcs_storage_is_created_read_listed_patched_and_deleted_without_its_secret,
    the_credentials_are_stored_sealed_and_kept_across_partial_updates,
    a_sync_writes_each_annotation_as_compact_json_under_the_prefix,
    prefixes_are_used_verbatim_and_no_prefix_gives_bare_names,
    changes_reach_the_bucket_incrementally_and_deletions_remove_objects,
    deleting_a_task_deletes_its_annotations_objects_in_one_go,
    a_full_resync_restores_missing_objects_and_rewrites_nothing_else,
    a_missing_bucket_is_a_400_naming_it_and_validate_masks_the_cause,
    invalid_credentials_json_gives_label_studios_message,
    a_sync_to_a_deleted_bucket_fails_naming_the_bucket,
);

async fn an_annotation_is_saved_while_gcs_is_unreachable_and_exported_once_it_is_back(backend: Backend) {
    // Arrange: quick retries and a short lease, so a failed auto-export is retried soon.
    let bucket = new_bucket().await;
    let app = spawn_app_with(backend, |s| {
        s.targets.backoff = Duration::from_millis(5);
        s.targets.max_attempts = 2;
        s.sync.lease = Duration::from_secs(1);
    })
    .await;
    let (project, _) = project_with_annotations(&app, 1).await;
    let id = create_gcs(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_gcs_completed(&app, id).await;
    let task = first_task(&app, project).await;

    // Act 1: the bucket goes away (the storage's target is kept across passes, so an
    // outage is staged on the emulator rather than by pointing new targets elsewhere).
    for name in object_names(&bucket).await {
        delete_object(&bucket, &name).await;
    }
    let r = http().delete(format!("{}/storage/v1/b/{bucket}", gcs_endpoint())).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE bucket: {}", r.status());
    let started = Instant::now();
    let new_id = annotate(&app, task, "Offline").await;

    // Assert 1: the annotation request neither waited for nor failed because of GCS,
    // and the storage shows the failed auto-export.
    assert!(started.elapsed() < Duration::from_secs(5), "the save waited {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_gcs(&app, id).await["status"] != "failed" {
        assert!(Instant::now() < deadline, "the failed auto-export never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Act 2: GCS is back.
    let r =
        http().post(format!("{}/storage/v1/b", gcs_endpoint())).json(&json!({"name": bucket})).send().await.unwrap();
    assert!(r.status().is_success(), "re-create bucket: {}", r.status());

    // Assert 2: the pending change is exported without a sync.
    wait_names(&bucket, "the annotation saved while GCS was down", |n| n.contains(&new_id.to_string())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_annotation_is_saved_while_gcs_is_unreachable() {
    an_annotation_is_saved_while_gcs_is_unreachable_and_exported_once_it_is_back(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_annotation_is_saved_while_gcs_is_unreachable() {
    an_annotation_is_saved_while_gcs_is_unreachable_and_exported_once_it_is_back(Backend::Postgres).await
}

/// A loopback token endpoint that refuses every grant, as Google does for a
/// revoked or unknown key; counts its calls.
async fn refusing_token_endpoint() -> (String, Arc<AtomicU64>) {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let router = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_a_400_naming_the_bucket_without_the_key() {
    // Arrange: Google's endpoint, a key whose token endpoint (on loopback) refuses
    // it; no request reaches Google since there is no token.
    no_emulator();
    let app = spawn_app(Backend::Sqlite).await;
    let project = app.create_project("bad key").await;
    let (token_uri, calls) = refusing_token_endpoint().await;
    let body = gcs_body(project, "some-bucket", json!({"google_application_credentials": service_account(&token_uri)}));
    let mut garbage_key = body.clone();
    garbage_key["google_application_credentials"] =
        json!(json!({"type": "service_account", "client_email": "a@b", "private_key": "s3cr3t-not-a-key"}).to_string());

    // Act
    let created = app.post(GCS, &body).await;
    let validated = app.post(&format!("{GCS}/validate"), &body).await;
    let not_a_key = app.post(GCS, &garbage_key).await;

    // Assert
    let message = non_field_error(created).await;
    assert!(message.contains("some-bucket") && message.contains("invalid_grant: Invalid JWT Signature."), "{message}");
    for secret in secret_markers() {
        assert!(!message.contains(&secret), "{message}");
    }
    assert_eq!(non_field_error(validated).await, "Error validating storage connection");
    let message = non_field_error(not_a_key).await;
    assert_eq!(message, "Google credentials: \"private_key\" is not an RSA private key in PEM form");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a refused grant is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_token_endpoint_is_private_is_refused_without_connecting() {
    // Arrange: protection on, as in production.
    no_emulator();
    let app = spawn_app_with(Backend::Sqlite, |s| s.targets.ssrf_protection = true).await;
    let project = app.create_project("ssrf").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cases = [
        (format!("http://127.0.0.1:{port}/token"), "URL resolves to a reserved network address (block: 127.0.0.0/8)"),
        (format!("http://localhost:{port}/token"), "URL resolves to a reserved network address"),
        (
            "http://169.254.169.254/token".to_owned(),
            "URL resolves to a reserved network address (block: 169.254.0.0/16)",
        ),
        ("file:///etc/passwd".to_owned(), "The provided URL was not allowed."),
    ];

    for (token_uri, message) in cases {
        // Act
        let body = gcs_body(project, "bucket", json!({"google_application_credentials": service_account(&token_uri)}));
        let created = app.post(GCS, &body).await;

        // Assert
        let got = non_field_error(created).await;
        assert!(got.contains(message), "{token_uri}: {got}");
    }
    assert!(listener.accept().is_err(), "no connection was made to the private address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcs_target_passes_the_conformance_suite() {
    // Arrange
    let bucket = new_bucket().await;
    let mut config = labelport::storage::spec::TargetConfig::default();
    config.values.insert("bucket".into(), json!(bucket));
    config.values.insert("prefix".into(), json!("conformance"));
    let app = spawn_app(Backend::Sqlite).await;
    let target = labelport::storage::spec::build("gcs", &config, &app.state.targets).unwrap();
    let rt_bucket = bucket.clone();
    let read = move |key: &str| -> Option<Vec<u8>> {
        let (bucket, name) = (rt_bucket.clone(), format!("conformance/{key}"));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(object(&bucket, &name))
        })
        .join()
        .unwrap()
    };

    // Act + Assert
    labelport::storage::conformance::run_all(target.as_ref(), Some(&read)).await;
    let sizes = target.list_sizes().await.unwrap().expect("GCS lists");
    assert!(sizes.is_empty(), "the suite cleans up: {sizes:?}");

    // Batched deletes and listing across pages, counted by a proxy.
    let (proxy, requests) = faulty_proxy(false).await;
    std::env::set_var("STORAGE_EMULATOR_HOST", &proxy);
    let target = labelport::storage::spec::build("gcs", &config, &app.state.targets).unwrap();
    let items: Vec<(String, bytes::Bytes)> =
        (0..1205).map(|i| (format!("{i}.json"), bytes::Bytes::from(format!("{{\"n\": {i}}}")))).collect();
    assert!(target.put_many(items).await.iter().all(Result::is_ok));
    let sizes = target.list_sizes().await.unwrap().unwrap();
    assert_eq!(sizes.len(), 1205);
    assert_eq!(sizes["7.json"], 8);
    let before = requests.load(Ordering::SeqCst);
    let results = target.delete_many((0..1205).map(|i| format!("{i}.json")).chain(["gone".into()]).collect()).await;
    assert_eq!(requests.load(Ordering::SeqCst) - before, 13, "batches of 100 deletes");
    assert_eq!(results.len(), 1206);
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    assert!(object_names(&bucket).await.is_empty());
}

/// A proxy in front of the emulator that counts requests and, with `faults`,
/// answers 503, 429, 500, or drops the connection for a share of them.
async fn faulty_proxy(faults: bool) -> (String, Arc<AtomicU64>) {
    const BACKEND_ERROR: &str = r#"{"error":{"code":503,"message":"Backend Error"}}"#;
    let proxy = fault_proxy::start(gcs_endpoint(), move |n| match n {
        _ if !faults => Fault::Pass,
        n if n % 11 == 5 => Fault::Drop,
        n if n % 13 == 1 => Fault::Answer(503, BACKEND_ERROR),
        n if n % 13 == 4 => Fault::Answer(429, BACKEND_ERROR),
        n if n % 13 == 9 => Fault::Answer(500, BACKEND_ERROR),
        _ => Fault::Pass,
    })
    .await;
    (proxy.url, proxy.requests)
}

async fn a_full_sync_through_faults_completes_with_every_object_once(backend: Backend) {
    // Arrange: the server reaches the emulator through the faulty proxy.
    let bucket = new_bucket().await;
    let (proxy, requests) = faulty_proxy(true).await;
    std::env::set_var("STORAGE_EMULATOR_HOST", &proxy);
    let app = spawn_app_with(backend, |s| {
        s.targets.backoff = Duration::from_millis(5);
        s.targets.max_attempts = 10;
        s.sync.batch_size = 200;
    })
    .await;
    let (project, ids) = project_with_annotations(&app, 600).await;

    // Act
    let id = create_gcs(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    let done = wait_gcs_completed(&app, id).await;

    // Assert: every object present once, each with its annotation's document.
    let mut expected: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(object_names(&bucket).await, expected);
    assert_eq!(done["meta"]["files_written"], 600);
    for annotation in ids.iter().step_by(37) {
        let doc: Value = serde_json::from_slice(&object(&bucket, &annotation.to_string()).await.unwrap()).unwrap();
        assert_eq!(doc["id"], *annotation);
    }
    assert!(requests.load(Ordering::SeqCst) > 600, "faults were injected and retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_full_gcs_sync_through_faults_completes() {
    a_full_sync_through_faults_completes_with_every_object_once(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_full_gcs_sync_through_faults_completes() {
    a_full_sync_through_faults_completes_with_every_object_once(Backend::Postgres).await
}
