//! One error type for the HTTP layer, rendered in Label Studio's error shape
//! (contract §2): `{"id", "status_code", "version", "detail", "exc_info"[, "validation_errors"]}`.

use crate::db::DbError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// `Retry-After` of every 503: the database was busy, a second later it likely is not.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Our version string, reported in every error body.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An HTTP error. Internal causes are attached to the response for the logging
/// middleware and never sent to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    internal: Option<anyhow::Error>,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u32>,
}

#[derive(Debug)]
enum ErrorBody {
    Standard {
        detail: String,
        validation_errors: Option<Map<String, Value>>,
    },
    /// A body Label Studio sends outside its standard shape (contract §2.3).
    Raw(Value),
}

/// The internal cause of a 5xx, carried as a response extension.
#[derive(Clone, Debug)]
pub struct InternalError(pub Arc<anyhow::Error>);

/// Result alias of the HTTP layer.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a plain `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody::Standard { detail: detail.into(), validation_errors: None },
            internal: None,
            retry_after: None,
        }
    }

    /// 400 with `detail` only (parse errors and the like).
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 400 `Validation error` with per-field messages.
    pub fn validation(errors: Map<String, Value>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::Standard { detail: "Validation error".into(), validation_errors: Some(errors) },
            internal: None,
            retry_after: None,
        }
    }

    /// 400 with one message for one field.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        let mut errors = Map::new();
        errors.insert(field.into(), json!([message.into()]));
        ApiError::validation(errors)
    }

    /// 400 with a message not tied to a field (`non_field_errors`).
    pub fn non_field(message: impl Into<String>) -> ApiError {
        ApiError::field("non_field_errors", message)
    }

    /// 401 with Label Studio's wording.
    pub fn unauthorized(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, detail)
    }

    /// 404 `No <Model> matches the given query.`
    pub fn not_found(model: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("No {model} matches the given query."))
    }

    /// 404 `Not found.` (no route, or an id that is not a number).
    pub fn no_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Not found.")
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, detail)
    }

    /// 503: the database is busy with other writers; the client may retry after
    /// [`RETRY_AFTER_SECS`] (sent as `Retry-After`).
    pub fn busy() -> ApiError {
        ApiError {
            retry_after: Some(RETRY_AFTER_SECS),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The database is busy with other writes. Try again in {RETRY_AFTER_SECS} s."),
            )
        }
    }

    /// A non-standard body with the given status.
    pub fn raw(status: StatusCode, body: Value) -> ApiError {
        ApiError { status, body: ErrorBody::Raw(body), internal: None, retry_after: None }
    }

    /// 500; the cause is logged, not shown.
    pub fn internal(e: impl Into<anyhow::Error>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: ErrorBody::Standard {
                detail: "Internal server error. The error was logged with this response's id.".into(),
                validation_errors: None,
            },
            internal: Some(e.into()),
            retry_after: None,
        }
    }

    /// 503 with `Retry-After`: the database cannot be reached right now. The cause
    /// is logged, not shown.
    pub fn database_unavailable(e: impl Into<anyhow::Error>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: ErrorBody::Standard {
                detail: "The database is unavailable. Try again shortly.".into(),
                validation_errors: None,
            },
            internal: Some(e.into()),
            retry_after: Some(DATABASE_RETRY_AFTER_SECS),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::no_route(),
            DbError::Conflict => ApiError::conflict("The object already exists."),
            DbError::Other(e) if crate::db::is_busy(&e) => {
                tracing::warn!(error.message = %e, "database busy: answered 503");
                ApiError::busy()
            }
            DbError::Other(e) if database_unreachable(&e) => ApiError::database_unavailable(e),
            DbError::Other(e) => ApiError::internal(e),
        }
    }
}

/// `Retry-After` of a 503 for an unreachable database.
const DATABASE_RETRY_AFTER_SECS: u32 = 2;

/// Whether `e` says the database could not be reached (as opposed to a bug or a
/// refused statement): no connection within the pool's acquire timeout, a
/// connection refused, reset or closed, or the server shutting down or starting up
/// (SQLSTATE class 08, 57P01-57P03).
fn database_unreachable(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<sqlx::Error>()).any(|e| match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    })
}

/// Maps [`DbError::NotFound`] to the 404 of a named model.
pub trait OrNotFound<T> {
    /// `No <model> matches the given query.` when the row is missing.
    fn or_not_found(self, model: &str) -> ApiResult<T>;
}

impl<T> OrNotFound<T> for Result<T, DbError> {
    fn or_not_found(self, model: &str) -> ApiResult<T> {
        self.map_err(|e| match e {
            DbError::NotFound => ApiError::not_found(model),
            e => e.into(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = uuid::Uuid::new_v4().to_string();
        let body = match self.body {
            ErrorBody::Raw(v) => v,
            ErrorBody::Standard { detail, validation_errors } => {
                let mut body = json!({
                    "id": id,
                    "status_code": self.status.as_u16(),
                    "version": VERSION,
                    "detail": detail,
                    "exc_info": null,
                });
                if let Some(errors) = validation_errors {
                    body["validation_errors"] = Value::Object(errors);
                }
                body
            }
        };
        let mut response = (self.status, json_bytes(&body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(e) = self.internal {
            response.extensions_mut().insert(InternalError(Arc::new(e.context(format!("error id {id}")))));
        }
        response
    }
}

/// Serialises a JSON value (infallible for `Value`).
pub fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Documentation-only shapes of error bodies, for the OpenAPI document (the bodies
/// themselves are built by [`ApiError`]'s `into_response`), and the error responses
/// many endpoints share.
pub mod schema {
    use std::collections::HashMap;
    use utoipa::{IntoResponses, ToSchema};

    /// Every error (Label Studio's shape). Two 404s differ: a task list without `project`
    /// is `{"detail": "Neither project nor view id specified"}` only.
    #[derive(ToSchema)]
    pub struct ErrorBody {
        /// Random id of this error, for log correlation.
        pub id: String,
        /// The HTTP status.
        pub status_code: u16,
        /// Server version.
        pub version: String,
        /// Message; `Validation error` when `validation_errors` is present.
        pub detail: String,
        /// Always null.
        pub exc_info: Option<String>,
        /// Field name (or `non_field_errors`) to messages; only on 400 validation failures.
        pub validation_errors: Option<HashMap<String, Vec<String>>>,
    }

    /// The body of a 404 from the task list: Label Studio's error shape, or only
    /// `{"detail": "Neither project nor view id specified"}` when neither `project` nor
    /// `view` is given.
    #[derive(ToSchema)]
    pub struct DetailBody {
        /// The message.
        pub detail: String,
    }

    /// The 401 of every endpoint that needs credentials.
    #[derive(IntoResponses)]
    #[response(status = 401, description = "Missing or invalid credentials")]
    pub struct Unauthenticated(pub ErrorBody);

    /// The refusals of every endpoint that reads a body. An endpoint that says more
    /// about one of them lists its own response after this set: responses are kept
    /// by status, and a later one replaces an earlier one.
    #[derive(IntoResponses)]
    pub enum BodyErrors {
        #[response(status = 400, description = "Malformed JSON, wrong types or missing fields")]
        Invalid(ErrorBody),
        #[response(status = 413, description = "Body over the configured limit")]
        TooLarge(ErrorBody),
        #[response(status = 415, description = "Not JSON or a form")]
        NotJsonOrForm(ErrorBody),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(e: sqlx::Error) -> (StatusCode, Option<String>) {
        let response = ApiError::from(DbError::from(e)).into_response();
        let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        (response.status(), retry)
    }

    #[test]
    fn an_unreachable_database_is_a_503_with_retry_after() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        // A pool timeout means busy as much as unreachable: it is answered as busy.
        assert_eq!(status_of(sqlx::Error::PoolTimedOut), (StatusCode::SERVICE_UNAVAILABLE, Some("1".into())));
        for (e, case) in [(sqlx::Error::PoolClosed, "pool closed"), (sqlx::Error::Io(refused), "connection refused")] {
            assert_eq!(status_of(e), (StatusCode::SERVICE_UNAVAILABLE, Some("2".into())), "{case}");
        }
    }

    #[test]
    fn other_database_errors_stay_500_without_retry_after() {
        assert_eq!(status_of(sqlx::Error::Protocol("bug".into())), (StatusCode::INTERNAL_SERVER_ERROR, None));
        assert_eq!(status_of(sqlx::Error::ColumnNotFound("x".into())), (StatusCode::INTERNAL_SERVER_ERROR, None));
    }
}
