//! Azure Blob export storages (`azure`, contract §6.5; issue 8) against Azurite: the
//! target's conformance suite, then the endpoint family over HTTP on both databases
//! (shapes, write-only secrets, Label Studio's messages), the blobs a sync writes,
//! auto-export and deletion.
//!
//! The server reaches Azurite through `AZURE_STORAGE_USE_EMULATOR` and
//! `AZURITE_BLOB_STORAGE_URL`, read when a target is built: each test sets them first
//! (nextest runs every test in its own process, and every test sets the same values).

use crate::emulators::{azure_endpoint, unique_name};
use crate::helpers::{assert_error, TestApp};
use crate::storages::{annotate, annotated_project, json_of, keys, non_field_error, wait_for, POLL, TIMEOUT};
use labelport::storage::azure::{SharedKey, MISSING_CREDENTIALS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

crate::backend_tests!(
    creating_a_storage_answers_label_studios_shape_without_secrets_and_exports_every_annotation,
    list_get_patch_and_validate_never_show_the_secrets_and_the_database_holds_them_sealed,
    a_prefix_is_used_verbatim_and_no_prefix_writes_bare_keys,
    task_mode_writes_one_blob_per_task_and_removes_it_with_its_last_annotation,
    a_missing_container_is_label_studios_message_on_create_and_masked_on_validate,
    missing_credentials_give_label_studios_message,
    a_wrong_account_key_is_refused_without_echoing_any_secret,
    validate_with_an_id_fills_the_secrets_from_the_stored_storage,
    patch_does_not_check_the_connection_as_in_label_studio,
    auto_export_writes_created_and_updated_annotations_and_deletes_them_when_allowed,
    a_full_resync_restores_a_blob_deleted_by_hand_and_rewrites_nothing_else,
    a_sync_to_a_container_deleted_after_creation_fails_with_a_clear_traceback,
);

crate::configured_backend_tests!(an_unreachable_service_never_fails_annotation_requests_and_is_caught_up_later);

/// Base path of the Azure export storage endpoints.
const AZ: &str = "/api/storages/export/azure";

/// Azurite's well-known development account.
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Keys of an Azure storage, in Label Studio's order, plus our `export_mode`.
const AZURE_KEYS: &[&str] = &[
    "id",
    "type",
    "synchronizable",
    "container",
    "prefix",
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

/// Points the process at Azurite (see the module header).
fn use_emulator() {
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", azure_endpoint());
}

/// A fresh container in Azurite and a signed client to look inside it.
pub struct Container {
    pub name: String,
    endpoint: String,
    key: SharedKey,
    http: reqwest::Client,
}

impl Container {
    /// Creates a uniquely named container.
    pub async fn create() -> Container {
        use_emulator();
        let c = Container {
            name: unique_name("lp"),
            endpoint: azure_endpoint(),
            key: SharedKey::new(DEV_ACCOUNT, DEV_KEY).unwrap(),
            http: reqwest::Client::new(),
        };
        let r = c.send(Method::PUT, &format!("{}?restype=container", c.url())).await;
        assert_eq!(r.status(), StatusCode::CREATED, "create container: {:?}", r.text().await);
        c
    }

    fn url(&self) -> String {
        format!("{}/{}", self.endpoint, self.name)
    }

    fn blob_url(&self, blob: &str) -> String {
        // Test blob names need no escaping beyond what the URL parser does.
        format!("{}/{blob}", self.url())
    }

    async fn send(&self, method: Method, url: &str) -> reqwest::Response {
        let mut request = self.http.request(method, url).build().unwrap();
        self.key.sign(&mut request);
        self.http.execute(request).await.expect("Azurite answers")
    }

    /// The stored bytes of a blob, `None` if there is none.
    pub async fn get(&self, blob: &str) -> Option<Vec<u8>> {
        let r = self.send(Method::GET, &self.blob_url(blob)).await;
        match r.status() {
            StatusCode::OK => Some(r.bytes().await.unwrap().to_vec()),
            StatusCode::NOT_FOUND => None,
            s => panic!("GET {blob}: {s} {:?}", r.text().await),
        }
    }

    /// The `Content-Type` and `ETag` of a blob.
    pub async fn head(&self, blob: &str) -> (String, String) {
        let r = self.send(Method::HEAD, &self.blob_url(blob)).await;
        assert_eq!(r.status(), StatusCode::OK, "HEAD {blob}");
        let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (h("content-type"), h("etag"))
    }

    /// Deletes a blob behind labelport's back.
    pub async fn delete_blob(&self, blob: &str) {
        let r = self.send(Method::DELETE, &self.blob_url(blob)).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "DELETE {blob}");
    }

    /// Deletes the container itself.
    pub async fn delete(&self) {
        let r = self.send(Method::DELETE, &format!("{}?restype=container", self.url())).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "DELETE container");
    }

    /// Every blob name in the container, sorted (one page is enough for the tests).
    pub async fn names(&self) -> Vec<String> {
        let r = self.send(Method::GET, &format!("{}?restype=container&comp=list", self.url())).await;
        assert_eq!(r.status(), StatusCode::OK);
        let xml = r.text().await.unwrap();
        let mut names: Vec<String> =
            xml.split("<Name>").skip(1).map(|s| s.split("</Name>").next().unwrap().replace("&amp;", "&")).collect();
        names.sort();
        names
    }

    /// Polls until the container holds exactly `expected` (sorted).
    pub async fn wait_names(&self, expected: &[String]) {
        let mut expected = expected.to_vec();
        expected.sort();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let names = self.names().await;
            if names == expected {
                return;
            }
            assert!(Instant::now() < deadline, "container holds {names:?}, expected {expected:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// A create body for this container with the development account.
    pub fn body(&self, project: i64, extra: Value) -> Value {
        let mut body = json!({
            "project": project,
            "title": "azure",
            "container": self.name,
            "account_name": DEV_ACCOUNT,
            "account_key": DEV_KEY,
        });
        for (k, v) in extra.as_object().expect("extra fields are an object") {
            body[k] = v.clone();
        }
        body
    }
}

async fn create(app: &TestApp, body: &Value) -> Value {
    json_of(app.post(AZ, body).await, StatusCode::CREATED).await
}

async fn get(app: &TestApp, id: i64) -> Value {
    json_of(app.get(&format!("{AZ}/{id}")).await, StatusCode::OK).await
}

async fn sync(app: &TestApp, id: i64, query: &str) -> Value {
    json_of(app.post(&format!("{AZ}/{id}/sync{query}"), &json!({})).await, StatusCode::OK).await
}

/// Polls a storage until its sync has finished and returns it.
async fn wait_sync(app: &TestApp, id: i64) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = get(app, id).await;
        if ["completed", "failed", "completed_with_errors"].contains(&s["status"].as_str().unwrap_or_default()) {
            return s;
        }
        assert!(Instant::now() < deadline, "storage {id} did not finish its sync within {TIMEOUT:?}: {s}");
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_completed(app: &TestApp, id: i64) -> Value {
    let s = wait_sync(app, id).await;
    assert_eq!(s["status"], "completed", "{s}");
    s
}

/// Polls the lag endpoint until auto-export has applied every change.
async fn wait_caught_up(app: &TestApp, id: i64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let lag = json_of(app.get(&format!("{AZ}/{id}/lag")).await, StatusCode::OK).await;
        if lag["pending_changes"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "storage {id} did not catch up: {lag}");
        tokio::time::sleep(POLL).await;
    }
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(DEV_KEY), "the account key leaked: {text}");
    assert!(!text.contains(DEV_ACCOUNT), "the account name leaked: {text}");
    assert!(!text.contains("account_key") && !text.contains("account_name"), "a secret field is shown: {text}");
}

/// Python's `json.dumps(v)` (`", "` and `": "` separators, non-ASCII as `\uXXXX`).
fn python_compact(v: &Value) -> String {
    struct Py;
    impl serde_json::ser::Formatter for Py {
        fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    serde::Serialize::serialize(v, &mut serde_json::Serializer::with_formatter(&mut out, Py)).unwrap();
    ascii_escape(&String::from_utf8(out).unwrap())
}

fn ascii_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if (ch as u32) < 0x7f {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Checks a blob holds the annotation's document: the same document as the
/// local-files storage of the same project writes (whose bytes `storages_sync.rs`
/// checks against Label Studio's), byte for byte in Python's compact `json.dumps` form.
async fn assert_blob_is_the_document(app: &TestApp, c: &Container, blob: &str, local: &std::path::Path, id: i64) {
    let bytes = c.get(blob).await.unwrap_or_else(|| panic!("blob {blob} is missing"));
    let text = String::from_utf8(bytes).expect("UTF-8");
    assert!(text.is_ascii(), "ASCII-escaped: {text}");
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stored["id"], id, "{text}");
    let local_file = local.join(id.to_string());
    wait_for("the local-files copy", || local_file.is_file()).await;
    let expected: Value = serde_json::from_slice(&std::fs::read(&local_file).unwrap()).unwrap();
    assert_eq!(stored, expected, "{blob} holds the same document as local files");
    assert_eq!(text, python_compact(&expected), "{blob}: Python's json.dumps(doc)");
    let _ = app;
}

/// A local-files storage on the same project, as the reference for the bytes.
async fn local_reference(app: &TestApp, project: i64) -> std::path::PathBuf {
    let (dir, p) = crate::storages::make_dir(app, &unique_name("ref"));
    crate::storages::create_storage(app, project, &p, json!({})).await;
    dir
}

// ---------------------------------------------------------------------------------
// The target's conformance suite
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_target_passes_the_conformance_suite() {
    // Arrange: a prefix ending in `/`, so blob names have Label Studio's `a//<key>`.
    let c = Container::create().await;
    let mut config = labelport::storage::spec::TargetConfig::default();
    config.values.insert("container".into(), json!(c.name));
    config.values.insert("prefix".into(), json!("conf/"));
    config.secrets.insert("account_name".into(), json!(DEV_ACCOUNT));
    config.secrets.insert("account_key".into(), json!(DEV_KEY));
    let ctx = labelport::storage::spec::TargetContext {
        local_files: labelport::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
        fsync: false,
        targets: labelport::config::TargetSettings::from_env(),
    };
    let target = labelport::storage::spec::build("azure", &config, &ctx).unwrap();
    let (endpoint, container) = (azure_endpoint(), c.name.clone());
    let reader = move |key: &str| -> Option<Vec<u8>> {
        // The suite reads synchronously: a small runtime on a thread of its own.
        let url = format!("{endpoint}/{container}/conf//{key}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let http = reqwest::Client::new();
                    let mut request = http.get(&url).build().unwrap();
                    SharedKey::new(DEV_ACCOUNT, DEV_KEY).unwrap().sign(&mut request);
                    let r = http.execute(request).await.unwrap();
                    (r.status() == StatusCode::OK).then_some(())?;
                    Some(r.bytes().await.unwrap().to_vec())
                })
            })
            .join()
            .unwrap()
        })
    };

    // Act + Assert
    labelport::storage::conformance::run_all(target.as_ref(), Some(&reader)).await;
    assert_eq!(target.to_string(), format!("AzureBlob({}/conf/)", c.name), "names itself without the account");

    // And: listing finds exactly what was put, under the prefix only.
    target.put("7", bytes::Bytes::from_static(b"{\"id\": 7}")).await.unwrap();
    target.put("8.json", bytes::Bytes::from_static(b"x")).await.unwrap();
    let sizes = target.list_sizes().await.unwrap().expect("Azure lists");
    assert_eq!(sizes, [("7".to_owned(), 9), ("8.json".to_owned(), 1)].into_iter().collect());
    assert_eq!(c.names().await, ["conf//7", "conf//8.json"]);
    let (content_type, _) = c.head("conf//7").await;
    assert_eq!(content_type, "application/json");
    let deleted = target.delete_many(vec!["7".into(), "8.json".into(), "missing".into(), "../x".into()]).await;
    assert!(deleted[..3].iter().all(Result::is_ok) && deleted[3].is_err(), "{deleted:?}");
    assert!(c.names().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_more_than_a_thousand_blobs() {
    // Arrange
    let c = Container::create().await;
    let mut config = labelport::storage::spec::TargetConfig::default();
    config.values.insert("container".into(), json!(c.name));
    config.secrets.insert("account_name".into(), json!(DEV_ACCOUNT));
    config.secrets.insert("account_key".into(), json!(DEV_KEY));
    let ctx = labelport::storage::spec::TargetContext {
        local_files: labelport::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
        fsync: false,
        targets: labelport::config::TargetSettings::from_env(),
    };
    let target = labelport::storage::spec::build("azure", &config, &ctx).unwrap();
    let items: Vec<(String, bytes::Bytes)> =
        (0..1100).map(|i| (i.to_string(), bytes::Bytes::from(vec![b'x'; i % 7]))).collect();
    assert!(target.put_many(items).await.iter().all(Result::is_ok));

    // Act
    let sizes = target.list_sizes().await.unwrap().unwrap();

    // Assert
    assert_eq!(sizes.len(), 1100);
    assert!((0..1100usize).all(|i| sizes[&i.to_string()] == (i % 7) as u64));
    let sizes_one_by_one = target.sizes(vec!["5".into(), "nope".into()]).await;
    assert_eq!(sizes_one_by_one.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [Some(5), None]);
}

// ---------------------------------------------------------------------------------
// The endpoint family
// ---------------------------------------------------------------------------------

async fn creating_a_storage_answers_label_studios_shape_without_secrets_and_exports_every_annotation(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let (project, _, annotations) = annotated_project(&app, &["one", "two", "caf\u{e9} \u{1f600}"]).await;
    let local = local_reference(&app, project).await;

    // Act
    let r = app.post(AZ, &c.body(project, json!({"prefix": "exports", "can_delete_objects": true}))).await;
    let text = r.text().await.unwrap();
    let created: Value = serde_json::from_str(&text).unwrap();

    // Assert
    assert_no_secret(&text);
    assert_eq!(keys(&created), AZURE_KEYS, "{created}");
    assert_eq!(created["type"], "azure");
    assert_eq!(created["container"], json!(c.name));
    assert_eq!(created["prefix"], "exports");
    assert_eq!(created["status"], "queued");
    assert_eq!(created["can_delete_objects"], true);
    let id = created["id"].as_i64().unwrap();
    let done = wait_completed(&app, id).await;
    assert_eq!(done["last_sync_count"], 3);
    assert_eq!(done["meta"]["total_annotations"], 3);
    let expected: Vec<String> = annotations.iter().map(|a| format!("exports/{a}")).collect();
    c.wait_names(&expected).await;
    for a in &annotations {
        assert_blob_is_the_document(&app, &c, &format!("exports/{a}"), &local, *a).await;
        assert_eq!(c.head(&format!("exports/{a}")).await.0, "application/json");
    }
    let aggregate = json_of(app.get(&format!("/api/storages/export?project={project}")).await, StatusCode::OK).await;
    assert!(aggregate.as_array().unwrap().iter().any(|s| s["type"] == "azure" && s["id"] == id), "{aggregate}");
    assert_no_secret(&aggregate.to_string());
}

async fn list_get_patch_and_validate_never_show_the_secrets_and_the_database_holds_them_sealed(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let project = app.create_project("secrets").await;
    let id = create(&app, &c.body(project, json!({}))).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act
    let listed = app.get(&format!("{AZ}?project={project}")).await.text().await.unwrap();
    let got = app.get(&format!("{AZ}/{id}")).await.text().await.unwrap();
    let patched = app.patch(&format!("{AZ}/{id}"), &json!({"title": "renamed", "account_key": DEV_KEY})).await;
    let patched_status = patched.status();
    let patched = patched.text().await.unwrap();
    let validated = app.post(&format!("{AZ}/validate"), &c.body(project, json!({}))).await;
    let form = json_of(app.get(&format!("{AZ}/form")).await, StatusCode::OK).await;

    // Assert
    let listed_json: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed_json.as_array().unwrap().len(), 1);
    assert_eq!(keys(&listed_json[0]), AZURE_KEYS);
    assert_eq!(patched_status, StatusCode::OK, "{patched}");
    assert_eq!(serde_json::from_str::<Value>(&patched).unwrap()["title"], "renamed");
    assert_eq!(validated.status(), StatusCode::OK);
    let validated = validated.text().await.unwrap();
    for text in [&listed, &got, &patched, &validated] {
        assert_no_secret(text);
    }
    assert_eq!(form[1]["fields"][0]["name"], "account_name");
    assert_eq!(form[1]["fields"][1]["type"], "password");
    let rows: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT config, secrets FROM export_storages WHERE type = 'azure'")
            .fetch_all(app.state.db.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    for (config, secrets) in rows {
        assert!(!config.contains(DEV_KEY) && !config.contains(DEV_ACCOUNT), "{config}");
        let secrets = secrets.expect("secrets are stored, sealed");
        assert!(!secrets.contains(DEV_KEY) && !secrets.contains(DEV_ACCOUNT), "secrets are sealed: {secrets}");
    }
}

async fn a_prefix_is_used_verbatim_and_no_prefix_writes_bare_keys(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let (project, _, annotations) = annotated_project(&app, &["one"]).await;
    let a = annotations[0];

    // Act
    for prefix in [json!("a/"), json!(null), json!("deep/er path")] {
        let id = create(&app, &c.body(project, json!({"prefix": prefix}))).await["id"].as_i64().unwrap();
        wait_completed(&app, id).await;
    }

    // Assert
    c.wait_names(&[format!("a//{a}"), a.to_string(), format!("deep/er path/{a}")]).await;
    let bare = c.get(&a.to_string()).await.unwrap();
    assert_eq!(c.get(&format!("a//{a}")).await.unwrap(), bare);
}

async fn task_mode_writes_one_blob_per_task_and_removes_it_with_its_last_annotation(app: TestApp) {
    // Arrange: 3 annotations on 2 tasks.
    let c = Container::create().await;
    let project = app.create_project("task mode").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let a1 = annotate(&app, tasks[0], "x").await;
    annotate(&app, tasks[0], "y").await;
    let a3 = annotate(&app, tasks[1], "z").await;

    // Act
    let body = c.body(project, json!({"prefix": "t", "export_mode": "task", "can_delete_objects": true}));
    let id = create(&app, &body).await["id"].as_i64().unwrap();
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(s["export_mode"], "task");
    assert_eq!(s["last_sync_count"], 3, "counts annotations, not blobs");
    c.wait_names(&[format!("t/{}.json", tasks[0]), format!("t/{}.json", tasks[1])]).await;
    let doc: Value = serde_json::from_slice(&c.get(&format!("t/{}.json", tasks[0])).await.unwrap()).unwrap();
    assert_eq!(doc["id"], tasks[0]);
    assert_eq!(doc["annotations"].as_array().map(Vec::len), Some(2), "{doc}");

    // Act + Assert: one annotation of a two-annotation task rewrites its blob; the
    // last one of a task removes it.
    assert_eq!(app.delete(&format!("/api/annotations/{a1}/")).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&format!("/api/annotations/{a3}/")).await.status(), StatusCode::NO_CONTENT);
    c.wait_names(&[format!("t/{}.json", tasks[0])]).await;
    wait_caught_up(&app, id).await;
    let doc: Value = serde_json::from_slice(&c.get(&format!("t/{}.json", tasks[0])).await.unwrap()).unwrap();
    assert_eq!(doc["annotations"].as_array().map(Vec::len), Some(1), "{doc}");
}

async fn a_missing_container_is_label_studios_message_on_create_and_masked_on_validate(app: TestApp) {
    // Arrange
    use_emulator();
    let project = app.create_project("missing").await;
    let name = unique_name("nope");
    let body = json!({"project": project, "container": name, "account_name": DEV_ACCOUNT, "account_key": DEV_KEY});

    // Act
    let created = app.post(AZ, &body).await;
    let validated = app.post(&format!("{AZ}/validate"), &body).await;
    let listed = json_of(app.get(&format!("{AZ}?project={project}")).await, StatusCode::OK).await;

    // Assert
    assert_eq!(non_field_error(created).await, format!("Container not found: {name}"));
    assert_eq!(non_field_error(validated).await, "Error validating storage connection");
    assert_eq!(listed, json!([]), "nothing was stored");
}

async fn missing_credentials_give_label_studios_message(app: TestApp) {
    // Arrange
    use_emulator();
    for var in ["AZURE_BLOB_ACCOUNT_NAME", "AZURE_BLOB_ACCOUNT_KEY"] {
        assert!(std::env::var(var).is_err(), "{var} must be unset for this test");
    }
    let project = app.create_project("nocreds").await;

    // Act + Assert
    for body in [
        json!({"project": project, "container": "c"}),
        json!({"project": project, "container": "c", "account_name": DEV_ACCOUNT}),
        json!({"project": project, "container": "c", "account_name": "", "account_key": DEV_KEY}),
    ] {
        let created = app.post(AZ, &body).await;
        assert_eq!(non_field_error(created).await, MISSING_CREDENTIALS, "{body}");
        let validated = app.post(&format!("{AZ}/validate"), &body).await;
        assert_eq!(non_field_error(validated).await, "Error validating storage connection", "{body}");
    }
}

async fn a_wrong_account_key_is_refused_without_echoing_any_secret(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let project = app.create_project("badkey").await;
    let wrong = "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=";

    // Act
    let r = app.post(AZ, &c.body(project, json!({"account_key": wrong}))).await;
    let bad_base64 = app.post(AZ, &c.body(project, json!({"account_key": "not a key!"}))).await;
    let bad_name = app.post(AZ, &c.body(project, json!({"account_name": "Not/A.Name"}))).await;

    // Assert
    let message = non_field_error(r).await;
    assert!(message.contains(&format!("Cannot access Azure container \"{}\"", c.name)), "{message}");
    assert!(!message.contains(wrong), "{message}");
    assert_no_secret(&message);
    let message = non_field_error(bad_base64).await;
    assert!(message.contains("account key is not valid") && !message.contains("not a key!"), "{message}");
    let message = non_field_error(bad_name).await;
    assert!(message.contains("account name is not valid") && !message.contains("Not/A.Name"), "{message}");
}

async fn validate_with_an_id_fills_the_secrets_from_the_stored_storage(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let project = app.create_project("validate").await;
    let id = create(&app, &c.body(project, json!({}))).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act
    let with_id =
        app.post(&format!("{AZ}/validate"), &json!({"id": id, "project": project, "container": c.name})).await;
    let without = app.post(&format!("{AZ}/validate"), &json!({"project": project, "container": c.name})).await;

    // Assert
    assert_eq!(with_id.status(), StatusCode::OK, "{:?}", with_id.text().await);
    assert_eq!(non_field_error(without).await, "Error validating storage connection");
}

async fn patch_does_not_check_the_connection_as_in_label_studio(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let project = app.create_project("patch").await;
    let id = create(&app, &c.body(project, json!({}))).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act
    let r = app.patch(&format!("{AZ}/{id}"), &json!({"container": "does-not-exist"})).await;

    // Assert
    let patched = json_of(r, StatusCode::OK).await;
    assert_eq!(patched["container"], "does-not-exist");
    assert_eq!(get(&app, id).await["container"], "does-not-exist");
}

async fn auto_export_writes_created_and_updated_annotations_and_deletes_them_when_allowed(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let project = app.create_project("auto").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    let keep = create(&app, &c.body(project, json!({"prefix": "keep"}))).await["id"].as_i64().unwrap();
    let del = create(&app, &c.body(project, json!({"prefix": "del", "can_delete_objects": true}))).await["id"]
        .as_i64()
        .unwrap();
    let synced = wait_completed(&app, del).await;
    wait_completed(&app, keep).await;

    // Act + Assert: create.
    let annotation = annotate(&app, task, "first").await;
    c.wait_names(&[format!("del/{annotation}"), format!("keep/{annotation}")]).await;
    let (_, etag) = c.head(&format!("del/{annotation}")).await;

    // Act + Assert: update.
    let result =
        json!([{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["second"]}}]);
    let r = app.patch(&format!("/api/annotations/{annotation}/"), &json!({"result": result})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let doc: Value = serde_json::from_slice(&c.get(&format!("del/{annotation}")).await.unwrap()).unwrap();
        if doc["result"] == result {
            break;
        }
        assert!(Instant::now() < deadline, "the update was not exported: {doc}");
        tokio::time::sleep(POLL).await;
    }
    assert_ne!(c.head(&format!("del/{annotation}")).await.1, etag);
    assert_eq!(get(&app, del).await["meta"], synced["meta"], "no sync ran");

    // Act + Assert: delete.
    let r = app.delete(&format!("/api/annotations/{annotation}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    c.wait_names(&[format!("keep/{annotation}")]).await;
    wait_caught_up(&app, keep).await;
    wait_caught_up(&app, del).await;
    assert_eq!(c.names().await, [format!("keep/{annotation}")], "the storage without can_delete_objects keeps it");
}

async fn a_full_resync_restores_a_blob_deleted_by_hand_and_rewrites_nothing_else(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let (project, _, annotations) = annotated_project(&app, &["one", "two", "three"]).await;
    let local = local_reference(&app, project).await;
    let id = create(&app, &c.body(project, json!({"prefix": "p"}))).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let mut before = BTreeMap::new();
    for a in &annotations {
        before.insert(*a, c.head(&format!("p/{a}")).await.1);
    }
    let victim = annotations[1];
    c.delete_blob(&format!("p/{victim}")).await;

    // Act
    sync(&app, id, "?full=true").await;
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(s["meta"]["sync_mode"], "full", "{s}");
    assert_eq!(s["meta"]["files_written"], 1, "{s}");
    for a in &annotations {
        let etag = c.head(&format!("p/{a}")).await.1;
        if *a == victim {
            assert_blob_is_the_document(&app, &c, &format!("p/{a}"), &local, *a).await;
        } else {
            assert_eq!(etag, before[a], "p/{a} was left alone");
        }
    }

    // And: an incremental re-sync with nothing changed writes nothing.
    sync(&app, id, "").await;
    let s = wait_completed(&app, id).await;
    assert_eq!(s["meta"]["files_written"], 0, "{s}");
}

async fn a_sync_to_a_container_deleted_after_creation_fails_with_a_clear_traceback(app: TestApp) {
    // Arrange
    let c = Container::create().await;
    let (project, _, _) = annotated_project(&app, &["one"]).await;
    let id = create(&app, &c.body(project, json!({}))).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    c.delete().await;

    // Act
    sync(&app, id, "?full=true").await;
    let s = wait_sync(&app, id).await;

    // Assert
    assert_eq!(s["status"], "failed", "{s}");
    let traceback = s["traceback"].as_str().unwrap_or_default();
    assert!(traceback.contains(&format!("Container not found: {}", c.name)), "{traceback}");
    assert_no_secret(&s.to_string());
    let unknown = app.get(&format!("{AZ}/999999")).await;
    assert_eq!(
        assert_error(unknown, StatusCode::NOT_FOUND).await["detail"],
        "No AzureBlobExportStorage matches the given query."
    );
}

// ---------------------------------------------------------------------------------
// Retries, permanent errors and the concurrency bound, against a scripted server
// ---------------------------------------------------------------------------------

/// What the scripted Blob service saw.
#[derive(Default)]
struct Script {
    requests: std::sync::Mutex<Vec<(String, String)>>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

/// A Blob service that answers by blob name: `busy-N` is 503 ServerBusy N times then
/// 201, `denied` is 403 AuthenticationFailed (quoting the account, as Azure does),
/// `broken` is always 500, anything else 201 after 20 ms. Every request must be signed.
async fn scripted_service() -> (String, std::sync::Arc<Script>) {
    use axum::http::{HeaderMap, StatusCode as S};
    use std::sync::atomic::Ordering;
    let script = std::sync::Arc::new(Script::default());
    let seen = script.clone();
    let app = axum::Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri, headers: HeaderMap| {
        let script = seen.clone();
        async move {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            assert!(auth.starts_with(&format!("SharedKey {DEV_ACCOUNT}:")), "signed: {auth:?}");
            assert!(headers.contains_key("x-ms-date") && headers.contains_key("x-ms-version"));
            let path = uri.path().to_owned();
            let blob = path.rsplit('/').next().unwrap_or("").to_owned();
            let tries = {
                let mut log = script.requests.lock().unwrap();
                log.push((method.to_string(), path.clone()));
                log.iter().filter(|(_, p)| *p == path).count()
            };
            let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            script.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let answer = if let Some(n) = blob.strip_prefix("busy-") {
                if tries <= n.parse::<usize>().unwrap() {
                    (S::SERVICE_UNAVAILABLE, [("x-ms-error-code", "ServerBusy")], String::new())
                } else {
                    (S::CREATED, [("x-ms-error-code", "")], String::new())
                }
            } else if blob == "denied" {
                let body = format!(
                    "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message><AuthenticationErrorDetail>string to sign: '/{DEV_ACCOUNT}{path}'</AuthenticationErrorDetail></Error>"
                );
                (S::FORBIDDEN, [("x-ms-error-code", "AuthenticationFailed")], body)
            } else if blob == "broken" {
                (S::INTERNAL_SERVER_ERROR, [("x-ms-error-code", "InternalError")], String::new())
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                (S::CREATED, [("x-ms-error-code", "")], String::new())
            };
            script.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/{DEV_ACCOUNT}"), script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_writes_retry_throttling_fail_fast_on_permanent_errors_and_stay_within_the_bound() {
    // Arrange
    let (endpoint, script) = scripted_service().await;
    std::env::set_var("AZURE_STORAGE_USE_EMULATOR", "true");
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &endpoint);
    let mut config = labelport::storage::spec::TargetConfig::default();
    config.values.insert("container".into(), json!("c"));
    config.secrets.insert("account_name".into(), json!(DEV_ACCOUNT));
    config.secrets.insert("account_key".into(), json!(DEV_KEY));
    let ctx = labelport::storage::spec::TargetContext {
        local_files: labelport::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
        fsync: false,
        targets: labelport::config::TargetSettings {
            max_in_flight: 4,
            max_attempts: 4,
            backoff: std::time::Duration::from_millis(1),
            ..labelport::config::TargetSettings::from_env()
        },
    };
    let target = labelport::storage::spec::build("azure", &config, &ctx).unwrap();
    let count = |blob: &str| {
        let path = format!("/{DEV_ACCOUNT}/c/{blob}");
        script.requests.lock().unwrap().iter().filter(|(_, p)| *p == path).count()
    };

    // Act + Assert: throttling is retried until it passes.
    target.put("busy-2", bytes::Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(count("busy-2"), 3);

    // Act + Assert: a permanent error is not retried, and names neither the account nor the key.
    let denied = target.put("denied", bytes::Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(count("denied"), 1);
    assert!(denied.is_permanent(), "{denied}");
    let text = denied.to_string();
    assert!(text.contains("Cannot access Azure container \"c\"") && text.contains("AuthenticationFailed"), "{text}");
    assert_no_secret(&text);

    // Act + Assert: server errors are retried a bounded number of times.
    let broken = target.put("broken", bytes::Bytes::from_static(b"x")).await.unwrap_err();
    assert_eq!(count("broken"), 4);
    assert!(!broken.is_permanent() && broken.to_string().contains("InternalError"), "{broken}");
    assert_no_secret(&broken.to_string());

    // Act + Assert: many writes go out concurrently, never more than the bound.
    let items: Vec<(String, bytes::Bytes)> =
        (0..40).map(|i| (i.to_string(), bytes::Bytes::from_static(b"{}"))).collect();
    assert!(target.put_many(items).await.iter().all(Result::is_ok));
    let max = script.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&max), "at most 4 requests in flight, and more than one: {max}");
}

// ---------------------------------------------------------------------------------
// The service going away and coming back
// ---------------------------------------------------------------------------------

/// A TCP proxy in front of Azurite that can be cut: when down, it drops every open
/// connection (mid-request ones too) and every new one.
struct Cut {
    endpoint: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cut {
    async fn start() -> Cut {
        let upstream = url::Url::parse(&azure_endpoint()).unwrap();
        let upstream = format!("{}:{}", upstream.host_str().unwrap(), upstream.port().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/{DEV_ACCOUNT}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_down, conns) = (down.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Cut { endpoint, down, open }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for task in self.open.lock().unwrap().drain(..) {
                task.abort();
            }
        }
    }
}

async fn an_unreachable_service_never_fails_annotation_requests_and_is_caught_up_later(
    backend: crate::helpers::Backend,
) {
    // Arrange: Azure reached through the proxy; short leases and few attempts, so a
    // failed auto-export is retried soon.
    let c = Container::create().await;
    let cut = Cut::start().await;
    std::env::set_var("AZURITE_BLOB_STORAGE_URL", &cut.endpoint);
    let app = crate::helpers::spawn_app_with(backend, |s| {
        s.sync.lease = std::time::Duration::from_secs(1);
        s.targets.max_attempts = 2;
        s.targets.backoff = std::time::Duration::from_millis(1);
    })
    .await;
    let project = app.create_project("cut").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    let id = create(&app, &c.body(project, json!({"prefix": "p"}))).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;

    // Act: the service goes away; an annotation is saved; a sync is asked for.
    cut.set_down(true);
    let started = Instant::now();
    let annotation = annotate(&app, task, "while down").await;
    let saved_in = started.elapsed();
    sync(&app, id, "?full=true").await;
    let s = wait_sync(&app, id).await;

    // Assert: the request did not wait for Azure, and the sync says what went wrong.
    assert!(saved_in < std::time::Duration::from_secs(2), "the annotation request took {saved_in:?}");
    assert_ne!(s["status"], "completed", "{s}");
    let traceback = s["traceback"].as_str().unwrap_or_default();
    assert!(traceback.contains(&c.name), "the traceback names the container: {traceback}");
    assert_no_secret(&s.to_string());
    assert_eq!(c.get(&format!("p/{annotation}")).await, None);

    // Act: the service comes back.
    cut.set_down(false);
    let deadline = Instant::now() + TIMEOUT;
    while c.get(&format!("p/{annotation}")).await.is_none() {
        assert!(Instant::now() < deadline, "the annotation was never exported after the service came back");
        tokio::time::sleep(POLL).await;
    }
    sync(&app, id, "?full=true").await;
    let s = wait_completed(&app, id).await;

    // Assert
    assert_eq!(s["meta"]["total_annotations"], 1, "{s}");
    let doc: Value = serde_json::from_slice(&c.get(&format!("p/{annotation}")).await.unwrap()).unwrap();
    assert_eq!(doc["result"][0]["value"]["choices"], json!(["while down"]));
}
