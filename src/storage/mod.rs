//! Storage targets: where export storages write annotation documents.
//!
//! A target stores opaque documents under keys (`11005`, `42.json`). The trait is
//! deliberately small: put, delete, exists, validate. Guarantees every target gives:
//!
//! - [`StorageTarget::put`] is **atomic**: a reader sees the old document or the new
//!   one, never a partial one, even if the process dies mid-write.
//! - [`StorageTarget::delete`] of a missing key succeeds.
//! - Keys are produced by [`keys`] and never contain `/` or `..`.
//!
//! Each type of export storage is one module with its [`spec::TypeSpec`]: local
//! files ([`LocalFileSystem`]), S3 ([`AmazonS3`]), GCS, Azure and Redis. [`InMemory`]
//! is the reference implementation and the sync engine's test double.
//! [`conformance`] is the suite every target must pass; [`retry`] and [`ssrf`] are
//! shared by the network targets.
#![warn(missing_docs)]

pub mod azure;
pub mod conformance;
pub mod gcs;
pub mod http_clients;
pub mod keys;
mod local;
pub mod local_path;
mod memory;
pub mod redis;
pub mod retry;
pub mod s3;
pub mod spec;
pub mod ssrf;

pub use local::LocalFileSystem;
pub use memory::InMemory;
pub use s3::AmazonS3;

use bytes::Bytes;
use std::collections::HashMap;
use std::fmt::Display;

/// What went wrong, worded by what the caller can do about it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The location does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The target refuses access (permissions, containment).
    #[error("{0}")]
    PermissionDenied(String),
    /// The target is misconfigured (e.g. the path is not a directory).
    #[error("{0}")]
    Precondition(String),
    /// The target does not support this operation.
    #[error("{0}")]
    NotSupported(String),
    /// Anything else (I/O, network).
    #[error("{target}: {source}")]
    Generic {
        /// Which target failed.
        target: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    /// Whether retrying later cannot help (the configuration must change first).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            StorageError::NotFound(_)
                | StorageError::PermissionDenied(_)
                | StorageError::Precondition(_)
                | StorageError::NotSupported(_)
        )
    }
}

/// The text of a failed HTTP request for errors and tracebacks: the error and its
/// causes (connection refused, timeout, refused address), never the URL, which can
/// carry a signature or a session token (S3) or name an account (Azure).
pub(crate) fn request_error_text(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The bound on a network target's requests in flight, shared by all its callers.
pub struct InFlight {
    permits: tokio::sync::Semaphore,
    bound: usize,
}

impl InFlight {
    /// At most `bound` requests at once (at least one).
    pub fn new(bound: usize) -> InFlight {
        let bound = bound.max(1);
        InFlight { permits: tokio::sync::Semaphore::new(bound), bound }
    }

    /// Waits for a turn to send one request; the request holds the permit.
    pub async fn acquire(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits.acquire().await.expect("the semaphore is never closed")
    }

    /// How many requests one batched call keeps queued: the whole bound, not the
    /// permits free when it starts. The sync engine's writers call targets at the same
    /// time, and a call that began while another held every permit would otherwise
    /// send its whole batch one request at a time (the permits still cap the total).
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Runs `op` on every item, up to [`bound`](Self::bound) at once; the results come
    /// back in the items' order. `op` takes its permit with [`acquire`](Self::acquire).
    pub async fn each<T, R, F, Fut>(&self, items: Vec<T>, op: F) -> Vec<R>
    where
        F: FnMut(T) -> Fut,
        Fut: std::future::Future<Output = R>,
    {
        use futures::StreamExt;
        futures::stream::iter(items).map(op).buffered(self.bound).collect().await
    }
}

/// Keys split into the safe ones, to send, and refusals of the others, so that
/// batched operations answer once per key in the callers' order.
pub struct SafeKeys {
    refused: Vec<Option<StorageError>>,
    /// The safe keys, in order.
    pub safe: Vec<String>,
}

impl SafeKeys {
    /// Sorts `keys` with [`keys::check_key`].
    pub fn new(keys: Vec<String>) -> SafeKeys {
        let mut refused = Vec::with_capacity(keys.len());
        let mut safe = Vec::new();
        for key in keys {
            match keys::check_key(&key) {
                Ok(()) => {
                    safe.push(key);
                    refused.push(None);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        SafeKeys { refused, safe }
    }

    /// One result per original key: the refusals, and `results` (one per safe key) in between.
    pub fn merge(self, results: Vec<Result<()>>) -> Vec<Result<()>> {
        let mut results = results.into_iter();
        self.refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => results.next().expect("one result per safe key"),
            })
            .collect()
    }
}

/// Asked right before documents are published: `false` once the writer may no
/// longer publish (its lease ended). See [`StorageTarget::put_many_guarded`].
pub type MayPublish = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// The error of a write held back by [`StorageTarget::put_many_guarded`].
pub fn held_back() -> StorageError {
    StorageError::Precondition("not written: the sync worker's lease ended first".into())
}

/// Result alias of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A place documents are exported to. Implementations name themselves through
/// `Display` (e.g. `LocalFileSystem(/data/labels/out)`) for logs.
#[async_trait::async_trait]
pub trait StorageTarget: Display + Send + Sync + 'static {
    /// Checks that the target is usable now (exists, reachable, writable).
    async fn validate(&self) -> Result<()>;

    /// Writes `body` under `key`, replacing any previous document atomically.
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;

    /// Writes many documents; the default calls [`StorageTarget::put`] for each.
    /// Returns one result per item, in order.
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Vec<Result<()>> {
        let mut out = Vec::with_capacity(items.len());
        for (key, body) in items {
            out.push(self.put(&key, body).await);
        }
        out
    }

    /// Writes many documents like [`StorageTarget::put_many`], but publishes none once
    /// `may_publish` answers `false`: those get [`StorageError::Precondition`]. The
    /// sync engine passes its lease check, so a worker paused past its lease cannot
    /// replace what the worker that took over wrote since (see `sync::fence`).
    /// Targets ask as late as they can; the default asks once, before the batch.
    async fn put_many_guarded(&self, items: Vec<(String, Bytes)>, may_publish: MayPublish) -> Vec<Result<()>> {
        if !may_publish() {
            return items.iter().map(|_| Err(held_back())).collect();
        }
        self.put_many(items).await
    }

    /// Removes the document under `key`; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The size in bytes of the document under `key`, `None` if there is none.
    async fn size(&self, key: &str) -> Result<Option<u64>>;

    /// The sizes of many documents, in order; the default asks one by one.
    async fn sizes(&self, keys: Vec<String>) -> Vec<Result<Option<u64>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.size(&key).await);
        }
        out
    }

    /// Removes many documents; the default calls [`StorageTarget::delete`] for each.
    /// Returns one result per key, in order.
    async fn delete_many(&self, keys: Vec<String>) -> Vec<Result<()>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.delete(&key).await);
        }
        out
    }

    /// The size of every document at the target's location, by key, when the target
    /// can list them in bulk (one request per ~1,000 keys); `None` when it cannot, and
    /// callers ask [`StorageTarget::sizes`] instead. Full syncs use it to skip what is
    /// already in place without one request per document.
    async fn list_sizes(&self) -> Result<Option<HashMap<String, u64>>> {
        Ok(None)
    }

    /// Whether a document exists under `key`.
    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.size(key).await?.is_some())
    }

    /// An opaque value that changes whenever the location is modified (documents
    /// added, removed or renamed, by us or anyone else); `None` if the target cannot
    /// tell. The sync engine records it after its own writes: a different value at the
    /// next sync means someone else changed the location, and a full pass follows.
    async fn change_token(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Removes leftovers of interrupted writes (temporary files); returns how many.
    async fn remove_temporary_files(&self) -> Result<usize> {
        Ok(0)
    }
}
