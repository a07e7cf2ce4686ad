//! Extractors that fail with our JSON errors instead of axum's plain-text rejections.

use super::error::{ApiError, ApiResult};
use super::AppState;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A request body as JSON. Accepts `application/json` (also when no content type is
/// sent) and `application/x-www-form-urlencoded`; an empty body reads as `{}`.
/// Bodies over the configured limit are refused with 413, other media types with 415,
/// malformed JSON with 400 `JSON parse error - …`.
pub struct Body(pub Value);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        read_json(req, state.settings.max_body_bytes).await.map(Body)
    }
}

/// The body of an import as JSON text, to be parsed task by task: as [`Body`], with
/// the larger import limit (`LABELPORT_MAX_IMPORT_BYTES`), but not parsed here (a
/// form body is turned into the text of its object, an empty body into `{}`).
pub struct ImportBody(pub bytes::Bytes);

impl FromRequest<AppState> for ImportBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let (media, bytes) = read_body(req, state.settings.http.max_import_bytes).await?;
        Ok(ImportBody(match media {
            Media::Json if bytes.iter().all(u8::is_ascii_whitespace) => bytes::Bytes::from_static(b"{}"),
            Media::Json => bytes,
            Media::Form => form_object(&bytes).to_string().into(),
        }))
    }
}

/// A body deserialised straight into `T`, for bodies whose shape is known: no JSON
/// tree is built, so unknown fields cost no memory. Media types, limits and parse
/// errors as [`Body`]; `T` should accept any JSON value and report wrong shapes
/// itself, as a syntax error is the only error mapped to the `JSON parse error` 400.
pub struct Typed<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Typed<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> ApiResult<Self> {
        let (media, bytes) = read_body(req, state.settings.max_body_bytes).await?;
        let parsed = match media {
            Media::Json if bytes.iter().all(u8::is_ascii_whitespace) => T::deserialize(Value::Object(Map::new())),
            Media::Json => serde_json::from_slice(&bytes),
            Media::Form => T::deserialize(form_object(&bytes)),
        };
        parsed.map(Typed).map_err(|e| ApiError::bad_request(format!("JSON parse error - {e}")))
    }
}

/// The accepted media types of request bodies.
enum Media {
    Json,
    Form,
}

/// Checks the media type and reads the body up to `limit` bytes.
async fn read_body(req: Request, limit: usize) -> ApiResult<(Media, bytes::Bytes)> {
    let content_type =
        req.headers().get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).to_string()).unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let media = if media.is_empty() || media == "application/json" || media.ends_with("+json") {
        Media::Json
    } else if media == "application/x-www-form-urlencoded" {
        Media::Form
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported media type \"{content_type}\" in request."),
        ));
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let bytes = read_limited(req.into_body(), limit, declared).await?;
    Ok((media, bytes))
}

/// Reads a JSON or form body up to `limit` bytes into a JSON value.
async fn read_json(req: Request, limit: usize) -> ApiResult<Value> {
    let (media, bytes) = read_body(req, limit).await?;
    match media {
        Media::Json if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Value::Object(Map::new())),
        Media::Json => {
            serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("JSON parse error - {e}")))
        }
        Media::Form => Ok(form_object(&bytes)),
    }
}

/// A form-encoded body as a JSON object of strings (the last value of a repeated key wins).
fn form_object(bytes: &[u8]) -> Value {
    let map =
        url::form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
    Value::Object(map)
}

/// Most bytes of an oversized body read (and dropped) before answering 413, and for
/// how long: closing a connection with unread data makes the kernel reset it, and
/// the client may then never see the 413.
const DRAIN_MAX_BYTES: usize = 256 * 1024 * 1024;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the body up to `limit` bytes; over it, drains the rest (bounded) and fails with 413.
/// `declared` (the `Content-Length`, or 0) only sizes the buffer, never beyond `limit`.
pub(crate) async fn read_limited(body: axum::body::Body, limit: usize, declared: usize) -> ApiResult<bytes::Bytes> {
    use futures::StreamExt;
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("Request body exceeds the limit of {limit} bytes."));
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::with_capacity(declared.min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("The request body could not be read."))?;
        if buf.len() + chunk.len() > limit {
            let mut drained = buf.len() + chunk.len();
            let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
                while let Some(Ok(chunk)) = stream.next().await {
                    drained += chunk.len();
                    if drained > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            })
            .await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A numeric id from the path; anything else is a 404, as in Label Studio's URL patterns.
/// Handlers extract it before [`super::auth::Auth`]: a malformed id is "no route" in
/// Label Studio, which is a 404 even without credentials.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::no_route())?;
        parse_id(&raw).map(Id).ok_or_else(ApiError::no_route)
    }
}

/// Parses a positive id as Django's `<int:pk>` does.
pub fn parse_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// A query parameter that is present but not a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotANumber;

/// The query string as ordered pairs; never fails.
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `name` as a positive integer: `Ok(None)` when absent or empty, `Err(NotANumber)` when
    /// present but not a number.
    pub fn int(&self, name: &str) -> Result<Option<i64>, NotANumber> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => parse_id(v).map(Some).ok_or(NotANumber),
        }
    }

    /// Django-style boolean flag.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name).map(|v| v.to_ascii_lowercase()).as_deref(), Some("1" | "true" | "yes" | "on"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let pairs = url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Query(pairs))
    }
}
