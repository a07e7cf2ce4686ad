//! Google OAuth2 access tokens for the GCS JSON API.
//!
//! Sources, in the order [`super::GoogleCloudStorage::new`] picks them:
//!
//! - **Emulator** (`STORAGE_EMULATOR_HOST` set): no token, no `Authorization` header.
//! - **Service account** JSON (the storage's `google_application_credentials`, or the
//!   file named by `GOOGLE_APPLICATION_CREDENTIALS`): the JWT-bearer flow, an RS256
//!   assertion signed with the key and exchanged at the key's `token_uri`.
//! - **Authorized user** JSON (`gcloud auth application-default login`): the refresh
//!   token exchanged at `token_uri`.
//! - **GCE metadata server** (`GCE_METADATA_HOST` overrides `metadata.google.internal`).
//!
//! A token is cached until a minute before it expires; concurrent requests wait for
//! one refresh. Errors carry the token endpoint's `error` and `error_description`
//! only: never the key, the assertion, the refresh token or the access token.

use super::GcsError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The scope of every token: read and write objects.
pub const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Google's token endpoint, when a key names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The metadata server of Compute Engine, Cloud Run, GKE…
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// Time limit of a metadata server request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);
/// Tokens are refreshed this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Where tokens come from.
enum Source {
    Anonymous,
    ServiceAccount { email: String, key: EncodingKey, pem: String, key_id: Option<String>, token_uri: String },
    AuthorizedUser { client_id: String, client_secret: String, refresh_token: String, token_uri: String },
    Metadata { base: String },
}

/// A source of access tokens. Tokens are cached for the whole process by the
/// identity of their source, so the targets the sync engine builds for each pass
/// share them instead of asking the token endpoint every time.
pub struct TokenProvider {
    source: Source,
    http: reqwest::Client,
    /// The cache key: the source's kind, its public identifiers and a SHA-256 of
    /// its secrets, never a secret itself.
    cache_key: String,
    /// Held while fetching, so concurrent requests wait for one refresh.
    refreshing: tokio::sync::Mutex<()>,
}

type TokenCache = std::sync::Mutex<HashMap<String, (Arc<str>, Instant)>>;

/// Tokens of the process, by [`TokenProvider::cache_key`].
fn tokens() -> &'static TokenCache {
    static TOKENS: OnceLock<TokenCache> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// The fields of a credentials JSON that are used.
#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

/// What a token endpoint answers.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

impl TokenProvider {
    /// No credentials (emulators).
    pub fn anonymous(http: reqwest::Client) -> TokenProvider {
        TokenProvider::with(Source::Anonymous, http)
    }

    /// The metadata server at `base` (`http://metadata.google.internal`).
    pub fn metadata(base: &str, http: reqwest::Client) -> TokenProvider {
        TokenProvider::with(Source::Metadata { base: base.trim_end_matches('/').to_owned() }, http)
    }

    /// From a credentials JSON (service account or authorized user). The error says
    /// which field is wrong, never a value.
    pub fn from_json(text: &str, http: reqwest::Client) -> Result<TokenProvider, String> {
        let file: CredentialsFile =
            serde_json::from_str(text).map_err(|e| format!("unreadable Google credentials: {}", redact(&e)))?;
        let token_uri = file.token_uri.filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        let source = match file.kind.as_deref() {
            Some("service_account") | None => {
                let email = file.client_email.ok_or("Google credentials: missing field \"client_email\"")?;
                let pem = file.private_key.ok_or("Google credentials: missing field \"private_key\"")?;
                let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
                    "Google credentials: \"private_key\" is not an RSA private key in PEM form".to_owned()
                })?;
                Source::ServiceAccount { email, key, pem, key_id: file.private_key_id, token_uri }
            }
            Some("authorized_user") => Source::AuthorizedUser {
                client_id: file.client_id.ok_or("Google credentials: missing field \"client_id\"")?,
                client_secret: file.client_secret.ok_or("Google credentials: missing field \"client_secret\"")?,
                refresh_token: file.refresh_token.ok_or("Google credentials: missing field \"refresh_token\"")?,
                token_uri,
            },
            Some(other) => return Err(format!("Google credentials of type \"{other}\" are not supported")),
        };
        Ok(TokenProvider::with(source, http))
    }

    fn with(source: Source, http: reqwest::Client) -> TokenProvider {
        // The key proves possession of the secret: two keys that name the same
        // account but hold different secrets must not share a token.
        let digest = |parts: &[&str]| {
            let mut hasher = Sha256::new();
            for part in parts {
                hasher.update(part.as_bytes());
                hasher.update([0u8]);
            }
            hex::encode(hasher.finalize())
        };
        let cache_key = match &source {
            Source::Anonymous => String::new(),
            Source::ServiceAccount { email, key_id, token_uri, pem, .. } => {
                format!("sa\n{email}\n{}\n{token_uri}\n{}", key_id.as_deref().unwrap_or(""), digest(&[pem]))
            }
            Source::AuthorizedUser { client_id, client_secret, refresh_token, token_uri } => {
                format!("user\n{client_id}\n{token_uri}\n{}", digest(&[client_secret, refresh_token]))
            }
            Source::Metadata { base } => format!("metadata\n{base}"),
        };
        TokenProvider { source, http, cache_key, refreshing: tokio::sync::Mutex::new(()) }
    }

    fn cached(&self) -> Option<Arc<str>> {
        let cache = tokens().lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&self.cache_key).filter(|(_, refresh_at)| Instant::now() < *refresh_at).map(|(t, _)| t.clone())
    }

    /// The token endpoint a key names; `None` for other sources.
    #[cfg(test)]
    pub fn token_uri(&self) -> Option<&str> {
        match &self.source {
            Source::ServiceAccount { token_uri, .. } | Source::AuthorizedUser { token_uri, .. } => Some(token_uri),
            _ => None,
        }
    }

    /// A valid access token, `None` when requests go without one.
    pub async fn token(&self) -> Result<Option<Arc<str>>, GcsError> {
        if matches!(self.source, Source::Anonymous) {
            return Ok(None);
        }
        if let Some(token) = self.cached() {
            return Ok(Some(token));
        }
        let _refreshing = self.refreshing.lock().await;
        // Another request may have refreshed it while this one waited.
        if let Some(token) = self.cached() {
            return Ok(Some(token));
        }
        let (token, lifetime) = self.fetch().await?;
        let token: Arc<str> = token.into();
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN);
        tokens().lock().unwrap_or_else(|e| e.into_inner()).insert(self.cache_key.clone(), (token.clone(), refresh_at));
        Ok(Some(token))
    }

    /// Forgets the cached token (after a 401).
    pub async fn invalidate(&self) {
        tokens().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.cache_key);
    }

    async fn fetch(&self) -> Result<(String, Duration), GcsError> {
        let (request, endpoint) = match &self.source {
            Source::Anonymous => unreachable!("anonymous sources have no token"),
            Source::ServiceAccount { email, key, key_id, token_uri, .. } => {
                let iat = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                let claims = Claims { iss: email, scope: SCOPE, aud: token_uri, iat, exp: iat + 3600 };
                let mut header = Header::new(Algorithm::RS256);
                header.kid = key_id.clone();
                let assertion = jsonwebtoken::encode(&header, &claims, key)
                    .map_err(|_| GcsError::Auth("cannot sign the token request with the service account key".into()))?;
                let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &assertion)];
                (self.http.post(token_uri).form(&form), token_uri.as_str())
            }
            Source::AuthorizedUser { client_id, client_secret, refresh_token, token_uri } => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret),
                    ("refresh_token", refresh_token),
                ];
                (self.http.post(token_uri).form(&form), token_uri.as_str())
            }
            Source::Metadata { base } => {
                let url = format!("{base}/computeMetadata/v1/instance/service-accounts/default/token");
                // A short limit: off Google Cloud there is nobody to answer.
                let request = self.http.get(url).header("Metadata-Flavor", "Google").timeout(METADATA_TIMEOUT);
                (request, base.as_str())
            }
        };
        let host = url::Url::parse(endpoint).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
        let metadata = matches!(self.source, Source::Metadata { .. });
        let response = request.send().await.map_err(|e| match super::transport(e) {
            // No metadata server by that name: not on Google Cloud, and waiting will
            // not change it.
            GcsError::Transport(t) if metadata && t.contains("dns error") => GcsError::Auth(format!(
                "no Google credentials: google_application_credentials is empty, GOOGLE_APPLICATION_CREDENTIALS \
                 is not set, and there is no metadata server at {host} ({t})"
            )),
            GcsError::Transport(t) => GcsError::Transport(format!("cannot get a Google access token from {host}: {t}")),
            other => other,
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(super::transport)?;
        if !status.is_success() {
            #[derive(Deserialize)]
            struct OAuthError {
                error: Option<String>,
                error_description: Option<String>,
            }
            let detail = serde_json::from_slice::<OAuthError>(&body)
                .map(|e| [e.error, e.error_description].into_iter().flatten().collect::<Vec<_>>().join(": "))
                .unwrap_or_default();
            let mut message = format!("cannot get a Google access token from {host}: HTTP {status}");
            if !detail.is_empty() {
                message.push(' ');
                message.push_str(&detail.chars().take(300).collect::<String>());
            }
            return Err(if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                GcsError::Status { status, message }
            } else {
                GcsError::Auth(message)
            });
        }
        let token: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            GcsError::Auth(format!("cannot get a Google access token from {host}: unreadable token response"))
        })?;
        Ok((token.access_token, Duration::from_secs(token.expires_in.unwrap_or(3600))))
    }
}

/// A serde error without the input text (only its kind and position).
fn redact(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => {
            // "missing field `x`" / "invalid type: …, expected …" name fields and
            // types; string values are not quoted by serde for string fields.
            let text = e.to_string();
            text.split(" at line").next().unwrap_or("invalid field").to_owned()
        }
        _ => format!("invalid JSON at line {} column {}", e.line(), e.column()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::extract::State;
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A throwaway 2048-bit RSA key, made for these tests only.
    pub const TEST_KEY: &str = include_str!("testdata/test_key.pem");
    const TEST_PUBLIC_KEY: &str = include_str!("testdata/test_key.pub.pem");
    /// Another throwaway key, for a key that claims TEST_KEY's account.
    const OTHER_KEY: &str = include_str!("testdata/other_key.pem");

    #[derive(Clone, Default)]
    struct Calls(Arc<AtomicUsize>);

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{address}")
    }

    /// The token endpoint: checks the JWT-bearer grant and the assertion's signature and claims.
    async fn token_endpoint(
        State((calls, aud)): State<(Calls, Arc<std::sync::Mutex<String>>)>,
        form: axum::extract::Form<std::collections::HashMap<String, String>>,
    ) -> (axum::http::StatusCode, String) {
        calls.0.fetch_add(1, Ordering::SeqCst);
        if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return (axum::http::StatusCode::BAD_REQUEST, r#"{"error":"unsupported_grant_type"}"#.into());
        }
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&[aud.lock().unwrap().clone()]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap();
        match jsonwebtoken::decode::<serde_json::Value>(&form["assertion"], &key, &validation) {
            Ok(data) if data.claims["iss"] == "sa@p.iam.gserviceaccount.com" && data.claims["scope"] == SCOPE => {
                assert_eq!(data.header.kid.as_deref(), Some("kid-1"));
                (
                    axum::http::StatusCode::OK,
                    r#"{"access_token":"tok-1","expires_in":3599,"token_type":"Bearer"}"#.into(),
                )
            }
            _ => (
                axum::http::StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.into(),
            ),
        }
    }

    pub fn service_account_json(token_uri: &str) -> String {
        service_account_json_with_key(token_uri, TEST_KEY)
    }

    fn service_account_json_with_key(token_uri: &str, key: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": key,
            "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_service_account_gets_a_token_by_the_jwt_bearer_flow_and_caches_it() {
        // Arrange
        let calls = Calls::default();
        let aud = Arc::new(std::sync::Mutex::new(String::new()));
        let base =
            serve(axum::Router::new().route("/token", post(token_endpoint)).with_state((calls.clone(), aud.clone())))
                .await;
        let uri = format!("{base}/token");
        *aud.lock().unwrap() = uri.clone();
        let provider = TokenProvider::from_json(&service_account_json(&uri), reqwest::Client::new()).unwrap();
        assert_eq!(provider.token_uri(), Some(uri.as_str()));

        // Act
        let first = provider.token().await.unwrap();
        let second = provider.token().await.unwrap();

        // Assert
        assert_eq!(first.as_deref(), Some("tok-1"));
        assert_eq!(second.as_deref(), Some("tok-1"));
        assert_eq!(calls.0.load(Ordering::SeqCst), 1, "the second call uses the cache");
        let again = TokenProvider::from_json(&service_account_json(&uri), reqwest::Client::new()).unwrap();
        assert_eq!(again.token().await.unwrap().as_deref(), Some("tok-1"));
        assert_eq!(calls.0.load(Ordering::SeqCst), 1, "a provider for the same key shares the cache");
        // Same account and key id, another key: no token without proving the key.
        let forged = service_account_json_with_key(&uri, OTHER_KEY);
        let forged = TokenProvider::from_json(&forged, reqwest::Client::new()).unwrap();
        assert!(matches!(forged.token().await, Err(GcsError::Auth(_))), "the forged key asked and was refused");
        assert_eq!(calls.0.load(Ordering::SeqCst), 2);
        provider.invalidate().await;
        provider.token().await.unwrap();
        assert_eq!(calls.0.load(Ordering::SeqCst), 3, "invalidate forgets the token");
    }

    #[tokio::test]
    async fn a_refused_grant_is_a_permanent_error_without_any_secret() {
        let calls = Calls::default();
        let aud = Arc::new(std::sync::Mutex::new("https://elsewhere/token".to_owned()));
        let base = serve(axum::Router::new().route("/token", post(token_endpoint)).with_state((calls, aud))).await;
        let json = service_account_json(&format!("{base}/token"));
        let provider = TokenProvider::from_json(&json, reqwest::Client::new()).unwrap();
        let err = provider.token().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, GcsError::Auth(_)), "{text}");
        assert!(text.contains("invalid_grant: Invalid JWT Signature."), "{text}");
        assert!(text.contains("127.0.0.1"), "names the host: {text}");
        assert!(!text.contains("PRIVATE KEY") && !text.contains("eyJ"), "no key, no assertion: {text}");
    }

    #[tokio::test]
    async fn the_metadata_server_is_asked_with_the_metadata_flavor_header() {
        let calls = Calls::default();
        let c = calls.clone();
        let router = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            get(move |headers: axum::http::HeaderMap| async move {
                c.0.fetch_add(1, Ordering::SeqCst);
                if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                    return (axum::http::StatusCode::FORBIDDEN, String::new());
                }
                (
                    axum::http::StatusCode::OK,
                    r#"{"access_token":"meta-tok","expires_in":100,"token_type":"Bearer"}"#.into(),
                )
            }),
        );
        let base = serve(router).await;
        let provider = TokenProvider::metadata(&base, reqwest::Client::new());
        assert_eq!(provider.token().await.unwrap().as_deref(), Some("meta-tok"));
        assert_eq!(provider.token().await.unwrap().as_deref(), Some("meta-tok"));
        assert_eq!(calls.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_token_endpoint_is_a_transient_error() {
        let provider = TokenProvider::metadata("http://127.0.0.1:9", reqwest::Client::new());
        let err = provider.token().await.unwrap_err();
        assert!(matches!(err, GcsError::Transport(_)), "{err}");
    }

    #[tokio::test]
    async fn without_a_metadata_server_there_are_no_credentials_at_once() {
        // A resolver that knows no name, so no DNS query leaves the machine.
        struct NoNames;
        impl reqwest::dns::Resolve for NoNames {
            fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
                Box::pin(async { Err("Name or service not known".into()) })
            }
        }
        let http = reqwest::Client::builder().dns_resolver(Arc::new(NoNames)).build().unwrap();
        let provider = TokenProvider::metadata("http://metadata.google.internal", http);
        let err = provider.token().await.unwrap_err();
        assert!(matches!(err, GcsError::Auth(_)), "permanent: {err}");
        assert!(err.to_string().starts_with("no Google credentials: "), "{err}");
    }

    #[test]
    fn bad_credentials_files_name_the_field_never_a_value() {
        let missing =
            TokenProvider::from_json(r#"{"type":"service_account","private_key":"s3cr3t"}"#, reqwest::Client::new());
        let err = missing.err().unwrap();
        assert!(err.contains("client_email") && !err.contains("s3cr3t"), "{err}");
        let bad_key = TokenProvider::from_json(
            r#"{"type":"service_account","client_email":"a@b","private_key":"s3cr3t"}"#,
            reqwest::Client::new(),
        );
        let err = bad_key.err().unwrap();
        assert!(err.contains("private_key") && !err.contains("s3cr3t"), "{err}");
        let wrong_type =
            TokenProvider::from_json(r#"{"private_key": 5, "client_email": "s3cr3t"}"#, reqwest::Client::new());
        assert!(!wrong_type.err().unwrap().contains("s3cr3t"));
        let user = TokenProvider::from_json(
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#,
            reqwest::Client::new(),
        );
        assert_eq!(user.ok().unwrap().token_uri(), Some(DEFAULT_TOKEN_URI));
    }
}
