//! Authentication: legacy tokens (`Authorization: Token <key>`, `X-Api-Key`) and
//! personal access tokens (JWT refresh tokens exchanged at `/api/token/refresh/`
//! for 5-minute access tokens sent as `Authorization: Bearer <jwt>`), contract §1.

use super::error::schema::{BodyErrors, ErrorBody, Unauthenticated};
use super::error::{ApiError, ApiResult};
use super::extract::Typed;
use super::AppState;
use crate::db::{DbError, PersonalTokenState, User};
use crate::time::now_micros;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Lifetime of an access token, in seconds (as Label Studio).
pub const ACCESS_TOKEN_SECONDS: i64 = 300;
/// Lifetime of a personal access token, in seconds (~200 years, as Label Studio).
pub const PERSONAL_TOKEN_SECONDS: i64 = 200 * 365 * 24 * 3600;

/// Keys for signing and checking JWTs (HS256, secret shared through the database).
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl JwtKeys {
    /// Keys from a shared secret.
    pub fn new(secret: &str) -> JwtKeys {
        JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }
}

/// Claims of both token kinds; `user_id` is a string, as Label Studio issues it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// `refresh` (personal access token) or `access`.
    pub token_type: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id (32 hex characters).
    pub jti: String,
    /// The user's id, as a string.
    pub user_id: String,
}

fn new_jti() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl JwtKeys {
    fn sign(&self, claims: &Claims) -> ApiResult<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Decodes and verifies a token of the given type (signature and expiry).
    pub fn verify(&self, token: &str, token_type: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?.claims;
        (claims.token_type == token_type).then_some(claims)
    }
}

/// The authenticated caller.
pub struct Auth(pub User);

const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if let Some(key) = parts.headers.get("x-api-key") {
            let key = String::from_utf8_lossy(key.as_bytes()).trim().to_owned();
            return legacy(state, &key).await.map(Auth);
        }
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            // No token: the admin page's session cookie, if any (CSRF-checked).
            return match super::admin::session_user(parts, state).await? {
                Some(user) => Ok(Auth(user)),
                None => Err(ApiError::unauthorized(NO_CREDENTIALS)),
            };
        };
        let header = String::from_utf8_lossy(header.as_bytes()).to_string();
        let words: Vec<&str> = header.split_whitespace().collect();
        match words.as_slice() {
            [keyword, rest @ ..] if keyword.eq_ignore_ascii_case("token") => match rest {
                [] => Err(ApiError::unauthorized("Invalid token header. No credentials provided.")),
                [key] => legacy(state, key).await.map(Auth),
                _ => Err(ApiError::unauthorized("Invalid token header. Token string should not contain spaces.")),
            },
            ["Bearer", token] => {
                let claims = state.jwt.verify(token, "access").ok_or_else(|| ApiError::unauthorized(NO_CREDENTIALS))?;
                // The token's user must be the one its personal access token was issued to.
                let id = match state.db.personal_token_state(&claims.jti).await? {
                    Some(PersonalTokenState { user_id, revoked: false }) if claims.user_id == user_id.to_string() => {
                        user_id
                    }
                    _ => return Err(ApiError::unauthorized(NO_CREDENTIALS)),
                };
                match state.db.user_by_id(id).await {
                    Ok(user) => Ok(Auth(user)),
                    Err(DbError::NotFound) => Err(ApiError::unauthorized(NO_CREDENTIALS)),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Err(ApiError::unauthorized(NO_CREDENTIALS)),
        }
    }
}

async fn legacy(state: &AppState, key: &str) -> ApiResult<User> {
    if key.is_empty() || key.len() > 256 {
        return Err(ApiError::unauthorized("Invalid token."));
    }
    match state.db.user_by_legacy_token(key).await {
        Ok(user) => Ok(user),
        Err(DbError::NotFound) => Err(ApiError::unauthorized("Invalid token.")),
        Err(e) => Err(e.into()),
    }
}

/// Hashes a password with argon2id.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("Failed to hash the password: {e}"))
}

/// Creates a personal access token for a user (at most one live token per user).
pub async fn create_personal_token(state: &AppState, user: &User) -> ApiResult<String> {
    let now = now_micros() / 1_000_000;
    let claims = Claims {
        token_type: "refresh".into(),
        exp: now + PERSONAL_TOKEN_SECONDS,
        iat: now,
        jti: new_jti(),
        user_id: user.id.to_string(),
    };
    let token = state.jwt.sign(&claims)?;
    match state.db.create_personal_token(user.id, &claims.jti, &token, claims.exp * 1_000_000).await {
        Ok(()) => Ok(token),
        Err(DbError::Conflict) => {
            Err(ApiError::conflict("You already have a valid token. Please revoke it before creating a new one."))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/token/`: create a personal access token.
#[utoipa::path(
    post,
    path = "/api/token/",
    tag = "tokens",
    operation_id = "api_token_create",
    responses(
        (status = 201, description = "A new personal access token", body = schema::PersonalToken),
        Unauthenticated,
        (status = 409, description = "The caller already has a live token", body = ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn create_token(State(state): State<AppState>, Auth(user): Auth) -> ApiResult<Response> {
    let token = create_personal_token(&state, &user).await?;
    Ok((StatusCode::CREATED, Json(json!({ "token": token }))).into_response())
}

/// `GET /api/token/`: the caller's live personal access tokens, signatures stripped.
#[utoipa::path(
    get,
    path = "/api/token/",
    tag = "tokens",
    operation_id = "api_token_list",
    responses(
        (status = 200, description = "The caller's live personal access tokens, without signatures", body = Vec<schema::PersonalToken>),
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list_tokens(State(state): State<AppState>, Auth(user): Auth) -> ApiResult<Json<Value>> {
    // Only the unsigned parts are stored; they are what Label Studio lists.
    let tokens = state.db.personal_tokens(user.id).await?;
    let list: Vec<Value> = tokens.iter().map(|t| json!({ "token": t })).collect();
    Ok(Json(Value::Array(list)))
}

/// The body of `/api/token/refresh/` and `/api/token/blacklist/`: only `refresh` is
/// kept; every other value is skipped as it is parsed, so a large body never becomes a
/// JSON tree (issue #12). Wrong shapes are reported with DRF's messages by [`refresh_field`].
pub enum RefreshBody {
    /// A JSON object, with its `refresh` member if present.
    Object(Option<Scalar>),
    /// Any other JSON value, by its Python type name.
    NotAnObject(&'static str),
}

/// A JSON value read as a string field: `null`, a string, a number or boolean
/// (stringified as DRF does), or anything else (by its Python type name).
pub enum Scalar {
    /// `null`.
    Null,
    /// A string, number or boolean, as DRF's `CharField` reads it.
    Text(String),
    /// An array or object.
    Other(&'static str),
}

/// Walks one JSON value, keeping scalars and skipping arrays and objects.
struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Text(if v { "True" } else { "False" }.to_owned()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Text(serde_json::Number::from_f64(v).map_or_else(|| v.to_string(), |n| n.to_string())))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("list"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("dict"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Deserialize<'de> for RefreshBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RefreshBody, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = RefreshBody;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RefreshBody, A::Error> {
                let mut refresh = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "refresh" {
                        refresh = Some(map.next_value::<Scalar>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(RefreshBody::Object(refresh))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RefreshBody, A::Error> {
                ScalarVisitor.visit_seq(seq).map(|_| RefreshBody::NotAnObject("list"))
            }
            fn visit_unit<E>(self) -> Result<RefreshBody, E> {
                Ok(RefreshBody::NotAnObject("NoneType"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<RefreshBody, E> {
                Ok(RefreshBody::NotAnObject("bool"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<RefreshBody, E> {
                Ok(RefreshBody::NotAnObject("int"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<RefreshBody, E> {
                Ok(RefreshBody::NotAnObject("int"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<RefreshBody, E> {
                Ok(RefreshBody::NotAnObject("float"))
            }
            fn visit_str<E>(self, _: &str) -> Result<RefreshBody, E> {
                Ok(RefreshBody::NotAnObject("str"))
            }
        }
        d.deserialize_any(BodyVisitor)
    }
}

/// The `refresh` token of a body, with DRF's messages for a missing or malformed one.
fn refresh_field(body: RefreshBody) -> ApiResult<String> {
    let message = match body {
        RefreshBody::NotAnObject(kind) => {
            return Err(ApiError::non_field(format!("Invalid data. Expected a dictionary, but got {kind}.")))
        }
        RefreshBody::Object(None) => "This field is required.",
        RefreshBody::Object(Some(Scalar::Null)) => "This field may not be null.",
        RefreshBody::Object(Some(Scalar::Other(_))) => "Not a valid string.",
        // PostgreSQL cannot store NUL in text; DRF refuses it for every CharField.
        RefreshBody::Object(Some(Scalar::Text(s))) if s.contains('\0') => "Null characters are not allowed.",
        RefreshBody::Object(Some(Scalar::Text(s))) => return Ok(s),
    };
    Err(ApiError::field("refresh", message))
}

/// `POST /api/token/refresh/`: exchange a personal access token for an access token.
#[utoipa::path(
    post,
    path = "/api/token/refresh/",
    tag = "tokens",
    operation_id = "api_token_refresh",
    request_body = schema::RefreshRequest,
    responses(
        (status = 200, description = "A 5-minute access token", body = schema::AccessToken),
        BodyErrors,
        (status = 401, description = "Token is invalid / Token is blacklisted", body = ErrorBody),
    ),
)]
pub async fn refresh_token(State(state): State<AppState>, Typed(body): Typed<RefreshBody>) -> ApiResult<Json<Value>> {
    let token = refresh_field(body)?;
    let claims = state.jwt.verify(&token, "refresh").ok_or_else(|| ApiError::unauthorized("Token is invalid"))?;
    match state.db.personal_token_state(&claims.jti).await? {
        Some(token) if claims.user_id != token.user_id.to_string() => {
            return Err(ApiError::unauthorized("Token is invalid"))
        }
        None => return Err(ApiError::unauthorized("Token is invalid")),
        Some(PersonalTokenState { revoked: true, .. }) => return Err(ApiError::unauthorized("Token is blacklisted")),
        Some(PersonalTokenState { revoked: false, .. }) => {}
    }
    // Beyond the signature: the very token issued (its hash is stored), so that a
    // token minted with a leaked signing secret is refused too.
    if !state.db.is_personal_token(&token).await? {
        return Err(ApiError::unauthorized("Token is invalid"));
    }
    let now = now_micros() / 1_000_000;
    let access = Claims {
        token_type: "access".into(),
        exp: now + ACCESS_TOKEN_SECONDS,
        iat: now,
        jti: claims.jti,
        user_id: claims.user_id,
    };
    Ok(Json(json!({ "access": state.jwt.sign(&access)? })))
}

/// `POST /api/token/blacklist/`: revoke a personal access token.
#[utoipa::path(
    post,
    path = "/api/token/blacklist/",
    tag = "tokens",
    operation_id = "api_token_blacklist",
    request_body = schema::RefreshRequest,
    responses(
        (status = 204, description = "Revoked"),
        BodyErrors,
        (status = 401, description = "Token is invalid", body = ErrorBody),
    ),
)]
pub async fn blacklist_token(State(state): State<AppState>, Typed(body): Typed<RefreshBody>) -> ApiResult<StatusCode> {
    let token = refresh_field(body)?;
    let claims = state.jwt.verify(&token, "refresh").ok_or_else(|| ApiError::unauthorized("Token is invalid"))?;
    state.db.revoke_personal_token(&claims.jti).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Documentation-only shapes of this resource's bodies, for the OpenAPI document: the
/// handlers build their JSON with `serde_json` to keep Label Studio's key order, so
/// these types are never constructed.
pub mod schema {
    use utoipa::ToSchema;

    /// A personal access token (in lists: without its signature).
    #[derive(ToSchema)]
    pub struct PersonalToken {
        pub token: String,
    }

    /// A personal access token to exchange or revoke.
    #[derive(ToSchema)]
    pub struct RefreshRequest {
        pub refresh: String,
    }

    /// A 5-minute access token for `Authorization: Bearer`.
    #[derive(ToSchema)]
    pub struct AccessToken {
        pub access: String,
    }
}
