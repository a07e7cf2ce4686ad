//! The API's self-description at `GET /api/schema` (OpenAPI 3.1, JSON).
//!
//! Each handler carries a `#[utoipa::path]` with Label Studio's canonical path (the
//! other slash form is served too, see [`super`]). Handlers build their JSON with
//! `serde_json` to keep Label Studio's key order, so the types below exist only to
//! describe those bodies; they are never constructed.
#![allow(dead_code)]

use super::{annotations, auth, health, import, metrics, projects, storages, tasks, users};
use axum::Json;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "labelport",
        description = "Label Studio-compatible API (Label Studio 1.23.2 wire format): projects, \
                       task import, tasks, annotations, current user, personal access tokens, and export \
                       storages (local files; auto-export of annotations and on-demand sync)."
    ),
    paths(
        health::health,
        health::ready,
        metrics::metrics,
        health::version,
        schema,
        users::whoami,
        users::legacy_token,
        users::reset_legacy_token,
        auth::list_tokens,
        auth::create_token,
        auth::refresh_token,
        auth::blacklist_token,
        projects::list,
        projects::create,
        projects::get,
        projects::update,
        projects::delete,
        import::import,
        tasks::list,
        tasks::create,
        tasks::get,
        tasks::update,
        tasks::delete,
        annotations::list_for_task,
        annotations::create,
        annotations::get,
        annotations::update,
        annotations::delete,
        storages::types,
        storages::list_all,
        storages::list,
        storages::create,
        storages::validate,
        storages::form,
        storages::get,
        storages::patch,
        storages::put,
        storages::delete,
        storages::sync,
        storages::lag,
    ),
    components(schemas(
        ErrorBody,
        UserBrief,
        Project,
        ProjectInput,
        ProjectPage,
        Task,
        TaskInput,
        TaskPage,
        Prediction,
        Annotation,
        AnnotationInput,
        ImportSummary,
        ImportFiles,
        DetailBody,
        CurrentUser,
        LegacyToken,
        PersonalToken,
        RefreshRequest,
        AccessToken,
        ExportStorageType,
        StorageTypeInfo,
        SyncStatus,
        ExportMode,
        StorageCommon,
        LocalFilesStorage,
        S3Storage,
        GcsStorage,
        AzureStorage,
        RedisStorage,
        ExportStorage,
        StorageCommonInput,
        LocalFilesStorageInput,
        S3StorageInput,
        GcsStorageInput,
        AzureStorageInput,
        RedisStorageInput,
        ExportStorageInput,
        NotSynchronizable,
        SyncRefused,
        ExportLag,
    )),
    modifiers(&SecuritySchemes, &CurrentUserAlias, &StorageTypesAlias, &PutOperationIds),
    tags(
        (name = "projects", description = "Projects"),
        (name = "import", description = "Task import"),
        (name = "tasks", description = "Tasks"),
        (name = "annotations", description = "Annotations"),
        (name = "storages", description = "Export storages: where annotations are written, and their syncs"),
        (name = "users", description = "The current user and its legacy token"),
        (name = "tokens", description = "Personal access tokens (JWT refresh tokens) and Bearer access tokens"),
        (name = "service", description = "Health, version and this document"),
    )
)]
pub struct ApiDoc;

/// Declares how clients authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "Token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Legacy token: `Authorization: Token <key>` (or the key alone in `X-Api-Key`).",
            ))),
        );
        components.add_security_scheme(
            "Bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A 5-minute access token from `POST /api/token/refresh/` (not the personal access token itself).",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api/current-user` answers like `GET /api/current-user/whoami` (the SDK calls
/// both; Label Studio Community only has the latter). One handler serves both paths.
struct CurrentUserAlias;

impl Modify for CurrentUserAlias {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(whoami) = openapi.paths.paths.get("/api/current-user/whoami") else { return };
        let mut alias = whoami.clone();
        if let Some(get) = alias.get.as_mut() {
            get.operation_id = Some("api_current_user_read".into());
        }
        openapi.paths.paths.insert("/api/current-user".into(), alias);
    }
}

/// `GET /api/storages/types` (Label Studio's import storage types) answers like
/// `GET /api/storages/export/types`: the same list. One handler serves both paths.
struct StorageTypesAlias;

impl Modify for StorageTypesAlias {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(export) = openapi.paths.paths.get("/api/storages/export/types") else { return };
        let mut alias = export.clone();
        if let Some(get) = alias.get.as_mut() {
            get.operation_id = Some("api_storages_types_list".into());
        }
        openapi.paths.paths.insert("/api/storages/types".into(), alias);
    }
}

/// One handler serves `PATCH` and `PUT`, so both get its `*_partial_update` id; `PUT`
/// is renamed `*_update`, as in Label Studio's own schema, to keep ids unique.
struct PutOperationIds;

impl Modify for PutOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            if let Some(put) = item.put.as_mut() {
                if let Some(id) = put.operation_id.as_deref().and_then(|id| id.strip_suffix("_partial_update")) {
                    put.operation_id = Some(format!("{id}_update"));
                }
            }
        }
    }
}

/// `GET /api/schema`.
#[utoipa::path(
    get,
    path = "/api/schema",
    tag = "service",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn schema() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Every error (Label Studio's shape). Two 404s differ: a task list without `project`
/// is `{"detail": "Neither project nor view id specified"}` only.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// Random id of this error, for log correlation.
    pub id: String,
    /// The HTTP status.
    pub status_code: u16,
    /// Server version.
    pub version: String,
    /// Message; `Validation error` when `validation_errors` is present.
    pub detail: String,
    /// Always null.
    pub exc_info: Option<String>,
    /// Field name (or `non_field_errors`) to messages; only on 400 validation failures.
    pub validation_errors: Option<std::collections::HashMap<String, Vec<String>>>,
}

/// The body of a 404 from the task list: Label Studio's error shape, or only
/// `{"detail": "Neither project nor view id specified"}` when neither `project` nor
/// `view` is given.
#[derive(ToSchema)]
pub struct DetailBody {
    /// The message.
    pub detail: String,
}

/// A user embedded in another object.
#[derive(ToSchema)]
pub struct UserBrief {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub avatar: Option<String>,
}

/// A project (the main keys; every Label Studio key is present, in its order).
#[derive(ToSchema)]
pub struct Project {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub label_config: String,
    pub expert_instruction: String,
    pub show_instruction: bool,
    pub show_skip_button: bool,
    pub enable_empty_annotation: bool,
    pub organization: i64,
    pub color: String,
    pub maximum_annotations: i64,
    pub is_published: bool,
    pub model_version: String,
    pub created_by: Option<UserBrief>,
    /// ISO 8601, UTC, microseconds, `Z`.
    pub created_at: String,
    pub num_tasks_with_annotations: i64,
    pub task_number: i64,
    pub total_annotations_number: i64,
    pub skipped_annotations_number: i64,
    pub ground_truth_number: i64,
    pub total_predictions_number: i64,
    pub sampling: String,
    pub finished_task_number: i64,
}

/// Writable project fields; all optional.
#[derive(ToSchema)]
pub struct ProjectInput {
    /// 3 to 50 characters (or empty).
    pub title: Option<String>,
    pub description: Option<String>,
    /// Well-formed XML; default `<View></View>`.
    pub label_config: Option<String>,
    pub expert_instruction: Option<String>,
    pub show_instruction: Option<bool>,
    pub show_skip_button: Option<bool>,
    pub enable_empty_annotation: Option<bool>,
    /// At least 1.
    pub maximum_annotations: Option<i64>,
    pub color: Option<String>,
    pub is_published: Option<bool>,
    pub model_version: Option<String>,
    /// `Sequential sampling`, `Uniform sampling` or `Uncertainty sampling`.
    pub sampling: Option<String>,
}

/// A page of projects, newest first.
#[derive(ToSchema)]
pub struct ProjectPage {
    pub count: i64,
    pub next: Option<String>,
    pub previous: Option<String>,
    pub results: Vec<Project>,
}

/// A task (list items add `annotators`, `annotations_ids`, …; the detail adds
/// `annotations` and `predictions`).
#[derive(ToSchema)]
pub struct Task {
    pub id: i64,
    pub data: Value,
    pub meta: Value,
    pub created_at: String,
    pub updated_at: String,
    pub is_labeled: bool,
    pub overlap: i64,
    /// 1-based counter within the project.
    pub inner_id: i64,
    pub total_annotations: i64,
    pub cancelled_annotations: i64,
    pub total_predictions: i64,
    pub project: i64,
    pub annotations: Option<Vec<Annotation>>,
    pub predictions: Option<Vec<Prediction>>,
}

/// A task to create.
#[derive(ToSchema)]
pub struct TaskInput {
    pub project: i64,
    pub data: Value,
    pub meta: Option<Value>,
}

/// A page of a project's tasks, by id.
#[derive(ToSchema)]
pub struct TaskPage {
    /// Non-cancelled annotations of all matching tasks.
    pub total_annotations: i64,
    pub total_predictions: i64,
    /// Matching tasks (not the page size).
    pub total: i64,
    pub tasks: Vec<Task>,
}

/// A prediction.
#[derive(ToSchema)]
pub struct Prediction {
    pub id: i64,
    pub result: Vec<Value>,
    pub model_version: String,
    pub score: Option<f64>,
    pub task: i64,
    pub project: i64,
}

/// An annotation.
#[derive(ToSchema)]
pub struct Annotation {
    pub id: i64,
    pub result: Vec<Value>,
    pub created_username: String,
    pub created_ago: String,
    /// A user id; inside a task detail, the expanded user
    /// (`{"id", "first_name", "last_name", "avatar", "email", "initials"}`).
    pub completed_by: Option<Value>,
    pub was_cancelled: bool,
    pub ground_truth: bool,
    pub created_at: String,
    pub updated_at: String,
    pub draft_created_at: Option<String>,
    /// Seconds.
    pub lead_time: Option<f64>,
    pub import_id: Option<i64>,
    pub last_action: Option<String>,
    pub bulk_created: bool,
    pub task: i64,
    pub project: i64,
    pub updated_by: Option<i64>,
    pub parent_prediction: Option<i64>,
    pub parent_annotation: Option<i64>,
    pub last_created_by: Option<i64>,
}

/// Writable annotation fields; all optional.
#[derive(ToSchema)]
pub struct AnnotationInput {
    /// A list of regions, or a string holding one as JSON.
    pub result: Option<Vec<Value>>,
    pub was_cancelled: Option<bool>,
    pub ground_truth: Option<bool>,
    pub lead_time: Option<f64>,
    /// A member of the caller's organization; default the caller.
    pub completed_by: Option<i64>,
    pub import_id: Option<i64>,
    pub last_action: Option<String>,
    pub bulk_created: Option<bool>,
    pub parent_prediction: Option<i64>,
    pub parent_annotation: Option<i64>,
    pub draft_created_at: Option<String>,
}

/// Task files uploaded to an import (`multipart/form-data`).
#[derive(ToSchema)]
pub struct ImportFiles {
    /// A task file (.json, .jsonl, .csv, .tsv or .txt); any part name is accepted,
    /// and several files may be sent.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// What an import created.
#[derive(ToSchema)]
pub struct ImportSummary {
    pub task_count: i64,
    pub annotation_count: i64,
    pub prediction_count: i64,
    /// Seconds.
    pub duration: f64,
    pub file_upload_ids: Vec<i64>,
    /// Whether a CSV or TSV file was uploaded.
    pub could_be_tasks_list: bool,
    /// `[]` for a JSON body; for uploads, the number of files per extension (`{".csv": 1}`).
    pub found_formats: serde_json::Value,
    /// For uploads, the data keys of the imported tasks; `[]` for a JSON body.
    pub data_columns: Vec<String>,
    /// Only with `return_task_ids=true`.
    pub task_ids: Option<Vec<i64>>,
}

/// The current user.
#[derive(ToSchema)]
pub struct CurrentUser {
    pub id: i64,
    pub first_name: String,
    pub last_name: String,
    pub username: String,
    pub email: String,
    pub last_activity: String,
    pub initials: String,
    pub active_organization: i64,
    pub date_joined: String,
    /// Permission codes, in Label Studio's order.
    pub permissions: Vec<String>,
}

/// A legacy token.
#[derive(ToSchema)]
pub struct LegacyToken {
    pub token: String,
}

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
