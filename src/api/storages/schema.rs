//! Documentation-only shapes of export storage bodies, for the OpenAPI document: the
//! handlers render storages key by key in Label Studio's order per type (see
//! [`super::storage_json`]), so these types are never constructed.

use crate::api::error::schema::ErrorBody;
use serde_json::Value;
use utoipa::{IntoResponses, ToSchema};

/// A storage type: the `{type}` path segment and the `type` of a storage.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportStorageType {
    S3,
    Gcs,
    Azure,
    Redis,
    Localfiles,
}

/// A storage type with its display title.
#[derive(ToSchema)]
pub struct StorageTypeInfo {
    /// `s3`, `gcs`, `azure`, `redis` or `localfiles`.
    pub name: String,
    /// E.g. `Local files`.
    pub title: String,
}

/// The state of a storage's sync (`completed_with_errors` is never used by export storages).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Initialized,
    Queued,
    InProgress,
    Failed,
    Completed,
    CompletedWithErrors,
}

/// What one exported file holds (labelport).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportMode {
    /// One file per annotation, named by its id (Label Studio's layout).
    Annotation,
    /// One file per task, with all its annotations.
    Task,
}

/// The fields every export storage type has (Label Studio's keys plus `export_mode`);
/// each type adds its own and orders the keys as Label Studio does.
#[derive(ToSchema)]
pub struct StorageCommon {
    /// Per-type sequence.
    pub id: i64,
    #[schema(rename = "type")]
    pub storage_type: ExportStorageType,
    /// Whether `POST .../sync` may run.
    pub synchronizable: bool,
    /// Stored and echoed; ignored on export.
    pub regex_filter: Option<String>,
    /// Stored and echoed; ignored on export.
    pub use_blob_urls: bool,
    /// When the last successful sync finished (ISO 8601, UTC, microseconds, `Z`).
    pub last_sync: Option<String>,
    /// Annotations processed by the last sync.
    pub last_sync_count: Option<i64>,
    /// Id of the last queued sync job.
    pub last_sync_job: Option<String>,
    pub status: SyncStatus,
    /// Text of the last failure.
    pub traceback: Option<String>,
    /// Sync bookkeeping: `attempts`, `time_queued`, `time_in_progress`, `time_last_ping`,
    /// `time_completed`, `duration`, `total_annotations`, `time_failure`.
    pub meta: Option<Value>,
    /// At most 256 characters.
    pub title: Option<String>,
    pub description: Option<String>,
    /// ISO 8601, UTC, microseconds, `Z`.
    pub created_at: String,
    /// Delete exported files when their annotations are deleted (null = no).
    pub can_delete_objects: Option<bool>,
    /// Project id.
    pub project: i64,
    /// labelport: document layout; default `annotation`.
    pub export_mode: ExportMode,
}

/// A local-files export storage.
#[derive(ToSchema)]
pub struct LocalFilesStorage {
    #[serde(flatten)]
    pub common: StorageCommon,
    /// Absolute local path, normalized (no trailing slash).
    pub path: Option<String>,
}

/// An S3 export storage. `aws_access_key_id`, `aws_secret_access_key` and
/// `aws_session_token` are write-only: never returned.
#[derive(ToSchema)]
pub struct S3Storage {
    #[serde(flatten)]
    pub common: StorageCommon,
    pub bucket: Option<String>,
    /// Used verbatim: objects are `<prefix>/<key>`.
    pub prefix: Option<String>,
    pub aws_sse_kms_key_id: Option<String>,
    pub region_name: Option<String>,
    pub s3_endpoint: Option<String>,
}

/// A Google Cloud Storage export storage. `google_application_credentials` is
/// write-only: never returned.
#[derive(ToSchema)]
pub struct GcsStorage {
    #[serde(flatten)]
    pub common: StorageCommon,
    pub bucket: Option<String>,
    /// Used verbatim: objects are `<prefix>/<key>`.
    pub prefix: Option<String>,
    pub google_project_id: Option<String>,
}

/// An Azure Blob export storage. `account_name` and `account_key` are write-only.
#[derive(ToSchema)]
pub struct AzureStorage {
    #[serde(flatten)]
    pub common: StorageCommon,
    pub container: Option<String>,
    /// Used verbatim: blobs are `<prefix>/<key>`.
    pub prefix: Option<String>,
}

/// A Redis export storage. `password` is write-only.
#[derive(ToSchema)]
pub struct RedisStorage {
    #[serde(flatten)]
    pub common: StorageCommon,
    /// Kept and echoed; not a key prefix (as in Label Studio).
    pub path: Option<String>,
    pub host: Option<String>,
    /// A string, as in Label Studio.
    pub port: Option<String>,
    /// Database number; default 2.
    pub db: Option<i64>,
}

/// An export storage of any type (distinguished by `type`).
#[derive(ToSchema)]
#[serde(tag = "type")]
pub enum ExportStorage {
    #[serde(rename = "localfiles")]
    LocalFiles(LocalFilesStorage),
    #[serde(rename = "s3")]
    S3(S3Storage),
    #[serde(rename = "gcs")]
    Gcs(GcsStorage),
    #[serde(rename = "azure")]
    Azure(AzureStorage),
    #[serde(rename = "redis")]
    Redis(RedisStorage),
}

/// Writable fields every type has; all optional unless noted. The bookkeeping fields
/// (`status`, `meta`, `last_sync*`, `traceback`) are ignored (a bad `status` is still
/// reported).
#[derive(ToSchema)]
pub struct StorageCommonInput {
    /// Validate only: an existing storage to merge the body over.
    pub id: Option<i64>,
    /// Default true; not null.
    pub synchronizable: Option<bool>,
    pub regex_filter: Option<String>,
    /// Not null.
    pub use_blob_urls: Option<bool>,
    /// At most 256 characters.
    pub title: Option<String>,
    pub description: Option<String>,
    pub can_delete_objects: Option<bool>,
    /// Project id (or a string holding one); required on POST, PUT and validate.
    pub project: Option<i64>,
    /// labelport: `annotation` (default) or `task`.
    pub export_mode: Option<ExportMode>,
}

/// Writable fields of a local-files storage.
#[derive(ToSchema)]
pub struct LocalFilesStorageInput {
    #[serde(flatten)]
    pub common: StorageCommonInput,
    /// Absolute local path under the configured root; required on create (in practice).
    pub path: Option<String>,
}

/// Writable fields of an S3 storage (the key fields are write-only).
#[derive(ToSchema)]
pub struct S3StorageInput {
    #[serde(flatten)]
    pub common: StorageCommonInput,
    /// Required on create; `^[a-zA-Z0-9.\-_]{1,255}$` or an access-point ARN.
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// Write-only.
    pub aws_access_key_id: Option<String>,
    /// Write-only.
    pub aws_secret_access_key: Option<String>,
    /// Write-only.
    pub aws_session_token: Option<String>,
    pub aws_sse_kms_key_id: Option<String>,
    pub region_name: Option<String>,
    /// `http(s)://` URL of an S3-compatible store; with SSRF protection on, it must not
    /// resolve to a private or reserved address (403).
    pub s3_endpoint: Option<String>,
}

/// Writable fields of a GCS storage.
#[derive(ToSchema)]
pub struct GcsStorageInput {
    #[serde(flatten)]
    pub common: StorageCommonInput,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    /// Write-only: the service-account JSON as a string; empty uses Application
    /// Default Credentials.
    pub google_application_credentials: Option<String>,
    pub google_project_id: Option<String>,
}

/// Writable fields of an Azure Blob storage.
#[derive(ToSchema)]
pub struct AzureStorageInput {
    #[serde(flatten)]
    pub common: StorageCommonInput,
    pub container: Option<String>,
    pub prefix: Option<String>,
    /// Write-only; empty falls back to `AZURE_BLOB_ACCOUNT_NAME`.
    pub account_name: Option<String>,
    /// Write-only; empty falls back to `AZURE_BLOB_ACCOUNT_KEY`.
    pub account_key: Option<String>,
}

/// Writable fields of a Redis storage.
#[derive(ToSchema)]
pub struct RedisStorageInput {
    #[serde(flatten)]
    pub common: StorageCommonInput,
    pub path: Option<String>,
    /// Default `localhost`; with SSRF protection on it must resolve to a public address.
    pub host: Option<String>,
    pub port: Option<String>,
    /// Write-only.
    pub password: Option<String>,
    /// 1..=32767; 0 and null are refused. Default 2.
    pub db: Option<i64>,
}

/// A request body for any type.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum ExportStorageInput {
    LocalFiles(LocalFilesStorageInput),
    S3(S3StorageInput),
    Gcs(GcsStorageInput),
    Azure(AzureStorageInput),
    Redis(RedisStorageInput),
}

/// The raw 400 of `POST .../sync` on a storage with `synchronizable: false`.
#[derive(ToSchema)]
pub struct NotSynchronizable {
    /// `Storage <id> is not synchronizable`.
    pub message: String,
}

/// A refused sync: not synchronizable (raw body), or a failed path check (error shape).
#[derive(ToSchema)]
#[serde(untagged)]
pub enum SyncRefused {
    NotSynchronizable(NotSynchronizable),
    Invalid(ErrorBody),
}

/// How far auto-export of one storage is behind the change feed (labelport).
#[derive(ToSchema)]
pub struct ExportLag {
    /// Storage id.
    pub id: i64,
    /// Last change-feed entry this storage has exported.
    pub cursor_seq: i64,
    /// Change-feed entries not exported yet.
    pub pending_changes: i64,
    /// Age of the oldest pending entry; null when none.
    pub oldest_pending_seconds: Option<f64>,
    pub status: SyncStatus,
}

/// The 404 of a storage: an unknown type, or an unknown id of the type.
#[derive(IntoResponses)]
#[response(
    status = 404,
    description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)"
)]
pub struct StorageNotFound(pub ErrorBody);

/// The 404 of an unknown `{type}`.
#[derive(IntoResponses)]
#[response(status = 404, description = "Unknown type (`Not found.`)")]
pub struct UnknownStorageType(pub ErrorBody);

/// The refusals of a storage's fields, on top of [`BodyErrors`](crate::api::error::schema::BodyErrors)
/// (listed after it, this set's 400 replaces the generic one).
#[derive(IntoResponses)]
pub enum StorageChecks {
    #[response(
        status = 400,
        description = "Malformed JSON, wrong types, missing fields, a failed field check (e.g. the bucket-name rule, under `bucket`) or a failed path or connection check (under `non_field_errors`)"
    )]
    Invalid(ErrorBody),
    #[response(
        status = 403,
        description = "With SSRF protection on: an endpoint that is not `http(s)://` or resolves to a private or reserved address"
    )]
    Forbidden(ErrorBody),
}

/// The 501 of a storage type labelport cannot export to yet.
#[derive(IntoResponses)]
#[response(status = 501, description = "A type labelport cannot export to yet")]
pub struct TypeNotSupported(pub ErrorBody);
