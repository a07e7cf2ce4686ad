//! Local-files directories are confined per organization (issue #12 item 5): a
//! directory used by one organization's storage, or a parent or child of it, is
//! refused to every other organization on create, PATCH, PUT and validate; and local
//! files cannot be enabled without a document root.

use crate::backend_tests;
use crate::helpers::{TestApp, TEST_SECRET_KEY};
use crate::storages::{create_storage, json_of, make_dir, validation_errors, LF};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

backend_tests!(
    another_organization_cannot_use_a_directory_that_overlaps_a_storage_of_ours,
    another_organization_cannot_move_its_storage_onto_our_directory,
    an_organization_may_use_its_own_directory_again_for_another_project,
    of_two_organizations_claiming_one_directory_at_once_only_one_gets_it,
);

/// `Absolute local path "<p>" is, contains or lies inside …` (the refusal under `path`).
fn taken(p: &str) -> String {
    labelport::storage::local_path::taken_message(p)
}

/// A user of a new organization with a project of its own.
struct Stranger {
    token: String,
    project: i64,
}

async fn stranger(app: &TestApp, email: &str) -> Stranger {
    let token = app.user_in_other_organization(email).await;
    let r =
        as_user(app, &token, Method::POST, "/api/projects/").json(&json!({"title": "theirs"})).send().await.unwrap();
    let project = json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap();
    Stranger { token, project }
}

fn as_user(app: &TestApp, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.anon(method, path).header("Authorization", format!("Token {token}"))
}

/// Asserts a 400 whose only validation error is `taken(p)` under `path`.
async fn assert_taken(r: reqwest::Response, p: &str, case: &str) {
    let errors = validation_errors(r).await;
    assert_eq!(errors, json!({ "path": [taken(p)] }), "{case}");
}

async fn another_organization_cannot_use_a_directory_that_overlaps_a_storage_of_ours(app: TestApp) {
    // Arrange: our storage on <root>/orgs/a; the stranger's candidates around it.
    let project = app.create_project("ours").await;
    let (a, a_text) = make_dir(&app, "orgs/a");
    create_storage(&app, project, &a_text, json!({})).await;
    make_dir(&app, "orgs/a/child");
    make_dir(&app, "orgs/ab");
    make_dir(&app, "elsewhere");
    std::os::unix::fs::symlink(&a, app.files_root.join("elsewhere/link")).unwrap();
    let p = |rel: &str| app.files_root.join(rel).display().to_string();
    let them = stranger(&app, "b@example.com").await;

    for (path, case) in [
        (p("orgs/a"), "the same directory"),
        (format!("{}/", p("orgs/a")), "the same directory, written with a trailing slash"),
        (p("orgs"), "a parent"),
        (p("orgs/a/child"), "a child"),
        (p("elsewhere/link"), "a symlink to it"),
        (p("orgs/x/../a"), "the same directory through `..`"),
    ] {
        // Act
        let body = json!({"project": them.project, "path": path});
        let created = as_user(&app, &them.token, Method::POST, LF).json(&body).send().await.unwrap();
        let validated =
            as_user(&app, &them.token, Method::POST, &format!("{LF}/validate")).json(&body).send().await.unwrap();

        // Assert: refused, with the path as stored (normalised)
        let normalised = labelport::storage::local_path::normalize(Some(&path)).unwrap();
        assert_taken(created, &normalised, case).await;
        assert_taken(validated, &normalised, case).await;
    }
    // A sibling that only shares a string prefix is another directory.
    let body = json!({"project": them.project, "path": p("orgs/ab")});
    let r = as_user(&app, &them.token, Method::POST, LF).json(&body).send().await.unwrap();
    json_of(r, StatusCode::CREATED).await;
    let r = as_user(&app, &them.token, Method::GET, &format!("{LF}?project={}", them.project)).send().await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await.as_array().unwrap().len(), 1, "only the sibling was created");
}

async fn another_organization_cannot_move_its_storage_onto_our_directory(app: TestApp) {
    // Arrange
    let project = app.create_project("ours").await;
    let (_, ours) = make_dir(&app, "ours");
    create_storage(&app, project, &ours, json!({})).await;
    let (_, inside) = make_dir(&app, "ours/inside");
    let (_, theirs) = make_dir(&app, "theirs");
    let them = stranger(&app, "b@example.com").await;
    let r = as_user(&app, &them.token, Method::POST, LF)
        .json(&json!({"project": them.project, "path": theirs}))
        .send()
        .await
        .unwrap();
    let id = json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap();
    let url = format!("{LF}/{id}");

    // Act
    let patched = as_user(&app, &them.token, Method::PATCH, &url).json(&json!({"path": ours})).send().await.unwrap();
    let put = as_user(&app, &them.token, Method::PUT, &url)
        .json(&json!({"project": them.project, "path": inside}))
        .send()
        .await
        .unwrap();
    let validated = as_user(&app, &them.token, Method::POST, &format!("{LF}/validate"))
        .json(&json!({"id": id, "project": them.project, "path": ours}))
        .send()
        .await
        .unwrap();

    // Assert: refused, and the storage still points at its own directory
    assert_taken(patched, &ours, "PATCH").await;
    assert_taken(put, &inside, "PUT").await;
    assert_taken(validated, &ours, "validate with id").await;
    let r = as_user(&app, &them.token, Method::GET, &url).send().await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await["path"], theirs);
    // Changing anything else keeps working.
    let r = as_user(&app, &them.token, Method::PATCH, &url).json(&json!({"title": "renamed"})).send().await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await["title"], "renamed");
}

async fn an_organization_may_use_its_own_directory_again_for_another_project(app: TestApp) {
    // Arrange
    let first = app.create_project("first").await;
    let second = app.create_project("second").await;
    let (_, dir) = make_dir(&app, "shared");
    let (_, child) = make_dir(&app, "shared/child");
    create_storage(&app, first, &dir, json!({})).await;

    // Act
    let same = create_storage(&app, second, &dir, json!({})).await;
    let nested = create_storage(&app, second, &child, json!({})).await;
    let validated = app.post(&format!("{LF}/validate"), &json!({"project": second, "path": dir})).await;

    // Assert
    assert_eq!(same["path"], dir);
    assert_eq!(nested["path"], child);
    assert_eq!(validated.status(), StatusCode::OK);
}

async fn of_two_organizations_claiming_one_directory_at_once_only_one_gets_it(app: TestApp) {
    // Arrange: two strangers, each racing for a fresh directory per round.
    let (b, c) = (stranger(&app, "b@example.com").await, stranger(&app, "c@example.com").await);
    for round in 0..5 {
        let (_, dir) = make_dir(&app, &format!("race{round}"));
        let (_, child) = make_dir(&app, &format!("race{round}/child"));
        let create = |s: &Stranger, path: &str| {
            as_user(&app, &s.token, Method::POST, LF).json(&json!({"project": s.project, "path": path})).send()
        };

        // Act
        let (rb, rc) = tokio::join!(create(&b, &dir), create(&c, &child));

        // Assert
        let statuses = [rb.unwrap().status(), rc.unwrap().status()];
        let won = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
        assert_eq!(won, 1, "round {round}: {statuses:?}");
        assert!(statuses.contains(&StatusCode::BAD_REQUEST), "round {round}: {statuses:?}");
    }
}

/// `labelport serve` with local files enabled and the given root (`None`: unset):
/// whether it started (or exited successfully) and what it wrote to stderr.
fn serve_with_root(root: Option<&str>) -> (bool, String) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labelport"));
    for prefix in ["", "LABEL_STUDIO_", "HEARTEX_"] {
        cmd.env_remove(format!("{prefix}LOCAL_FILES_DOCUMENT_ROOT"));
        cmd.env_remove(format!("{prefix}LOCAL_FILES_SERVING_ENABLED"));
    }
    cmd.env_remove("DATABASE_URL")
        .env("LOCAL_FILES_SERVING_ENABLED", "true")
        .env("LABELPORT_SECRET_KEY", TEST_SECRET_KEY)
        .env("RUST_LOG", "warn")
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(data.path().join("data"));
    if let Some(root) = root {
        cmd.env("LOCAL_FILES_DOCUMENT_ROOT", root);
    }
    // A server that starts would run forever: give it a bound, then stop it.
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("the labelport binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        match child.try_wait().unwrap() {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    if exited.is_none() {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (exited.is_some_and(|s| s.success()) || exited.is_none(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn local_files_without_a_document_root_refuse_to_start_naming_the_variable() {
    for root in [None, Some("/"), Some("//"), Some("  /  ")] {
        // Act
        let (ok, stderr) = serve_with_root(root);

        // Assert: a clear message, before the server listens
        assert!(!ok, "root {root:?} started: {stderr}");
        assert!(stderr.contains("set LOCAL_FILES_DOCUMENT_ROOT"), "root {root:?}: {stderr}");
        assert!(!stderr.contains("labelport is listening"), "root {root:?}: {stderr}");
    }
}
