//! Azure Blob Storage: the `azure` type (contract §6.5).
//!
//! A thin client on `reqwest` for the Blob REST API, signed with Shared Key
//! ([`SharedKey`]), so blob names are exactly Label Studio's `<prefix>/<key>` (prefix
//! verbatim: `a/` gives `a//11005`), which path-normalising clients cannot write.
//!
//! - **Credentials**: `account_name` and `account_key` (both write-only); where empty,
//!   `AZURE_BLOB_ACCOUNT_NAME` / `AZURE_BLOB_ACCOUNT_KEY` (also with Label Studio's
//!   `LABEL_STUDIO_` / `HEARTEX_` prefixes); with either still missing, Label Studio's
//!   message. Neither ever appears in an error, a log line or [`fmt::Display`].
//! - **Endpoint**: `https://<account>.blob.core.windows.net`. For emulators,
//!   `AZURE_STORAGE_USE_EMULATOR=true` with `AZURITE_BLOB_STORAGE_URL` (default
//!   `http://127.0.0.1:10000`), `object_store`'s convention: a URL with a path is the
//!   account's blob endpoint as is (Azurite: `http://127.0.0.1:10000/devstoreaccount1`),
//!   a bare origin gets `/<account>` appended. Both variables are the operator's, so
//!   they are trusted; no request field can choose where requests go.
//! - **Writes**: `Put Blob` (block blob, overwrite, atomic), at most `max_in_flight`
//!   requests at once per target; throttling (429, 503 ServerBusy), 5xx, timeouts and
//!   connection errors are retried with backoff and jitter ([`RetryPolicy`]); anything
//!   else fails at once, naming the container and the cause.
//! - **Full syncs** compare with one `List Blobs` per 1,000 blobs
//!   ([`StorageTarget::list_sizes`]).
//! - **Deletes** (`can_delete_objects`, which Label Studio lacks on Azure) are single
//!   `Delete Blob` requests, as many in flight as writes: Blob Batch is not served by
//!   Azurite, and the bounded concurrency already keeps a large delete quick.

use super::keys::{self, check_key};
use super::retry::{RetryPolicy, Transient};
use super::spec::{no_check, DocumentStyle, FieldSpec, TargetConfig, TargetContext, TypeSpec};
use super::{InFlight, Result, StorageError, StorageTarget};
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The `azure` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "azure",
    title: "Microsoft Azure",
    model: "AzureBlobExportStorage",
    form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"container","label":"Container Name","required":true},{"type":"text","name":"prefix","label":"Container Prefix"}]},{"columnCount":2,"fields":[{"type":"password","name":"account_name","label":"Account Name","autoComplete":"off","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"account_key","label":"Account Key","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"protectedValue":true}]}]"#,
    fields: &[
        FieldSpec::text("container"),
        FieldSpec::text("prefix"),
        FieldSpec::secret("account_name"),
        FieldSpec::secret("account_key"),
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
        "container",
        "prefix",
        "regex_filter",
        "use_blob_urls",
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
    // Label Studio checks nothing before connecting, and nothing at all on PATCH/PUT
    // (contract §6.2): every check is in `build` and `validate`.
    check: no_check,
    build: Some(build),
    checks_connection: true,
    masks_validate_errors: true,
    document: DocumentStyle::Compact,
};

/// Label Studio's message when neither the fields nor the environment hold credentials.
pub const MISSING_CREDENTIALS: &str = "Azure account name and key must be set using environment variables AZURE_BLOB_ACCOUNT_NAME and AZURE_BLOB_ACCOUNT_KEY or account_name and account_key fields.";

/// The REST API version every request asks for.
pub const API_VERSION: &str = "2021-08-06";

/// The Azurite address `object_store` assumes when `AZURITE_BLOB_STORAGE_URL` is unset.
const DEFAULT_AZURITE_URL: &str = "http://127.0.0.1:10000";

fn build(config: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn StorageTarget>> {
    Ok(Arc::new(AzureBlob::new(config, ctx)?))
}

// ---------------------------------------------------------------------------------
// Shared Key authorization
// ---------------------------------------------------------------------------------

/// A storage account's name and key, signing requests with Shared Key
/// (<https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>).
/// `Debug` shows neither.
#[derive(Clone)]
pub struct SharedKey {
    account: String,
    key: Vec<u8>,
}

impl fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

impl SharedKey {
    /// From the account name and its base64 key; `None` if the key is not base64.
    pub fn new(account: &str, key: &str) -> Option<SharedKey> {
        let key = base64::engine::general_purpose::STANDARD.decode(key.trim()).ok().filter(|k| !k.is_empty())?;
        Some(SharedKey { account: account.to_owned(), key })
    }

    /// Adds `x-ms-date` (now), `x-ms-version` (unless set) and the `Authorization`
    /// header to a request whose URL, headers and `Content-Length` are final.
    pub fn sign(&self, request: &mut reqwest::Request) {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let headers = request.headers_mut();
        headers.insert("x-ms-date", HeaderValue::from_str(&date).expect("an HTTP date is a valid header"));
        headers.entry("x-ms-version").or_insert(HeaderValue::from_static(API_VERSION));
        let text = string_to_sign(request.method(), request.headers(), request.url(), &self.account);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(text.as_bytes());
        let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut value = HeaderValue::from_str(&format!("SharedKey {}:{signature}", self.account))
            .expect("account names are checked to be alphanumeric");
        value.set_sensitive(true);
        request.headers_mut().insert(reqwest::header::AUTHORIZATION, value);
    }
}

/// The Shared Key string-to-sign (version 2009-09-19 and later): verb, the standard
/// headers, the `x-ms-` headers, and `/<account><path>` with the query parameters.
fn string_to_sign(method: &Method, headers: &HeaderMap, url: &url::Url, account: &str) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_owned();
    let mut content_length = header("content-length");
    if content_length == "0" {
        // Since 2015-02-21 a zero length signs as empty.
        content_length.clear();
    }
    let mut out = String::with_capacity(256);
    out.push_str(method.as_str());
    out.push('\n');
    for part in [
        header("content-encoding"),
        header("content-language"),
        content_length,
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    ] {
        out.push_str(&part);
        out.push('\n');
    }
    let mut ms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-ms-") {
            ms.entry(name.as_str().to_owned()).or_default().push(value.to_str().unwrap_or("").trim().to_owned());
        }
    }
    for (name, values) in ms {
        out.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    out.push('/');
    out.push_str(account);
    out.push_str(url.path());
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        query.entry(name.to_lowercase()).or_default().push(value.into_owned());
    }
    for (name, mut values) in query {
        values.sort();
        out.push_str(&format!("\n{name}:{}", values.join(",")));
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters, and `/` when `keep_slash`.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (List Blobs' `Encoded="true"` names).
fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------
// The target
// ---------------------------------------------------------------------------------

/// An Azure Blob container and prefix.
#[derive(Clone)]
pub struct AzureBlob {
    inner: Arc<Inner>,
}

struct Inner {
    /// The account's blob endpoint, without a trailing slash.
    endpoint: String,
    container: String,
    prefix: Option<String>,
    key: SharedKey,
    http: reqwest::Client,
    /// Time limit of one request.
    timeout: Duration,
    retry: RetryPolicy,
    in_flight: InFlight,
}

impl fmt::Display for AzureBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The account name is write-only: the container names the target.
        match &self.inner.prefix {
            Some(p) => write!(f, "AzureBlob({}/{p})", self.inner.container),
            None => write!(f, "AzureBlob({})", self.inner.container),
        }
    }
}

/// A failed request, before it becomes a [`StorageError`]. Holds neither a URL (its
/// host names the account) nor a credential.
#[derive(Debug)]
enum AzError {
    /// Azure answered with an error status.
    Status { status: StatusCode, code: String, message: String },
    /// No answer: connection refused or lost, timeout.
    Transport(String),
    /// The request could not be formed; retrying cannot help.
    Invalid(String),
}

impl fmt::Display for AzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzError::Status { status, code, message } if code.is_empty() => write!(f, "HTTP {status} {message}"),
            AzError::Status { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
            AzError::Transport(e) | AzError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl Transient for AzError {
    fn is_transient(&self) -> bool {
        match self {
            AzError::Status { status, code, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || matches!(code.as_str(), "ServerBusy" | "OperationTimedOut" | "InternalError")
            }
            AzError::Transport(_) => true,
            AzError::Invalid(_) => false,
        }
    }
}

fn transport(e: reqwest::Error) -> AzError {
    AzError::Transport(super::request_error_text(e))
}

/// Reads Azure's error code (`x-ms-error-code`, or `<Code>` in the XML body) and the
/// first line of its `<Message>`. `AuthenticationErrorDetail` is never read: it quotes
/// the string-to-sign, which names the account.
async fn status_error(response: reqwest::Response) -> AzError {
    let status = response.status();
    let header_code = response.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).map(str::to_owned);
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
    let code = header_code.unwrap_or_else(|| tag("Code"));
    let mut message = tag("Message").lines().next().unwrap_or("").trim().to_owned();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("").to_owned();
    }
    message.truncate(300);
    AzError::Status { status, code, message }
}

/// Azure's rule for account names, which become host names: 3 to 24 lowercase
/// letters and digits.
fn valid_account_name(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The account's blob endpoint: Azure's, or the emulator's when the operator says so.
fn endpoint(account: &str) -> std::result::Result<String, String> {
    endpoint_from(
        account,
        std::env::var("AZURE_STORAGE_USE_EMULATOR").ok(),
        std::env::var("AZURITE_BLOB_STORAGE_URL").ok(),
    )
}

/// [`endpoint`] from the values of `AZURE_STORAGE_USE_EMULATOR` and `AZURITE_BLOB_STORAGE_URL`.
fn endpoint_from(
    account: &str,
    use_emulator: Option<String>,
    emulator_url: Option<String>,
) -> std::result::Result<String, String> {
    if !crate::config::env_flag(use_emulator, false) {
        return Ok(format!("https://{account}.blob.core.windows.net"));
    }
    let raw = emulator_url.filter(|v| !v.trim().is_empty()).unwrap_or_else(|| DEFAULT_AZURITE_URL.to_owned());
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("AZURITE_BLOB_STORAGE_URL is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err("AZURITE_BLOB_STORAGE_URL must be an http(s) URL without a query".into());
    }
    let base = url.as_str().trim_end_matches('/').to_owned();
    if url.path().trim_matches('/').is_empty() {
        Ok(format!("{base}/{account}"))
    } else {
        Ok(base)
    }
}

/// One HTTP client for every Azure target of the process, so connections (and TLS
/// sessions) to an account are reused across syncs and auto-exports instead of being
/// set up per target; each request carries the configured time limit.
fn shared_client() -> std::result::Result<reqwest::Client, reqwest::Error> {
    super::http_clients::shared(super::http_clients::ClientSpec::new(Duration::from_secs(10)))
}

/// A non-empty value from the storage's fields, else from Label Studio's environment.
fn field_or_env(config: &TargetConfig, field: &str, env: &str) -> Option<String> {
    config
        .text(field)
        .map(str::to_owned)
        .or_else(|| crate::config::ls_env(env).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
}

impl AzureBlob {
    /// A target for the storage's container and prefix. Nothing is contacted yet.
    pub fn new(config: &TargetConfig, ctx: &TargetContext) -> Result<AzureBlob> {
        let account = field_or_env(config, "account_name", "AZURE_BLOB_ACCOUNT_NAME");
        let key = field_or_env(config, "account_key", "AZURE_BLOB_ACCOUNT_KEY");
        let (Some(account), Some(key)) = (account, key) else {
            return Err(StorageError::Precondition(MISSING_CREDENTIALS.into()));
        };
        // Account names are lowercase; host names and the user's typing are not.
        let account = account.trim().to_ascii_lowercase();
        if !valid_account_name(&account) {
            return Err(StorageError::Precondition(
                "The Azure account name is not valid: storage account names are 3 to 24 lowercase letters and digits."
                    .into(),
            ));
        }
        let key = SharedKey::new(&account, &key).ok_or_else(|| {
            StorageError::Precondition(
                "The Azure account key is not valid: it must be the base64 key of the account.".into(),
            )
        })?;
        // Label Studio asks for the container named `str(self.container)`.
        let container = config.text("container").unwrap_or("None").to_owned();
        let prefix = config.text("prefix").map(str::to_owned);
        if let Some(p) = &prefix {
            // `.` and `..` segments would be resolved away by URL parsing (or by Azure)
            // and could reach another container; `\` is `/` to Azure.
            if p.split(['/', '\\']).any(|s| s == "." || s == "..") {
                return Err(StorageError::Precondition(format!(
                    "Azure container \"{container}\": the prefix must not contain \".\" or \"..\" segments"
                )));
            }
        }
        let endpoint = endpoint(&account).map_err(StorageError::Precondition)?;
        let http = shared_client()
            .map_err(|e| StorageError::Generic { target: format!("AzureBlob({container})"), source: Box::new(e) })?;
        Ok(AzureBlob {
            inner: Arc::new(Inner {
                endpoint,
                container,
                prefix,
                key,
                http,
                timeout: ctx.targets.request_timeout,
                retry: RetryPolicy { max_attempts: ctx.targets.max_attempts, base: ctx.targets.backoff },
                in_flight: InFlight::new(ctx.targets.max_in_flight),
            }),
        })
    }

    /// The blob name of a document: `<prefix>/<key>`, or the bare key.
    pub fn object_key(&self, key: &str) -> String {
        keys::prefixed(self.inner.prefix.as_deref(), key)
    }

    fn container_url(&self) -> String {
        format!("{}/{}", self.inner.endpoint, encode(&self.inner.container, false))
    }

    fn blob_url(&self, blob: &str) -> String {
        format!("{}/{}", self.container_url(), encode(blob, true))
    }

    /// Removes the account name from a text meant for users and logs.
    fn redact(&self, text: &str) -> String {
        text.replace(self.inner.key.account.as_str(), "<account>")
    }

    fn redact_error(&self, e: AzError) -> AzError {
        match e {
            AzError::Status { status, code, message } => {
                AzError::Status { status, code, message: self.redact(&message) }
            }
            AzError::Transport(t) => AzError::Transport(self.redact(&t)),
            AzError::Invalid(t) => AzError::Invalid(self.redact(&t)),
        }
    }

    /// The mapped, user-facing error of a failed request.
    fn error(&self, e: AzError) -> StorageError {
        let container = &self.inner.container;
        let text = self.redact(&e.to_string());
        match &e {
            AzError::Status { status, code, .. }
                if code == "ContainerNotFound" || (*status == StatusCode::NOT_FOUND && code.is_empty()) =>
            {
                StorageError::NotFound(format!("Container not found: {container}"))
            }
            AzError::Status { status, .. } if *status == StatusCode::NOT_FOUND => {
                StorageError::NotFound(format!("Azure container \"{container}\": {text}"))
            }
            AzError::Status { status, code, .. } if *status == StatusCode::FORBIDDEN => {
                let code = if code.is_empty() { "HTTP 403" } else { code.as_str() };
                StorageError::PermissionDenied(format!(
                    "Cannot access Azure container \"{container}\" with the given account name and key ({code})"
                ))
            }
            AzError::Status { status, .. } if status.is_client_error() && !e.is_transient() => {
                StorageError::Precondition(format!("Azure container \"{container}\": {text}"))
            }
            AzError::Invalid(_) => StorageError::Precondition(format!("Azure container \"{container}\": {text}")),
            _ => StorageError::Generic { target: format!("Azure container \"{container}\""), source: text.into() },
        }
    }

    /// Sends a request (signed anew for every attempt), retrying transient failures.
    async fn send<F>(&self, make: F) -> std::result::Result<reqwest::Response, AzError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let _permit = self.inner.in_flight.acquire().await;
        self.inner
            .retry
            .run(|| async {
                let mut request = make()
                    .timeout(self.inner.timeout)
                    .build()
                    .map_err(|e| AzError::Invalid(e.without_url().to_string()))?;
                self.inner.key.sign(&mut request);
                // Redacted before the retry loop logs them.
                let response = self.inner.http.execute(request).await.map_err(|e| self.redact_error(transport(e)))?;
                if response.status().is_success() {
                    return Ok(response);
                }
                Err(self.redact_error(status_error(response).await))
            })
            .await
    }

    /// One page of `List Blobs` under the prefix.
    async fn list_page(&self, prefix: Option<&str>, marker: Option<&str>) -> Result<ListPage> {
        let mut url = format!("{}?restype=container&comp=list&maxresults=1000", self.container_url());
        if let Some(p) = prefix {
            url.push_str(&format!("&prefix={}", encode(p, false)));
        }
        if let Some(m) = marker {
            url.push_str(&format!("&marker={}", encode(m, false)));
        }
        let response = self.send(|| self.inner.http.get(&url)).await.map_err(|e| self.error(e))?;
        let text = response.text().await.map_err(|e| self.error(transport(e)))?;
        parse_list(&text).map_err(|e| StorageError::Generic {
            target: format!("Azure container \"{}\"", self.inner.container),
            source: format!("unreadable List Blobs response: {e}").into(),
        })
    }
}

/// One page of a `List Blobs` answer.
#[derive(Debug, Default, PartialEq)]
struct ListPage {
    blobs: Vec<(String, u64)>,
    next_marker: Option<String>,
}

/// Reads `EnumerationResults`: each `Blob`'s `Name` (percent-decoded where
/// `Encoded="true"`) and `Properties/Content-Length`, and `NextMarker`.
fn parse_list(xml: &str) -> std::result::Result<ListPage, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut page = ListPage::default();
    let (mut name, mut size, mut encoded, mut text) = (None::<String>, 0u64, false, String::new());
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let tag = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if tag == "Name" {
                    encoded = e
                        .try_get_attribute("Encoded")
                        .ok()
                        .flatten()
                        .is_some_and(|a| a.value.as_ref().eq_ignore_ascii_case(b"true"));
                }
                if tag == "Blob" {
                    (name, size) = (None, 0);
                }
                path.push(tag);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.unescape().map_err(|e| e.to_string())?),
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::End(_) => {
                let at = |tail: &[&str]| path.len() >= tail.len() && path[path.len() - tail.len()..] == *tail;
                if at(&["Blob", "Name"]) {
                    name = Some(if encoded { decode(&text) } else { text.clone() });
                } else if at(&["Blob", "Properties", "Content-Length"]) {
                    size = text.trim().parse().map_err(|_| format!("bad Content-Length {text:?}"))?;
                } else if at(&["EnumerationResults", "NextMarker"]) && !text.is_empty() {
                    page.next_marker = Some(text.clone());
                } else if at(&["Blobs", "Blob"]) {
                    if let Some(n) = name.take() {
                        page.blobs.push((n, size));
                    }
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(page)
}

#[async_trait::async_trait]
impl StorageTarget for AzureBlob {
    /// Get Container Properties, as Label Studio does (the prefix is not checked).
    async fn validate(&self) -> Result<()> {
        let url = format!("{}?restype=container", self.container_url());
        self.send(|| self.inner.http.head(&url)).await.map(|_| ()).map_err(|e| self.error(e))
    }

    /// Put Blob: a block blob replaced whole, `Content-Type: application/json`.
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check_key(key)?;
        let url = self.blob_url(&self.object_key(key));
        self.send(|| {
            self.inner
                .http
                .put(&url)
                .header("x-ms-blob-type", "BlockBlob")
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, body.len())
                .body(body.clone())
        })
        .await
        .map(|_| ())
        .map_err(|e| self.error(e))
    }

    /// Up to `max_in_flight` puts at once (the semaphore bounds them across callers).
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Vec<Result<()>> {
        self.inner.in_flight.each(items, |(key, body)| async move { self.put(&key, body).await }).await
    }

    /// Delete Blob with its snapshots; a missing blob is not an error.
    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        let url = self.blob_url(&self.object_key(key));
        self.send(|| self.inner.http.delete(&url).header("x-ms-delete-snapshots", "include")).await.map(|_| ()).or_else(
            |e| match e {
                AzError::Status { status, ref code, .. }
                    if status == StatusCode::NOT_FOUND && code == "BlobNotFound" =>
                {
                    Ok(())
                }
                e => Err(self.error(e)),
            },
        )
    }

    /// Up to `max_in_flight` deletes at once (see the module header on Blob Batch).
    async fn delete_many(&self, keys: Vec<String>) -> Vec<Result<()>> {
        self.inner.in_flight.each(keys, |key| async move { self.delete(&key).await }).await
    }

    /// Get Blob Properties: `Content-Length`, or `None` for a missing blob.
    async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        let url = self.blob_url(&self.object_key(key));
        match self.send(|| self.inner.http.head(&url)).await {
            Ok(r) => Ok(r.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())),
            // A HEAD answer has no body: a missing container shows in x-ms-error-code.
            Err(AzError::Status { status, ref code, .. })
                if status == StatusCode::NOT_FOUND && code != "ContainerNotFound" =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Sizes asked concurrently, as writes are.
    async fn sizes(&self, keys: Vec<String>) -> Vec<Result<Option<u64>>> {
        self.inner.in_flight.each(keys, |key| async move { self.size(&key).await }).await
    }

    /// One List Blobs request per 1,000 blobs under the prefix.
    async fn list_sizes(&self) -> Result<Option<HashMap<String, u64>>> {
        let list_prefix = keys::list_prefix(self.inner.prefix.as_deref());
        let mut sizes = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self.list_page(list_prefix.as_deref(), marker.as_deref()).await?;
            for (name, size) in page.blobs {
                if let Some(key) = keys::listed_key(self.inner.prefix.as_deref(), &name) {
                    sizes.insert(key.to_owned(), size);
                }
            }
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        Ok(Some(sizes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TargetContext {
        TargetContext {
            local_files: crate::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
            fsync: false,
            targets: crate::config::TargetSettings::from_env(),
        }
    }

    fn config(prefix: Option<&str>) -> TargetConfig {
        let mut config = TargetConfig::default();
        config.values.insert("container".into(), "c".into());
        if let Some(p) = prefix {
            config.values.insert("prefix".into(), p.into());
        }
        config.secrets.insert("account_name".into(), "acct".into());
        config.secrets.insert("account_key".into(), "a2V5".into());
        config
    }

    #[test]
    fn object_keys_use_the_prefix_verbatim_as_label_studio_does() {
        let t = |p| AzureBlob::new(&config(p), &ctx()).unwrap();
        assert_eq!(t(None).object_key("11005"), "11005");
        assert_eq!(t(Some("exports")).object_key("11005"), "exports/11005");
        assert_eq!(t(Some("a/")).object_key("11005"), "a//11005");
        assert_eq!(t(Some("x")).object_key("42.json"), "x/42.json");
    }

    #[test]
    fn blob_urls_keep_slashes_and_encode_everything_else() {
        let t = AzureBlob::new(&config(Some("a/ b+c%")), &ctx()).unwrap();
        let url = t.blob_url(&t.object_key("7"));
        assert!(url.ends_with("/c/a/%20b%2Bc%25/7"), "{url}");
        let parsed =
            url::Url::parse(&t.blob_url(&AzureBlob::new(&config(Some("a/")), &ctx()).unwrap().object_key("7")))
                .unwrap();
        assert!(parsed.path().ends_with("/c/a//7"), "empty segments survive URL parsing: {parsed}");
    }

    #[test]
    fn dot_segments_in_the_prefix_are_refused() {
        for bad in ["..", "../other", "a/./b", "a\\..\\b"] {
            let err = AzureBlob::new(&config(Some(bad)), &ctx()).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.to_string().contains("segments"), "{err}");
        }
        for ok in ["a..b", ".x", "a/", "/a"] {
            assert!(AzureBlob::new(&config(Some(ok)), &ctx()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn missing_credentials_give_label_studios_message_and_bad_ones_never_echo() {
        let mut c = config(None);
        c.secrets.remove("account_key");
        if std::env::var("AZURE_BLOB_ACCOUNT_KEY").is_err() {
            assert_eq!(AzureBlob::new(&c, &ctx()).err().unwrap().to_string(), MISSING_CREDENTIALS);
        }
        let mut c = config(None);
        c.secrets.insert("account_name".into(), "Bad.Host/x".into());
        let err = AzureBlob::new(&c, &ctx()).err().unwrap().to_string();
        assert!(!err.contains("Bad.Host"), "{err}");
        let mut c = config(None);
        c.secrets.insert("account_name".into(), "MyAcct1".into());
        let t = AzureBlob::new(&c, &ctx()).unwrap();
        assert_eq!(t.inner.key.account, "myacct1", "account names are lowercase");
        let mut c = config(None);
        c.secrets.insert("account_key".into(), "not base64!!".into());
        let err = AzureBlob::new(&c, &ctx()).err().unwrap().to_string();
        assert!(!err.contains("not base64!!"), "{err}");
    }

    #[test]
    fn the_string_to_sign_follows_the_shared_key_rules() {
        // Arrange
        let url = url::Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/c?restype=container&comp=list&prefix=a%2F&marker=",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        headers.insert("x-ms-date", HeaderValue::from_static("Mon, 30 Nov 2026 10:00:00 GMT"));
        headers.insert("content-length", HeaderValue::from_static("0"));

        // Act
        let text = string_to_sign(&Method::GET, &headers, &url, "devstoreaccount1");

        // Assert
        assert_eq!(
            text,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 30 Nov 2026 10:00:00 GMT\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/c\ncomp:list\nmarker:\nprefix:a/\nrestype:container"
        );
    }

    #[test]
    fn signing_matches_a_known_signature() {
        // The HMAC-SHA256 of the string-to-sign with the key, base64: the value Azure's
        // SDKs compute (RFC 4231 test case 2: key "Jefe").
        let key = SharedKey::new("acct", &base64::engine::general_purpose::STANDARD.encode("Jefe")).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.key).unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(format!("{key:?}"), "SharedKey(..)");
    }

    #[test]
    fn list_blobs_answers_are_read_with_sizes_and_markers() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Prefix>p/</Prefix><MaxResults>1000</MaxResults><Blobs><Blob><Name>p/1</Name><Properties><Creation-Time>x</Creation-Time><Content-Length>15</Content-Length><Content-Type>application/json</Content-Type></Properties></Blob><Blob><Name Encoded="true">p/%E2%9C%93</Name><Properties><Content-Length>3</Content-Length></Properties></Blob><Blob><Name>p/a&amp;b</Name><Properties><Content-Length>0</Content-Length></Properties></Blob></Blobs><NextMarker>2!abc</NextMarker></EnumerationResults>"#;
        let page = parse_list(xml).unwrap();
        assert_eq!(page.blobs, vec![("p/1".to_owned(), 15), ("p/\u{2713}".to_owned(), 3), ("p/a&b".to_owned(), 0)]);
        assert_eq!(page.next_marker.as_deref(), Some("2!abc"));
        let last = parse_list("<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>").unwrap();
        assert_eq!(last, ListPage::default());
    }

    #[test]
    fn the_emulator_endpoint_gets_the_account_only_when_it_has_no_path() {
        let on = || Some("true".to_owned());
        let url = |u: &str| Some(u.to_owned());
        assert_eq!(
            endpoint_from("acct", None, url("http://127.0.0.1:9")).unwrap(),
            "https://acct.blob.core.windows.net"
        );
        assert_eq!(endpoint_from("acct", Some("false".into()), None).unwrap(), "https://acct.blob.core.windows.net");
        assert_eq!(
            endpoint_from("devstoreaccount1", on(), url("http://127.0.0.1:10000/")).unwrap(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            endpoint_from("devstoreaccount1", on(), url("http://127.0.0.1:9/devstoreaccount1/")).unwrap(),
            "http://127.0.0.1:9/devstoreaccount1"
        );
        assert_eq!(endpoint_from("devstoreaccount1", on(), None).unwrap(), "http://127.0.0.1:10000/devstoreaccount1");
        assert!(endpoint_from("a", on(), url("ftp://x")).is_err());
    }
}
