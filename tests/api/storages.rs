//! Export storages over HTTP: the endpoints, their validation and their wire shapes
//! (contract §2, §3, §8, §9; issue 3). Sync behaviour and the files written are in
//! `storages_sync.rs`, which shares the helpers below.

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

backend_tests!(
    the_types_endpoint_lists_all_five_types_in_label_studios_order,
    methods_other_than_get_on_the_types_endpoint_are_405_json,
    the_aggregate_list_holds_a_projects_storages_and_is_empty_for_a_missing_or_unknown_project,
    the_list_requires_a_project_parameter_with_label_studios_message,
    the_list_answers_404_json_for_a_non_integer_unknown_or_foreign_project,
    the_list_accepts_ordering_and_is_by_id_otherwise,
    creating_with_an_empty_body_reports_only_that_project_is_required,
    field_errors_are_reported_alone_before_any_path_error,
    field_errors_use_django_rest_frameworks_messages,
    a_numeric_string_is_accepted_as_project,
    a_missing_or_blank_path_must_be_set,
    a_path_that_does_not_exist_is_refused_with_label_studios_message,
    the_document_root_itself_is_refused_with_label_studios_message,
    a_path_outside_the_document_root_is_refused_with_label_studios_message,
    a_sibling_directory_sharing_the_roots_name_prefix_is_outside_the_root,
    trailing_slashes_backslashes_and_dot_segments_are_normalized_before_storing,
    the_create_response_is_the_queued_snapshot_in_label_studios_key_order,
    a_created_storage_syncs_the_existing_annotations_in_the_background,
    a_symlink_inside_the_root_pointing_outside_is_refused_and_nothing_is_written_outside,
    a_symlink_inside_the_root_pointing_to_a_directory_inside_the_root_is_accepted_and_written_through,
    a_relative_symlink_inside_the_root_pointing_inside_the_root_is_accepted_and_written_through,
    a_regular_file_as_path_is_refused_as_not_a_directory,
    dot_dot_segments_cannot_escape_the_document_root,
    nul_bytes_in_a_path_are_a_400_not_a_server_error,
    nul_bytes_in_text_fields_are_a_400_not_a_server_error,
    a_5000_character_path_is_a_400_not_a_server_error,
    a_relative_path_is_refused_whether_or_not_it_exists,
    a_path_outside_the_root_gets_the_same_answer_whether_or_not_it_exists,
    validate_answers_200_with_an_empty_body_and_no_content_type,
    validate_reports_the_same_messages_as_create_and_stores_nothing,
    validate_requires_project,
    validate_with_an_id_merges_the_body_over_the_stored_storage_and_never_persists,
    validate_with_an_unknown_id_is_404_json,
    get_returns_the_storage_and_unknown_ids_are_404_json,
    patching_only_the_title_succeeds_keeps_the_rest_and_includes_type,
    patching_to_an_invalid_path_is_a_400_and_changes_nothing,
    put_requires_project_and_path,
    put_replaces_the_writable_fields_and_includes_type,
    a_storage_cannot_be_moved_to_another_project,
    bookkeeping_fields_in_bodies_are_ignored,
    an_invalid_status_in_a_body_is_a_400_with_django_rest_frameworks_message,
    deleting_a_storage_is_204_then_404_and_its_files_stay,
    another_organizations_storage_is_404_for_every_storage_endpoint,
    another_organization_cannot_create_or_list_storages_of_a_project_it_does_not_own,
    unsupported_storage_types_list_as_empty_and_refuse_creation,
    storage_paths_work_with_and_without_a_trailing_slash,
);

crate::configured_backend_tests!(
    serving_disabled_refuses_local_files_storages_with_label_studios_message,
    serving_disabled_is_checked_before_the_path_is_looked_at,
);

/// Like `backend_tests!`, for tests that start their own server (custom settings):
/// each listed `async fn(Backend)` runs once per backend.
#[macro_export]
macro_rules! configured_backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite_configured {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres_configured {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------
// Shared helpers (also used by storages_sync.rs)
// ---------------------------------------------------------------------------------

/// Base path of the local-files export storage endpoints.
pub const LF: &str = "/api/storages/export/localfiles";

/// How long background work (syncs, auto-export) may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How often background work is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Keys of a local-files storage, in Label Studio's order, plus our `export_mode`.
pub const STORAGE_KEYS: &[&str] = &[
    "id",
    "type",
    "synchronizable",
    "path",
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
    "project",
    "export_mode",
];

/// The final statuses of a sync.
pub const FINAL_STATUSES: [&str; 3] = ["completed", "failed", "completed_with_errors"];

/// Object keys in order.
pub fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap_or_else(|| panic!("an object: {v}")).keys().map(String::as_str).collect()
}

/// Reads a JSON body after checking the status (the body is shown on mismatch).
pub async fn json_of(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("a JSON body ({e}): {text}"))
}

/// Checks a 400 `Validation error` and returns its `validation_errors`.
pub async fn validation_errors(r: Response) -> Value {
    let body = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["detail"], "Validation error", "{body}");
    body["validation_errors"].clone()
}

/// Checks a 400 with exactly one non-field message and returns it.
pub async fn non_field_error(r: Response) -> String {
    let errors = validation_errors(r).await;
    assert_eq!(keys(&errors), ["non_field_errors"], "{errors}");
    let list = errors["non_field_errors"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{errors}");
    list[0].as_str().unwrap().to_owned()
}

/// Creates `<root>/<name>` (and parents) and returns it with its string form.
pub fn make_dir(app: &TestApp, name: &str) -> (PathBuf, String) {
    let dir = app.files_root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.display().to_string();
    (dir, text)
}

/// The document root as the messages print it.
pub fn root(app: &TestApp) -> String {
    app.files_root.display().to_string()
}

/// `LOCAL_FILES_DOCUMENT_ROOT` messages of contract §3.12.
pub fn does_not_exist(p: &str) -> String {
    format!("Absolute local path \"{p}\" does not exist")
}

pub fn same_as_root(p: &str, root: &str) -> String {
    format!(
        "Absolute local path \"{p}\" cannot be the same as LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. Please add a subdirectory. For example: \"{root}/dataset1\"."
    )
}

pub fn outside_root(p: &str, root: &str) -> String {
    format!(
        "Absolute local path \"{p}\" must be a subdirectory of LOCAL_FILES_DOCUMENT_ROOT=\"{root}\" by security reasons. For example: \"{root}/dataset1\"."
    )
}

pub const SERVING_DISABLED: &str = "Serving local files from the host filesystem can be a security risk, so LOCAL_FILES_SERVING_ENABLED is disabled by default. To enable Local Files storage, set the LOCAL_FILES_SERVING_ENABLED environment variable to \"true\" and restart Label Studio. See https://labelstud.io/guide/storage.html#Local-storage for details.\n\n Community tip: create a \"mydata\" or \"label-studio-data\" directory next to the Label Studio command to auto-enable LOCAL_FILES_DOCUMENT_ROOT when the environment variables are unset.";

/// Creates a storage (201) with `extra` fields merged into `{project, path}`.
pub async fn create_storage(app: &TestApp, project: i64, path: &str, extra: Value) -> Value {
    let mut body = json!({ "project": project, "path": path });
    for (k, v) in extra.as_object().expect("extra fields are an object") {
        body[k] = v.clone();
    }
    json_of(app.post(LF, &body).await, StatusCode::CREATED).await
}

/// `GET` of a storage (200).
pub async fn get_storage(app: &TestApp, id: i64) -> Value {
    json_of(app.get(&format!("{LF}/{id}")).await, StatusCode::OK).await
}

/// Polls a storage until its sync has finished and returns it.
pub async fn wait_sync(app: &TestApp, id: i64) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = get_storage(app, id).await;
        if FINAL_STATUSES.contains(&s["status"].as_str().unwrap_or_default()) {
            return s;
        }
        assert!(Instant::now() < deadline, "storage {id} did not finish its sync within {TIMEOUT:?}: {s}");
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`wait_sync`], and requires `completed`.
pub async fn wait_completed(app: &TestApp, id: i64) -> Value {
    let s = wait_sync(app, id).await;
    assert_eq!(s["status"], "completed", "{s}");
    s
}

/// Polls `cond` until it holds (bounded by [`TIMEOUT`]).
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {TIMEOUT:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the labelport `lag` endpoint until auto-export has applied every change.
pub async fn wait_caught_up(app: &TestApp, id: i64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let lag = json_of(app.get(&format!("{LF}/{id}/lag")).await, StatusCode::OK).await;
        if lag["pending_changes"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "storage {id} did not catch up with the change feed: {lag}");
        tokio::time::sleep(POLL).await;
    }
}

/// File names in a directory, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A project with one task per text, each annotated once; returns (project, tasks, annotations).
pub async fn annotated_project(app: &TestApp, texts: &[&str]) -> (i64, Vec<i64>, Vec<i64>) {
    let project = app.create_project("export").await;
    let tasks = app.import(project, &json!(texts.iter().map(|t| json!({"text": t})).collect::<Vec<_>>())).await;
    let mut annotations = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        annotations.push(annotate(app, *task, &format!("label {i}")).await);
    }
    (project, tasks, annotations)
}

/// A project of `n` imported tasks with non-ASCII text, one annotation each; returns
/// (project, annotation ids in ascending order).
pub async fn imported_annotations(app: &TestApp, title: &str, n: usize) -> (i64, Vec<i64>) {
    let project = app.create_project(title).await;
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            json!({"data": {"text": format!("t\u{e9}xt {i} \u{1F600}")},
                   "annotations": [{"result": [{"value": {"choices": ["Positive"]}, "from_name": "s", "to_name": "t", "type": "choices"}]}]})
        })
        .collect();
    app.import(project, &Value::Array(tasks)).await;
    let mut ids = Vec::new();
    let mut page = 1;
    while ids.len() < n {
        let r = app.get(&format!("/api/tasks?project={project}&page={page}&page_size=500&fields=all")).await;
        let tasks = json_of(r, StatusCode::OK).await["tasks"].as_array().cloned().unwrap_or_default();
        if tasks.is_empty() {
            break;
        }
        for t in &tasks {
            for a in t["annotations"].as_array().unwrap() {
                ids.push(a["id"].as_i64().unwrap());
            }
        }
        page += 1;
    }
    ids.sort();
    (project, ids)
}

/// Annotates a task with one choice; returns the annotation id.
pub async fn annotate(app: &TestApp, task: i64, choice: &str) -> i64 {
    let body = json!({
        "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}],
        "lead_time": 1.5,
    });
    app.annotate(task, &body).await["id"].as_i64().unwrap()
}

/// Whether `s` looks like `2026-11-28 18:58:17.408272+00:00` (fraction optional).
pub fn is_meta_time(s: &str) -> bool {
    matches_template(s, "dddd-dd-dd dd:dd:dd", "+00:00")
}

/// Whether `s` looks like `2026-11-28T18:58:17.423841Z` (fraction optional).
pub fn is_iso_time(s: &str) -> bool {
    matches_template(s, "dddd-dd-ddTdd:dd:dd", "Z")
}

fn matches_template(s: &str, head: &str, tail: &str) -> bool {
    let Some(rest) = s.strip_suffix(tail) else { return false };
    if rest.len() < head.len() || !rest.is_ascii() {
        return false;
    }
    let (h, frac) = rest.split_at(head.len());
    let head_ok = h.chars().zip(head.chars()).all(|(c, t)| if t == 'd' { c.is_ascii_digit() } else { c == t });
    let frac_ok =
        frac.is_empty() || (frac.len() == 7 && frac.starts_with('.') && frac[1..].chars().all(|c| c.is_ascii_digit()));
    head_ok && frac_ok
}

/// A request with another user's token.
pub fn as_user(app: &TestApp, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.anon(method, path).header("Authorization", format!("Token {token}"))
}

// ---------------------------------------------------------------------------------
// Types and lists
// ---------------------------------------------------------------------------------

async fn the_types_endpoint_lists_all_five_types_in_label_studios_order(app: TestApp) {
    // Arrange
    let expected = json!([
        {"name": "s3", "title": "AWS S3"},
        {"name": "gcs", "title": "Google Cloud Storage"},
        {"name": "azure", "title": "Microsoft Azure"},
        {"name": "redis", "title": "Redis"},
        {"name": "localfiles", "title": "Local files"}
    ]);

    // Act
    let r = app.get("/api/storages/export/types").await;

    // Assert
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    let body = json_of(r, StatusCode::OK).await;
    assert_eq!(serde_json::to_string(&body).unwrap(), serde_json::to_string(&expected).unwrap());
    for item in body.as_array().unwrap() {
        assert_eq!(keys(item), ["name", "title"]);
    }
    let import_types = json_of(app.get("/api/storages/types").await, StatusCode::OK).await;
    assert_eq!(serde_json::to_string(&import_types).unwrap(), serde_json::to_string(&expected).unwrap());
}

async fn methods_other_than_get_on_the_types_endpoint_are_405_json(app: TestApp) {
    for method in [Method::DELETE, Method::POST, Method::PUT, Method::PATCH] {
        // Act
        let r = app.req(method.clone(), "/api/storages/export/types").send().await.unwrap();

        // Assert
        let err = assert_error(r, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(err["detail"], format!("Method \"{method}\" not allowed."));
        assert!(err.get("validation_errors").is_none(), "{err}");
    }
}

async fn the_aggregate_list_holds_a_projects_storages_and_is_empty_for_a_missing_or_unknown_project(app: TestApp) {
    // Arrange
    let project = app.create_project("aggregate").await;
    let other = app.create_project("other").await;
    let (_, a) = make_dir(&app, "agg/a");
    let (_, b) = make_dir(&app, "agg/b");
    let (_, c) = make_dir(&app, "agg/c");
    let first = create_storage(&app, project, &a, json!({})).await["id"].as_i64().unwrap();
    let second = create_storage(&app, project, &b, json!({})).await["id"].as_i64().unwrap();
    create_storage(&app, other, &c, json!({})).await;

    // Act
    let listed = json_of(app.get(&format!("/api/storages/export?project={project}")).await, StatusCode::OK).await;

    // Assert
    let items = listed.as_array().unwrap();
    let ids: Vec<i64> = items.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [first, second]);
    for s in items {
        assert_eq!(s["type"], "localfiles");
        assert_eq!(s["project"], project);
        assert_eq!(keys(s), STORAGE_KEYS);
    }
    for query in ["", "?project=", "?project=999999", "?project=abc", "?project=-1"] {
        let r = app.get(&format!("/api/storages/export{query}")).await;
        assert_eq!(json_of(r, StatusCode::OK).await, json!([]), "query {query:?}");
    }
}

async fn the_list_requires_a_project_parameter_with_label_studios_message(app: TestApp) {
    for query in ["", "?project=", "?ordering=id"] {
        // Act
        let r = app.get(&format!("{LF}{query}")).await;

        // Assert
        assert_eq!(non_field_error(r).await, "query parameter \"project\" is required", "query {query:?}");
    }
}

async fn the_list_answers_404_json_for_a_non_integer_unknown_or_foreign_project(app: TestApp) {
    // Arrange
    let stranger = app.user_in_other_organization("lister@example.com").await;
    let foreign = {
        let r = as_user(&app, &stranger, Method::POST, "/api/projects/").json(&json!({"title": "theirs"})).send();
        json_of(r.await.unwrap(), StatusCode::CREATED).await["id"].as_i64().unwrap()
    };

    // Act + Assert
    for query in ["abc", "1.5", "-3"] {
        let err = assert_error(app.get(&format!("{LF}?project={query}")).await, StatusCode::NOT_FOUND).await;
        assert_eq!(err["detail"], "Not found.", "project={query}");
    }
    let err = assert_error(app.get(&format!("{LF}?project=999999")).await, StatusCode::NOT_FOUND).await;
    assert_eq!(err["detail"], "No Project matches the given query.");
    let err = assert_error(app.get(&format!("{LF}?project={foreign}")).await, StatusCode::NOT_FOUND).await;
    assert_eq!(err["detail"], "No Project matches the given query.");
}

async fn the_list_accepts_ordering_and_is_by_id_otherwise(app: TestApp) {
    // Arrange
    let project = app.create_project("ordering").await;
    let mut ids = Vec::new();
    for (name, title) in [("o/a", "b title"), ("o/b", "c title"), ("o/c", "a title")] {
        let (_, p) = make_dir(&app, name);
        ids.push(create_storage(&app, project, &p, json!({"title": title})).await["id"].as_i64().unwrap());
    }
    let listed_ids =
        |v: Value| -> Vec<i64> { v.as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect() };

    // Act + Assert
    let plain = json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(listed_ids(plain.clone()), ids);
    for s in plain.as_array().unwrap() {
        assert_eq!(keys(s), STORAGE_KEYS);
    }
    for ordering in ["-id", "title", "-created_at", "id", "unknown_field"] {
        let r = app.get(&format!("{LF}?project={project}&ordering={ordering}")).await;
        let mut got = listed_ids(json_of(r, StatusCode::OK).await);
        got.sort();
        assert_eq!(got, ids, "ordering={ordering} lists the same storages");
    }
}

// ---------------------------------------------------------------------------------
// Create: field validation
// ---------------------------------------------------------------------------------

async fn creating_with_an_empty_body_reports_only_that_project_is_required(app: TestApp) {
    // Act
    let r = app.post(LF, &json!({})).await;

    // Assert
    let errors = validation_errors(r).await;
    assert_eq!(errors, json!({"project": ["This field is required."]}));
}

async fn field_errors_are_reported_alone_before_any_path_error(app: TestApp) {
    // Arrange
    let project = app.create_project("fields first").await;
    let missing = format!("{}/nope", root(&app));

    // Act + Assert: a path error exists too, but only the field error is reported.
    let errors = validation_errors(app.post(LF, &json!({"path": missing})).await).await;
    assert_eq!(errors, json!({"project": ["This field is required."]}));
    let errors =
        validation_errors(app.post(LF, &json!({"project": project, "path": "/tmp", "title": "x".repeat(300)})).await)
            .await;
    assert_eq!(errors, json!({"title": ["Ensure this field has no more than 256 characters."]}));
    let errors =
        validation_errors(app.post(LF, &json!({"project": project, "can_delete_objects": "maybe"})).await).await;
    assert_eq!(errors, json!({"can_delete_objects": ["Must be a valid boolean."]}));
    let listed = json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(listed, json!([]), "nothing was stored");
}

async fn field_errors_use_django_rest_frameworks_messages(app: TestApp) {
    // Arrange
    let project = app.create_project("drf messages").await;
    let (_, ok) = make_dir(&app, "drf");
    let cases = [
        (json!({"project": "abc"}), json!({"project": ["Incorrect type. Expected pk value, received str."]})),
        (json!({"project": 999999}), json!({"project": ["Invalid pk \"999999\" - object does not exist."]})),
        (json!({"project": null}), json!({"project": ["This field may not be null."]})),
        (
            json!({"project": project, "title": "t".repeat(257)}),
            json!({"title": ["Ensure this field has no more than 256 characters."]}),
        ),
        (
            json!({"project": project, "can_delete_objects": "maybe"}),
            json!({"can_delete_objects": ["Must be a valid boolean."]}),
        ),
        (
            json!({"project": project, "synchronizable": null}),
            json!({"synchronizable": ["This field may not be null."]}),
        ),
        (json!({"project": project, "use_blob_urls": null}), json!({"use_blob_urls": ["This field may not be null."]})),
        (
            json!({"project": "abc", "title": "t".repeat(257), "synchronizable": null}),
            json!({
                "project": ["Incorrect type. Expected pk value, received str."],
                "title": ["Ensure this field has no more than 256 characters."],
                "synchronizable": ["This field may not be null."]
            }),
        ),
    ];

    for (mut body, expected) in cases {
        body["path"] = json!(ok);

        // Act
        let errors = validation_errors(app.post(LF, &body).await).await;

        // Assert (order of fields does not matter; the messages do)
        assert_eq!(errors, expected, "body {body}");
    }
    let title_256 = create_storage(&app, project, &ok, json!({"title": "t".repeat(256)})).await;
    assert_eq!(title_256["title"].as_str().unwrap().len(), 256);
}

async fn a_numeric_string_is_accepted_as_project(app: TestApp) {
    // Arrange
    let project = app.create_project("string pk").await;
    let (_, p) = make_dir(&app, "strpk");

    // Act
    let s = create_storage(&app, project, &p, json!({"project": project.to_string()})).await;

    // Assert
    assert_eq!(s["project"], project);
}

// ---------------------------------------------------------------------------------
// Create: the path rules of contract §3.12, byte-exact
// ---------------------------------------------------------------------------------

async fn a_missing_or_blank_path_must_be_set(app: TestApp) {
    // Arrange
    let project = app.create_project("paths").await;

    for path in [None, Some(json!(null)), Some(json!("")), Some(json!("   ")), Some(json!(" \t\n "))] {
        let mut body = json!({ "project": project });
        if let Some(p) = &path {
            body["path"] = p.clone();
        }

        // Act
        let message = non_field_error(app.post(LF, &body).await).await;

        // Assert
        assert_eq!(message, "Path must be set for Local Files storage", "path {path:?}");
    }
}

async fn a_path_that_does_not_exist_is_refused_with_label_studios_message(app: TestApp) {
    // Arrange
    let project = app.create_project("paths").await;
    let missing = format!("{}/cprobe/nonexistent", root(&app));

    // Act
    let message = non_field_error(app.post(LF, &json!({"project": project, "path": missing})).await).await;
    let number = non_field_error(app.post(LF, &json!({"project": project, "path": 123})).await).await;

    // Assert
    assert_eq!(message, does_not_exist(&missing));
    // A number is a relative path: outside the root, whether or not it exists (issue #12)
    assert_eq!(number, outside_root("123", &root(&app)));
}

async fn the_document_root_itself_is_refused_with_label_studios_message(app: TestApp) {
    // Arrange
    let project = app.create_project("paths").await;
    let r = root(&app);

    for given in [r.clone(), format!("{r}/"), format!("{r}/./"), format!("{r}/x/..")] {
        // Act
        let message = non_field_error(app.post(LF, &json!({"project": project, "path": given})).await).await;

        // Assert
        assert_eq!(message, same_as_root(&r, &r), "path {given:?}");
    }
}

async fn a_path_outside_the_document_root_is_refused_with_label_studios_message(app: TestApp) {
    // Arrange
    let project = app.create_project("paths").await;
    let r = root(&app);

    for path in ["/tmp", "/", "/etc"] {
        // Act
        let message = non_field_error(app.post(LF, &json!({"project": project, "path": path})).await).await;

        // Assert
        assert_eq!(message, outside_root(path, &r), "path {path:?}");
    }
}

async fn a_sibling_directory_sharing_the_roots_name_prefix_is_outside_the_root(app: TestApp) {
    // Arrange: <data>/files is the root; <data>/files-evil merely shares its prefix.
    let project = app.create_project("paths").await;
    let sibling = app
        .files_root
        .parent()
        .unwrap()
        .join(format!("{}-evil", app.files_root.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&sibling).unwrap();
    let sibling = sibling.display().to_string();

    // Act
    let message = non_field_error(app.post(LF, &json!({"project": project, "path": sibling})).await).await;

    // Assert
    assert_eq!(message, outside_root(&sibling, &root(&app)));
}

async fn serving_disabled_refuses_local_files_storages_with_label_studios_message(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, |s| s.local_files.serving_enabled = false).await;
    let project = app.create_project("serving off").await;
    let (_, p) = make_dir(&app, "off");

    // Act
    let created = non_field_error(app.post(LF, &json!({"project": project, "path": p})).await).await;
    let validated =
        non_field_error(app.post(&format!("{LF}/validate"), &json!({"project": project, "path": p})).await).await;

    // Assert
    assert_eq!(created, SERVING_DISABLED);
    assert_eq!(validated, SERVING_DISABLED);
    assert_eq!(json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await, json!([]));
}

/// Unlike Label Studio, which checks the flag last (contract §3.12): with local files
/// disabled the answer must not tell which host paths exist (issue #12).
async fn serving_disabled_is_checked_before_the_path_is_looked_at(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, |s| s.local_files.serving_enabled = false).await;
    let project = app.create_project("serving off").await;
    let r = root(&app);
    let missing = format!("{r}/missing");

    // Act + Assert
    let m = non_field_error(app.post(LF, &json!({"project": project})).await).await;
    assert_eq!(m, "Path must be set for Local Files storage");
    for path in [missing.as_str(), &r, "/tmp", "/no/such/directory", "relative/dir"] {
        for url in [LF.to_owned(), format!("{LF}/validate")] {
            let m = non_field_error(app.post(&url, &json!({"project": project, "path": path})).await).await;
            assert_eq!(m, SERVING_DISABLED, "{url} {path}");
        }
    }
}

async fn trailing_slashes_backslashes_and_dot_segments_are_normalized_before_storing(app: TestApp) {
    // Arrange
    let project = app.create_project("normalize").await;
    let (_, a) = make_dir(&app, "norm/a");
    let (_, b) = make_dir(&app, "norm/b");
    let r = root(&app);
    let cases = [
        (format!("{r}/norm/a/"), a.clone()),
        (format!("  {r}/norm/a  "), a.clone()),
        (format!("{r}/norm/a/../b/"), b.clone()),
        (format!("{r}//norm/./a//"), a.clone()),
        (format!("{r}/norm/a/").replace('/', "\\"), a.clone()),
        (format!("{r}\\norm\\b\\"), b.clone()),
    ];

    for (given, stored) in cases {
        // Act
        let s = create_storage(&app, project, &given, json!({})).await;

        // Assert
        assert_eq!(s["path"], stored, "given {given:?}");
        assert_eq!(get_storage(&app, s["id"].as_i64().unwrap()).await["path"], stored, "given {given:?}");
    }
}

// ---------------------------------------------------------------------------------
// Create: the response and the first sync
// ---------------------------------------------------------------------------------

async fn the_create_response_is_the_queued_snapshot_in_label_studios_key_order(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one", "two"]).await;
    let (_, p) = make_dir(&app, "cprobe/out1");

    // Act
    let r = app
        .post(LF, &json!({"project": project, "path": format!("{p}/"), "title": "probe out1", "description": "d"}))
        .await;

    // Assert
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    let s = json_of(r, StatusCode::CREATED).await;
    assert_eq!(keys(&s), STORAGE_KEYS);
    assert!(s["id"].as_i64().unwrap() > 0);
    assert_eq!(s["type"], "localfiles");
    assert_eq!(s["synchronizable"], true);
    assert_eq!(s["path"], p);
    assert_eq!(s["regex_filter"], Value::Null);
    assert_eq!(s["use_blob_urls"], false);
    assert_eq!(s["last_sync"], Value::Null);
    assert_eq!(s["last_sync_count"], Value::Null);
    assert!(s["last_sync_job"].is_null() || s["last_sync_job"].is_string(), "{s}");
    assert_eq!(s["status"], "queued");
    assert_eq!(s["traceback"], Value::Null);
    assert_eq!(keys(&s["meta"]), ["attempts", "time_queued"]);
    assert_eq!(s["meta"]["attempts"], 1);
    assert!(is_meta_time(s["meta"]["time_queued"].as_str().unwrap()), "{}", s["meta"]);
    assert_eq!(s["title"], "probe out1");
    assert_eq!(s["description"], "d");
    assert!(is_iso_time(s["created_at"].as_str().unwrap()), "{}", s["created_at"]);
    assert_eq!(s["can_delete_objects"], Value::Null);
    assert_eq!(s["project"], project);
    assert_eq!(s["export_mode"], "annotation");
}

async fn a_created_storage_syncs_the_existing_annotations_in_the_background(app: TestApp) {
    // Arrange
    let (project, _, annotations) = annotated_project(&app, &["one", "two", "three"]).await;
    let (dir, p) = make_dir(&app, "first");

    // Act
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let s = wait_completed(&app, id).await;

    // Assert
    let mut expected: Vec<String> = annotations.iter().map(i64::to_string).collect();
    expected.sort();
    assert_eq!(files_in(&dir), expected);
    assert_eq!(s["last_sync_count"], 3);
    assert_eq!(s["meta"]["attempts"], 1);
    assert_eq!(s["meta"]["total_annotations"], 3);
    assert!(is_iso_time(s["last_sync"].as_str().unwrap()), "{s}");
}

// ---------------------------------------------------------------------------------
// Our stricter path checks (contract §8.1, §8.2)
// ---------------------------------------------------------------------------------

async fn a_symlink_inside_the_root_pointing_outside_is_refused_and_nothing_is_written_outside(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one"]).await;
    let outside = tempfile::tempdir().unwrap();
    let link = app.files_root.join("escape");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let link = link.display().to_string();
    let (_, ok) = make_dir(&app, "legit");
    let legit = create_storage(&app, project, &ok, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, legit).await;

    // Act
    let created = non_field_error(app.post(LF, &json!({"project": project, "path": link})).await).await;
    let validated =
        non_field_error(app.post(&format!("{LF}/validate"), &json!({"project": project, "path": link})).await).await;
    let patched = non_field_error(app.patch(&format!("{LF}/{legit}"), &json!({"path": link})).await).await;
    let nested = format!("{link}/sub");
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    let nested_message = non_field_error(app.post(LF, &json!({"project": project, "path": nested})).await).await;

    // Assert
    let r = root(&app);
    assert_eq!(created, outside_root(&link, &r));
    assert_eq!(validated, outside_root(&link, &r));
    assert_eq!(patched, outside_root(&link, &r));
    assert_eq!(nested_message, outside_root(&nested, &r));
    assert_eq!(get_storage(&app, legit).await["path"], ok, "the failed PATCH changed nothing");
    assert_eq!(
        json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await.as_array().unwrap().len(),
        1
    );
    assert_eq!(files_in(outside.path()), ["sub"], "nothing was written outside the root");
}

async fn a_symlink_inside_the_root_pointing_to_a_directory_inside_the_root_is_accepted_and_written_through(
    app: TestApp,
) {
    // Arrange: an absolute symlink, as `ln -s "$PWD/real" link` makes.
    let (project, _, annotations) = annotated_project(&app, &["one"]).await;
    let (real, _) = make_dir(&app, "real");
    let link = app.files_root.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let link = link.display().to_string();

    // Act
    let s = create_storage(&app, project, &link, json!({})).await;
    let s = wait_sync(&app, s["id"].as_i64().unwrap()).await;

    // Assert
    assert_eq!(s["path"], link);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(files_in(&real), [annotations[0].to_string()]);
}

async fn a_relative_symlink_inside_the_root_pointing_inside_the_root_is_accepted_and_written_through(app: TestApp) {
    // Arrange: `ln -s real link` inside the root.
    let (project, _, annotations) = annotated_project(&app, &["one"]).await;
    let (real, _) = make_dir(&app, "rel/real");
    let link = app.files_root.join("rel/link");
    std::os::unix::fs::symlink("real", &link).unwrap();
    let link = link.display().to_string();

    // Act
    let s = create_storage(&app, project, &link, json!({})).await;
    let s = wait_sync(&app, s["id"].as_i64().unwrap()).await;

    // Assert
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(files_in(&real), [annotations[0].to_string()]);
}

async fn a_regular_file_as_path_is_refused_as_not_a_directory(app: TestApp) {
    // Arrange
    let project = app.create_project("file path").await;
    let file = app.files_root.join("afile");
    std::fs::write(&file, "x").unwrap();
    let file = file.display().to_string();

    // Act
    let created = non_field_error(app.post(LF, &json!({"project": project, "path": file})).await).await;
    let validated =
        non_field_error(app.post(&format!("{LF}/validate"), &json!({"project": project, "path": file})).await).await;

    // Assert
    assert_eq!(created, format!("Absolute local path \"{file}\" is not a directory"));
    assert_eq!(validated, created);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

async fn dot_dot_segments_cannot_escape_the_document_root(app: TestApp) {
    // Arrange
    let project = app.create_project("dotdot").await;
    let r = root(&app);
    let parent = app.files_root.parent().unwrap().display().to_string();
    make_dir(&app, "inside");

    let cases = [
        (format!("{r}/.."), parent.clone()),
        (format!("{r}/../"), parent.clone()),
        (format!("{r}/inside/../.."), parent.clone()),
        (format!("{r}/inside/../../{}", app.files_root.file_name().unwrap().to_string_lossy()), r.clone()),
        ("/../../../../tmp".to_owned(), "/tmp".to_owned()),
    ];

    for (given, normalized) in cases {
        // Act
        let message = non_field_error(app.post(LF, &json!({"project": project, "path": given})).await).await;

        // Assert
        let expected = if normalized == r { same_as_root(&r, &r) } else { outside_root(&normalized, &r) };
        assert_eq!(message, expected, "path {given:?}");
    }
}

async fn nul_bytes_in_a_path_are_a_400_not_a_server_error(app: TestApp) {
    // Arrange: `path` is a Django REST framework CharField, whose validator refuses
    // NUL before the storage checks run.
    let project = app.create_project("nul").await;
    let (_, ok) = make_dir(&app, "nul");
    let id = create_storage(&app, project, &ok, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    let bad = format!("{ok}\u{0}/x");
    let expected = json!({"path": ["Null characters are not allowed."]});

    // Act
    let created = validation_errors(app.post(LF, &json!({"project": project, "path": bad})).await).await;
    let validated =
        validation_errors(app.post(&format!("{LF}/validate"), &json!({"project": project, "path": bad})).await).await;
    let patched = validation_errors(app.patch(&format!("{LF}/{id}"), &json!({"path": bad})).await).await;
    let only_nul = validation_errors(app.post(LF, &json!({"project": project, "path": "\u{0}"})).await).await;

    // Assert
    assert_eq!(created, expected);
    assert_eq!(validated, expected);
    assert_eq!(patched, expected);
    assert_eq!(only_nul, expected);
    assert_eq!(get_storage(&app, id).await, before);
    assert_eq!(
        json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await.as_array().unwrap().len(),
        1
    );
}

async fn nul_bytes_in_text_fields_are_a_400_not_a_server_error(app: TestApp) {
    // Arrange: PostgreSQL cannot store NUL in text; Django REST framework refuses it
    // with "Null characters are not allowed." on every CharField.
    let project = app.create_project("nul fields").await;
    let (_, ok) = make_dir(&app, "nulfields");

    for field in ["title", "description", "regex_filter"] {
        // Act
        let r = app.post(LF, &json!({"project": project, "path": ok, field: "a\u{0}b"})).await;

        // Assert
        let errors = validation_errors(r).await;
        assert_eq!(errors, json!({ field: ["Null characters are not allowed."] }), "field {field}");
    }
}

async fn a_5000_character_path_is_a_400_not_a_server_error(app: TestApp) {
    // Arrange
    let project = app.create_project("long").await;
    let r = root(&app);
    let one_component = format!("{r}/{}", "a".repeat(5000 - r.len() - 1));
    let many_components = format!("{r}/{}{}", "b".repeat(200), "/cccccccccc".repeat(480));
    assert_eq!(one_component.len(), 5000);
    assert!(many_components.len() > 5000);
    let (_, ok) = make_dir(&app, "long");
    let id = create_storage(&app, project, &ok, json!({})).await["id"].as_i64().unwrap();

    for path in [one_component, many_components] {
        // Act
        let created = non_field_error(app.post(LF, &json!({"project": project, "path": path})).await).await;
        let validated =
            non_field_error(app.post(&format!("{LF}/validate"), &json!({"project": project, "path": path})).await)
                .await;
        let patched = non_field_error(app.patch(&format!("{LF}/{id}"), &json!({"path": path})).await).await;

        // Assert
        assert_eq!(created, does_not_exist(&path));
        assert_eq!(validated, created);
        assert_eq!(patched, created);
    }
}

async fn a_relative_path_is_refused_whether_or_not_it_exists(app: TestApp) {
    // Arrange: the tests run in the crate directory, where `src` exists.
    let project = app.create_project("relative").await;
    assert!(Path::new("src").is_dir());

    // Act
    let missing = non_field_error(app.post(LF, &json!({"project": project, "path": "relative/dir"})).await).await;
    let existing = non_field_error(app.post(LF, &json!({"project": project, "path": "src/"})).await).await;

    // Assert
    assert_eq!(missing, outside_root("relative/dir", &root(&app)));
    assert_eq!(existing, outside_root("src", &root(&app)));
}

/// Unlike Label Studio, which checks existence first (contract §3.12): the answer
/// must not tell which host paths exist (issue #12).
async fn a_path_outside_the_root_gets_the_same_answer_whether_or_not_it_exists(app: TestApp) {
    // Arrange
    let project = app.create_project("probe").await;
    let r = root(&app);
    assert!(Path::new("/tmp").is_dir() && !Path::new("/no/such/directory").exists());

    for path in ["/tmp", "/no/such/directory"] {
        // Act
        let created = non_field_error(app.post(LF, &json!({"project": project, "path": path})).await).await;
        let validated =
            non_field_error(app.post(&format!("{LF}/validate"), &json!({"project": project, "path": path})).await)
                .await;

        // Assert
        assert_eq!(created, outside_root(path, &r), "{path}");
        assert_eq!(validated, created, "{path}");
    }
}

// ---------------------------------------------------------------------------------
// Validate
// ---------------------------------------------------------------------------------

async fn validate_answers_200_with_an_empty_body_and_no_content_type(app: TestApp) {
    // Arrange
    let project = app.create_project("validate").await;
    let (dir, p) = make_dir(&app, "v");

    // Act
    let r = app.post(&format!("{LF}/validate"), &json!({"project": project, "path": p, "title": "t"})).await;

    // Assert
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("content-type").is_none(), "{:?}", r.headers());
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    assert_eq!(json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await, json!([]));
    assert!(files_in(&dir).is_empty(), "validate writes nothing");
}

async fn validate_reports_the_same_messages_as_create_and_stores_nothing(app: TestApp) {
    // Arrange
    let project = app.create_project("validate").await;
    let r = root(&app);
    let missing = format!("{r}/nope");
    let cases = [
        (json!({"project": project}), "Path must be set for Local Files storage".to_owned()),
        (json!({"project": project, "path": "  "}), "Path must be set for Local Files storage".to_owned()),
        (json!({"project": project, "path": missing}), does_not_exist(&missing)),
        (json!({"project": project, "path": format!("{r}/")}), same_as_root(&r, &r)),
        (json!({"project": project, "path": "/tmp"}), outside_root("/tmp", &r)),
    ];

    for (body, expected) in cases {
        // Act
        let message = non_field_error(app.post(&format!("{LF}/validate"), &body).await).await;

        // Assert
        assert_eq!(message, expected, "body {body}");
    }
    let errors = validation_errors(
        app.post(&format!("{LF}/validate"), &json!({"project": project, "path": r, "can_delete_objects": "maybe"}))
            .await,
    )
    .await;
    assert_eq!(errors, json!({"can_delete_objects": ["Must be a valid boolean."]}));
}

async fn validate_requires_project(app: TestApp) {
    // Arrange
    let (_, p) = make_dir(&app, "v");

    // Act
    let errors = validation_errors(app.post(&format!("{LF}/validate"), &json!({"path": p})).await).await;
    let empty = validation_errors(app.post(&format!("{LF}/validate"), &json!({})).await).await;

    // Assert
    assert_eq!(errors, json!({"project": ["This field is required."]}));
    assert_eq!(empty, json!({"project": ["This field is required."]}));
}

async fn validate_with_an_id_merges_the_body_over_the_stored_storage_and_never_persists(app: TestApp) {
    // Arrange
    let project = app.create_project("validate id").await;
    let (_, a) = make_dir(&app, "va");
    let (_, b) = make_dir(&app, "vb");
    let id = create_storage(&app, project, &a, json!({"title": "kept"})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    let url = format!("{LF}/validate");

    // Act
    let with_path = app.post(&url, &json!({"id": id, "project": project, "path": b, "title": "changed"})).await;
    let without_path = app.post(&url, &json!({"id": id, "project": project, "title": "changed"})).await;
    let id_as_string = app.post(&url, &json!({"id": id.to_string(), "project": project})).await;
    let bad = app.post(&url, &json!({"id": id, "project": project, "path": "/tmp"})).await;

    // Assert
    assert_eq!(with_path.status(), StatusCode::OK);
    assert_eq!(with_path.bytes().await.unwrap().len(), 0);
    assert_eq!(without_path.status(), StatusCode::OK, "the stored path is used when the body has none");
    assert_eq!(id_as_string.status(), StatusCode::OK);
    assert_eq!(non_field_error(bad).await, outside_root("/tmp", &root(&app)));
    let after = get_storage(&app, id).await;
    assert_eq!(after, before, "validate never stores anything");
    assert_eq!(after["path"], a);
    assert_eq!(after["title"], "kept");
}

async fn validate_with_an_unknown_id_is_404_json(app: TestApp) {
    // Arrange
    let project = app.create_project("validate 404").await;
    let (_, p) = make_dir(&app, "v404");

    // Act
    let r = app.post(&format!("{LF}/validate"), &json!({"id": 999999, "project": project, "path": p})).await;

    // Assert
    let err = assert_error(r, StatusCode::NOT_FOUND).await;
    assert_eq!(err["detail"], "No LocalFilesExportStorage matches the given query.");
}

// ---------------------------------------------------------------------------------
// Detail: GET, PATCH, PUT, DELETE
// ---------------------------------------------------------------------------------

async fn get_returns_the_storage_and_unknown_ids_are_404_json(app: TestApp) {
    // Arrange
    let project = app.create_project("get").await;
    let (_, p) = make_dir(&app, "get");
    let id = create_storage(&app, project, &p, json!({"title": "g"})).await["id"].as_i64().unwrap();
    let done = wait_completed(&app, id).await;

    // Act
    let r = app.get(&format!("{LF}/{id}")).await;

    // Assert
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    let s = json_of(r, StatusCode::OK).await;
    assert_eq!(keys(&s), STORAGE_KEYS);
    assert_eq!(s, done);
    let listed = json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await;
    assert_eq!(listed, json!([s]));
    for missing in ["999999", "0"] {
        let err = assert_error(app.get(&format!("{LF}/{missing}")).await, StatusCode::NOT_FOUND).await;
        assert_eq!(err["detail"], "No LocalFilesExportStorage matches the given query.", "id {missing}");
    }
    for bad in ["abc", "-1", "1.0"] {
        assert_error(app.get(&format!("{LF}/{bad}")).await, StatusCode::NOT_FOUND).await;
    }
}

async fn patching_only_the_title_succeeds_keeps_the_rest_and_includes_type(app: TestApp) {
    // Arrange
    let project = app.create_project("patch").await;
    let (_, p) = make_dir(&app, "patch");
    let id = create_storage(&app, project, &p, json!({"title": "old", "description": "d", "can_delete_objects": true}))
        .await["id"]
        .as_i64()
        .unwrap();
    let before = wait_completed(&app, id).await;

    // Act
    let r = app.patch(&format!("{LF}/{id}"), &json!({"title": "renamed"})).await;

    // Assert
    let s = json_of(r, StatusCode::OK).await;
    assert_eq!(keys(&s), STORAGE_KEYS);
    assert_eq!(s["type"], "localfiles");
    assert_eq!(s["title"], "renamed");
    let mut expected = before.clone();
    expected["title"] = json!("renamed");
    assert_eq!(s, expected, "only the title changed");
    assert_eq!(get_storage(&app, id).await, expected);
}

async fn patching_to_an_invalid_path_is_a_400_and_changes_nothing(app: TestApp) {
    // Arrange
    let project = app.create_project("patch bad").await;
    let (_, p) = make_dir(&app, "pb");
    let id = create_storage(&app, project, &p, json!({"title": "t"})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    let r = root(&app);
    let missing = format!("{r}/gone");
    let cases = [
        (json!({"path": missing, "title": "new"}), does_not_exist(&missing)),
        (json!({"path": "", "title": "new"}), "Path must be set for Local Files storage".to_owned()),
        (json!({"path": null}), "Path must be set for Local Files storage".to_owned()),
        (json!({"path": r}), same_as_root(&r, &r)),
        (json!({"path": "/tmp"}), outside_root("/tmp", &r)),
    ];

    for (body, expected) in cases {
        // Act
        let message = non_field_error(app.patch(&format!("{LF}/{id}"), &body).await).await;

        // Assert
        assert_eq!(message, expected, "body {body}");
        assert_eq!(get_storage(&app, id).await, before, "body {body} changed nothing");
    }
    let errors = validation_errors(app.patch(&format!("{LF}/{id}"), &json!({"title": "x".repeat(257)})).await).await;
    assert_eq!(errors, json!({"title": ["Ensure this field has no more than 256 characters."]}));
    assert_eq!(get_storage(&app, id).await, before);
}

async fn put_requires_project_and_path(app: TestApp) {
    // Arrange
    let project = app.create_project("put").await;
    let (_, p) = make_dir(&app, "put");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;

    // Act
    let without_project = validation_errors(app.put(&format!("{LF}/{id}"), &json!({"path": p})).await).await;

    // Assert
    assert_eq!(without_project, json!({"project": ["This field is required."]}));
    assert_eq!(get_storage(&app, id).await, before);
}

async fn put_replaces_the_writable_fields_and_includes_type(app: TestApp) {
    // Arrange
    let project = app.create_project("put").await;
    let (_, p) = make_dir(&app, "put1");
    let (_, q) = make_dir(&app, "put2");
    let id = create_storage(&app, project, &p, json!({"title": "one"})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act
    let r = app
        .put(
            &format!("{LF}/{id}"),
            &json!({"project": project, "path": format!("{q}/"), "title": "two", "description": "dd",
                    "can_delete_objects": false, "regex_filter": ".*", "use_blob_urls": true}),
        )
        .await;

    // Assert
    let s = json_of(r, StatusCode::OK).await;
    assert_eq!(keys(&s), STORAGE_KEYS);
    assert_eq!(s["type"], "localfiles");
    assert_eq!(s["path"], q);
    assert_eq!(s["title"], "two");
    assert_eq!(s["description"], "dd");
    assert_eq!(s["can_delete_objects"], false);
    assert_eq!(s["regex_filter"], ".*");
    assert_eq!(s["use_blob_urls"], true);
    assert_eq!(get_storage(&app, id).await, s);
}

async fn a_storage_cannot_be_moved_to_another_project(app: TestApp) {
    // Arrange
    let project = app.create_project("home").await;
    let other = app.create_project("elsewhere").await;
    let (_, p) = make_dir(&app, "move");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;

    // Act
    let r = app.patch(&format!("{LF}/{id}"), &json!({"project": other})).await;

    // Assert
    let errors = validation_errors(r).await;
    assert_eq!(keys(&errors), ["project"], "{errors}");
    assert_eq!(get_storage(&app, id).await, before);
    let same = app.patch(&format!("{LF}/{id}"), &json!({"project": project})).await;
    assert_eq!(json_of(same, StatusCode::OK).await["project"], project);
}

async fn bookkeeping_fields_in_bodies_are_ignored(app: TestApp) {
    // Arrange
    let (project, _, _) = annotated_project(&app, &["one"]).await;
    let (_, p) = make_dir(&app, "books");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    let body = json!({
        "id": 424242, "type": "s3", "created_at": "2000-01-01T00:00:00.000000Z",
        "status": "initialized", "meta": {"attempts": 99}, "last_sync": null, "last_sync_count": 77,
        "last_sync_job": "forged", "traceback": "forged",
    });

    // Act
    let patched = json_of(app.patch(&format!("{LF}/{id}"), &body).await, StatusCode::OK).await;
    let completed =
        json_of(app.patch(&format!("{LF}/{id}"), &json!({"status": "completed"})).await, StatusCode::OK).await;
    let mut put_body = body.clone();
    put_body["project"] = json!(project);
    put_body["path"] = json!(p);
    let put = json_of(app.put(&format!("{LF}/{id}"), &put_body).await, StatusCode::OK).await;

    // Assert
    assert_eq!(patched, before);
    assert_eq!(completed, before);
    assert_eq!(put, before);
    assert_eq!(get_storage(&app, id).await, before);
    let created = create_storage(
        &app,
        project,
        &p,
        json!({"status": "completed", "meta": {"attempts": 50}, "last_sync_count": 3}),
    )
    .await;
    assert_eq!(created["status"], "queued");
    assert_eq!(created["meta"]["attempts"], 1);
    assert_eq!(created["last_sync_count"], Value::Null);
}

async fn an_invalid_status_in_a_body_is_a_400_with_django_rest_frameworks_message(app: TestApp) {
    // Arrange
    let project = app.create_project("bogus").await;
    let (_, p) = make_dir(&app, "bogus");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;

    // Act
    let patched =
        validation_errors(app.patch(&format!("{LF}/{id}"), &json!({"status": "bogus", "title": "x"})).await).await;
    let created =
        validation_errors(app.post(LF, &json!({"project": project, "path": p, "status": "bogus"})).await).await;

    // Assert
    assert_eq!(patched, json!({"status": ["\"bogus\" is not a valid choice."]}));
    assert_eq!(created, json!({"status": ["\"bogus\" is not a valid choice."]}));
    assert_eq!(get_storage(&app, id).await, before);
    assert_eq!(
        json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await.as_array().unwrap().len(),
        1
    );
}

async fn deleting_a_storage_is_204_then_404_and_its_files_stay(app: TestApp) {
    // Arrange
    let (project, _, annotations) = annotated_project(&app, &["one", "two"]).await;
    let (dir, p) = make_dir(&app, "del");
    let id = create_storage(&app, project, &p, json!({"can_delete_objects": true})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let files = files_in(&dir);
    assert_eq!(files.len(), 2);

    // Act
    let r = app.delete(&format!("{LF}/{id}")).await;

    // Assert
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers().get("content-type").is_none());
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let detail = "No LocalFilesExportStorage matches the given query.";
    assert_eq!(assert_error(app.get(&format!("{LF}/{id}")).await, StatusCode::NOT_FOUND).await["detail"], detail);
    assert_eq!(assert_error(app.delete(&format!("{LF}/{id}")).await, StatusCode::NOT_FOUND).await["detail"], detail);
    let r = app.patch(&format!("{LF}/{id}"), &json!({"title": "x"})).await;
    assert_eq!(assert_error(r, StatusCode::NOT_FOUND).await["detail"], detail);
    let r = app.post(&format!("{LF}/{id}/sync"), &json!({})).await;
    assert_eq!(assert_error(r, StatusCode::NOT_FOUND).await["detail"], detail);
    assert_eq!(json_of(app.get(&format!("{LF}?project={project}")).await, StatusCode::OK).await, json!([]));
    assert_eq!(files_in(&dir), files, "files already written stay");
    // Deleting an annotation afterwards does not reach the deleted storage's files either.
    let r = app.delete(&format!("/api/annotations/{}/", annotations[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, q) = make_dir(&app, "del2");
    let other = create_storage(&app, project, &q, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, other).await;
    assert_eq!(files_in(&dir), files);
}

async fn another_organizations_storage_is_404_for_every_storage_endpoint(app: TestApp) {
    // Arrange
    let project = app.create_project("mine").await;
    let (_, p) = make_dir(&app, "mine");
    let id = create_storage(&app, project, &p, json!({"title": "mine"})).await["id"].as_i64().unwrap();
    let before = wait_completed(&app, id).await;
    let stranger = app.user_in_other_organization("storage-stranger@example.com").await;
    let requests = [
        (Method::GET, format!("{LF}/{id}"), json!({})),
        (Method::PATCH, format!("{LF}/{id}"), json!({"title": "theirs"})),
        (Method::PUT, format!("{LF}/{id}"), json!({"title": "theirs", "project": project, "path": p})),
        (Method::DELETE, format!("{LF}/{id}"), json!({})),
        (Method::POST, format!("{LF}/{id}/sync"), json!({})),
        (Method::POST, format!("{LF}/validate"), json!({"id": id, "path": p})),
    ];

    for (method, path, body) in requests {
        // Act
        let r = as_user(&app, &stranger, method.clone(), &path).json(&body).send().await.unwrap();

        // Assert
        let err = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(err["detail"], "No LocalFilesExportStorage matches the given query.", "{method} {path}");
    }
    assert_eq!(get_storage(&app, id).await, before, "the foreign requests changed nothing");
}

async fn another_organization_cannot_create_or_list_storages_of_a_project_it_does_not_own(app: TestApp) {
    // Arrange
    let project = app.create_project("mine").await;
    let (_, p) = make_dir(&app, "mine");
    create_storage(&app, project, &p, json!({})).await;
    let stranger = app.user_in_other_organization("storage-lister@example.com").await;

    // Act
    let created = as_user(&app, &stranger, Method::POST, LF).json(&json!({"project": project, "path": p})).send();
    let created = validation_errors(created.await.unwrap()).await;
    let listed = as_user(&app, &stranger, Method::GET, &format!("{LF}?project={project}")).send().await.unwrap();
    let aggregate =
        as_user(&app, &stranger, Method::GET, &format!("/api/storages/export?project={project}")).send().await.unwrap();

    // Assert
    assert_eq!(created, json!({"project": [format!("Invalid pk \"{project}\" - object does not exist.")]}));
    assert_eq!(assert_error(listed, StatusCode::NOT_FOUND).await["detail"], "No Project matches the given query.");
    assert_eq!(json_of(aggregate, StatusCode::OK).await, json!([]));
    let anon = app.anon(Method::GET, &format!("{LF}?project={project}")).send().await.unwrap();
    assert_error(anon, StatusCode::UNAUTHORIZED).await;
}

async fn unsupported_storage_types_list_as_empty_and_refuse_creation(app: TestApp) {
    // Arrange
    let project = app.create_project("cloud").await;

    let unsupported = labelport::storage::spec::TYPES.iter().filter(|t| t.build.is_none()).map(|t| t.name);
    for t in unsupported {
        // Act
        let listed =
            json_of(app.get(&format!("/api/storages/export/{t}?project={project}")).await, StatusCode::OK).await;
        let created = app.post(&format!("/api/storages/export/{t}"), &json!({"project": project})).await;

        // Assert
        assert_eq!(listed, json!([]), "{t}");
        assert_error(created, StatusCode::NOT_IMPLEMENTED).await;
    }
    let err =
        assert_error(app.get(&format!("/api/storages/export/ftp?project={project}")).await, StatusCode::NOT_FOUND)
            .await;
    assert!(err["detail"].is_string());
}

async fn storage_paths_work_with_and_without_a_trailing_slash(app: TestApp) {
    // Arrange: contract §0.3: the export-storage routes have no trailing slash in LS;
    // we route both forms to the same handler (recommendation), so both work.
    let project = app.create_project("slashes").await;
    let (_, p) = make_dir(&app, "slash");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act + Assert
    for path in [format!("{LF}/{id}"), format!("{LF}/{id}/")] {
        assert_eq!(json_of(app.get(&path).await, StatusCode::OK).await["id"], id, "{path}");
    }
    for path in ["/api/storages/export/types", "/api/storages/export/types/"] {
        assert_eq!(json_of(app.get(path).await, StatusCode::OK).await.as_array().unwrap().len(), 5, "{path}");
    }
}
