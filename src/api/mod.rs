//! The HTTP API: state, the route table, and cross-cutting layers.
//!
//! Every path is served with and without its trailing slash by the same handler
//! (Label Studio re-dispatches 404s with a slash appended; we route both forms once).
//! Every error, including unknown routes, wrong methods and panics, is JSON in
//! Label Studio's error shape.

pub mod admin;
pub mod annotations;
pub mod auth;
pub mod error;
pub mod extract;
pub mod fields;
pub mod health;
pub mod import;
pub mod import_files;
pub mod import_parse;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod projects;
pub mod storages;
pub mod tasks;
pub mod throttle;
pub mod users;

use crate::config::Settings;
use crate::db::Db;
use crate::secrets::SecretBox;
use crate::storage::spec::TargetContext;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use error::{ApiError, InternalError};
use std::sync::Arc;
use tokio::sync::Notify;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Settings resolved at start.
    pub settings: Arc<Settings>,
    /// JWT keys for personal access tokens.
    pub jwt: auth::JwtKeys,
    /// Woken whenever annotation changes were committed (the sync engine listens).
    pub changes: Arc<Notify>,
    /// Seals and opens the write-only fields of storages.
    pub secrets: SecretBox,
    /// What storage targets need from the settings.
    pub targets: TargetContext,
}

impl AppState {
    /// Tells the sync engine that new change-feed entries (or a sync request) are
    /// committed. On PostgreSQL with `LISTEN` on, the commit's `NOTIFY` reaches this
    /// process's workers as well as the others': a second wake-up would only send a
    /// second idle loop looking for the same work (a candidate query, a claim attempt
    /// and a lease-expiry query per save).
    pub fn changes_committed(&self) {
        if self.db.backend() == crate::db::Backend::Postgres && self.settings.sync.listen {
            return;
        }
        self.changes.notify_one();
    }
}

/// Registers `path` and its other slash form on the same handler.
fn both(router: Router<AppState>, path: &str, handler: MethodRouter<AppState>) -> Router<AppState> {
    let other = match path.strip_suffix('/') {
        Some(bare) => bare.to_owned(),
        None => format!("{path}/"),
    };
    router.route(path, handler.clone()).route(&other, handler)
}

/// The complete route table.
pub fn router(state: AppState) -> Router {
    let routes: Vec<(&str, MethodRouter<AppState>)> = vec![
        ("/health", get(health::health)),
        ("/ready", get(health::ready)),
        ("/metrics", get(metrics::metrics)),
        ("/api/version", get(health::version)),
        ("/api/schema", get(openapi::schema)),
        ("/api/current-user/whoami", get(users::whoami)),
        ("/api/current-user", get(users::whoami)),
        ("/api/current-user/token", get(users::legacy_token)),
        ("/api/current-user/reset-token/", post(users::reset_legacy_token)),
        ("/api/token/", get(auth::list_tokens).post(auth::create_token)),
        ("/api/token/refresh/", post(auth::refresh_token)),
        ("/api/token/blacklist/", post(auth::blacklist_token)),
        ("/api/projects/", get(projects::list).post(projects::create)),
        (
            "/api/projects/{id}/",
            get(projects::get).patch(projects::update).put(projects::update).delete(projects::delete),
        ),
        ("/api/projects/{id}/import", post(import::import)),
        ("/api/tasks/", get(tasks::list).post(tasks::create)),
        ("/api/tasks/{id}/", get(tasks::get).patch(tasks::update).put(tasks::update).delete(tasks::delete)),
        ("/api/tasks/{id}/annotations/", get(annotations::list_for_task).post(annotations::create)),
        (
            "/api/annotations/{id}/",
            get(annotations::get).patch(annotations::update).put(annotations::update).delete(annotations::delete),
        ),
        ("/api/storages/types", get(storages::types)),
        ("/api/storages/export", get(storages::list_all)),
        ("/api/storages/export/types", get(storages::types)),
        ("/api/storages/export/{type}", get(storages::list).post(storages::create)),
        ("/api/storages/export/{type}/validate", post(storages::validate)),
        ("/api/storages/export/{type}/form", get(storages::form)),
        (
            "/api/storages/export/{type}/{id}",
            get(storages::get).patch(storages::patch).put(storages::put).delete(storages::delete),
        ),
        ("/api/storages/export/{type}/{id}/sync", post(storages::sync)),
        ("/api/storages/export/{type}/{id}/lag", get(storages::lag)),
    ];
    let request_timeout = state.settings.http.request_timeout;
    let failed_auth = throttle::FailedAuthLimiter::new(state.settings.http.auth_failures_per_minute);
    let mut router = Router::new();
    for (path, handler) in routes {
        // Label Studio authenticates before it dispatches on the method (contract §1.1).
        let handler = if PUBLIC_PATHS.contains(&path) { handler } else { handler.fallback(authenticated_wrong_method) };
        router = both(router, path, handler);
    }
    router = admin::routes(router);
    router
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|method: Method| async move { method_not_allowed(&method) })
        .layer(axum::middleware::from_fn(move |req, next| throttle::limit_failed_auth(failed_auth.clone(), req, next)))
        .layer(axum::middleware::from_fn(move |req, next| within(request_timeout, req, next)))
        .layer(axum::middleware::from_fn(log_server_errors))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            tracing::error!("a request handler panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error.").into_response()
        }))
        .layer(axum::middleware::from_fn(crate::telemetry::metrics::track_http))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Routes served without credentials; a wrong method on them is 405 for everyone.
const PUBLIC_PATHS: [&str; 5] =
    ["/health", "/api/version", "/api/schema", "/api/token/refresh/", "/api/token/blacklist/"];

/// 405 in Label Studio's words.
fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("Method \"{method}\" not allowed."))
}

/// A wrong method on an authenticated route: 401 without valid credentials (the
/// [`auth::Auth`] extractor answers), 405 with them.
async fn authenticated_wrong_method(_: auth::Auth, method: Method) -> ApiError {
    method_not_allowed(&method)
}

/// Answers 408 when a request, body upload included, takes longer than `limit`
/// (`LABELPORT_REQUEST_TIMEOUT_SECS`); the handler is dropped, which rolls back its
/// open transaction.
async fn within(limit: std::time::Duration, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, %path, limit_secs = limit.as_secs(), "request timed out");
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("The request took longer than {} seconds.", limit.as_secs()),
            )
            .into_response()
        }
    }
}

/// Logs the internal cause of every 5xx (kept out of the response body).
async fn log_server_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let response = next.run(req).await;
    if let Some(InternalError(e)) = response.extensions().get::<InternalError>() {
        tracing::error!(%method, %path, error.cause_chain = ?e, error.message = %e, "request failed");
    }
    response
}
