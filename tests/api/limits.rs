//! Resource limits (issue #12, docs/SECURITY.md): request bodies cannot make the
//! server's memory explode, and slow or idle connections cannot exhaust it.

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp};
use labelport::config::DEFAULT_MAX_BODY_BYTES;
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(an_import_larger_than_the_body_limit_is_accepted_up_to_the_import_limit);

crate::configured_backend_tests!(
    a_20_mb_body_to_refresh_is_refused_with_413_and_memory_stays_flat,
    a_20_mb_refresh_body_under_a_raised_limit_is_read_without_a_json_tree,
);

/// Most the process's peak memory may grow while the server handles one 20 MB body.
/// The body itself (held by the client, and read by the server in the second test)
/// accounts for 20–40 MB; a JSON tree of it took 1.37 GB before issue #12 was fixed.
const MAX_PEAK_GROWTH: u64 = 100 * 1024 * 1024;

/// The peak resident memory of this process (`VmHWM`), in bytes. The server runs in
/// the test's process, and nextest runs each test in a process of its own.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux)");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmHWM in kB");
    kb * 1024
}

/// `{"refresh": "x", "a": [0,0,…]}` of about `size` bytes: the shape that cost 70× its size.
fn big_refresh_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"refresh": "x", "a": ["#.to_vec();
    while body.len() < size {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]}");
    body
}

async fn a_20_mb_body_to_refresh_is_refused_with_413_and_memory_stays_flat(backend: Backend) {
    // Arrange: the default body limit, as a server started without flags has
    let app = spawn_app_with(backend, |s| s.max_body_bytes = DEFAULT_MAX_BODY_BYTES).await;
    let body = big_refresh_body(20_000_000);
    let r = app.anon(Method::POST, "/api/token/refresh/").json(&json!({"refresh": "x"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "warm-up");
    let before = peak_memory();

    // Act
    let r = app
        .anon(Method::POST, "/api/token/refresh/")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();

    // Assert
    let err = assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(err["detail"], format!("Request body exceeds the limit of {DEFAULT_MAX_BODY_BYTES} bytes."));
    let growth = peak_memory().saturating_sub(before);
    assert!(growth < MAX_PEAK_GROWTH, "peak memory grew by {} MB", growth / 1_000_000);
    assert_eq!(app.anon(Method::GET, "/health").send().await.unwrap().status(), StatusCode::OK);
}

async fn a_20_mb_refresh_body_under_a_raised_limit_is_read_without_a_json_tree(backend: Backend) {
    // Arrange: an operator raised the limit; the refresh body is still not built into a tree
    let app = spawn_app_with(backend, |s| s.max_body_bytes = 64 * 1024 * 1024).await;
    let body = big_refresh_body(20_000_000);
    let before = peak_memory();

    // Act
    let r = app
        .anon(Method::POST, "/api/token/refresh/")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();

    // Assert
    let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Token is invalid");
    let growth = peak_memory().saturating_sub(before);
    assert!(growth < MAX_PEAK_GROWTH, "peak memory grew by {} MB", growth / 1_000_000);
}

async fn an_import_larger_than_the_body_limit_is_accepted_up_to_the_import_limit(app: TestApp) {
    // Arrange: 2 MiB of tasks, over the 1 MiB body limit and under the harness's 4 MiB import limit
    let limit = app.state.settings.max_body_bytes;
    let import_limit = app.state.settings.http.max_import_bytes;
    let project = app.create_project("large import").await;
    let text = "t".repeat(1000);
    let tasks: Vec<_> = (0..2 * limit / 1000).map(|i| json!({"data": {"text": text, "i": i}})).collect();
    let body = serde_json::to_vec(&tasks).unwrap();
    assert!(body.len() > limit && body.len() < import_limit);

    // Act
    let r = app
        .req(Method::POST, &format!("/api/projects/{project}/import"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(r.status(), StatusCode::CREATED);
    let summary: serde_json::Value = r.json().await.unwrap();
    assert_eq!(summary["task_count"].as_u64(), Some(tasks.len() as u64));
    // ... while the same size elsewhere is refused
    let r = app
        .req(Method::POST, "/api/tasks/")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"project": project, "data": {"text": "x".repeat(2 * limit)}})).unwrap())
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
}
