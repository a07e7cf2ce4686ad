//! Where S3 credentials come from, in the order the AWS SDKs use:
//!
//! 1. the storage's `aws_access_key_id` / `aws_secret_access_key` / `aws_session_token`,
//!    each falling back to `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//!    `AWS_SESSION_TOKEN` when empty;
//! 2. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
//!    `~/.aws/credentials`), profile `AWS_PROFILE` (default `default`);
//! 3. container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI` or
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN`);
//! 4. instance credentials through IMDSv2 (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, default
//!    `http://169.254.169.254`; off with `AWS_EC2_METADATA_DISABLED=true`).
//!
//! Temporary credentials (3, 4) are cached and refreshed five minutes before they
//! expire. With none found, requests go unsigned (anonymous access).

use super::super::http_clients::ClientSpec;
use rusty_s3::Credentials;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long "no credentials anywhere" is remembered before looking again.
const NEGATIVE_CACHE: Duration = Duration::from_secs(300);
/// Temporary credentials are renewed this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The credentials of one target.
pub struct CredentialChain {
    fixed: Option<Arc<Credentials>>,
    metadata: MetadataEndpoints,
    cached: Mutex<Option<(Option<Arc<Credentials>>, Instant)>>,
}

/// Where temporary credentials are fetched from (settable for tests).
#[derive(Clone)]
pub struct MetadataEndpoints {
    http: reqwest::Client,
    container: Option<(String, Option<String>)>,
    imds: Option<String>,
    profile: Option<Arc<Credentials>>,
}

impl MetadataEndpoints {
    fn from_env() -> MetadataEndpoints {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let container = env("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .or_else(|| env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|p| format!("http://169.254.170.2{p}")))
            .map(|uri| (uri, env("AWS_CONTAINER_AUTHORIZATION_TOKEN")));
        let imds_off = env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let imds = (!imds_off).then(|| {
            env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| "http://169.254.169.254".into())
                .trim_end_matches('/')
                .to_owned()
        });
        MetadataEndpoints { http: metadata_client(), container, imds, profile: shared_file_credentials() }
    }
}

fn metadata_client() -> reqwest::Client {
    super::super::http_clients::shared(ClientSpec {
        timeout: Some(Duration::from_secs(2)),
        no_proxy: true,
        ..ClientSpec::new(Duration::from_secs(1))
    })
    .unwrap_or_default()
}

impl CredentialChain {
    /// The chain for a storage's fields (empty ones fall back to the environment).
    pub fn new(
        key: Option<&str>,
        secret: Option<&str>,
        token: Option<&str>,
        _http: reqwest::Client,
    ) -> CredentialChain {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let key = key.map(str::to_owned).or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = secret.map(str::to_owned).or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let token = token.map(str::to_owned).or_else(|| env("AWS_SESSION_TOKEN"));
        let fixed = match (key, secret) {
            (Some(k), Some(s)) => Some(Arc::new(match token {
                Some(t) => Credentials::new_with_token(k, s, t),
                None => Credentials::new(k, s),
            })),
            _ => None,
        };
        let metadata = if fixed.is_some() {
            MetadataEndpoints { http: reqwest::Client::new(), container: None, imds: None, profile: None }
        } else {
            MetadataEndpoints::from_env()
        };
        CredentialChain { fixed, metadata, cached: Mutex::new(None) }
    }

    /// A chain that only asks the given metadata endpoints (tests).
    #[cfg(test)]
    pub fn with_endpoints(metadata: MetadataEndpoints) -> CredentialChain {
        CredentialChain { fixed: None, metadata, cached: Mutex::new(None) }
    }

    /// The credentials to sign with now; `None` means unsigned requests.
    pub async fn get(&self) -> Result<Option<Arc<Credentials>>, String> {
        if let Some(fixed) = &self.fixed {
            return Ok(Some(fixed.clone()));
        }
        if let Some(profile) = &self.metadata.profile {
            return Ok(Some(profile.clone()));
        }
        let mut cached = self.cached.lock().await;
        if let Some((creds, valid_until)) = cached.as_ref() {
            if Instant::now() < *valid_until {
                return Ok(creds.clone());
            }
        }
        let (creds, valid_until) = match self.fetch().await {
            Some((creds, lifetime)) => (Some(Arc::new(creds)), Instant::now() + lifetime),
            None => (None, Instant::now() + NEGATIVE_CACHE),
        };
        *cached = Some((creds.clone(), valid_until));
        Ok(creds)
    }

    async fn fetch(&self) -> Option<(Credentials, Duration)> {
        let m = &self.metadata;
        if let Some((uri, auth)) = &m.container {
            let mut request = m.http.get(uri);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            match fetch_json(request).await {
                Some(c) => return Some(c),
                None => tracing::warn!("container credentials endpoint did not answer with credentials"),
            }
        }
        if let Some(base) = &m.imds {
            return imds(&m.http, base).await;
        }
        None
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TemporaryCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

async fn fetch_json(request: reqwest::RequestBuilder) -> Option<(Credentials, Duration)> {
    let response = request.send().await.ok()?.error_for_status().ok()?;
    let c: TemporaryCredentials = serde_json::from_str(&response.text().await.ok()?).ok()?;
    let lifetime = c
        .expiration
        .as_deref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .and_then(|e| (e.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok())
        .map(|left| left.saturating_sub(REFRESH_BEFORE).max(Duration::from_secs(30)))
        .unwrap_or(Duration::from_secs(600));
    let creds = match c.token {
        Some(t) => Credentials::new_with_token(c.access_key_id, c.secret_access_key, t),
        None => Credentials::new(c.access_key_id, c.secret_access_key),
    };
    Some((creds, lifetime))
}

/// IMDSv2: a session token, then the instance role's name, then its credentials.
async fn imds(http: &reqwest::Client, base: &str) -> Option<(Credentials, Duration)> {
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
    let role = http
        .get(&roles)
        .header("x-aws-ec2-metadata-token", &token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()?;
    let role = role.lines().next()?.trim().to_owned();
    if role.is_empty() {
        return None;
    }
    fetch_json(http.get(format!("{roles}{role}")).header("x-aws-ec2-metadata-token", &token)).await
}

/// The shared credentials file's profile, if it has keys.
fn shared_file_credentials() -> Option<Arc<Credentials>> {
    let path = std::env::var("AWS_SHARED_CREDENTIALS_FILE")
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "default".into());
    parse_profile(&text, &profile).map(Arc::new)
}

/// Reads one profile of an INI credentials file.
fn parse_profile(text: &str, profile: &str) -> Option<Credentials> {
    let (mut key, mut secret, mut token) = (None, None, None);
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') && line.ends_with(']') {
            inside = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        if !inside || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            let value = value.trim().to_owned();
            match name.trim() {
                "aws_access_key_id" => key = Some(value),
                "aws_secret_access_key" => secret = Some(value),
                "aws_session_token" => token = Some(value),
                _ => {}
            }
        }
    }
    match (key, secret, token) {
        (Some(k), Some(s), Some(t)) => Some(Credentials::new_with_token(k, s, t)),
        (Some(k), Some(s), None) => Some(Credentials::new(k, s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, put};

    #[test]
    fn a_profile_of_the_shared_file_is_read() {
        let text = "[default]\naws_access_key_id = AK1\naws_secret_access_key=SK1\n\n[other]\n\
                    aws_access_key_id=AK2\naws_secret_access_key=SK2\naws_session_token=T2\n";
        let c = parse_profile(text, "default").unwrap();
        assert_eq!((c.key(), c.secret(), c.token()), ("AK1", "SK1", None));
        let c = parse_profile(text, "other").unwrap();
        assert_eq!((c.key(), c.secret(), c.token()), ("AK2", "SK2", Some("T2")));
        assert!(parse_profile(text, "missing").is_none());
    }

    #[test]
    fn the_storage_fields_win_over_everything_else() {
        let chain = CredentialChain::new(Some("AK"), Some("SK"), None, reqwest::Client::new());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let c = rt.block_on(chain.get()).unwrap().unwrap();
        assert_eq!((c.key(), c.secret()), ("AK", "SK"));
    }

    #[tokio::test]
    async fn instance_credentials_come_from_imdsv2_with_a_session_token() {
        let app = axum::Router::new()
            .route("/latest/api/token", put(|| async { "tok" }))
            .route(
                "/latest/meta-data/iam/security-credentials/",
                get(|h: axum::http::HeaderMap| async move {
                    assert_eq!(h.get("x-aws-ec2-metadata-token").unwrap(), "tok");
                    "role-a\n"
                }),
            )
            .route(
                "/latest/meta-data/iam/security-credentials/role-a",
                get(|| async {
                    r#"{"Code":"Success","AccessKeyId":"ASIA1","SecretAccessKey":"S1","Token":"T1","Expiration":"2999-01-01T00:00:00Z"}"#
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let chain = CredentialChain::with_endpoints(MetadataEndpoints {
            http: metadata_client(),
            container: None,
            imds: Some(base),
            profile: None,
        });
        let c = chain.get().await.unwrap().expect("credentials");
        assert_eq!((c.key(), c.secret(), c.token()), ("ASIA1", "S1", Some("T1")));
    }

    #[tokio::test]
    async fn no_metadata_service_means_unsigned_requests() {
        let chain = CredentialChain::with_endpoints(MetadataEndpoints {
            http: metadata_client(),
            container: None,
            imds: Some("http://127.0.0.1:9".into()),
            profile: None,
        });
        assert!(chain.get().await.unwrap().is_none());
    }
}
