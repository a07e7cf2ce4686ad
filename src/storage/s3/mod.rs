//! Amazon S3 and S3-compatible stores (MinIO, Ceph, R2): the `s3` type (contract §6.3).
//!
//! Requests are signed with `rusty-s3` (SigV4, sans-IO) and sent with `reqwest`, so
//! keys are exactly Label Studio's `<prefix>/<key>` (prefix verbatim: `a/` gives
//! `a//11005`), which path-normalising clients cannot write.
//!
//! - **Credentials**: the storage's fields; where empty, `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; then the default chain
//!   ([`credentials`]): shared credentials file, container (ECS) and instance (IMDSv2)
//!   credentials. With none at all, requests go unsigned (anonymous).
//! - **Endpoint**: `s3_endpoint` (path-style addressing) or AWS's regional endpoint.
//!   With SSRF protection on, a custom endpoint is reached only through
//!   [`CheckedResolver`] and never through a proxy, so every connection is checked.
//! - **Writes**: at most `max_in_flight` requests at once per target; throttling
//!   (429, 503 SlowDown), 5xx and connection errors are retried with backoff and
//!   jitter ([`RetryPolicy`]); anything else fails at once, naming the bucket.
//! - **Full syncs** compare with one LIST per 1,000 keys ([`StorageTarget::list_sizes`]);
//!   deletions go out as batched `DeleteObjects`.

mod credentials;

use super::http_clients::{self, ClientSpec};
use super::keys::{self, check_key};
use super::retry::{RetryPolicy, Transient};
use super::spec::{ConfigError, DocumentStyle, FieldSpec, TargetConfig, TargetContext, TypeSpec};
use super::ssrf;
use super::{InFlight, Result, SafeKeys, StorageError, StorageTarget};
use bytes::Bytes;
use credentials::CredentialChain;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use rusty_s3::actions::{ListObjectsV2, ObjectIdentifier, S3Action};
use rusty_s3::{Bucket, UrlStyle};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The `s3` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "s3",
    title: "AWS S3",
    model: "S3ExportStorage",
    form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"bucket","label":"Bucket Name","allowEmpty":false,"required":true},{"type":"text","name":"prefix","label":"Bucket Prefix"}]},{"columnCount":3,"fields":[{"type":"text","name":"region_name","label":"Region Name","placeholder":"us-east-1"},{"type":"text","name":"s3_endpoint","label":"S3 Endpoint"},{"type":"text","name":"aws_sse_kms_key_id","label":"SSE KMS Key ID"},{"type":"password","name":"aws_access_key_id","label":"Access Key ID","autoComplete":"off","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"aws_secret_access_key","label":"Secret Access Key","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"aws_session_token","autoComplete":"new-password","label":"Session Token","skipAutofill":true,"allowEmpty":true,"protectedValue":true}]},{"columnCount":1,"columns":[{"fields":[{"type":"toggle","name":"can_delete_objects","label":"Can delete objects from storage","description":"If unchecked, annotations will not be deleted from storage"}]}]}]"#,
    fields: &[
        FieldSpec::text("bucket"),
        FieldSpec::text("prefix"),
        FieldSpec::secret("aws_access_key_id"),
        FieldSpec::secret("aws_secret_access_key"),
        FieldSpec::secret("aws_session_token"),
        FieldSpec::text("aws_sse_kms_key_id"),
        FieldSpec::text("region_name"),
        FieldSpec::text("s3_endpoint"),
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
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
        "bucket",
        "prefix",
        "regex_filter",
        "use_blob_urls",
        "aws_sse_kms_key_id",
        "region_name",
        "s3_endpoint",
        "project",
    ],
    check: check_config,
    build: Some(build),
    checks_connection: true,
    masks_validate_errors: false,
    document: DocumentStyle::Compact,
};

/// Label Studio's bucket rule: a plain name, or an access-point / outposts ARN.
fn valid_bucket_name(name: &str) -> bool {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    plain || (name.starts_with("arn:aws") && (name.contains(":accesspoint") || name.contains(":outpost")))
}

const BUCKET_RULE: &str = r#"Bucket name must match the regex "^[a-zA-Z0-9.\-_]{1,255}$" or be an ARN matching the regex "^arn:(aws).*:(s3|s3-object-lambda):[a-z\-0-9]*:[0-9]{12}:accesspoint[/:][a-zA-Z0-9\-.]{1,63}$|^arn:(aws).*:s3-outposts:[a-z\-0-9]+:[0-9]{12}:outpost[/:][a-zA-Z0-9\-]{1,63}[/:]accesspoint[/:][a-zA-Z0-9\-]{1,63}$""#;

fn check_config<'a>(config: &'a TargetConfig, ctx: &'a TargetContext) -> BoxFuture<'a, Result<(), ConfigError>> {
    Box::pin(async move {
        let Some(bucket) = config.values.get("bucket").and_then(|v| v.as_str()) else {
            // Label Studio's own message for a missing bucket (contract §6.3).
            return Err(ConfigError::NonField("expected string or bytes-like object, got 'NoneType'".into()));
        };
        if !bucket.is_empty() && !valid_bucket_name(bucket) {
            return Err(ConfigError::Field("bucket", format!("Invalid bucket name \"{bucket}\": {BUCKET_RULE}")));
        }
        if let Some(endpoint) = config.text("s3_endpoint") {
            if ctx.targets.ssrf_protection {
                ssrf::check_url(endpoint, true).await.map_err(|e| ConfigError::Forbidden(e.to_string()))?;
            } else {
                ssrf::check_url(endpoint, false).await.map_err(|e| match e {
                    ssrf::SsrfError::NotAllowed => ConfigError::Forbidden(e.to_string()),
                    other => ConfigError::NonField(other.to_string()),
                })?;
            }
        }
        Ok(())
    })
}

fn build(config: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn StorageTarget>> {
    Ok(Arc::new(AmazonS3::new(config, ctx)?))
}

/// An S3 bucket and prefix.
#[derive(Clone)]
pub struct AmazonS3 {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Bucket,
    name: String,
    prefix: Option<String>,
    credentials: CredentialChain,
    http: reqwest::Client,
    sse_kms_key_id: Option<String>,
    retry: RetryPolicy,
    /// Bounds the requests in flight across all callers of this target.
    in_flight: InFlight,
}

impl fmt::Display for AmazonS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.prefix {
            Some(p) => write!(f, "AmazonS3({}/{p})", self.inner.name),
            None => write!(f, "AmazonS3({})", self.inner.name),
        }
    }
}

/// A failed request, before it becomes a [`StorageError`]. Never holds a URL (a
/// presigned URL carries the session token) nor a credential.
#[derive(Debug)]
enum S3Error {
    /// S3 answered with an error status.
    Status { status: StatusCode, code: String, message: String },
    /// No answer: connection refused or lost, timeout, refused address.
    Transport(String),
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Error::Status { status, code, message } if code.is_empty() => write!(f, "HTTP {status} {message}"),
            S3Error::Status { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
            S3Error::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl Transient for S3Error {
    fn is_transient(&self) -> bool {
        match self {
            S3Error::Status { status, code, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || matches!(code.as_str(), "SlowDown" | "RequestTimeout" | "InternalError" | "Throttling")
            }
            // A refused address will not become allowed by waiting.
            S3Error::Transport(e) => !e.contains("reserved network address"),
        }
    }
}

fn transport(e: reqwest::Error) -> S3Error {
    S3Error::Transport(super::request_error_text(e))
}

impl AmazonS3 {
    /// A target for the storage's bucket and prefix. Nothing is contacted yet.
    pub fn new(config: &TargetConfig, ctx: &TargetContext) -> Result<AmazonS3> {
        let name = config
            .text("bucket")
            .ok_or_else(|| StorageError::Precondition("the S3 bucket name is empty".into()))?
            .to_owned();
        let region = config.text("region_name").unwrap_or("us-east-1").to_owned();
        let ssrf_on = ctx.targets.ssrf_protection;
        let mut spec = ClientSpec {
            timeout: Some(ctx.targets.request_timeout),
            idle_per_host: Some(ctx.targets.max_in_flight),
            ..ClientSpec::new(Duration::from_secs(10))
        };
        let (endpoint, style) = match config.text("s3_endpoint") {
            Some(raw) => {
                let url = url::Url::parse(raw.trim())
                    .map_err(|_| StorageError::Precondition(ssrf::SsrfError::NotAllowed.to_string()))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(StorageError::PermissionDenied(ssrf::SsrfError::NotAllowed.to_string()));
                }
                let host = url.host_str().unwrap_or_default();
                ssrf::check_ip_literal(host, ssrf_on).map_err(|e| StorageError::PermissionDenied(e.to_string()))?;
                spec.ssrf_checked = ssrf_on;
                (url, UrlStyle::Path)
            }
            None => {
                let url = url::Url::parse(&format!("https://s3.{region}.amazonaws.com"))
                    .map_err(|_| StorageError::Precondition(format!("invalid S3 region \"{region}\"")))?;
                // Dotted names break TLS on virtual hosts; AWS still serves them path-style.
                let style = if name.contains('.') { UrlStyle::Path } else { UrlStyle::VirtualHost };
                (url, style)
            }
        };
        let bucket = Bucket::new(endpoint, style, name.clone(), region)
            .map_err(|e| StorageError::Precondition(format!("S3 bucket \"{name}\": {e}")))?;
        let http = http_clients::shared(spec)
            .map_err(|e| StorageError::Generic { target: format!("AmazonS3({name})"), source: Box::new(e) })?;
        let credentials = CredentialChain::new(
            config.text("aws_access_key_id"),
            config.text("aws_secret_access_key"),
            config.text("aws_session_token"),
            http.clone(),
        );
        Ok(AmazonS3 {
            inner: Arc::new(Inner {
                bucket,
                name,
                prefix: config.text("prefix").map(str::to_owned),
                credentials,
                http,
                sse_kms_key_id: config.text("aws_sse_kms_key_id").map(str::to_owned),
                retry: RetryPolicy { max_attempts: ctx.targets.max_attempts, base: ctx.targets.backoff },
                in_flight: InFlight::new(ctx.targets.max_in_flight),
            }),
        })
    }

    /// The object key of a document: `<prefix>/<key>`, or the bare key.
    pub fn object_key(&self, key: &str) -> String {
        keys::prefixed(self.inner.prefix.as_deref(), key)
    }

    /// The mapped, user-facing error of a failed request (contract §6.3 messages).
    fn error(&self, e: S3Error) -> StorageError {
        let bucket = &self.inner.name;
        match &e {
            S3Error::Status { status, code, .. } if *status == StatusCode::NOT_FOUND || code == "NoSuchBucket" => {
                if code == "NoSuchBucket" || code.is_empty() {
                    StorageError::NotFound(format!("Cannot find bucket {bucket} in S3"))
                } else {
                    StorageError::NotFound(format!("S3 bucket \"{bucket}\": {e}"))
                }
            }
            S3Error::Status { code, .. } if code == "InvalidAccessKeyId" => {
                StorageError::PermissionDenied("It seems access keys are incorrect".into())
            }
            S3Error::Status { status, code, .. }
                if *status == StatusCode::FORBIDDEN || code == "SignatureDoesNotMatch" =>
            {
                StorageError::PermissionDenied(format!(
                    "Cannot connect to S3 {bucket} with specified AWS credentials ({e})"
                ))
            }
            S3Error::Transport(t) if t.contains("reserved network address") => {
                StorageError::PermissionDenied(format!("S3 bucket \"{bucket}\": {t}"))
            }
            _ => StorageError::Generic { target: format!("S3 bucket \"{bucket}\""), source: e.to_string().into() },
        }
    }

    /// Sends a signed request (signed anew for every attempt), retrying transient failures.
    async fn send<F>(&self, make: F) -> std::result::Result<reqwest::Response, S3Error>
    where
        F: Fn(Option<&rusty_s3::Credentials>) -> reqwest::RequestBuilder,
    {
        let _permit = self.inner.in_flight.acquire().await;
        self.inner
            .retry
            .run(|| async {
                let creds = self.inner.credentials.get().await.map_err(S3Error::Transport)?;
                let response = make(creds.as_deref()).send().await.map_err(transport)?;
                if response.status().is_success() {
                    return Ok(response);
                }
                Err(status_error(response).await)
            })
            .await
    }

    fn put_request(&self, key: &str, body: Bytes, creds: Option<&rusty_s3::Credentials>) -> reqwest::RequestBuilder {
        let object = self.object_key(key);
        let mut action = self.inner.bucket.put_object(creds, &object);
        if let Some(kms) = &self.inner.sse_kms_key_id {
            action.headers_mut().insert("x-amz-server-side-encryption", "aws:kms");
            action.headers_mut().insert("x-amz-server-side-encryption-aws-kms-key-id", kms.clone());
        }
        let url = action.sign(SIGN_FOR);
        let mut request = self.inner.http.put(url).header("content-type", "application/json").body(body);
        if let Some(kms) = &self.inner.sse_kms_key_id {
            request = request
                .header("x-amz-server-side-encryption", "aws:kms")
                .header("x-amz-server-side-encryption-aws-kms-key-id", kms);
        }
        request
    }

    async fn delete_batch(&self, keys: &[String]) -> Vec<Result<()>> {
        let objects: Vec<ObjectIdentifier> = keys.iter().map(|k| ObjectIdentifier::new(self.object_key(k))).collect();
        let result = self
            .send(|creds| {
                let mut action = self.inner.bucket.delete_objects(creds, objects.iter());
                action.set_quiet(true);
                let url = action.sign(SIGN_FOR);
                let (body, md5) = action.body_with_md5();
                self.inner.http.post(url).header("content-md5", md5).body(body)
            })
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let message = self.error(e).to_string();
                return keys.iter().map(|_| Err(generic(&self.inner.name, &message))).collect();
            }
        };
        let text = response.text().await.unwrap_or_default();
        let failed: HashMap<String, String> = rusty_s3::actions::DeleteObjectsResponse::parse(&text)
            .map(|r| r.errors.into_iter().map(|e| (e.key, format!("{}: {}", e.code, e.message))).collect())
            .unwrap_or_default();
        keys.iter()
            .map(|k| match failed.get(&self.object_key(k)) {
                Some(why) => Err(generic(&self.inner.name, why)),
                None => Ok(()),
            })
            .collect()
    }
}

/// How long a signature stays valid; each attempt signs again.
const SIGN_FOR: Duration = Duration::from_secs(15 * 60);

fn generic(bucket: &str, message: &str) -> StorageError {
    StorageError::Generic { target: format!("S3 bucket \"{bucket}\""), source: message.to_owned().into() }
}

/// Reads S3's XML error (`<Code>`, `<Message>`) from a failed response.
async fn status_error(response: reqwest::Response) -> S3Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        body.find(&open)
            .and_then(|start| {
                let rest = &body[start + open.len()..];
                rest.find(&close).map(|end| rest[..end].to_owned())
            })
            .unwrap_or_default()
    };
    let (code, mut message) = (tag("Code"), tag("Message"));
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("").to_owned();
    }
    message.truncate(300);
    S3Error::Status { status, code, message }
}

#[async_trait::async_trait]
impl StorageTarget for AmazonS3 {
    /// With a prefix: list at most one key under it; without: HEAD the bucket.
    async fn validate(&self) -> Result<()> {
        let result = match &self.inner.prefix {
            Some(prefix) => {
                self.send(|creds| {
                    let mut action = self.inner.bucket.list_objects_v2(creds);
                    action.with_prefix(prefix.as_str());
                    action.with_max_keys(1);
                    self.inner.http.get(action.sign(SIGN_FOR))
                })
                .await
            }
            None => self.send(|creds| self.inner.http.head(self.inner.bucket.head_bucket(creds).sign(SIGN_FOR))).await,
        };
        result.map(|_| ()).map_err(|e| self.error(e))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check_key(key)?;
        self.send(|creds| self.put_request(key, body.clone(), creds)).await.map(|_| ()).map_err(|e| self.error(e))
    }

    /// Up to `max_in_flight` puts at once, bounded across callers ([`InFlight`]).
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Vec<Result<()>> {
        self.inner.in_flight.each(items, |(key, body)| async move { self.put(&key, body).await }).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let object = self.object_key(key);
        self.send(|creds| self.inner.http.delete(self.inner.bucket.delete_object(creds, &object).sign(SIGN_FOR)))
            .await
            .map(|_| ())
            .or_else(|e| match e {
                // Deleting what is not there succeeds.
                S3Error::Status { status, ref code, .. }
                    if status == StatusCode::NOT_FOUND && code != "NoSuchBucket" =>
                {
                    Ok(())
                }
                e => Err(self.error(e)),
            })
    }

    /// Batched `DeleteObjects`, 1,000 keys per request.
    async fn delete_many(&self, keys: Vec<String>) -> Vec<Result<()>> {
        let keys = SafeKeys::new(keys);
        let mut results = Vec::with_capacity(keys.safe.len());
        for chunk in keys.safe.chunks(1000) {
            results.extend(self.delete_batch(chunk).await);
        }
        keys.merge(results)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        let object = self.object_key(key);
        match self
            .send(|creds| self.inner.http.head(self.inner.bucket.head_object(creds, &object).sign(SIGN_FOR)))
            .await
        {
            // The header, not `content_length()`: a HEAD response's body is empty.
            Ok(r) => Ok(r.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())),
            Err(S3Error::Status { status, .. }) if status == StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// One LIST request per 1,000 keys under the prefix.
    async fn list_sizes(&self) -> Result<Option<HashMap<String, u64>>> {
        let list_prefix = keys::list_prefix(self.inner.prefix.as_deref());
        let mut sizes = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let response = self
                .send(|creds| {
                    let mut action = self.inner.bucket.list_objects_v2(creds);
                    if let Some(p) = &list_prefix {
                        action.with_prefix(p.as_str());
                    }
                    if let Some(t) = &token {
                        action.with_continuation_token(t.as_str());
                    }
                    action.with_max_keys(1000);
                    self.inner.http.get(action.sign(SIGN_FOR))
                })
                .await
                .map_err(|e| self.error(e))?;
            let text = response.text().await.map_err(|e| self.error(transport(e)))?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| generic(&self.inner.name, &format!("unreadable LIST response: {e}")))?;
            for object in page.contents {
                if let Some(key) = keys::listed_key(self.inner.prefix.as_deref(), &object.key) {
                    sizes.insert(key.to_owned(), object.size.unwrap_or(0));
                }
            }
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        Ok(Some(sizes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_label_studios_rule() {
        for ok in ["my-bucket", "a.b_c", "B1", "arn:aws:s3:us-east-1:123456789012:accesspoint/ap"] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in ["bad bucket!", "", "a/b", &"x".repeat(256)] {
            assert!(!valid_bucket_name(bad), "{bad}");
        }
    }

    fn target(prefix: Option<&str>) -> AmazonS3 {
        let mut config = TargetConfig::default();
        config.values.insert("bucket".into(), "b".into());
        if let Some(p) = prefix {
            config.values.insert("prefix".into(), p.into());
        }
        config.values.insert("s3_endpoint".into(), "http://127.0.0.1:9".into());
        let ctx = TargetContext {
            local_files: crate::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
            fsync: false,
            targets: crate::config::TargetSettings {
                ssrf_protection: false,
                ..crate::config::TargetSettings::from_env()
            },
        };
        AmazonS3::new(&config, &ctx).unwrap()
    }

    #[test]
    fn object_keys_use_the_prefix_verbatim_as_label_studio_does() {
        assert_eq!(target(None).object_key("11005"), "11005");
        assert_eq!(target(Some("exports")).object_key("11005"), "exports/11005");
        assert_eq!(target(Some("a/")).object_key("11005"), "a//11005");
        assert_eq!(target(Some("x")).object_key("42.json"), "x/42.json");
    }

    fn test_context(ssrf_protection: bool, max_in_flight: usize) -> TargetContext {
        TargetContext {
            local_files: crate::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
            fsync: false,
            targets: crate::config::TargetSettings {
                ssrf_protection,
                max_in_flight,
                ..crate::config::TargetSettings::from_env()
            },
        }
    }

    fn endpoint_config(bucket: &str, endpoint: &str) -> TargetConfig {
        let mut config = TargetConfig::default();
        config.values.insert("bucket".into(), bucket.into());
        config.values.insert("s3_endpoint".into(), endpoint.into());
        config
    }

    #[tokio::test]
    async fn targets_on_one_endpoint_share_their_connections() {
        // Arrange: a stand-in S3 that counts the connections it accepts.
        use axum::serve::ListenerExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let app = axum::Router::new().route("/{bucket}/{key}", axum::routing::put(|| async { "" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = listener.tap_io(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let ctx = test_context(false, 3);

        // Act: two targets (as two syncs build them), one write each, one after the other.
        for bucket in ["first", "second"] {
            let s3 = AmazonS3::new(&endpoint_config(bucket, &url), &ctx).unwrap();
            s3.put("1", Bytes::from_static(b"{}")).await.unwrap();
        }

        // Assert
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the second target opened a connection of its own");
    }

    /// A stand-in S3 that answers every PUT after `delay`, noting the most requests
    /// it held at once for keys starting with `watch`.
    async fn slow_s3(delay: Duration, watch: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let seen = peak.clone();
        let app = axum::Router::new().route(
            "/{bucket}/{key}",
            axum::routing::put(move |axum::extract::Path((_, key)): axum::extract::Path<(String, String)>| {
                let (now, peak) = (now.clone(), peak.clone());
                async move {
                    if key.starts_with(watch) {
                        peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(delay).await;
                    if key.starts_with(watch) {
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    #[tokio::test]
    async fn a_batch_that_starts_while_another_holds_every_permit_still_goes_out_concurrently() {
        // Arrange: 4 requests in flight at most; the sync engine's writers call
        // `put_many` at the same time, so the second finds no permit free.
        let (url, peak) = slow_s3(Duration::from_millis(50), "b-").await;
        let config = endpoint_config("b", &url);
        let ctx = test_context(false, 4);
        let s3 = AmazonS3::new(&config, &ctx).unwrap();
        let batch = |name: &str| (0..8).map(|i| (format!("{name}-{i}"), Bytes::from_static(b"{}"))).collect::<Vec<_>>();

        // Act
        let first = s3.put_many(batch("a"));
        let second = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            s3.put_many(batch("b")).await
        };
        let (a, b) = tokio::join!(first, second);

        // Assert
        assert!(a.iter().chain(&b).all(|r| r.is_ok()), "{a:?} {b:?}");
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!(peak > 1, "the second batch went out {peak} at a time, not up to the bound of 4");
    }

    #[test]
    fn loopback_endpoints_are_refused_when_ssrf_protection_is_on() {
        let config = endpoint_config("b", "http://127.0.0.1:9000");
        let ctx = test_context(true, 4);
        let err = AmazonS3::new(&config, &ctx).err().expect("refused");
        assert!(err.to_string().contains("reserved network address"), "{err}");
    }
}
