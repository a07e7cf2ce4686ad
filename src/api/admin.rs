//! The admin page: a small single-page app served at `/` from assets embedded in the
//! binary (`assets/admin/`), and the cookie sign-in it may use.
//!
//! The page talks to the public API like any other client. It authenticates either
//! with an API token (kept in the tab's `sessionStorage`, sent as `Authorization:
//! Token …`) or with a **session**: `POST /api/admin/login` checks an email and
//! password and sets the `labelport_session` cookie (HttpOnly, SameSite=Strict). The
//! cookie holds a random token; the database keeps only its SHA-256 hash, with an
//! expiry. Requests authenticated by the cookie that change state (anything but
//! GET, HEAD and OPTIONS) must also carry `X-CSRFToken`, a value derived from the
//! session token that only the page can learn (from the login answer or `GET
//! /api/admin/session`, which other sites cannot read), so a forged cross-site
//! request fails even where a browser would send the cookie.

use super::error::schema::{BodyErrors, ErrorBody};
use super::error::{ApiError, ApiResult};
use super::extract::Body;
use super::AppState;
use crate::db::{DbError, User};
use crate::time::now_micros;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "labelport_session";
/// Header that must repeat the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrftoken";
/// How long a session lasts, in seconds (12 hours).
pub const SESSION_SECONDS: i64 = 12 * 3600;

const INDEX_HTML: &str = include_str!("../../assets/admin/index.html");
const APP_JS: &str = include_str!("../../assets/admin/app.js");
const APP_CSS: &str = include_str!("../../assets/admin/app.css");

/// The page may load only its own scripts and styles and talk only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the admin page's routes to the route table.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    api_routes(router)
        .route("/", get(index))
        .route("/admin/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/admin/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
}

/// The admin page's API, with and without the trailing slash like every API route.
fn api_routes(router: Router<AppState>) -> Router<AppState> {
    let router = super::both(router, "/api/admin/login", post(login));
    let router = super::both(router, "/api/admin/logout", post(logout));
    super::both(router, "/api/admin/session", get(session))
}

fn security_headers(content_type: &'static str) -> [(&'static str, &'static str); 5] {
    [
        ("content-type", content_type),
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-cache"),
    ]
}

/// `GET /`: the admin page.
async fn index() -> Response {
    let mut response = (security_headers("text/html; charset=utf-8"), INDEX_HTML).into_response();
    response.headers_mut().insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (security_headers(content_type), body).into_response()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The CSRF token of a session: derived from the session token, so nothing more is stored.
fn csrf_token(session_token: &str) -> String {
    sha256_hex(format!("labelport-csrf:{session_token}").as_bytes())
}

/// The session token in the request's cookies, if any.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user of the request's session cookie, for the [`Auth`] extractor: `None`
/// without a live session; 403 when a state-changing request lacks the CSRF header.
pub async fn session_user(parts: &Parts, state: &AppState) -> ApiResult<Option<User>> {
    let Some(token) = session_cookie(&parts.headers) else { return Ok(None) };
    let Some(user_id) = state.db.session_user_id(&sha256_hex(token.as_bytes())).await? else { return Ok(None) };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let sent = parts.headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
        if !constant_time_eq(sent, csrf_token(&token).as_bytes()) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "CSRF Failed: CSRF token missing or incorrect."));
        }
    }
    match state.db.user_by_id(user_id).await {
        Ok(user) => Ok(Some(user)),
        Err(DbError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A hash to check passwords of unknown users against, so that an unknown email
/// takes as long to refuse as a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| super::auth::hash_password("labelport-no-such-user").unwrap_or_default());

fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

fn string_field(body: &Value, name: &str) -> ApiResult<String> {
    match body.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(s.clone()),
        Some(Value::String(s)) if !s.is_empty() => {
            Err(ApiError::field(name, "Ensure this field has no more than 1024 characters."))
        }
        Some(Value::String(_)) => Err(ApiError::field(name, "This field may not be blank.")),
        Some(Value::Null) | None => Err(ApiError::field(name, "This field is required.")),
        Some(_) => Err(ApiError::field(name, "Not a valid string.")),
    }
}

fn session_json(user: &User, csrf: &str) -> Value {
    json!({ "user": { "id": user.id, "email": user.email }, "csrf_token": csrf })
}

/// `POST /api/admin/login` `{"email", "password"}`: starts a session and sets its cookie.
#[utoipa::path(
    post,
    path = "/api/admin/login",
    tag = "admin",
    operation_id = "api_admin_login",
    request_body = schema::Login,
    responses(
        (status = 200, description = "Signed in: the `labelport_session` cookie is set (HttpOnly, SameSite=Strict, \
                                      12 hours); send `csrf_token` as `X-CSRFToken` on requests that change state",
         body = schema::Session),
        BodyErrors,
        (status = 400, description = "A field missing, blank, over 1,024 characters or not a string (under its name), \
                                      or `Unable to log in with provided credentials.` under `non_field_errors`",
         body = ErrorBody),
        (status = 429, description = "Too many logins from this address (`LABELPORT_AUTH_FAILURES_PER_MINUTE` a minute, \
                                      right or wrong): wait `Retry-After` seconds", body = ErrorBody),
    ),
)]
pub async fn login(State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    if !body.is_object() {
        return Err(ApiError::non_field("Invalid data. Expected a dictionary."));
    }
    let email = string_field(&body, "email")?;
    let password = string_field(&body, "password")?;
    let found = state.db.password_hash_by_email(&email).await?;
    let hash = found.as_ref().map_or_else(|| DUMMY_HASH.clone(), |(_, h)| h.clone());
    let matches =
        tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.map_err(ApiError::internal)?;
    let user_id = match found {
        Some((id, _)) if matches => id,
        _ => return Err(ApiError::non_field("Unable to log in with provided credentials.")),
    };
    let user = state.db.user_by_id(user_id).await?;
    let token = {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    };
    state.db.create_session(&sha256_hex(token.as_bytes()), user.id, now_micros() + SESSION_SECONDS * 1_000_000).await?;
    tracing::info!(user_id = user.id, "admin session started");
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}");
    Ok(([(SET_COOKIE, cookie), (CACHE_CONTROL, "no-store".into())], Json(session_json(&user, &csrf_token(&token))))
        .into_response())
}

/// `POST /api/admin/logout`: ends the session of the cookie (with its CSRF header) and
/// clears the cookie.
#[utoipa::path(
    post,
    path = "/api/admin/logout",
    tag = "admin",
    operation_id = "api_admin_logout",
    params(("X-CSRFToken" = Option<String>, Header, description = "The session's CSRF token (with the cookie)")),
    responses(
        (status = 204, description = "Signed out (also without a session); the cookie is cleared"),
        (status = 403, description = "The session cookie without its `X-CSRFToken`", body = ErrorBody),
    ),
)]
pub async fn logout(State(state): State<AppState>, parts: Parts) -> ApiResult<Response> {
    if session_user(&parts, &state).await?.is_some() {
        if let Some(token) = session_cookie(&parts.headers) {
            state.db.delete_session(&sha256_hex(token.as_bytes())).await?;
        }
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie)]).into_response())
}

/// `GET /api/admin/session`: the signed-in user and the CSRF token of the cookie's
/// session; 401 without a live session.
#[utoipa::path(
    get,
    path = "/api/admin/session",
    tag = "admin",
    operation_id = "api_admin_session",
    responses(
        (status = 200, description = "The signed-in user and the CSRF token of the cookie's session", body = schema::Session),
        (status = 401, description = "No live session cookie", body = ErrorBody),
    ),
)]
pub async fn session(State(state): State<AppState>, parts: Parts) -> ApiResult<Response> {
    let not_signed_in = || ApiError::unauthorized("Authentication credentials were not provided.");
    let user = session_user(&parts, &state).await?.ok_or_else(not_signed_in)?;
    let token = session_cookie(&parts.headers).ok_or_else(not_signed_in)?;
    Ok(([(CACHE_CONTROL, "no-store")], Json(session_json(&user, &csrf_token(&token)))).into_response())
}

/// The shapes of the sign-in's bodies, for the OpenAPI document.
pub mod schema {
    use utoipa::ToSchema;

    /// A password sign-in.
    #[derive(ToSchema)]
    pub struct Login {
        /// A user's email.
        #[schema(min_length = 1, max_length = 1024)]
        pub email: String,
        /// Its password.
        #[schema(min_length = 1, max_length = 1024)]
        pub password: String,
    }

    /// The signed-in user of a session.
    #[derive(ToSchema)]
    pub struct SessionUser {
        pub id: i64,
        pub email: String,
    }

    /// A live session.
    #[derive(ToSchema)]
    pub struct Session {
        pub user: SessionUser,
        /// To send as `X-CSRFToken` with the cookie on requests that change state.
        pub csrf_token: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; labelport_session=abc ; b=2"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        headers.insert(COOKIE, HeaderValue::from_static("labelport_session="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn the_csrf_token_depends_on_the_session() {
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert!(constant_time_eq(csrf_token("a").as_bytes(), csrf_token("a").as_bytes()));
        assert!(!constant_time_eq(b"", csrf_token("a").as_bytes()));
    }
}
