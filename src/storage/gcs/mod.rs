//! Google Cloud Storage: the `gcs` type (contract §6.4).
//!
//! A thin client of the GCS JSON API on `reqwest` (the emulators here do not accept
//! the XML upload path), so keys are exactly Label Studio's `<prefix>/<key>` (prefix
//! verbatim: `a/` gives `a//11005`).
//!
//! - **Endpoint**: `https://storage.googleapis.com`, or `STORAGE_EMULATOR_HOST`
//!   (Google's convention: an emulator's base URL, `http://` assumed without a scheme;
//!   read when the target is built), and then no credentials are sent.
//! - **Credentials** ([`auth`]): `google_application_credentials`, a service-account
//!   JSON string (write-only); empty means Application Default Credentials
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, then the metadata server). Invalid JSON is
//!   refused with Label Studio's message, Python's parser wording included
//!   ([`pyjson`]). With SSRF protection on, the `token_uri` of a key given in the
//!   storage must be http(s) and public, checked at connect time as for S3 endpoints.
//! - **Writes**: media uploads, at most `max_in_flight` requests at once per target;
//!   429, 408, 5xx and connection errors are retried with backoff and jitter
//!   ([`RetryPolicy`]); anything else fails at once, naming the bucket.
//! - **Full syncs** compare with one object listing per 1,000 names
//!   ([`StorageTarget::list_sizes`]). Deletions (`can_delete_objects`, which Label
//!   Studio does not support on GCS) go out as JSON batch requests of up to 100
//!   `DELETE`s (`/batch/storage/v1`); where the endpoint refuses batches, one
//!   `DELETE` per object, `max_in_flight` at a time.

mod auth;
pub mod pyjson;

use super::http_clients::{self, ClientSpec};
use super::keys::{self, check_key};
use super::retry::{RetryPolicy, Transient};
use super::spec::{ConfigError, DocumentStyle, FieldSpec, TargetConfig, TargetContext, TypeSpec};
use super::ssrf;
use super::{InFlight, Result, SafeKeys, StorageError, StorageTarget};
use auth::TokenProvider;
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Google's public endpoint of the JSON API.
pub const GOOGLE_ENDPOINT: &str = "https://storage.googleapis.com";

/// The start of Label Studio's message for credentials that are not JSON.
pub const INVALID_CREDENTIALS: &str = "Google Application Credentials must be valid JSON string. ";

/// The `gcs` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "gcs",
    title: "Google Cloud Storage",
    model: "GCSExportStorage",
    form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"bucket","label":"Bucket Name","required":true},{"type":"text","name":"prefix","label":"Bucket Prefix"}]},{"columnCount":1,"fields":[{"type":"password","name":"google_application_credentials","label":"Google Application Credentials","footer":"Paste the contents of credentials.json in this field OR leave it blank to use ADC.","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"validators":["json"]}]},{"columnCount":1,"fields":[{"type":"text","name":"google_project_id","label":"Google Project ID","footer":"Leave blank to inherit from Google Application Credentials."}]}]"#,
    fields: &[
        FieldSpec::text("bucket"),
        FieldSpec::text("prefix"),
        FieldSpec::secret("google_application_credentials"),
        FieldSpec::text("google_project_id"),
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
        "bucket",
        "prefix",
        "regex_filter",
        "use_blob_urls",
        "google_project_id",
        "last_sync",
        "last_sync_count",
        "last_sync_job",
        "status",
        "traceback",
        "meta",
        "title",
        "description",
        "created_at",
        "can_delete_objects",
        "project",
    ],
    check: check_config,
    build: Some(build),
    checks_connection: true,
    masks_validate_errors: true,
    document: DocumentStyle::Compact,
};

/// Label Studio's one field check: the credentials, when given, must be JSON.
fn check_config<'a>(config: &'a TargetConfig, _: &'a TargetContext) -> BoxFuture<'a, Result<(), ConfigError>> {
    Box::pin(async move {
        if let Some(text) = config.text("google_application_credentials") {
            if let Some(message) = pyjson::loads_error(text) {
                // Python's message holds positions only, never the text itself.
                return Err(ConfigError::NonField(format!("{INVALID_CREDENTIALS}{message}")));
            }
        }
        Ok(())
    })
}

fn build(config: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn StorageTarget>> {
    Ok(Arc::new(GoogleCloudStorage::new(config, ctx)?))
}

/// Where a target connects, from the environment unless a test says otherwise.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// An emulator's base URL (`STORAGE_EMULATOR_HOST`); then no credentials are used.
    pub emulator: Option<String>,
    /// Application Default Credentials file (`GOOGLE_APPLICATION_CREDENTIALS`).
    pub credentials_file: Option<std::path::PathBuf>,
    /// Metadata server base URL (`http://` + `GCE_METADATA_HOST`, or `metadata.google.internal`).
    pub metadata: String,
}

impl Endpoints {
    /// Read from the environment now (each time a target is built).
    pub fn from_env() -> Endpoints {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let emulator = var("STORAGE_EMULATOR_HOST").map(|host| {
            let base = if host.contains("://") { host } else { format!("http://{host}") };
            base.trim_end_matches('/').to_owned()
        });
        let metadata_host = var("GCE_METADATA_HOST").unwrap_or_else(|| auth::DEFAULT_METADATA_HOST.to_owned());
        Endpoints {
            emulator,
            credentials_file: var("GOOGLE_APPLICATION_CREDENTIALS").map(Into::into),
            metadata: format!("http://{metadata_host}"),
        }
    }
}

/// A GCS bucket and prefix.
#[derive(Clone)]
pub struct GoogleCloudStorage {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: String,
    prefix: Option<String>,
    base: url::Url,
    http: reqwest::Client,
    auth: TokenProvider,
    retry: RetryPolicy,
    in_flight: InFlight,
    /// Cleared when the batch endpoint refuses a batch: deletes go one by one then.
    batch_deletes: std::sync::atomic::AtomicBool,
}

impl fmt::Display for GoogleCloudStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.prefix {
            Some(p) => write!(f, "GoogleCloudStorage({}/{p})", self.inner.bucket),
            None => write!(f, "GoogleCloudStorage({})", self.inner.bucket),
        }
    }
}

/// A failed request, before it becomes a [`StorageError`]. Never holds a credential.
#[derive(Debug)]
pub(crate) enum GcsError {
    /// GCS (or a token endpoint) answered with an error status; `message` says which.
    Status { status: StatusCode, message: String },
    /// No answer: connection refused or lost, timeout, refused address.
    Transport(String),
    /// No token: the credentials are wrong or refused.
    Auth(String),
}

impl fmt::Display for GcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcsError::Status { message, .. } | GcsError::Transport(message) | GcsError::Auth(message) => {
                f.write_str(message)
            }
        }
    }
}

impl Transient for GcsError {
    fn is_transient(&self) -> bool {
        match self {
            GcsError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            // A refused address will not become allowed by waiting.
            GcsError::Transport(e) => !e.contains("reserved network address"),
            GcsError::Auth(_) => false,
        }
    }
}

/// A transport error with its cause chain (connection refused, refused address)
/// and without its URL.
pub(crate) fn transport(e: reqwest::Error) -> GcsError {
    GcsError::Transport(super::request_error_text(e))
}

/// Reads GCS's JSON error (`{"error": {"message": …}}`) from a failed response.
async fn status_error(response: reqwest::Response) -> GcsError {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    let detail: String = detail.chars().take(300).collect();
    let message = if detail.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {detail}") };
    GcsError::Status { status, message }
}

/// Calls per JSON batch request (GCS's limit is 100).
const BATCH_SIZE: usize = 100;

impl GoogleCloudStorage {
    /// A target for the storage's bucket and prefix, with endpoints from the
    /// environment. Nothing is contacted yet.
    pub fn new(config: &TargetConfig, ctx: &TargetContext) -> Result<GoogleCloudStorage> {
        GoogleCloudStorage::with_endpoints(config, ctx, Endpoints::from_env())
    }

    /// As [`GoogleCloudStorage::new`], with explicit endpoints.
    pub fn with_endpoints(
        config: &TargetConfig,
        ctx: &TargetContext,
        endpoints: Endpoints,
    ) -> Result<GoogleCloudStorage> {
        let bucket = config
            .text("bucket")
            .ok_or_else(|| StorageError::Precondition("the GCS bucket name is empty".into()))?
            .to_owned();
        let target = format!("GCS bucket \"{bucket}\"");
        let http = shared_client(ctx).map_err(|e| StorageError::Generic { target, source: Box::new(e) })?;
        let base_text = endpoints.emulator.clone().unwrap_or_else(|| GOOGLE_ENDPOINT.to_owned());
        let base = url::Url::parse(&base_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| StorageError::Precondition(format!("invalid GCS endpoint \"{base_text}\"")))?;
        let auth = if endpoints.emulator.is_some() {
            TokenProvider::anonymous(http.clone())
        } else if let Some(json) = config.text("google_application_credentials") {
            // The key comes from the user: its token endpoint is checked like any
            // user-supplied endpoint.
            let token_http =
                user_token_client(json, ctx).map_err(StorageError::PermissionDenied)?.unwrap_or(http.clone());
            TokenProvider::from_json(json, token_http).map_err(StorageError::Precondition)?
        } else if let Some(path) = &endpoints.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StorageError::Precondition(format!(
                    "cannot read GOOGLE_APPLICATION_CREDENTIALS file {}: {e}",
                    path.display()
                ))
            })?;
            TokenProvider::from_json(&text, http.clone())
                .map_err(|e| StorageError::Precondition(format!("GOOGLE_APPLICATION_CREDENTIALS file: {e}")))?
        } else {
            TokenProvider::metadata(&endpoints.metadata, http.clone())
        };
        Ok(GoogleCloudStorage {
            inner: Arc::new(Inner {
                bucket,
                prefix: config.text("prefix").map(str::to_owned),
                base,
                http,
                auth,
                retry: RetryPolicy { max_attempts: ctx.targets.max_attempts, base: ctx.targets.backoff },
                in_flight: InFlight::new(ctx.targets.max_in_flight),
                batch_deletes: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// The object name of a document: `<prefix>/<key>`, or the bare key.
    pub fn object_name(&self, key: &str) -> String {
        keys::prefixed(self.inner.prefix.as_deref(), key)
    }

    /// `{base}[/upload]/storage/v1/b/{bucket}/{rest…}`, each segment percent-encoded
    /// (an object name's `/` becomes `%2F`).
    fn url(&self, upload: bool, rest: &[&str]) -> url::Url {
        let mut url = self.inner.base.clone();
        {
            let mut segments = url.path_segments_mut().expect("http(s) URLs have a path");
            segments.pop_if_empty();
            if upload {
                segments.push("upload");
            }
            segments.extend(["storage", "v1", "b", self.inner.bucket.as_str()]);
            segments.extend(rest);
        }
        url
    }

    /// The mapped, user-facing error of a failed request; names the bucket.
    fn error(&self, e: GcsError) -> StorageError {
        let bucket = &self.inner.bucket;
        match e {
            GcsError::Status { status, message } if status == StatusCode::NOT_FOUND => {
                StorageError::NotFound(format!("Cannot find bucket {bucket} in GCS ({message})"))
            }
            GcsError::Status { status, message }
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
            {
                StorageError::PermissionDenied(format!(
                    "Cannot access GCS bucket {bucket} with the given credentials ({message})"
                ))
            }
            GcsError::Auth(message) => StorageError::PermissionDenied(format!("GCS bucket \"{bucket}\": {message}")),
            GcsError::Transport(t) if t.contains("reserved network address") => {
                StorageError::PermissionDenied(format!("GCS bucket \"{bucket}\": {t}"))
            }
            e => StorageError::Generic { target: format!("GCS bucket \"{bucket}\""), source: e.to_string().into() },
        }
    }

    /// Sends a request (with a fresh token for every attempt), retrying transient
    /// failures; at most `max_in_flight` at once.
    async fn send<F>(&self, make: F) -> std::result::Result<reqwest::Response, GcsError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let _permit = self.inner.in_flight.acquire().await;
        self.inner
            .retry
            .run(|| async {
                let token = self.inner.auth.token().await?;
                let mut request = make();
                if let Some(token) = token {
                    request = request.bearer_auth(&*token);
                }
                let response = request.send().await.map_err(transport)?;
                if response.status().is_success() {
                    return Ok(response);
                }
                if response.status() == StatusCode::UNAUTHORIZED {
                    // Revoked or expired early: the next request gets a new token.
                    self.inner.auth.invalidate().await;
                }
                Err(status_error(response).await)
            })
            .await
    }

    async fn delete_one(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let object = self.object_name(key);
        let url = self.url(false, &["o", &object]);
        match self.send(|| self.inner.http.delete(url.clone())).await {
            Ok(_) => Ok(()),
            // Deleting what is not there succeeds.
            Err(GcsError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// One JSON batch request of `DELETE`s (multipart/mixed); `None` when the
    /// endpoint refuses batches (the caller then deletes one by one).
    async fn delete_batch(&self, keys: &[String]) -> Option<Vec<Result<()>>> {
        let boundary = format!("labelport-{}", uuid::Uuid::new_v4().simple());
        let mut body = String::new();
        for (i, key) in keys.iter().enumerate() {
            let url = self.url(false, &["o", &self.object_name(key)]);
            body.push_str(&format!(
                "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\
                 Content-ID: <item{i}>\r\n\r\nDELETE {} HTTP/1.1\r\n\r\n\r\n",
                url.path()
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let mut batch_url = self.inner.base.clone();
        batch_url
            .path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(["batch", "storage", "v1"]);
        let content_type = format!("multipart/mixed; boundary={boundary}");
        let response = match self
            .send(|| self.inner.http.post(batch_url.clone()).header("content-type", &content_type).body(body.clone()))
            .await
        {
            Ok(r) => r,
            Err(GcsError::Status { status, .. })
                if status.is_client_error()
                    && status != StatusCode::UNAUTHORIZED
                    && status != StatusCode::FORBIDDEN =>
            {
                return None
            }
            Err(e) => {
                let message = self.error(e).to_string();
                return Some(keys.iter().map(|_| Err(self.generic(&message))).collect());
            }
        };
        let response_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let text = response.text().await.unwrap_or_default();
        let statuses = parse_batch_response(&response_type, &text);
        let mut out = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            out.push(match statuses.get(&i).copied() {
                Some(s) if (200..300).contains(&s) || s == 404 => Ok(()),
                // A part throttled or failed by the server, or missing from the
                // answer: once more on its own, with the usual retries.
                Some(s) if s == 429 || s == 408 || s >= 500 => self.delete_one(key).await,
                None => self.delete_one(key).await,
                Some(s) => Err(self.generic(&format!("delete of {} failed: HTTP {s}", self.object_name(key)))),
            });
        }
        Some(out)
    }

    fn generic(&self, message: &str) -> StorageError {
        StorageError::Generic {
            target: format!("GCS bucket \"{}\"", self.inner.bucket),
            source: message.to_owned().into(),
        }
    }
}

/// The status of each part of a batch response, by the index in its
/// `Content-ID: <response-item{i}>`.
fn parse_batch_response(content_type: &str, body: &str) -> HashMap<usize, u16> {
    let mut out = HashMap::new();
    let Some(boundary) = content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary=")) else {
        return out;
    };
    let boundary = boundary.trim_matches('"');
    for part in body.split(&format!("--{boundary}")) {
        let id = part.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("content-id") {
                return None;
            }
            let value = value.trim().trim_start_matches('<').trim_end_matches('>');
            value.rsplit("item").next()?.parse::<usize>().ok()
        });
        let status = part
            .lines()
            .find(|line| line.starts_with("HTTP/"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse::<u16>().ok());
        if let (Some(id), Some(status)) = (id, status) {
            out.insert(id, status);
        }
    }
    out
}

/// The HTTP client (and connection pool) of the process for these settings: the
/// sync engine builds a target for each pass, and a new pool each time would open
/// new TLS connections to Google for every batch of changes.
fn shared_client(ctx: &TargetContext) -> reqwest::Result<reqwest::Client> {
    http_clients::shared(ClientSpec {
        timeout: Some(ctx.targets.request_timeout),
        idle_per_host: Some(ctx.targets.max_in_flight),
        ..ClientSpec::new(Duration::from_secs(10))
    })
}

/// With SSRF protection on, a client for the token endpoint of a user-supplied key
/// that refuses reserved addresses at connect time; `None`: use the plain client.
fn user_token_client(json: &str, ctx: &TargetContext) -> std::result::Result<Option<reqwest::Client>, String> {
    if !ctx.targets.ssrf_protection {
        return Ok(None);
    }
    let token_uri = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["token_uri"].as_str().map(str::to_owned))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| auth::DEFAULT_TOKEN_URI.to_owned());
    let url = url::Url::parse(&token_uri).map_err(|_| ssrf::SsrfError::NotAllowed.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ssrf::SsrfError::NotAllowed.to_string());
    }
    ssrf::check_ip_literal(url.host_str().unwrap_or_default(), true).map_err(|e| e.to_string())?;
    http_clients::shared(ClientSpec {
        timeout: Some(ctx.targets.request_timeout),
        ssrf_checked: true,
        ..ClientSpec::new(Duration::from_secs(10))
    })
    .map(Some)
    .map_err(|e| e.to_string())
}

#[async_trait::async_trait]
impl StorageTarget for GoogleCloudStorage {
    /// Gets the bucket: it must exist and be accessible (the prefix is not checked).
    async fn validate(&self) -> Result<()> {
        let url = self.url(false, &[]);
        self.send(|| self.inner.http.get(url.clone())).await.map(|_| ()).map_err(|e| self.error(e))
    }

    /// A media upload (`Content-Type: application/json`), atomic on GCS.
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check_key(key)?;
        let object = self.object_name(key);
        let mut url = self.url(true, &["o"]);
        set_query(&mut url, &[("uploadType", "media"), ("name", &object)]);
        self.send(|| self.inner.http.post(url.clone()).header("content-type", "application/json").body(body.clone()))
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Up to `max_in_flight` uploads at once (the semaphore bounds them across callers).
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Vec<Result<()>> {
        self.inner.in_flight.each(items, |(key, body)| async move { self.put(&key, body).await }).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.delete_one(key).await
    }

    /// Batches of up to 100 `DELETE`s; one by one where batches are refused.
    async fn delete_many(&self, keys: Vec<String>) -> Vec<Result<()>> {
        use std::sync::atomic::Ordering;
        let keys = SafeKeys::new(keys);
        let mut results = Vec::with_capacity(keys.safe.len());
        for chunk in keys.safe.chunks(BATCH_SIZE) {
            let batched = if self.inner.batch_deletes.load(Ordering::Relaxed) && chunk.len() > 1 {
                self.delete_batch(chunk).await
            } else {
                None
            };
            match batched {
                Some(r) => results.extend(r),
                None => {
                    if chunk.len() > 1 {
                        self.inner.batch_deletes.store(false, Ordering::Relaxed);
                    }
                    let one_by_one = self
                        .inner
                        .in_flight
                        .each(chunk.to_vec(), |key| async move { self.delete_one(&key).await })
                        .await;
                    results.extend(one_by_one);
                }
            }
        }
        keys.merge(results)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        let object = self.object_name(key);
        let mut url = self.url(false, &["o", &object]);
        url.query_pairs_mut().append_pair("fields", "size");
        match self.send(|| self.inner.http.get(url.clone())).await {
            Ok(response) => {
                let body = response.bytes().await.map_err(|e| self.error(transport(e)))?;
                let meta: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| self.generic("unreadable object metadata"))?;
                Ok(Some(parse_size(&meta["size"])))
            }
            Err(GcsError::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// One listing request per 1,000 objects under the prefix.
    async fn list_sizes(&self) -> Result<Option<HashMap<String, u64>>> {
        let list_prefix = keys::list_prefix(self.inner.prefix.as_deref());
        let mut sizes = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.url(false, &["o"]);
            let mut query = vec![("maxResults", "1000"), ("fields", "items(name,size),nextPageToken")];
            if let Some(p) = &list_prefix {
                query.push(("prefix", p));
            }
            if let Some(t) = &token {
                query.push(("pageToken", t));
            }
            set_query(&mut url, &query);
            let response = self.send(|| self.inner.http.get(url.clone())).await.map_err(|e| self.error(e))?;
            let body = response.bytes().await.map_err(|e| self.error(transport(e)))?;
            let page: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| self.generic("unreadable object listing"))?;
            for item in page["items"].as_array().into_iter().flatten() {
                let Some(name) = item["name"].as_str() else { continue };
                if let Some(key) = keys::listed_key(self.inner.prefix.as_deref(), name) {
                    sizes.insert(key.to_owned(), parse_size(&item["size"]));
                }
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(Some(sizes))
    }
}

/// Sets the query of `url`, every value percent-encoded with `%20` for a space: an
/// object name or prefix may hold a literal `+`, and `+` for a space is a form
/// convention that not every server applies to query strings.
fn set_query(url: &mut url::Url, pairs: &[(&str, &str)]) {
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            format!("{k}={}", v.replace('+', "%20"))
        })
        .collect();
    url.set_query(Some(&query.join("&")));
}

/// GCS sends sizes as decimal strings (64-bit integers in JSON).
fn parse_size(v: &serde_json::Value) -> u64 {
    v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_u64()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ssrf_protection: bool) -> TargetContext {
        TargetContext {
            local_files: crate::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
            fsync: false,
            targets: crate::config::TargetSettings { ssrf_protection, ..crate::config::TargetSettings::from_env() },
        }
    }

    fn config(pairs: &[(&str, &str)]) -> TargetConfig {
        let mut config = TargetConfig::default();
        for (k, v) in pairs {
            if *k == "google_application_credentials" {
                config.secrets.insert((*k).into(), (*v).into());
            } else {
                config.values.insert((*k).into(), (*v).into());
            }
        }
        config
    }

    fn emulator() -> Endpoints {
        Endpoints { emulator: Some("http://127.0.0.1:9".into()), ..Endpoints::default() }
    }

    #[test]
    fn object_names_use_the_prefix_verbatim_as_label_studio_does() {
        let t = |prefix: Option<&str>| {
            let mut pairs = vec![("bucket", "b")];
            if let Some(p) = prefix {
                pairs.push(("prefix", p));
            }
            GoogleCloudStorage::with_endpoints(&config(&pairs), &ctx(false), emulator()).unwrap()
        };
        assert_eq!(t(None).object_name("11005"), "11005");
        assert_eq!(t(Some("exports")).object_name("11005"), "exports/11005");
        assert_eq!(t(Some("a/")).object_name("11005"), "a//11005");
        assert_eq!(t(Some("x")).object_name("42.json"), "x/42.json");
        assert_eq!(
            t(Some("a b/c")).url(false, &["o", "a b/c/1"]).as_str(),
            "http://127.0.0.1:9/storage/v1/b/b/o/a%20b%2Fc%2F1"
        );
        let mut upload = t(None).url(true, &["o"]);
        set_query(&mut upload, &[("uploadType", "media"), ("name", "a b+c/1&x=%")]);
        assert_eq!(
            upload.as_str(),
            "http://127.0.0.1:9/upload/storage/v1/b/b/o?uploadType=media&name=a%20b%2Bc%2F1%26x%3D%25"
        );
    }

    #[tokio::test]
    async fn invalid_credentials_json_gives_label_studios_message() {
        let check = |json: &'static str| async move {
            check_config(&config(&[("bucket", "b"), ("google_application_credentials", json)]), &ctx(true)).await
        };
        assert_eq!(
            check("not json").await,
            Err(ConfigError::NonField(
                "Google Application Credentials must be valid JSON string. Expecting value: line 1 column 1 (char 0)"
                    .into()
            ))
        );
        assert!(check("{\"type\": \"service_account\"}").await.is_ok());
        // Empty means Application Default Credentials.
        assert!(check_config(&config(&[("bucket", "b"), ("google_application_credentials", "")]), &ctx(true))
            .await
            .is_ok());
    }

    #[test]
    fn the_emulator_host_may_come_without_a_scheme() {
        // Only this test sets these variables in this process (nextest runs each test alone).
        std::env::set_var("STORAGE_EMULATOR_HOST", "127.0.0.1:4443");
        std::env::set_var("GCE_METADATA_HOST", "169.254.169.254");
        let endpoints = Endpoints::from_env();
        std::env::remove_var("STORAGE_EMULATOR_HOST");
        std::env::remove_var("GCE_METADATA_HOST");
        assert_eq!(endpoints.emulator.as_deref(), Some("http://127.0.0.1:4443"));
        assert_eq!(endpoints.metadata, "http://169.254.169.254");
    }

    #[test]
    fn a_user_supplied_token_uri_on_a_reserved_address_is_refused_with_ssrf_protection_on() {
        let json = auth::tests::service_account_json("http://169.254.169.254/token");
        let cfg = config(&[("bucket", "b"), ("google_application_credentials", &json)]);
        let endpoints = Endpoints { metadata: "http://metadata.google.internal".into(), ..Endpoints::default() };
        let err = GoogleCloudStorage::with_endpoints(&cfg, &ctx(true), endpoints.clone()).err().expect("refused");
        assert_eq!(err.to_string(), "URL resolves to a reserved network address (block: 169.254.0.0/16)");
        let json = auth::tests::service_account_json("file:///etc/passwd");
        let cfg = config(&[("bucket", "b"), ("google_application_credentials", &json)]);
        assert!(GoogleCloudStorage::with_endpoints(&cfg, &ctx(true), endpoints.clone()).is_err());
        // Off (tests, on-premises token servers): accepted.
        let json = auth::tests::service_account_json("http://127.0.0.1:9/token");
        let cfg = config(&[("bucket", "b"), ("google_application_credentials", &json)]);
        assert!(GoogleCloudStorage::with_endpoints(&cfg, &ctx(false), endpoints).is_ok());
    }

    #[test]
    fn batch_responses_are_read_by_content_id() {
        let body = "--xyz\r\nContent-Type: application/http\r\nContent-ID: <response-item1>\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n{}\r\n\
                    --xyz\r\nContent-Type: application/http\r\nContent-ID: <response-item0>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n\
                    --xyz\r\nContent-ID: <response-item2>\r\n\r\nHTTP/1.1 403 Forbidden\r\n\r\n--xyz--";
        let statuses = parse_batch_response("multipart/mixed; boundary=xyz", body);
        assert_eq!(statuses, HashMap::from([(0, 204), (1, 404), (2, 403)]));
        assert!(parse_batch_response("application/json", body).is_empty());
    }

    #[tokio::test]
    async fn adc_reads_the_credentials_file_and_refreshes_an_authorized_user_token() {
        use axum::routing::{get, post};
        // Arrange: a token endpoint for the refresh-token grant, and the bucket.
        let router = axum::Router::new()
            .route(
                "/token",
                post(|form: axum::extract::Form<HashMap<String, String>>| async move {
                    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
                        && form.get("refresh_token").map(String::as_str) == Some("r-1")
                        && form.get("client_id").map(String::as_str) == Some("c-1")
                        && form.get("client_secret").map(String::as_str) == Some("s-1");
                    if ok {
                        (axum::http::StatusCode::OK, r#"{"access_token":"user-tok","expires_in":3600}"#)
                    } else {
                        (axum::http::StatusCode::BAD_REQUEST, r#"{"error":"invalid_grant"}"#)
                    }
                }),
            )
            .route(
                "/storage/v1/b/{bucket}",
                get(|headers: axum::http::HeaderMap| async move {
                    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                        Some("Bearer user-tok") => axum::http::StatusCode::OK,
                        _ => axum::http::StatusCode::UNAUTHORIZED,
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let adc = serde_json::json!({
            "type": "authorized_user", "client_id": "c-1", "client_secret": "s-1",
            "refresh_token": "r-1", "token_uri": format!("{base}/token"),
        });
        std::io::Write::write_all(&mut file, adc.to_string().as_bytes()).unwrap();
        let endpoints = Endpoints { credentials_file: Some(file.path().into()), ..Endpoints::default() };
        let mut target =
            GoogleCloudStorage::with_endpoints(&config(&[("bucket", "b")]), &ctx(false), endpoints).unwrap();
        Arc::get_mut(&mut target.inner).unwrap().base = url::Url::parse(&base).unwrap();

        // Act + Assert
        target.validate().await.unwrap();
    }

    #[tokio::test]
    async fn batch_parts_that_failed_transiently_or_went_missing_are_deleted_one_by_one() {
        use axum::routing::{delete, post};
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Arrange: a batch endpoint that answers item0 204, item1 503 and forgets
        // item2; single deletes count themselves.
        let singles = Arc::new(AtomicUsize::new(0));
        let s = singles.clone();
        let router = axum::Router::new()
            .route(
                "/batch/storage/v1",
                post(|| async {
                    let body = "--zz\r\nContent-ID: <response-item0>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n\
                                --zz\r\nContent-ID: <response-item1>\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n\r\n\r\n--zz--";
                    ([("content-type", "multipart/mixed; boundary=zz")], body)
                }),
            )
            .route(
                "/storage/v1/b/b/o/{name}",
                delete(move || async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::NO_CONTENT
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let endpoints = Endpoints { emulator: Some(base), ..Endpoints::default() };
        let target = GoogleCloudStorage::with_endpoints(&config(&[("bucket", "b")]), &ctx(false), endpoints).unwrap();

        // Act
        let results = target.delete_many(vec!["1".into(), "2".into(), "3".into()]).await;

        // Assert
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(singles.load(Ordering::SeqCst), 2, "item1 (503) and item2 (missing)");
    }

    #[tokio::test]
    async fn requests_carry_the_service_account_token_and_retry_server_errors() {
        use axum::routing::{get, post};
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Arrange: one server plays the token endpoint and the bucket; the bucket
        // fails once with 503 before answering.
        let failures = Arc::new(AtomicUsize::new(0));
        let f = failures.clone();
        let router = axum::Router::new()
            .route("/token", post(|| async { r#"{"access_token":"tok-9","expires_in":3600,"token_type":"Bearer"}"# }))
            .route(
                "/storage/v1/b/{bucket}",
                get(move |headers: axum::http::HeaderMap| async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok-9") {
                        return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                    }
                    if f.fetch_add(1, Ordering::SeqCst) == 0 {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    (axum::http::StatusCode::OK, "{}".into())
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let json = auth::tests::service_account_json(&format!("{base}/token"));
        let cfg = config(&[("bucket", "b"), ("google_application_credentials", &json)]);
        let mut context = ctx(false);
        context.targets.backoff = Duration::from_millis(1);
        // The real endpoint, pointed at the local server (not an emulator: credentials are used).
        let mut target = GoogleCloudStorage::with_endpoints(&cfg, &context, Endpoints::default()).unwrap();
        Arc::get_mut(&mut target.inner).unwrap().base = url::Url::parse(&base).unwrap();

        // Act
        target.validate().await.unwrap();

        // Assert
        assert_eq!(failures.load(Ordering::SeqCst), 2, "one 503, then success");
    }
}
