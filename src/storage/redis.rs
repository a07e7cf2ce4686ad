//! Redis (`redis`, contract §6.6): each document is one string value, `SET <key>
//! <document>`, in the storage's database `db`.
//!
//! - **Keys** are the bare keys the engine gives (`11005`, or `42.json` in task mode).
//!   `path` is kept and echoed but, as in Label Studio, is not a key prefix.
//! - **Connection**: `host` (default `localhost`), `port` (a string, default 6379),
//!   `password` (write-only), `db` (required and non-zero, Label Studio's rule). One
//!   multiplexed [`ConnectionManager`] per target, which reconnects by itself.
//! - **SSRF**: with protection on, `host` is resolved and checked by [`ssrf::resolve`]
//!   *when connecting*, and the connection is made to the checked address, never to
//!   the name: a name that resolves to 127.0.0.1 today is refused today. Reconnects
//!   after a lost connection go to the same checked address.
//! - **Writes** go out as pipelines of up to [`PIPELINE_ITEMS`] `SET`s, at most
//!   `max_in_flight` pipelines at once per target; connection errors, `LOADING`,
//!   `TRYAGAIN` and the like are retried with backoff and jitter ([`RetryPolicy`]).
//!   Every command is idempotent, so a pipeline cut by a lost connection is simply
//!   sent again. Deletions are batched `DEL`s.
//! - **Full syncs**: Redis cannot list only our keys in a database it may share with
//!   anything else (`SCAN` walks the whole keyspace), so [`StorageTarget::list_sizes`]
//!   answers `None` and the engine asks [`StorageTarget::sizes`] for each page instead,
//!   which costs one pipelined round trip of `STRLEN`s per page (and `EXISTS` for the
//!   keys that answered 0), not one per key.

use super::keys::check_key;
use super::retry::{RetryPolicy, Transient};
use super::spec::{ConfigError, DocumentStyle, FieldKind, FieldSpec, TargetConfig, TargetContext, TypeSpec};
use super::ssrf::{self, SsrfError};
use super::{InFlight, Result, StorageError, StorageTarget};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, RedisError, ServerErrorKind, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The `redis` type.
pub const SPEC: TypeSpec = TypeSpec {
    name: "redis",
    title: "Redis",
    model: "RedisExportStorage",
    form: r#"[{"columnCount":2,"fields":[{"type":"text","name":"db","label":"Database Number (db)","placeholder":1},{"type":"text","name":"path","label":"Path"},{"type":"password","name":"password","label":"Password","autoComplete":"new-password"},{"type":"text","name":"host","label":"Host","placeholder":"localhost"},{"type":"text","name":"port","label":"Port"}]}]"#,
    fields: &[
        FieldSpec::text("path"),
        FieldSpec::text("host"),
        FieldSpec::text("port"),
        FieldSpec::secret("password"),
        FieldSpec { name: "db", secret: false, kind: FieldKind::SmallInt { default: 2 } },
    ],
    response: &[
        "id",
        "type",
        "synchronizable",
        "path",
        "host",
        "port",
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
        "db",
        "project",
    ],
    check: check_config,
    build: Some(build),
    checks_connection: true,
    masks_validate_errors: true,
    document: DocumentStyle::Compact,
};

/// Label Studio's refusal of `db` 0 or null (contract §6.6), verbatim.
pub const DB_REQUIRED: &str =
    "Please explicitly pass a redis db id to prevent accidentally overwriting existing database!";

/// Commands per pipeline: large enough that a page of 1,000 documents is two round
/// trips, small enough that one pipeline does not hold the server for long.
pub const PIPELINE_ITEMS: usize = 500;

/// A pipeline is also cut when its documents reach this many bytes.
const PIPELINE_BYTES: usize = 8 * 1024 * 1024;

/// redis-server's default port, as redis-py uses when `port` is empty.
const DEFAULT_PORT: u16 = 6379;

/// Attempts of a connection check (create, validate): a person is waiting.
const VALIDATE_ATTEMPTS: u32 = 3;

fn check_config<'a>(config: &'a TargetConfig, _: &'a TargetContext) -> BoxFuture<'a, Result<(), ConfigError>> {
    Box::pin(async move {
        match config.int("db") {
            None | Some(0) => Err(ConfigError::NonField(DB_REQUIRED.into())),
            Some(_) => Ok(()),
        }
    })
}

fn build(config: &TargetConfig, ctx: &TargetContext) -> Result<Arc<dyn StorageTarget>> {
    Ok(Arc::new(Redis::new(config, ctx)?))
}

/// One Redis database.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    port: u16,
    db: i64,
    password: Option<String>,
    ssrf_protection: bool,
    retry: RetryPolicy,
    request_timeout: Duration,
    /// Bounds the pipelines in flight across every caller of this target.
    in_flight: InFlight,
    /// Made on first use, to an address checked by [`ssrf::resolve`].
    connection: Mutex<Option<ConnectionManager>>,
    /// The server's `run_id` when this target first connected (see `change_token`).
    first_run_id: std::sync::Mutex<Option<String>>,
}

impl fmt::Display for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis({})", self.location())
    }
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redis({})", self.location())
    }
}

/// A failed exchange, before it becomes a [`StorageError`].
#[derive(Debug)]
enum Failure {
    /// The host is refused (reserved address) or does not resolve.
    Ssrf(SsrfError),
    /// The client or the server failed.
    Redis(RedisError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Ssrf(e) => write!(f, "{e}"),
            Failure::Redis(e) => write!(f, "{e}"),
        }
    }
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Failure {
        Failure::Redis(e)
    }
}

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        match self {
            // A refused address will not become allowed by waiting; DNS may come back.
            Failure::Ssrf(e) => matches!(e, SsrfError::Unresolvable(_)),
            Failure::Redis(e) => is_transient(e),
        }
    }
}

/// Lost or refused connections, timeouts, and the server's "not now" answers.
fn is_transient(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown,
        )
        | ErrorKind::Parse => true,
        _ => matches!(e.code(), Some("BUSY" | "LOADING" | "TRYAGAIN" | "MASTERDOWN")),
    }
}

/// A missing or wrong password, or an ACL refusal. Without a password, the first
/// command of the handshake (`SELECT db`) is the one refused, as a plain error.
fn is_auth_error(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
        || e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || e.detail().is_some_and(|d| d.contains("Authentication required") || d.starts_with("NOAUTH"))
}

impl Redis {
    /// A target for the storage's host, port and database. Nothing is contacted yet.
    pub fn new(config: &TargetConfig, ctx: &TargetContext) -> Result<Redis> {
        let host = config
            .text("host")
            .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost")
            .to_owned();
        let port =
            match config.text("port").map(str::trim).filter(|p| !p.is_empty()) {
                None => DEFAULT_PORT,
                Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                    StorageError::Precondition(format!("Redis port \"{p}\" is not a valid port number"))
                })?,
            };
        let db = match config.int("db") {
            None | Some(0) => return Err(StorageError::Precondition(DB_REQUIRED.into())),
            Some(db) => db,
        };
        Ok(Redis {
            inner: Arc::new(Inner {
                host,
                port,
                db,
                password: config.text("password").map(str::to_owned),
                ssrf_protection: ctx.targets.ssrf_protection,
                retry: RetryPolicy { max_attempts: ctx.targets.max_attempts, base: ctx.targets.backoff },
                request_timeout: ctx.targets.request_timeout,
                in_flight: InFlight::new(ctx.targets.max_in_flight),
                connection: Mutex::new(None),
                first_run_id: std::sync::Mutex::new(None),
            }),
        })
    }

    /// `host:port/db`, as logs and messages name the target.
    fn location(&self) -> String {
        let i = &self.inner;
        if i.host.contains(':') {
            format!("[{}]:{}/{}", i.host, i.port, i.db)
        } else {
            format!("{}:{}/{}", i.host, i.port, i.db)
        }
    }

    /// The shared connection, made on first use (and after a failed first attempt)
    /// to the first checked address that answers.
    async fn connection(&self) -> std::result::Result<ConnectionManager, Failure> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let i = &self.inner;
        let addresses = ssrf::resolve(&i.host, i.port, i.ssrf_protection).await.map_err(Failure::Ssrf)?;
        let mut settings = RedisConnectionInfo::default().set_db(i.db);
        if let Some(password) = &i.password {
            settings = settings.set_password(password);
        }
        // Retries are ours (RetryPolicy): the manager makes one attempt per reconnect,
        // and the next command after a failed one triggers the next reconnect.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(Duration::from_secs(10).min(i.request_timeout)))
            .set_response_timeout(Some(i.request_timeout));
        let mut last = None;
        for address in addresses {
            // The checked IP, never the name: nothing resolves it again.
            let info = ConnectionAddr::Tcp(address.ip().to_string(), address.port())
                .into_connection_info()?
                .set_redis_settings(settings.clone());
            let client = redis::Client::open(info)?;
            match ConnectionManager::new_with_config(client, config.clone()).await {
                Ok(mut manager) => {
                    let run_id = server_state(&mut manager).await.ok().map(|(run_id, _)| run_id);
                    *self.inner.first_run_id.lock().expect("never poisoned") = run_id;
                    *slot = Some(manager.clone());
                    return Ok(manager);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::Redis(last.expect("resolve returns at least one address")))
    }

    /// Runs `op` on the connection, retrying transient failures with `policy`.
    async fn run<T, F, Fut>(&self, policy: RetryPolicy, op: F) -> std::result::Result<T, Failure>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        policy
            .run(|| async {
                let connection = self.connection().await?;
                op(connection).await
            })
            .await
    }

    /// The mapped, user-facing error: names the host, never the password.
    fn error(&self, e: Failure) -> StorageError {
        let location = self.location();
        match e {
            // Label Studio's SSRF message, verbatim (contract §6.6).
            Failure::Ssrf(e @ SsrfError::Reserved(_)) => StorageError::PermissionDenied(e.to_string()),
            Failure::Ssrf(e) => StorageError::NotFound(e.to_string()),
            Failure::Redis(e) => {
                let text = self.scrub(&e.to_string());
                if is_auth_error(&e) {
                    StorageError::PermissionDenied(format!("Cannot authenticate to Redis {location}: {text}"))
                } else if text.contains("refused to switch database") {
                    StorageError::Precondition(format!(
                        "Cannot select database {} on Redis {location}: {text}",
                        self.inner.db
                    ))
                } else if e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) {
                    StorageError::Precondition(format!("Redis {location} is a read-only replica: {text}"))
                } else {
                    StorageError::Generic { target: format!("Redis {location}"), source: text.into() }
                }
            }
        }
    }

    /// Removes the password from a message, should a server ever echo it.
    fn scrub(&self, text: &str) -> String {
        match &self.inner.password {
            Some(p) if text.contains(p.as_str()) => text.replace(p.as_str(), "********"),
            _ => text.to_owned(),
        }
    }

    /// One pipeline of `SET`s; per-item results, in order.
    async fn set_batch(&self, items: &[(String, Bytes)]) -> Vec<Result<()>> {
        let _permit = self.inner.in_flight.acquire().await;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (key, body) in items {
            pipe.cmd("SET").arg(key.as_str()).arg(body.as_ref());
        }
        let outcome = self
            .run(self.inner.retry, |mut connection| {
                let pipe = &pipe;
                async move {
                    let results: Vec<redis::RedisResult<Value>> = pipe.query_async(&mut connection).await?;
                    // Idempotent: the whole pipeline goes again if any item may succeed later.
                    if let Some(Err(e)) = results.iter().find(|r| matches!(r, Err(e) if is_transient(e))) {
                        return Err(Failure::Redis(e.clone()));
                    }
                    Ok(results)
                }
            })
            .await;
        match outcome {
            Ok(results) => {
                results.into_iter().map(|r| r.map(|_| ()).map_err(|e| self.error(Failure::Redis(e)))).collect()
            }
            Err(e) => {
                let e = self.error(e);
                items.iter().map(|_| Err(same_error(&e))).collect()
            }
        }
    }

    /// One `DEL` of many keys.
    async fn delete_batch(&self, keys: &[String]) -> Result<()> {
        let _permit = self.inner.in_flight.acquire().await;
        let mut del = redis::cmd("DEL");
        for key in keys {
            del.arg(key.as_str());
        }
        self.run(self.inner.retry, |mut connection| {
            let del = &del;
            async move { Ok(del.query_async::<i64>(&mut connection).await?) }
        })
        .await
        .map(|_| ())
        .map_err(|e| self.error(e))
    }

    /// One pipeline of `STRLEN`s, then `EXISTS` only for the keys that answered 0 (a
    /// missing key and an empty value both have length 0): one command per key where
    /// documents are in place, instead of two for every key.
    async fn size_batch(&self, keys: &[String]) -> Vec<Result<Option<u64>>> {
        let lengths = self.pipelined(keys.iter(), "STRLEN").await;
        let zero: Vec<&String> =
            keys.iter().zip(&lengths).filter(|(_, len)| matches!(len, Ok(0))).map(|(key, _)| key).collect();
        let mut exists = self.pipelined(zero.into_iter(), "EXISTS").await.into_iter();
        lengths
            .into_iter()
            .map(|len| match len {
                Ok(0) => match exists.next() {
                    Some(Ok(0)) => Ok(None),
                    Some(Ok(_)) => Ok(Some(0)),
                    Some(Err(e)) => Err(e),
                    None => unreachable!("one EXISTS answer per zero length"),
                },
                other => other.map(Some),
            })
            .collect()
    }

    /// `command key` for each key in one pipeline, under one in-flight permit: an integer
    /// answer or an error per key.
    async fn pipelined<'k>(&self, keys: impl ExactSizeIterator<Item = &'k String>, command: &str) -> Vec<Result<u64>> {
        let count = keys.len();
        if count == 0 {
            return Vec::new();
        }
        let _permit = self.inner.in_flight.acquire().await;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in keys {
            pipe.cmd(command).arg(key.as_str());
        }
        let outcome = self
            .run(self.inner.retry, |mut connection| {
                let pipe = &pipe;
                async move { Ok(pipe.query_async::<Vec<redis::RedisResult<u64>>>(&mut connection).await?) }
            })
            .await;
        match outcome {
            Ok(answers) if answers.len() == count => answers
                .into_iter()
                // Not a string (WRONGTYPE): not our document; the next SET replaces it.
                .map(|answer| answer.map_err(|e| self.error(Failure::Redis(e))))
                .collect(),
            Ok(_) => {
                let short = RedisError::from((ErrorKind::UnexpectedReturnType, "short pipeline answer"));
                (0..count).map(|_| Err(self.error(Failure::Redis(short.clone())))).collect()
            }
            Err(e) => {
                let e = self.error(e);
                (0..count).map(|_| Err(same_error(&e))).collect()
            }
        }
    }
}

/// A copy of an error for each item of a failed batch.
fn same_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::NotFound(m) => StorageError::NotFound(m.clone()),
        StorageError::PermissionDenied(m) => StorageError::PermissionDenied(m.clone()),
        StorageError::Precondition(m) => StorageError::Precondition(m.clone()),
        StorageError::NotSupported(m) => StorageError::NotSupported(m.clone()),
        StorageError::Generic { target, source } => {
            StorageError::Generic { target: target.clone(), source: source.to_string().into() }
        }
    }
}

/// Splits items into pipelines of at most [`PIPELINE_ITEMS`] items and [`PIPELINE_BYTES`].
fn batches(items: Vec<(usize, String, Bytes)>) -> Vec<Vec<(usize, String, Bytes)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        if !current.is_empty() && (current.len() >= PIPELINE_ITEMS || bytes + item.2.len() > PIPELINE_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += item.2.len();
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits numbered keys into commands of at most [`PIPELINE_ITEMS`] keys: (slots, keys).
fn chunked(keys: Vec<(usize, String)>) -> Vec<(Vec<usize>, Vec<String>)> {
    let mut out = Vec::with_capacity(keys.len().div_ceil(PIPELINE_ITEMS));
    let mut keys = keys.into_iter().peekable();
    while keys.peek().is_some() {
        out.push(keys.by_ref().take(PIPELINE_ITEMS).unzip());
    }
    out
}

#[async_trait::async_trait]
impl StorageTarget for Redis {
    /// Connects (checked address, password, `SELECT db`) and sends `PING`.
    async fn validate(&self) -> Result<()> {
        let policy =
            RetryPolicy { max_attempts: self.inner.retry.max_attempts.min(VALIDATE_ATTEMPTS), ..self.inner.retry };
        self.run(policy, |mut connection| async move {
            Ok(redis::cmd("PING").query_async::<String>(&mut connection).await?)
        })
        .await
        .map(|_| ())
        .map_err(|e| self.error(e))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        check_key(key)?;
        self.set_batch(&[(key.to_owned(), body)]).await.pop().expect("one result per item")
    }

    /// Pipelines of up to [`PIPELINE_ITEMS`] `SET`s, several in flight (bounded by
    /// `max_in_flight` across callers).
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Vec<Result<()>> {
        let mut out: Vec<Option<Result<()>>> = Vec::with_capacity(items.len());
        let mut safe = Vec::new();
        for (i, (key, body)) in items.into_iter().enumerate() {
            match check_key(&key) {
                Ok(()) => {
                    safe.push((i, key, body));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let limit = self.inner.in_flight.bound();
        let done: Vec<(Vec<usize>, Vec<Result<()>>)> = futures::stream::iter(batches(safe))
            .map(|batch| async move {
                let (slots, items): (Vec<usize>, Vec<(String, Bytes)>) =
                    batch.into_iter().map(|(i, k, b)| (i, (k, b))).unzip();
                let results = self.set_batch(&items).await;
                (slots, results)
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        for (slots, results) in done {
            for (slot, result) in slots.into_iter().zip(results) {
                out[slot] = Some(result);
            }
        }
        out.into_iter().map(|r| r.expect("every item answered")).collect()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.delete_batch(&[key.to_owned()]).await
    }

    /// `DEL` of up to [`PIPELINE_ITEMS`] keys per command, several in flight.
    async fn delete_many(&self, keys: Vec<String>) -> Vec<Result<()>> {
        let mut out: Vec<Option<Result<()>>> = Vec::with_capacity(keys.len());
        let mut safe = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            match check_key(&key) {
                Ok(()) => {
                    safe.push((i, key));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let limit = self.inner.in_flight.bound();
        let done: Vec<(Vec<usize>, Result<()>)> = futures::stream::iter(chunked(safe))
            .map(|(slots, keys)| async move { (slots, self.delete_batch(&keys).await) })
            .buffer_unordered(limit)
            .collect()
            .await;
        for (slots, result) in done {
            for slot in slots {
                out[slot] = Some(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(same_error(e)),
                });
            }
        }
        out.into_iter().map(|r| r.expect("every key answered")).collect()
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        self.size_batch(&[key.to_owned()]).await.pop().expect("one result per key")
    }

    /// One pipelined round trip per [`PIPELINE_ITEMS`] keys.
    async fn sizes(&self, keys: Vec<String>) -> Vec<Result<Option<u64>>> {
        let mut out: Vec<Option<Result<Option<u64>>>> = Vec::with_capacity(keys.len());
        let mut safe = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            match check_key(&key) {
                Ok(()) => {
                    safe.push((i, key));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let limit = self.inner.in_flight.bound();
        let done: Vec<(Vec<usize>, Vec<Result<Option<u64>>>)> = futures::stream::iter(chunked(safe))
            .map(|(slots, keys)| async move { (slots, self.size_batch(&keys).await) })
            .buffer_unordered(limit)
            .collect()
            .await;
        for (slots, results) in done {
            for (slot, result) in slots.into_iter().zip(results) {
                out[slot] = Some(result);
            }
        }
        out.into_iter().map(|r| r.expect("every key answered")).collect()
    }

    // `list_sizes` stays `None` (the trait's default): the database may hold anyone's
    // keys, and the only way to list ours would be a `SCAN` of the whole keyspace.
    // The engine then calls `sizes` per page, one pipelined round trip each.

    /// The server's `run_id` and the database's key count: a restart (which loses
    /// what was not persisted), a `FLUSHDB`, an eviction or a key removed by hand all
    /// change it, and the next sync then checks every document (one round trip per
    /// page) instead of only the changes. A value rewritten in place is not seen.
    /// If the server restarted while this target was in use, the first token after it
    /// is marked so that it matches nothing: what was written before may be gone.
    async fn change_token(&self) -> Result<Option<String>> {
        let policy =
            RetryPolicy { max_attempts: self.inner.retry.max_attempts.min(VALIDATE_ATTEMPTS), ..self.inner.retry };
        let (run_id, keys) = self
            .run(policy, |mut connection| async move { Ok(server_state(&mut connection).await?) })
            .await
            .map_err(|e| self.error(e))?;
        // Report a restart once: the token recorded with the mark then differs from the
        // next one, so the next sync checks everything even though this target (kept
        // by the engine across syncs) goes on with the new server.
        let mut first = self.inner.first_run_id.lock().expect("never poisoned");
        let restarted = first.as_ref().is_some_and(|f| *f != run_id);
        if restarted {
            *first = Some(run_id.clone());
        }
        let mark = if restarted { ":restarted" } else { "" };
        Ok(Some(format!("{run_id}:{keys}{mark}")))
    }
}

/// The server's `run_id` (new at every start) and `DBSIZE`, in one round trip.
async fn server_state(connection: &mut ConnectionManager) -> redis::RedisResult<(String, u64)> {
    let (info, keys): (String, u64) =
        redis::pipe().cmd("INFO").arg("server").cmd("DBSIZE").query_async(connection).await?;
    let run_id =
        info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_owned()).unwrap_or_default();
    Ok((run_id, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(ssrf_protection: bool) -> TargetContext {
        TargetContext {
            local_files: crate::config::LocalFilesSettings { serving_enabled: false, document_root: "/".into() },
            fsync: false,
            targets: crate::config::TargetSettings { ssrf_protection, ..crate::config::TargetSettings::from_env() },
        }
    }

    fn config(values: serde_json::Value) -> TargetConfig {
        TargetConfig { values: values.as_object().unwrap().clone(), ..TargetConfig::default() }
    }

    #[tokio::test]
    async fn db_zero_or_null_is_refused_with_label_studios_message() {
        for db in [json!(0), json!(null)] {
            let c = config(json!({"host": "example.com", "db": db}));
            assert_eq!(check_config(&c, &ctx(true)).await, Err(ConfigError::NonField(DB_REQUIRED.into())));
            assert_eq!(Redis::new(&c, &ctx(true)).unwrap_err().to_string(), DB_REQUIRED);
        }
        assert_eq!(check_config(&config(json!({"db": 3})), &ctx(true)).await, Ok(()));
    }

    #[test]
    fn host_and_port_have_redis_pys_defaults() {
        let r = Redis::new(&config(json!({"db": 2, "host": null, "port": ""})), &ctx(true)).unwrap();
        assert_eq!(r.to_string(), "Redis(localhost:6379/2)");
        for host in ["::1", "[::1]"] {
            let r = Redis::new(&config(json!({"db": 5, "host": host, "port": "7000"})), &ctx(true)).unwrap();
            assert_eq!(r.to_string(), "Redis([::1]:7000/5)");
        }
        for bad in ["abc", "0", "70000", "-1"] {
            let err = Redis::new(&config(json!({"db": 2, "port": bad})), &ctx(true)).unwrap_err();
            assert_eq!(err.to_string(), format!("Redis port \"{bad}\" is not a valid port number"));
        }
    }

    #[test]
    fn pipelines_are_cut_by_count_and_by_bytes() {
        let small: Vec<_> = (0..1201).map(|i| (i, i.to_string(), Bytes::from_static(b"x"))).collect();
        let sizes: Vec<usize> = batches(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [500, 500, 201]);
        let big = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
        let large: Vec<_> = (0..5).map(|i| (i, i.to_string(), big.clone())).collect();
        let sizes: Vec<usize> = batches(large).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[tokio::test]
    async fn reserved_hosts_are_refused_before_any_connection_when_ssrf_protection_is_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        for (host, block) in [("127.0.0.1", "127.0.0.0/8"), ("localhost", ""), ("10.0.0.1", "10.0.0.0/8")] {
            let target = Redis::new(&config(json!({"db": 2, "host": host, "port": port})), &ctx(true)).unwrap();
            let err = target.validate().await.unwrap_err();
            assert!(matches!(err, StorageError::PermissionDenied(_)), "{host}: {err:?}");
            let text = err.to_string();
            assert!(text.starts_with("URL resolves to a reserved network address (block: "), "{text}");
            if !block.is_empty() {
                assert_eq!(text, format!("URL resolves to a reserved network address (block: {block})"));
            }
            let put = target.put("1", Bytes::from_static(b"{}")).await.unwrap_err();
            assert_eq!(put.to_string(), text, "writes are refused the same way");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was made");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_generic_error_naming_the_host_not_the_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = config(json!({"db": 2, "host": "127.0.0.1", "port": port.to_string()}));
        let mut c = c;
        c.secrets.insert("password".into(), json!("s3cret-pw"));
        let mut context = ctx(false);
        context.targets.backoff = Duration::from_millis(1);
        let target = Redis::new(&c, &context).unwrap();
        let err = target.validate().await.unwrap_err();
        assert!(!err.is_permanent(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("Redis 127.0.0.1:{port}/2")), "{text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(!format!("{target:?} {target}").contains("s3cret-pw"));
    }
}
