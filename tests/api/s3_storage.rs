//! The `s3` export storage against moto (a real S3 emulator on loopback): the API
//! surface with Label Studio's fields and messages, what is written where, byte for
//! byte, incremental syncs and auto-export, SSRF refusals, sealed secrets, and
//! syncs through a proxy that injects throttling, server errors and dropped
//! connections.

use crate::emulators::{s3_endpoint, unique_name};
use crate::fault_proxy::{self, Fault, FaultyProxy};
use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, TestApp};
use crate::storages::{annotate, json_of, keys, non_field_error, validation_errors, FINAL_STATUSES, POLL, TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const S3: &str = "/api/storages/export/s3";

const SECRET_KEY_ID: &str = "AKIAEXAMPLEKEYID0001";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FQoGZXIvYXdzEXAMPLESESSIONTOKENVALUE";

/// Response keys of an S3 storage, in Label Studio's order (plus ours).
const S3_KEYS: &[&str] = &[
    "id",
    "type",
    "synchronizable",
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
    "bucket",
    "prefix",
    "regex_filter",
    "use_blob_urls",
    "aws_sse_kms_key_id",
    "region_name",
    "s3_endpoint",
    "project",
    "export_mode",
];

/// A signed request to the emulator (moto accepts any key pair, but refuses
/// anonymous reads of private objects).
fn signed(method: Method, bucket: &str, key: Option<&str>, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
    use rusty_s3::S3Action;
    let endpoint: url::Url = s3_endpoint().parse().unwrap();
    let b = rusty_s3::Bucket::new(endpoint, rusty_s3::UrlStyle::Path, bucket.to_owned(), "us-east-1").unwrap();
    let creds = rusty_s3::Credentials::new("test", "test");
    let ttl = Duration::from_secs(600);
    let url = match (method.as_str(), key) {
        ("PUT", None) => b.create_bucket(&creds).sign(ttl),
        ("DELETE", None) => b.delete_bucket(&creds).sign(ttl),
        ("GET", None) => {
            let mut list = b.list_objects_v2(Some(&creds));
            for (k, v) in query {
                match *k {
                    "continuation-token" => list.with_continuation_token(v.to_string()),
                    "prefix" => list.with_prefix(v.to_string()),
                    _ => {}
                }
            }
            list.with_max_keys(1000);
            list.sign(ttl)
        }
        ("GET", Some(k)) => b.get_object(Some(&creds), k).sign(ttl),
        ("DELETE", Some(k)) => b.delete_object(Some(&creds), k).sign(ttl),
        other => panic!("unsupported request {other:?}"),
    };
    let put = method == Method::PUT;
    let request = reqwest::Client::new().request(method, url);
    if put {
        request.header("content-length", "0")
    } else {
        request
    }
}

/// A new, empty bucket on the emulator.
async fn new_bucket() -> String {
    let name = unique_name("lp");
    let r = signed(Method::PUT, &name, None, &[]).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    name
}

/// The raw bytes of an object, read straight from the emulator.
async fn object(bucket: &str, key: &str) -> Option<Vec<u8>> {
    let r = signed(Method::GET, bucket, Some(key), &[]).send().await.unwrap();
    match r.status() {
        StatusCode::OK => Some(r.bytes().await.unwrap().to_vec()),
        StatusCode::NOT_FOUND => None,
        other => panic!("GET {bucket}/{key}: {other}"),
    }
}

/// Every key in a bucket, sorted.
async fn object_keys(bucket: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let query: Vec<(&str, &str)> = token.as_deref().map(|t| vec![("continuation-token", t)]).unwrap_or_default();
        let text = signed(Method::GET, bucket, None, &query).send().await.unwrap().text().await.unwrap();
        let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).unwrap();
        out.extend(page.contents.into_iter().map(|o| o.key));
        match page.next_continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    out.sort();
    out
}

async fn delete_object(bucket: &str, key: &str) {
    let r = signed(Method::DELETE, bucket, Some(key), &[]).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE {key}: {}", r.status());
}

fn s3_body(project: i64, bucket: &str, extra: Value) -> Value {
    let mut body = json!({
        "project": project,
        "title": "to s3",
        "bucket": bucket,
        "s3_endpoint": s3_endpoint(),
        "region_name": "us-east-1",
        "aws_access_key_id": SECRET_KEY_ID,
        "aws_secret_access_key": SECRET_ACCESS_KEY,
        "aws_session_token": SESSION_TOKEN,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn create_s3(app: &TestApp, project: i64, bucket: &str, extra: Value) -> Value {
    json_of(app.post(S3, &s3_body(project, bucket, extra)).await, StatusCode::CREATED).await
}

async fn get_s3(app: &TestApp, id: i64) -> Value {
    json_of(app.get(&format!("{S3}/{id}")).await, StatusCode::OK).await
}

/// Polls until the storage's sync finished, requiring `completed`.
async fn wait_s3_completed(app: &TestApp, id: i64) -> Value {
    let deadline = Instant::now() + TIMEOUT * 4;
    loop {
        let s = get_s3(app, id).await;
        if FINAL_STATUSES.contains(&s["status"].as_str().unwrap_or_default()) {
            assert_eq!(s["status"], "completed", "{s}");
            return s;
        }
        assert!(Instant::now() < deadline, "storage {id} did not finish: {s}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `check` holds for the bucket's keys.
async fn wait_keys(bucket: &str, what: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = object_keys(bucket).await;
        if check(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; keys: {found:?}");
        tokio::time::sleep(POLL * 5).await;
    }
}
/// A project with `n` annotated tasks (non-ASCII text); returns (project, annotation ids).
async fn project_with_annotations(app: &TestApp, n: usize) -> (i64, Vec<i64>) {
    crate::storages::imported_annotations(app, "s3 export", n).await
}

async fn an_s3_storage_is_created_read_and_listed_without_its_secrets(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 2).await;

    // Act
    let created = create_s3(&app, project, &bucket, json!({"prefix": "exports", "can_delete_objects": true})).await;
    let id = created["id"].as_i64().unwrap();
    let got = get_s3(&app, id).await;
    let listed = json_of(app.get(&format!("{S3}?project={project}")).await, StatusCode::OK).await;
    let all = json_of(app.get(&format!("/api/storages/export?project={project}")).await, StatusCode::OK).await;

    // Assert: Label Studio's keys and order; the write-only fields never come back.
    assert_eq!(keys(&created), S3_KEYS);
    assert_eq!(keys(&got), S3_KEYS);
    assert_eq!(created["type"], "s3");
    assert_eq!(created["bucket"], bucket.as_str());
    assert_eq!(created["prefix"], "exports");
    assert_eq!(created["status"], "queued");
    assert_eq!(got["aws_sse_kms_key_id"], Value::Null);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(all.as_array().unwrap().iter().filter(|s| s["type"] == "s3").count(), 1);
    for text in [created.to_string(), got.to_string(), listed.to_string(), all.to_string()] {
        for secret in [SECRET_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN] {
            assert!(!text.contains(secret), "a secret came back: {text}");
        }
        assert!(!text.contains("aws_secret_access_key") && !text.contains("aws_access_key_id"));
    }
    wait_s3_completed(&app, id).await;
}

async fn secrets_are_stored_sealed_and_kept_across_partial_updates(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 1).await;
    let id = create_s3(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, id).await;

    // Act: PATCH without the secrets, then PUT with new ones.
    let patched = json_of(app.patch(&format!("{S3}/{id}"), &json!({"title": "renamed"})).await, StatusCode::OK).await;
    let validated = app.post(&format!("{S3}/validate"), &json!({"id": id, "project": project, "title": "x"})).await;

    // Assert: no column of the database holds a secret in plain text.
    assert_eq!(patched["title"], "renamed");
    assert_eq!(validated.status(), StatusCode::OK, "{:?}", validated.text().await);
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT config, secrets FROM export_storages WHERE id = $1")
            .bind(id)
            .fetch_all(app.state.db.pool())
            .await
            .unwrap();
    let (config, sealed) = &rows[0];
    let sealed = sealed.as_deref().expect("secrets are stored");
    assert!(sealed.starts_with("v1:"));
    for secret in [SECRET_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN] {
        assert!(!config.contains(secret) && !sealed.contains(secret), "plain secret in the database");
    }
    let opened = app.state.secrets.open_map(Some(sealed)).unwrap();
    assert_eq!(opened["aws_secret_access_key"], SECRET_ACCESS_KEY);
    // Still usable after the partial update: a new annotation reaches the bucket.
    let task = json_of(app.get(&format!("/api/tasks?project={project}")).await, StatusCode::OK).await["tasks"][0]["id"]
        .as_i64()
        .unwrap();
    let new_id = annotate(&app, task, "Negative").await;
    wait_keys(&bucket, "auto-export after PATCH", |k| k.contains(&new_id.to_string())).await;
    assert!(ids.iter().all(|_| true));
}

async fn a_sync_writes_each_annotation_as_compact_json_under_the_prefix(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 5).await;
    let local = crate::storages::make_dir(&app, "same");

    // Act: the same project to S3 and to local files.
    let id = create_s3(&app, project, &bucket, json!({"prefix": "exports"})).await["id"].as_i64().unwrap();
    let lf = crate::storages::create_storage(&app, project, &local.1, json!({})).await["id"].as_i64().unwrap();
    let done = wait_s3_completed(&app, id).await;
    crate::storages::wait_completed(&app, lf).await;

    // Assert: `exports/<id>`, and the bytes are `json.dumps(doc)` of the same
    // document the local-files storage writes indented.
    let expected: Vec<String> = ids.iter().map(|i| format!("exports/{i}")).collect();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(object_keys(&bucket).await, expected_sorted);
    assert_eq!(done["meta"]["files_written"], 5);
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

async fn prefixes_are_used_verbatim_and_no_prefix_gives_bare_keys(app: TestApp) {
    // Arrange
    let (project, ids) = project_with_annotations(&app, 1).await;
    let (slash, bare) = (new_bucket().await, new_bucket().await);

    // Act
    let a = create_s3(&app, project, &slash, json!({"prefix": "a/"})).await["id"].as_i64().unwrap();
    let b = create_s3(&app, project, &bare, json!({})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, a).await;
    wait_s3_completed(&app, b).await;

    // Assert: Label Studio forms `<prefix>/<key>` without normalising.
    assert_eq!(object_keys(&slash).await, vec![format!("a//{}", ids[0])]);
    assert_eq!(object_keys(&bare).await, vec![ids[0].to_string()]);
}

async fn changes_reach_the_bucket_incrementally_and_deletions_remove_objects(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 3).await;
    let id = create_s3(&app, project, &bucket, json!({"can_delete_objects": true})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, id).await;
    let task = json_of(app.get(&format!("/api/tasks?project={project}")).await, StatusCode::OK).await["tasks"][0]["id"]
        .as_i64()
        .unwrap();

    // Act 1: a new annotation is exported by itself.
    let new_id = annotate(&app, task, "Neutral").await;
    wait_keys(&bucket, "the new annotation", |k| k.contains(&new_id.to_string())).await;

    // Act 2: an update rewrites the object.
    let r = app
        .patch(&format!("/api/annotations/{new_id}/"), &json!({"result": [{"value": {"choices": ["Changed"]}}]}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let body = object(&bucket, &new_id.to_string()).await.unwrap();
        if String::from_utf8_lossy(&body).contains("Changed") {
            break;
        }
        assert!(Instant::now() < deadline, "update not exported");
        tokio::time::sleep(POLL * 5).await;
    }

    // Act 3: deleting an annotation deletes its object.
    let r = app.delete(&format!("/api/annotations/{}/", ids[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_keys(&bucket, "the deletion", |k| !k.contains(&ids[0].to_string())).await;

    // Act 4: an incremental sync now has nothing to write.
    let synced = json_of(app.post(&format!("{S3}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(synced["status"], "queued");
    let done = wait_s3_completed(&app, id).await;
    assert_eq!(done["meta"]["sync_mode"], "incremental");
    assert_eq!(done["meta"]["files_written"], 0);
}

async fn a_full_resync_restores_missing_objects_and_rewrites_nothing_else(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 20).await;
    let id = create_s3(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, id).await;
    delete_object(&bucket, &ids[3].to_string()).await;
    delete_object(&bucket, &ids[7].to_string()).await;

    // Act
    json_of(app.post(&format!("{S3}/{id}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    let done = wait_s3_completed(&app, id).await;

    // Assert: one LIST told what was in place; only the two missing were written.
    assert_eq!(done["meta"]["sync_mode"], "full");
    assert_eq!(done["meta"]["files_written"], 2, "{done}");
    assert_eq!(object_keys(&bucket).await.len(), 20);
}

async fn a_missing_bucket_is_a_400_with_label_studios_message(app: TestApp) {
    // Arrange
    let project = app.create_project("missing").await;
    let body = s3_body(project, "no-such-bucket-here", json!({}));

    // Act
    let created = app.post(S3, &body).await;
    let validated = app.post(&format!("{S3}/validate"), &body).await;

    // Assert
    assert_eq!(non_field_error(created).await, "Cannot find bucket no-such-bucket-here in S3");
    assert_eq!(non_field_error(validated).await, "Cannot find bucket no-such-bucket-here in S3");
}

async fn bad_bucket_names_and_missing_buckets_are_refused_as_label_studio_does(app: TestApp) {
    // Arrange
    let project = app.create_project("names").await;

    // Act
    let bad = app.post(S3, &s3_body(project, "bad bucket!", json!({}))).await;
    let mut no_bucket = s3_body(project, "x", json!({}));
    no_bucket.as_object_mut().unwrap().remove("bucket");
    let missing = app.post(S3, &no_bucket).await;

    // Assert
    let errors = validation_errors(bad).await;
    let message = errors["bucket"][0].as_str().unwrap();
    assert!(message.starts_with("Invalid bucket name \"bad bucket!\": Bucket name must match the regex"), "{message}");
    assert_eq!(non_field_error(missing).await, "expected string or bytes-like object, got 'NoneType'");
}

async fn the_s3_form_is_label_studios(app: TestApp) {
    let r = app.get(&format!("{S3}/form")).await;
    let form = json_of(r, StatusCode::OK).await;
    assert_eq!(form[0]["fields"][1]["name"], "bucket");
    assert_eq!(form[1]["fields"][3]["type"], "password");
}

async fn a_sync_to_a_deleted_bucket_fails_naming_the_bucket(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 2).await;
    let id = create_s3(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, id).await;
    for key in object_keys(&bucket).await {
        delete_object(&bucket, &key).await;
    }
    let r = signed(Method::DELETE, &bucket, None, &[]).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE bucket: {}", r.status());

    // Act
    json_of(app.post(&format!("{S3}/{id}/sync?full=true"), &json!({})).await, StatusCode::OK).await;
    let deadline = Instant::now() + TIMEOUT;
    let s = loop {
        let s = get_s3(&app, id).await;
        if FINAL_STATUSES.contains(&s["status"].as_str().unwrap()) {
            break s;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(POLL).await;
    };

    // Assert: failed at once, with the cause and the bucket, and no secret.
    assert_eq!(s["status"], "failed", "{s}");
    let traceback = s["traceback"].as_str().unwrap();
    assert!(traceback.contains(&format!("Cannot find bucket {bucket} in S3")), "{traceback}");
    for secret in [SECRET_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN] {
        assert!(!traceback.contains(secret));
    }
}

async fn objects_are_encrypted_with_the_kms_key_when_one_is_set(app: TestApp) {
    // Arrange
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 1).await;

    // Act
    let id = create_s3(&app, project, &bucket, json!({"aws_sse_kms_key_id": "alias/labelport-test"})).await["id"]
        .as_i64()
        .unwrap();
    wait_s3_completed(&app, id).await;

    // Assert: S3 reports SSE-KMS with that key on the object.
    let r = signed(Method::GET, &bucket, Some(&ids[0].to_string()), &[]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("x-amz-server-side-encryption").as_deref(), Some("aws:kms"));
    assert!(header("x-amz-server-side-encryption-aws-kms-key-id").unwrap_or_default().contains("labelport-test"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
}

async fn a_failing_auto_export_shows_on_the_storage_and_clears_once_the_target_is_back(app: TestApp) {
    // Arrange: a synced storage whose bucket then disappears.
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 1).await;
    let id = create_s3(&app, project, &bucket, json!({})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, id).await;
    for key in object_keys(&bucket).await {
        delete_object(&bucket, &key).await;
    }
    assert!(signed(Method::DELETE, &bucket, None, &[]).send().await.unwrap().status().is_success());
    let task = json_of(app.get(&format!("/api/tasks?project={project}")).await, StatusCode::OK).await["tasks"][0]["id"]
        .as_i64()
        .unwrap();

    // Act 1: an annotation saved meanwhile; the request itself succeeds.
    let new_id = annotate(&app, task, "Negative").await;

    // Assert 1: the storage shows the failure and its cause.
    let deadline = Instant::now() + TIMEOUT;
    let failed = loop {
        let s = get_s3(&app, id).await;
        if s["status"] == "failed" {
            break s;
        }
        assert!(Instant::now() < deadline, "the failure never showed: {s}");
        tokio::time::sleep(POLL).await;
    };
    let traceback = failed["traceback"].as_str().unwrap();
    assert!(traceback.starts_with("Automatic export failed; retrying with backoff."), "{traceback}");
    assert!(traceback.contains(&bucket), "{traceback}");
    assert!(failed["meta"]["auto_export_failure"]["attempts"].as_u64().unwrap() >= 1, "{failed}");

    // Act 2: the bucket is back.
    assert!(signed(Method::PUT, &bucket, None, &[]).send().await.unwrap().status().is_success());

    // Assert 2: retried by itself; the object arrives and the storage is healthy again.
    wait_keys(&bucket, "the retried auto-export", |k| k.contains(&new_id.to_string())).await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = get_s3(&app, id).await;
        if s["status"] == "completed" && s["traceback"].is_null() && s["meta"].get("auto_export_failure").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the storage did not recover: {s}");
        tokio::time::sleep(POLL).await;
    }
}

crate::backend_tests!(
    a_failing_auto_export_shows_on_the_storage_and_clears_once_the_target_is_back,
    objects_are_encrypted_with_the_kms_key_when_one_is_set,
    an_s3_storage_is_created_read_and_listed_without_its_secrets,
    secrets_are_stored_sealed_and_kept_across_partial_updates,
    a_sync_writes_each_annotation_as_compact_json_under_the_prefix,
    prefixes_are_used_verbatim_and_no_prefix_gives_bare_keys,
    changes_reach_the_bucket_incrementally_and_deletions_remove_objects,
    a_full_resync_restores_missing_objects_and_rewrites_nothing_else,
    a_missing_bucket_is_a_400_with_label_studios_message,
    bad_bucket_names_and_missing_buckets_are_refused_as_label_studio_does,
    the_s3_form_is_label_studios,
    a_sync_to_a_deleted_bucket_fails_naming_the_bucket,
);

/// A server with SSRF protection on, as in production.
async fn protected_app() -> TestApp {
    spawn_app_with(Backend::Sqlite, |s| s.targets.ssrf_protection = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_non_http_endpoints_are_refused_with_403_without_connecting() {
    // Arrange: a listener standing for a private service, which must see no connection.
    let app = protected_app().await;
    let project = app.create_project("ssrf").await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cases = [
        (format!("http://127.0.0.1:{port}"), "URL resolves to a reserved network address (block: 127.0.0.0/8)"),
        (format!("http://localhost:{port}"), "URL resolves to a reserved network address"),
        (format!("http://[::1]:{port}"), "URL resolves to a reserved network address (block: ::1/128)"),
        ("http://10.0.0.1:9000".to_owned(), "URL resolves to a reserved network address (block: 10.0.0.0/8)"),
        ("http://169.254.169.254/".to_owned(), "URL resolves to a reserved network address (block: 169.254.0.0/16)"),
        ("ftp://example.com/".to_owned(), "The provided URL was not allowed."),
    ];

    for (endpoint, message) in cases {
        // Act
        let body = s3_body(project, "bucket", json!({"s3_endpoint": endpoint}));
        let created = app.post(S3, &body).await;
        let validated = app.post(&format!("{S3}/validate"), &body).await;

        // Assert
        for r in [created, validated] {
            let err = assert_error(r, StatusCode::FORBIDDEN).await;
            assert!(err["detail"].as_str().unwrap().starts_with(message), "{endpoint}: {err}");
        }
    }
    assert!(listener.accept().is_err(), "no connection was made to the private address");
    let listed = json_of(app.get(&format!("{S3}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(listed, json!([]), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_endpoint_that_now_resolves_to_loopback_is_refused_when_connecting() {
    // Arrange: a storage saved while protection was off (as if the name resolved to a
    // public address then), used by a server with protection on.
    let app = spawn_app(Backend::Sqlite).await;
    let bucket = new_bucket().await;
    let (project, _) = project_with_annotations(&app, 1).await;
    let port = s3_endpoint().rsplit(':').next().unwrap().to_owned();
    let endpoint = format!("http://localhost:{port}");
    let id = create_s3(&app, project, &bucket, json!({"s3_endpoint": endpoint})).await["id"].as_i64().unwrap();
    wait_s3_completed(&app, id).await;
    let storage = app.state.db.storage_by_id(id).await.unwrap();
    let mut ctx = app.state.targets.clone();
    ctx.targets.ssrf_protection = true;

    // Act: the target built now goes through the checked resolver.
    let config = labelport::sync::target_config(&storage.fields, &app.state.secrets).unwrap();
    let target = labelport::storage::spec::build("s3", &config, &ctx).unwrap();
    let result = target.validate().await;

    // Assert
    let err = result.expect_err("loopback refused at connect time");
    assert!(err.to_string().contains("reserved network address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_target_passes_the_conformance_suite() {
    // Arrange
    let bucket = new_bucket().await;
    let mut config = labelport::storage::spec::TargetConfig::default();
    config.values.insert("bucket".into(), json!(bucket));
    config.values.insert("prefix".into(), json!("conformance"));
    config.values.insert("s3_endpoint".into(), json!(s3_endpoint()));
    config.secrets.insert("aws_access_key_id".into(), json!("test"));
    config.secrets.insert("aws_secret_access_key".into(), json!("test"));
    let app = spawn_app(Backend::Sqlite).await;
    let target = labelport::storage::spec::build("s3", &config, &app.state.targets).unwrap();
    let rt_bucket = bucket.clone();
    let read = move |key: &str| -> Option<Vec<u8>> {
        let (bucket, key) = (rt_bucket.clone(), format!("conformance/{key}"));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(object(&bucket, &key))
        })
        .join()
        .unwrap()
    };

    // Act + Assert
    labelport::storage::conformance::run_all(target.as_ref(), Some(&read)).await;
    let sizes = target.list_sizes().await.unwrap().expect("S3 lists");
    assert!(sizes.is_empty(), "the suite cleans up: {sizes:?}");
}

/// S3's throttling answer, as the proxies below give it.
const SLOW_DOWN: &str = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";

/// A proxy in front of moto answering 503 SlowDown, 500, or dropping the connection
/// for a share of requests.
async fn faulty_proxy() -> FaultyProxy {
    fault_proxy::start(s3_endpoint(), |n| match n {
        n if n % 11 == 5 => Fault::Drop,
        n if n % 5 == 1 => Fault::Answer(503, SLOW_DOWN),
        n if n % 7 == 3 => Fault::Answer(500, "<Error><Code>InternalError</Code></Error>"),
        _ => Fault::Pass,
    })
    .await
}

/// Retries quick enough for a test and patient enough for the proxy above, which
/// fails about 38 % of all requests: a document fails only if every one of its
/// attempts draws a fault, and with 10 attempts one of 1,500 documents did so in about
/// a fifth of the runs (1,500 × 0.38¹⁰ ≈ 0.09 if the draws were independent; they are
/// not quite: a quickly failed request is retried while passed ones wait on moto). With
/// 16 the chance is 1,500 × 0.38¹⁶ ≈ 3·10⁻⁴.
fn quick_retries(s: &mut labelport::config::Settings) {
    s.targets.backoff = Duration::from_millis(5);
    s.targets.max_attempts = 16;
    s.sync.batch_size = 200;
}

async fn a_full_sync_through_throttling_errors_and_drops_completes_with_every_object_once(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, quick_retries).await;
    let proxy = faulty_proxy().await;
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 1500).await;

    // Act
    let id = create_s3(&app, project, &bucket, json!({"s3_endpoint": proxy.url})).await["id"].as_i64().unwrap();
    let done = wait_s3_completed(&app, id).await;

    // Assert: every object present once, each with its annotation's document.
    let found = object_keys(&bucket).await;
    let mut expected: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(done["meta"]["files_written"], 1500);
    for annotation in ids.iter().step_by(97) {
        let doc: Value = serde_json::from_slice(&object(&bucket, &annotation.to_string()).await.unwrap()).unwrap();
        assert_eq!(doc["id"], *annotation);
    }
    assert!(proxy.requests.load(Ordering::SeqCst) > 1500, "faults were injected and retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_full_sync_through_faults_completes() {
    a_full_sync_through_throttling_errors_and_drops_completes_with_every_object_once(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_full_sync_through_faults_completes() {
    a_full_sync_through_throttling_errors_and_drops_completes_with_every_object_once(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_whose_endpoint_goes_down_fails_and_a_later_sync_completes_it() {
    // Arrange
    let app = spawn_app_with(Backend::Sqlite, |s| {
        quick_retries(s);
        // Fewer attempts, so that the pages written while the endpoint is down fail
        // in seconds; the faults on the way are milder here to match (one request in
        // five throttled: 1,200 × 0.2¹⁰ ≈ 10⁻⁴ that a document runs out of attempts).
        s.targets.max_attempts = 10;
        s.sync.batch_size = 40;
        s.sync.write_delay = Duration::from_millis(250);
    })
    .await;
    let proxy = fault_proxy::start(s3_endpoint(), |n| match n {
        n if n % 5 == 1 => Fault::Answer(503, SLOW_DOWN),
        _ => Fault::Pass,
    })
    .await;
    let bucket = new_bucket().await;
    let (project, ids) = project_with_annotations(&app, 1200).await;
    let id = create_s3(&app, project, &bucket, json!({"s3_endpoint": proxy.url})).await["id"].as_i64().unwrap();

    // Act 1: the endpoint goes away mid-sync.
    wait_keys(&bucket, "the first objects", |k| !k.is_empty()).await;
    proxy.down.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + TIMEOUT * 2;
    let failed = loop {
        let s = get_s3(&app, id).await;
        if FINAL_STATUSES.contains(&s["status"].as_str().unwrap()) {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(POLL).await;
    };

    // Assert 1: the job ends failed with the cause, not hung.
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["traceback"].as_str().unwrap().contains("stopped"), "{failed}");

    // Act 2: the endpoint is back; the next sync completes what is missing.
    proxy.down.store(false, Ordering::SeqCst);
    json_of(app.post(&format!("{S3}/{id}/sync"), &json!({})).await, StatusCode::OK).await;
    let done = wait_s3_completed(&app, id).await;

    // Assert 2
    assert_eq!(done["meta"]["sync_mode"], "full", "a failed sync is followed by a full pass");
    assert_eq!(object_keys(&bucket).await.len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_s3_requests_answer_401() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app.anon(Method::GET, &format!("{S3}?project=1")).send().await.unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED).await;
}
