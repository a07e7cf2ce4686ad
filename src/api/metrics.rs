//! `GET /metrics`: the Prometheus text format (families in [`crate::telemetry::metrics`]).

use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`. With `LABELPORT_METRICS_TOKEN` set it requires
/// `Authorization: Bearer <token>` (else 401 JSON).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "`LABELPORT_METRICS_TOKEN` is set and the bearer token is missing or wrong", body = Object),
    ),
)]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(expected) = &state.settings.http.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Digests compared, so the comparison's time says nothing about the token.
        let matches = given.is_some_and(|g| Sha256::digest(g.as_bytes()) == Sha256::digest(expected.0.as_bytes()));
        if !matches {
            return Err(ApiError::unauthorized("Authentication credentials were not provided."));
        }
    }
    let Some(handle) = crate::telemetry::metrics::init() else {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Metrics are not available in this process."));
    };
    let body = crate::telemetry::metrics::render(handle, &state.db).await;
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response())
}
