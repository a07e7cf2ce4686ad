//! Resource limits (issue #12, docs/SECURITY.md): request bodies cannot make the
//! server's memory explode, and slow or idle connections cannot exhaust it.

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp};
use labelport::config::{HttpSettings, DEFAULT_MAX_BODY_BYTES};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

backend_tests!(an_import_larger_than_the_body_limit_is_accepted_up_to_the_import_limit);

crate::configured_backend_tests!(
    a_20_mb_body_to_refresh_is_refused_with_413_and_memory_stays_flat,
    a_20_mb_refresh_body_under_a_raised_limit_is_read_without_a_json_tree,
    a_20_mb_import_of_one_long_list_raises_peak_memory_by_under_6x_its_size,
    an_import_of_millions_of_empty_annotations_is_refused_without_growing_memory,
    half_sent_requests_are_closed_within_the_header_timeout,
    an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout,
    a_request_whose_body_never_completes_gets_408_after_the_request_timeout,
    health_answers_while_a_client_holds_500_idle_connections_over_the_cap,
);

/// A generous bound for "promptly" (the configured timeouts in these tests are 1 s).
const PROMPTLY: Duration = Duration::from_secs(10);

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

/// `[{"data": {"a": [0,0,…]}}]` of about `size` bytes: one task whose JSON tree
/// would take about 70× its text.
fn big_task_body(size: usize) -> Vec<u8> {
    let mut body = br#"[{"data": {"a": ["#.to_vec();
    while body.len() < size {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]}}]");
    body
}

/// `POST /api/projects/{project}/import` of the JSON `body`.
async fn post_import(app: &TestApp, project: i64, body: Vec<u8>) -> reqwest::Response {
    app.req(Method::POST, &format!("/api/projects/{project}/import"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn a_20_mb_import_of_one_long_list_raises_peak_memory_by_under_6x_its_size(backend: Backend) {
    // Arrange: an import limit the body fits under
    let app = spawn_app_with(backend, |s| s.http.max_import_bytes = 64 * 1024 * 1024).await;
    let project = app.create_project("big import").await;
    let body = big_task_body(20_000_000);
    let size = body.len() as u64;
    let before = peak_memory();

    // Act
    let r = post_import(&app, project, body).await;

    // Assert
    let growth = peak_memory().saturating_sub(before);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    // measured ~5× (the body, its stored text, and the database driver's
    // copies of that text while staging it); a JSON tree of it was ~70×
    assert!(growth < 6 * size, "peak memory grew by {} MB", growth / 1_000_000);
}

async fn an_import_of_millions_of_empty_annotations_is_refused_without_growing_memory(backend: Backend) {
    // Arrange: 3.3 million `{}` annotations in one task (10 MB), each of which would
    // cost ~100 bytes once parsed; the default cap allows 10 per task of the task cap
    let app = spawn_app_with(backend, |s| s.http.max_import_bytes = 64 * 1024 * 1024).await;
    let project = app.create_project("tiny annotations").await;
    let mut body = br#"[{"data": {"text": "x"}, "annotations": ["#.to_vec();
    while body.len() < 10_000_000 {
        body.extend_from_slice(b"{},");
    }
    body.extend_from_slice(b"{}]}]");
    let size = body.len() as u64;
    let before = peak_memory();

    // Act
    let r = post_import(&app, project, body).await;

    // Assert
    let growth = peak_memory().saturating_sub(before);
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    let message = err["validation_errors"]["non_field_errors"][0].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("Task #1: an import holds at most 1000000 annotations"), "{err}");
    assert!(growth < 6 * size + MAX_PEAK_GROWTH, "peak memory grew by {} MB", growth / 1_000_000);
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
    let r = post_import(&app, project, body).await;

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

/// `host:port` of the server, for raw TCP clients.
fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (EOF or reset) and returns what it
/// sent; `None` if it is still open after [`PROMPTLY`].
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Short timeouts; the one a test exercises is set again by the test.
fn short_timeouts(http: &mut HttpSettings) {
    http.header_timeout = Duration::from_secs(30);
    http.keep_alive_timeout = Duration::from_secs(30);
    http.request_timeout = Duration::from_secs(30);
}

async fn half_sent_requests_are_closed_within_the_header_timeout(backend: Backend) {
    // Arrange: only the header timeout is short
    let app = spawn_app_with(backend, |s| {
        short_timeouts(&mut s.http);
        s.http.header_timeout = Duration::from_secs(1);
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
        // A request line and part of the headers, never the blank line that ends them
        stream.write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes()).await.unwrap();
        clients.push(stream);
    }

    // Act and Assert
    for (i, stream) in clients.iter_mut().enumerate() {
        let sent = read_until_closed(stream).await;
        assert!(sent.is_some(), "half-sent request {i} still open after {PROMPTLY:?}");
    }
    assert_eq!(app.anon(Method::GET, "/health").send().await.unwrap().status(), StatusCode::OK);
}

async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(backend: Backend) {
    // Arrange: only the keep-alive timeout is short
    let app = spawn_app_with(backend, |s| {
        short_timeouts(&mut s.http);
        s.http.keep_alive_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();

    // Act: the response comes, then nothing more is sent
    let sent = read_until_closed(&mut stream).await;

    // Assert
    let sent = sent.unwrap_or_else(|| panic!("idle connection still open after {PROMPTLY:?}"));
    let text = String::from_utf8_lossy(&sent);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(r#"{"status":"UP"}"#), "one response, then the close: {text}");
}

async fn a_request_whose_body_never_completes_gets_408_after_the_request_timeout(backend: Backend) {
    // Arrange: only the request timeout is short
    let app = spawn_app_with(backend, |s| {
        short_timeouts(&mut s.http);
        s.http.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    let head =
        "POST /api/token/refresh/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();

    // Act: one byte of the promised 100, then silence
    stream.write_all(b"{").await.unwrap();
    let sent = read_until_closed(&mut stream).await;

    // Assert
    let sent = sent.unwrap_or_else(|| panic!("slow request still open after {PROMPTLY:?}"));
    let text = String::from_utf8_lossy(&sent);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("content-type: application/json"), "{text}");
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap();
    assert_eq!(body["status_code"], 408, "{body}");
}

/// Sockets open in this process (the server runs in it, as do the test's clients).
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd (Linux)")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

async fn health_answers_while_a_client_holds_500_idle_connections_over_the_cap(backend: Backend) {
    // Arrange: the default timeouts, with which the server alone would take about
    // 25 s to get through 500 connections 100 at a time
    let cap = 100;
    let app = spawn_app_with(backend, |s| s.http = HttpSettings { max_connections: cap, ..s.http.clone() }).await;
    let address = socket_address(&app);
    let before = open_sockets();
    let started = Instant::now();

    // Act: open the connections (the kernel's accept queue fills up, so this too
    // waits for the server to make room), then ask for /health
    let scenario = async {
        let mut idle = Vec::new();
        for i in 0..500 {
            let mut stream = TcpStream::connect(&address).await.unwrap();
            if i % 2 == 0 {
                // Half of them also start a request and never finish it
                stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
            }
            idle.push(stream);
        }
        let r = app.anon(Method::GET, "/health").send().await.unwrap();
        (idle, r)
    };
    let outcome = tokio::time::timeout(PROMPTLY, scenario).await;

    // Assert
    let (idle, r) = outcome.unwrap_or_else(|_| panic!("500 connections and /health took over {PROMPTLY:?}"));
    assert_eq!(r.status(), StatusCode::OK, "after {:?}", started.elapsed());
    // The 500 client ends are open; the server holds no more than its cap of them
    let server_ends = open_sockets().saturating_sub(before + idle.len());
    assert!(server_ends <= cap, "the server holds {server_ends} connections, over its cap of {cap}");
}
