//! Metrics at `GET /metrics` (parsed as Prometheus text), and readiness at `GET /ready` (issue 10).

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, TestApp};
use crate::storages::{annotate, annotated_project, create_storage, make_dir, wait_caught_up, wait_completed};
use labelport::config::SecretString;
use prom_text_format_parser::{Metric, Sample, Scrape, Type, ValueType};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    after_a_sync_the_metrics_count_documents_jobs_and_requests_by_route_template,
    ready_is_200_when_the_database_answers_and_is_migrated,
);

async fn scrape(app: &TestApp) -> Scrape {
    let r = app.anon(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = r.text().await.unwrap();
    Scrape::parse(&text).unwrap_or_else(|e| panic!("not the Prometheus text format ({e:?}):\n{text}"))
}

/// A family, which must exist with this type.
fn family<'a>(scrape: &'a Scrape, name: &str, kind: Type) -> &'a Metric {
    let metric = scrape.metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no family {name}"));
    assert_eq!(metric.kind, kind, "the type of {name}");
    metric
}

fn label<'a>(sample: &'a Sample, key: &str) -> Option<&'a str> {
    sample.labels.iter().find(|l| l.key == key).map(|l| l.value.as_str())
}

/// Sum of the family's `value_type` samples whose labels include every `(key, value)`.
fn sum(metric: &Metric, value_type: ValueType, labels: &[(&str, &str)]) -> f64 {
    metric
        .samples
        .iter()
        .filter(|s| s.value.value_type == value_type && labels.iter().all(|(k, v)| label(s, k) == Some(*v)))
        .map(|s| s.value.value.as_f64())
        .sum()
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(family(scrape, name, Type::Counter), ValueType::Sample, labels)
}

/// Observations of a histogram (its `_count`).
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(family(scrape, name, Type::Histogram), ValueType::Count, labels)
}

fn gauge(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let metric = family(scrape, name, Type::Gauge);
    metric.samples.iter().find(|s| labels.iter().all(|(k, v)| label(s, k) == Some(*v))).map(|s| s.value.value.as_f64())
}

const LOCAL: (&str, &str) = ("storage_type", "localfiles");

async fn after_a_sync_the_metrics_count_documents_jobs_and_requests_by_route_template(app: TestApp) {
    // Arrange: metrics are per process, so only the change this test makes is compared.
    let before = scrape(&app).await;
    let written_before = before
        .metrics
        .iter()
        .find(|m| m.name == "labelport_documents_written_total")
        .map_or(0.0, |m| sum(m, ValueType::Sample, &[LOCAL]));
    let (project, tasks, _) = annotated_project(&app, &["a", "b", "c"]).await;
    let (_, p) = make_dir(&app, "metrics");

    // Act: a sync on creation, then one auto-exported annotation, and an unknown path.
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    wait_completed(&app, id).await;
    let synced = scrape(&app).await;
    annotate(&app, tasks[0], "later").await;
    wait_caught_up(&app, id).await;
    let unknown = app.get("/api/no-such-thing/12345").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let after = scrape(&app).await;

    // Assert: documents and jobs by storage type.
    assert_eq!(counter(&synced, "labelport_documents_written_total", &[LOCAL]) - written_before, 3.0);
    assert!(counter(&after, "labelport_documents_written_total", &[LOCAL]) - written_before >= 4.0);
    let completed = [LOCAL, ("outcome", "completed"), ("mode", "full")];
    assert!(counter(&synced, "labelport_sync_jobs_total", &completed) >= 1.0);
    assert!(histogram_count(&synced, "labelport_sync_duration_seconds", &[LOCAL, ("mode", "full")]) >= 1.0);
    assert!(histogram_count(&after, "labelport_auto_export_lag_seconds", &[LOCAL]) >= 1.0);
    assert_eq!(gauge(&after, "labelport_change_feed_backlog", &[LOCAL]), Some(0.0));
    assert!(gauge(&after, "labelport_db_pool_connections", &[("state", "in_use")]).is_some());
    assert!(gauge(&after, "labelport_db_pool_connections", &[("state", "idle")]).is_some());

    // Assert: HTTP requests by template and status, never by raw path.
    let storage_get = [("method", "GET"), ("route", "/api/storages/export/{type}/{id}"), ("status", "200")];
    assert!(counter(&after, "labelport_http_requests_total", &storage_get) >= 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert!(counter(&after, "labelport_http_requests_total", &unmatched) >= 1.0);
    assert!(histogram_count(&after, "labelport_http_request_duration_seconds", &storage_get[..2]) >= 1.0);
    // Buckets fine enough for a 5 ms objective: 1 ms and 2.5 ms below it.
    let latency = family(&after, "labelport_http_request_duration_seconds", Type::Histogram);
    let bounds: Vec<&str> = latency
        .samples
        .iter()
        .filter(|s| storage_get[..2].iter().all(|(k, v)| label(s, k) == Some(*v)))
        .filter_map(|s| label(s, "le"))
        .collect();
    assert!(["0.001", "0.0025", "0.005"].iter().all(|b| bounds.contains(b)), "{bounds:?}");
    for m in after.metrics.iter().filter(|m| m.name.starts_with("labelport_http_")) {
        for s in &m.samples {
            let route = label(s, "route").expect("every request sample has a route");
            assert!(!route.chars().any(|c| c.is_ascii_digit()), "an id in a route label: {route}");
        }
    }
    for m in after.metrics.iter().filter(|m| m.name.starts_with("labelport_")) {
        for s in &m.samples {
            for key in ["id", "storage_id", "project", "project_id", "path"] {
                assert!(label(s, key).is_none(), "{} has a `{key}` label", m.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_counted_with_the_failed_outcome() {
    // Arrange: no background worker, so the directory goes between queueing and running.
    let app = spawn_app_with(Backend::Sqlite, |s| s.sync.run_worker = false).await;
    let engine = labelport::startup::engine(
        &app.state.db,
        &app.state.settings,
        &app.state.secrets,
        std::sync::Arc::new(tokio::sync::Notify::new()),
    );
    let (project, _, _) = annotated_project(&app, &["a"]).await;
    let (dir, p) = make_dir(&app, "vanishing");
    let id = create_storage(&app, project, &p, json!({})).await["id"].as_i64().unwrap();
    let failed = [LOCAL, ("outcome", "failed")];
    let before = scrape(&app).await;
    let failed_before = before
        .metrics
        .iter()
        .find(|m| m.name == "labelport_sync_jobs_total")
        .map_or(0.0, |m| sum(m, ValueType::Sample, &failed));

    // Act
    std::fs::remove_dir_all(&dir).unwrap();
    while engine.try_execute_task().await.unwrap() == labelport::sync::ExecutionOutcome::Worked {}

    // Assert
    let r = app.get(&format!("/api/storages/export/localfiles/{id}")).await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "failed");
    let after = scrape(&app).await;
    assert_eq!(counter(&after, "labelport_sync_jobs_total", &failed) - failed_before, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_token_set_metrics_are_refused_without_it() {
    // Arrange
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.http.metrics_token = Some(SecretString("s3cret-metrics".into()));
    })
    .await;

    // Act
    let none = app.anon(Method::GET, "/metrics").send().await.unwrap();
    let wrong = app.anon(Method::GET, "/metrics").bearer_auth("nope").send().await.unwrap();
    let api_token = app.get("/metrics").await;
    let right = app.anon(Method::GET, "/metrics").bearer_auth("s3cret-metrics").send().await.unwrap();

    // Assert
    assert_error(none, StatusCode::UNAUTHORIZED).await;
    assert_error(wrong, StatusCode::UNAUTHORIZED).await;
    assert_error(api_token, StatusCode::UNAUTHORIZED).await;
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.text().await.unwrap().contains("labelport_"));
}

async fn ready_is_200_when_the_database_answers_and_is_migrated(app: TestApp) {
    // Act
    let r = app.anon(Method::GET, "/ready").send().await.unwrap();

    // Assert
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"status": "READY", "database": "UP", "pending_migrations": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_json_when_the_database_is_closed() {
    // Arrange
    let app = spawn_app(Backend::Sqlite).await;
    app.state.db.close().await;

    // Act
    let r = app.anon(Method::GET, "/ready").send().await.unwrap();
    let health = app.anon(Method::GET, "/health").send().await.unwrap();

    // Assert
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json::<Value>().await.unwrap()["database"], "DOWN");
    assert_eq!(health.status(), StatusCode::OK, "liveness does not depend on the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_json_when_a_migration_is_missing() {
    // Arrange: forget the newest migration, as a database of an older build would.
    let app = spawn_app(Backend::Postgres).await;
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
        .execute(app.state.db.pool())
        .await
        .unwrap();

    // Act
    let r = app.anon(Method::GET, "/ready").send().await.unwrap();

    // Assert
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "NOT_READY");
    assert_eq!(body["pending_migrations"], 1);
}
