//! Prometheus metrics, recorded through the `metrics` facade and rendered by
//! `metrics-exporter-prometheus` at `GET /metrics` (see the README for the families).
//!
//! Labels are bounded: storage types, job outcomes and modes, HTTP methods, route
//! templates and status codes; never ids or raw paths. The recorder is global (one
//! per process), installed by [`init`]; recording before it is a no-op.

use crate::db::{Change, Db};
use crate::time::now_micros;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Documents written, by `storage_type`.
pub const DOCUMENTS_WRITTEN: &str = "labelport_documents_written_total";
/// Documents deleted, by `storage_type`.
pub const DOCUMENTS_DELETED: &str = "labelport_documents_deleted_total";
/// Document writes or deletes that failed, by `storage_type`.
pub const DOCUMENTS_FAILED: &str = "labelport_documents_failed_total";
/// Finished sync jobs, by `storage_type`, `mode` and `outcome` (Label Studio's status).
pub const SYNC_JOBS: &str = "labelport_sync_jobs_total";
/// Duration of finished sync jobs, by `storage_type` and `mode`.
pub const SYNC_DURATION: &str = "labelport_sync_duration_seconds";
/// Time from an annotation change's commit to its document in place, by `storage_type`.
pub const AUTO_EXPORT_LAG: &str = "labelport_auto_export_lag_seconds";
/// Failed automatic-export attempts (each retried with backoff), by `storage_type`.
pub const AUTO_EXPORT_FAILURES: &str = "labelport_auto_export_failures_total";
/// Change-feed entries not yet applied, summed over the storages of each `storage_type`.
pub const CHANGE_FEED_BACKLOG: &str = "labelport_change_feed_backlog";
/// HTTP requests, by `method`, `route` (template) and `status`.
pub const HTTP_REQUESTS: &str = "labelport_http_requests_total";
/// HTTP request latency, by `method` and `route`.
pub const HTTP_DURATION: &str = "labelport_http_request_duration_seconds";
/// Database pool connections, by `state` (`in_use`, `idle`).
pub const DB_CONNECTIONS: &str = "labelport_db_pool_connections";

/// Buckets of the latency histograms, in seconds. They start at 1 ms, below
/// Prometheus' usual 5 ms: most requests take less, and a 5 ms objective needs a
/// bucket under it to tell a fast median from a slow one.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of the sync-duration and auto-export-lag histograms, in seconds.
const SYNC_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle).
/// `None` when another recorder was installed first.
pub fn init() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SYNC_DURATION.into()), SYNC_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(AUTO_EXPORT_LAG.into()), SYNC_BUCKETS));
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => {
                    describe();
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        // Histogram samples are folded into buckets here even when nobody scrapes.
                        let upkeep = handle.clone();
                        runtime.spawn(async move {
                            loop {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                upkeep.run_upkeep();
                            }
                        });
                    }
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, "metrics are disabled: the recorder could not be installed");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    describe_counter!(DOCUMENTS_WRITTEN, Unit::Count, "Documents written to export storages.");
    describe_counter!(DOCUMENTS_DELETED, Unit::Count, "Documents deleted from export storages.");
    describe_counter!(DOCUMENTS_FAILED, Unit::Count, "Document writes and deletes that failed.");
    describe_counter!(SYNC_JOBS, Unit::Count, "Finished sync jobs by outcome (Label Studio's status).");
    describe_histogram!(SYNC_DURATION, Unit::Seconds, "Duration of finished sync jobs.");
    describe_histogram!(
        AUTO_EXPORT_LAG,
        Unit::Seconds,
        "Time from an annotation change's commit to its document in place (auto-export)."
    );
    describe_counter!(
        AUTO_EXPORT_FAILURES,
        Unit::Count,
        "Failed automatic-export attempts; each is retried with backoff."
    );
    describe_gauge!(CHANGE_FEED_BACKLOG, Unit::Count, "Change-feed entries not yet applied, summed per storage type.");
    describe_counter!(HTTP_REQUESTS, Unit::Count, "HTTP requests by route template and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request latency by route template.");
    describe_gauge!(DB_CONNECTIONS, Unit::Count, "Database pool connections by state.");
}

/// Counts the outcome of some export work on a storage of `storage_type`.
pub fn documents(storage_type: &str, written: i64, deleted: i64, failed: i64) {
    let t = storage_type.to_owned();
    for (name, n) in [(DOCUMENTS_WRITTEN, written), (DOCUMENTS_DELETED, deleted), (DOCUMENTS_FAILED, failed)] {
        if n > 0 {
            counter!(name, "storage_type" => t.clone()).increment(n as u64);
        }
    }
}

/// Records a finished sync job: `outcome` is the storage's new status, `duration`
/// the seconds since the job started.
pub fn job_finished(storage_type: &str, mode: &str, outcome: &str, duration: Option<f64>) {
    let (t, mode) = (storage_type.to_owned(), bounded_mode(mode));
    counter!(SYNC_JOBS, "storage_type" => t.clone(), "mode" => mode, "outcome" => bounded_outcome(outcome))
        .increment(1);
    if let Some(seconds) = duration.filter(|d| d.is_finite() && *d >= 0.0) {
        histogram!(SYNC_DURATION, "storage_type" => t, "mode" => mode).record(seconds);
    }
}

/// Records the lag of change-feed entries whose documents auto-export just put in place.
pub fn auto_exported(storage_type: &str, changes: &[Change]) {
    let now = now_micros();
    let lag = histogram!(AUTO_EXPORT_LAG, "storage_type" => storage_type.to_owned());
    for c in changes {
        lag.record((now - c.created_at).max(0) as f64 / 1_000_000.0);
    }
}

/// Counts one failed automatic-export attempt on a storage of `storage_type`.
pub fn auto_export_failed(storage_type: &str) {
    counter!(AUTO_EXPORT_FAILURES, "storage_type" => storage_type.to_owned()).increment(1);
}

fn bounded_mode(mode: &str) -> &'static str {
    match mode {
        "full" => "full",
        _ => "incremental",
    }
}

fn bounded_outcome(status: &str) -> &'static str {
    match status {
        "completed" => "completed",
        "completed_with_errors" => "completed_with_errors",
        _ => "failed",
    }
}

/// Middleware: counts every request and its latency under its route template
/// (`unmatched` for unknown paths), so ids never become labels.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| route_label(p.as_str()));
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let status = response.status().as_u16().to_string();
    counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status).increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(elapsed);
    response
}

/// Both slash forms of a route are one label.
fn route_label(template: &str) -> String {
    match template.strip_suffix('/') {
        Some(bare) if !bare.is_empty() => bare.to_owned(),
        _ => template.to_owned(),
    }
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Updates the gauges read from the database (backlog per storage type, pool
/// connections) and renders every family in the Prometheus text format.
pub async fn render(handle: &PrometheusHandle, db: &Db) -> String {
    let pool = db.pool();
    let (size, idle) = (pool.size() as f64, pool.num_idle() as f64);
    gauge!(DB_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
    gauge!(DB_CONNECTIONS, "state" => "idle").set(idle);
    match db.change_backlog_by_type().await {
        Ok(rows) => {
            // Every type has a value, so one whose storages were all deleted falls back to 0.
            for t in crate::storage::spec::TYPES {
                let pending = rows.iter().find(|(name, _)| name == t.name).map_or(0, |(_, n)| *n);
                gauge!(CHANGE_FEED_BACKLOG, "storage_type" => t.name).set(pending as f64);
            }
        }
        Err(e) => tracing::warn!(error.message = %e, "reading the change-feed backlog for metrics failed"),
    }
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_slash_forms_of_a_route_are_one_label() {
        assert_eq!(route_label("/api/projects/{id}/"), "/api/projects/{id}");
        assert_eq!(route_label("/api/projects/{id}"), "/api/projects/{id}");
        assert_eq!(route_label("/"), "/");
    }

    #[test]
    fn unknown_statuses_and_modes_fall_into_bounded_labels() {
        assert_eq!(bounded_outcome("in_progress"), "failed");
        assert_eq!(bounded_mode("whatever"), "incremental");
    }
}
