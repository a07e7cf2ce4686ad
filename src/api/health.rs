//! Liveness and version.

use super::error::VERSION;
use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

/// `GET /health`: `{"status":"UP"}` while the process serves requests (liveness, as
/// in Label Studio). Whether the database answers is `/ready`'s concern: a database
/// outage must not make an orchestrator restart every labelport process.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    operation_id = "health",
    responses((status = 200, description = "`{\"status\": \"UP\"}`", body = Object)),
)]
pub async fn health() -> (StatusCode, Json<Value>) {
    (StatusCode::OK, Json(json!({ "status": "UP" })))
}

/// `GET /ready`: 200 when the database answers and every migration of this build is
/// applied, else 503 (a load balancer sends no traffic until then).
#[utoipa::path(
    get,
    path = "/ready",
    tag = "service",
    operation_id = "ready",
    responses(
        (status = 200, description = "`{\"status\": \"READY\", \"database\": \"UP\", \"pending_migrations\": 0}`", body = Object),
        (status = 503, description = "`{\"status\": \"NOT_READY\", ...}`: the database does not answer or is not migrated", body = Object),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.db.pending_migrations().await {
        Ok(0) => (StatusCode::OK, Json(json!({ "status": "READY", "database": "UP", "pending_migrations": 0 }))),
        Ok(n) => {
            tracing::warn!(pending_migrations = n, "readiness check failed: migrations are not applied");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "NOT_READY", "database": "UP", "pending_migrations": n })),
            )
        }
        Err(e) => {
            tracing::warn!(error.message = %e, "readiness check failed: database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "NOT_READY", "database": "DOWN", "pending_migrations": null })),
            )
        }
    }
}

/// `GET /api/version`.
#[utoipa::path(
    get,
    path = "/api/version",
    tag = "service",
    operation_id = "api_version",
    responses(
        (status = 200, description = "Version information", body = Object),
    ),
)]
pub async fn version() -> Json<Value> {
    Json(json!({
        "release": VERSION,
        "label-studio-os-package": { "version": "1.23.2", "short_version": "1.23", "latest_version_from_pypi": null },
        "labelport": { "version": VERSION },
        "edition": "Community",
    }))
}
