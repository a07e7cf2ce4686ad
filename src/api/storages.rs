//! Export storages (`/api/storages/export/...`), contract §3, §4, §6.
//!
//! Every type has the same routes; `localfiles` is implemented, the cloud types
//! list as empty and answer 501 on create/validate until their targets exist.

use super::auth::Auth;
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{parse_id, Body, Query};
use super::fields::Form;
use super::AppState;
use crate::db::{DbError, ExportStorage, StorageFields, User};
use crate::storage::local_path;
use crate::sync::state;
use crate::time::{iso, iso_opt, now_micros};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A storage type of the URL, with Label Studio's model name for 404 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageType {
    /// URL segment and `type` value.
    pub name: &'static str,
    /// Display title in `GET /types`.
    pub title: &'static str,
    /// Model name in `No <Model> matches the given query.`
    pub model: &'static str,
    /// UI form layout (`GET .../form`), verbatim from Label Studio.
    pub form: &'static str,
    /// Whether labelport can export to it yet.
    pub supported: bool,
}

/// All types, in Label Studio's order.
pub const TYPES: [StorageType; 5] = [
    StorageType {
        name: "s3",
        title: "AWS S3",
        model: "S3ExportStorage",
        form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"bucket","label":"Bucket Name","allowEmpty":false,"required":true},{"type":"text","name":"prefix","label":"Bucket Prefix"}]},{"columnCount":3,"fields":[{"type":"text","name":"region_name","label":"Region Name","placeholder":"us-east-1"},{"type":"text","name":"s3_endpoint","label":"S3 Endpoint"},{"type":"text","name":"aws_sse_kms_key_id","label":"SSE KMS Key ID"},{"type":"password","name":"aws_access_key_id","label":"Access Key ID","autoComplete":"off","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"aws_secret_access_key","label":"Secret Access Key","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"aws_session_token","autoComplete":"new-password","label":"Session Token","skipAutofill":true,"allowEmpty":true,"protectedValue":true}]},{"columnCount":1,"columns":[{"fields":[{"type":"toggle","name":"can_delete_objects","label":"Can delete objects from storage","description":"If unchecked, annotations will not be deleted from storage"}]}]}]"#,
        supported: false,
    },
    StorageType {
        name: "gcs",
        title: "Google Cloud Storage",
        model: "GCSExportStorage",
        form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"bucket","label":"Bucket Name","required":true},{"type":"text","name":"prefix","label":"Bucket Prefix"}]},{"columnCount":1,"fields":[{"type":"password","name":"google_application_credentials","label":"Google Application Credentials","footer":"Paste the contents of credentials.json in this field OR leave it blank to use ADC.","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"validators":["json"]}]},{"columnCount":1,"fields":[{"type":"text","name":"google_project_id","label":"Google Project ID","footer":"Leave blank to inherit from Google Application Credentials."}]}]"#,
        supported: false,
    },
    StorageType {
        name: "azure",
        title: "Microsoft Azure",
        model: "AzureBlobExportStorage",
        form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"container","label":"Container Name","required":true},{"type":"text","name":"prefix","label":"Container Prefix"}]},{"columnCount":2,"fields":[{"type":"password","name":"account_name","label":"Account Name","autoComplete":"off","skipAutofill":true,"allowEmpty":false,"protectedValue":true},{"type":"password","name":"account_key","label":"Account Key","autoComplete":"new-password","skipAutofill":true,"allowEmpty":false,"protectedValue":true}]}]"#,
        supported: false,
    },
    StorageType {
        name: "redis",
        title: "Redis",
        model: "RedisExportStorage",
        form: r#"[{"columnCount":2,"fields":[{"type":"text","name":"db","label":"Database Number (db)","placeholder":1},{"type":"text","name":"path","label":"Path"},{"type":"password","name":"password","label":"Password","autoComplete":"new-password"},{"type":"text","name":"host","label":"Host","placeholder":"localhost"},{"type":"text","name":"port","label":"Port"}]}]"#,
        supported: false,
    },
    StorageType {
        name: "localfiles",
        title: "Local files",
        model: "LocalFilesExportStorage",
        form: r#"[{"columnCount":3,"fields":[{"type":"text","name":"title","label":"Storage Name","required":true},{"type":"text","name":"path","label":"Absolute local path","required":true}]}]"#,
        supported: true,
    },
];

fn storage_type(name: &str) -> ApiResult<StorageType> {
    TYPES.iter().copied().find(|t| t.name == name).ok_or_else(ApiError::no_route)
}

fn not_supported(t: StorageType) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "Export storage type \"{}\" is not supported by this labelport version yet; use \"localfiles\".",
            t.name
        ),
    )
}

/// Renders a local-files storage with Label Studio's keys and order, plus
/// `export_mode` (ours).
pub fn storage_json(s: &ExportStorage) -> Value {
    let f = &s.fields;
    json!({
        "id": s.id,
        "type": s.storage_type,
        "synchronizable": f.synchronizable,
        "path": f.path,
        "regex_filter": f.regex_filter,
        "use_blob_urls": f.use_blob_urls,
        "last_sync": iso_opt(s.last_sync),
        "last_sync_count": s.last_sync_count,
        "last_sync_job": s.last_sync_job,
        "status": s.status,
        "traceback": s.traceback,
        "meta": s.meta,
        "title": f.title,
        "description": f.description,
        "created_at": iso(s.created_at),
        "can_delete_objects": f.can_delete_objects,
        "project": s.project_id,
        "export_mode": f.export_mode,
    })
}

/// Validates the fields of a body over `base`; returns the merged fields and the
/// project id (checked against the caller's organization) if the body has one.
async fn read_fields(
    state: &AppState,
    user: &User,
    body: Value,
    mut f: StorageFields,
    project_required: bool,
) -> ApiResult<(StorageFields, Option<i64>)> {
    let mut form = Form::new(body)?;
    if project_required {
        form.require("project");
    }
    let project = super::tasks::project_field(state, &mut form, user.organization_id).await?;
    if let Some(v) = form.string("title", Some(256), true) {
        f.title = v;
    }
    if let Some(v) = form.string("description", None, true) {
        f.description = v;
    }
    if let Some(v) = form.string("regex_filter", None, true) {
        f.regex_filter = v;
    }
    if let Some(Some(v)) = form.boolean("synchronizable", false) {
        f.synchronizable = v;
    }
    if let Some(Some(v)) = form.boolean("use_blob_urls", false) {
        f.use_blob_urls = v;
    }
    if let Some(v) = form.boolean("can_delete_objects", true) {
        f.can_delete_objects = v;
    }
    if let Some(v) = form.string("path", None, true) {
        f.path = local_path::normalize(v.as_deref());
    }
    if let Some(Some(mode)) = form.string("export_mode", None, false) {
        if mode == "annotation" || mode == "task" {
            f.export_mode = mode;
        } else {
            form.error("export_mode", format!("\"{mode}\" is not a valid choice."));
        }
    }
    // Bookkeeping fields are read-only; a bad status is still reported as LS does.
    if let Some(Some(status)) = form.string("status", None, false) {
        if !state::status::ALL.contains(&status.as_str()) {
            form.error("status", format!("\"{status}\" is not a valid choice."));
        }
    }
    form.finish()?;
    Ok((f, project))
}

fn check_path(state: &AppState, f: &StorageFields) -> ApiResult<()> {
    local_path::check(f.path.as_deref(), &state.settings.local_files).map(|_| ()).map_err(ApiError::non_field)
}

fn default_fields(state: &AppState) -> StorageFields {
    StorageFields {
        synchronizable: true,
        export_mode: if state.settings.sync.task_mode_default { "task" } else { "annotation" }.into(),
        config: json!({}),
        ..Default::default()
    }
}

/// Queues a sync (coalesced with a queued or running one) and wakes the workers.
/// Returns the storage as it was right after queuing (contract §3.5: `queued`), not
/// re-read: a worker may already have moved it on. When coalesced, the current state.
async fn queue_sync(state: &AppState, storage: &ExportStorage, full: bool) -> ApiResult<ExportStorage> {
    let mode = if full || !storage.baseline_done { "full" } else { "incremental" };
    let queued = state::queued(storage, now_micros());
    let key = uuid::Uuid::new_v4().to_string();
    if state.db.queue_sync(storage.id, mode, &key, &queued).await?.is_none() {
        return Ok(state.db.storage_by_id(storage.id).await?);
    }
    state.changes_committed();
    let mut snapshot = storage.clone();
    snapshot.status = queued.status;
    snapshot.meta = queued.meta;
    snapshot.last_sync = queued.last_sync;
    snapshot.last_sync_count = queued.last_sync_count;
    snapshot.traceback = queued.traceback;
    snapshot.last_sync_job = Some(key);
    Ok(snapshot)
}

/// Applies the stale-job rule (contract §4.4) to listed storages.
async fn health_check(state: &AppState, storages: &mut [ExportStorage]) -> ApiResult<()> {
    for s in storages.iter_mut().filter(|s| s.status == state::status::IN_PROGRESS) {
        let live = state.db.active_job(s.id).await?.is_some();
        if let Some(failed) = state::stale(s, now_micros(), live) {
            state.db.set_sync_state(s.id, &failed).await?;
            s.status = failed.status;
            s.traceback = failed.traceback;
        }
    }
    Ok(())
}

async fn find(state: &AppState, user: &User, t: StorageType, raw_id: &str) -> ApiResult<ExportStorage> {
    let id = parse_id(raw_id).ok_or_else(ApiError::no_route)?;
    state.db.storage(user.organization_id, t.name, id).await.or_not_found(t.model)
}

/// `GET /api/storages/export/types` (and `/api/storages/types`).
#[utoipa::path(
    get,
    path = "/api/storages/export/types",
    tag = "storages",
    operation_id = "api_storages_export_types_list",
    responses((status = 200, description = "Every storage type, in Label Studio's order (also served at `/api/storages/types`)", body = Vec<crate::api::openapi::StorageTypeInfo>)),
)]
pub async fn types() -> Json<Value> {
    let list: Vec<Value> = TYPES.iter().map(|t| json!({ "name": t.name, "title": t.title })).collect();
    Json(Value::Array(list))
}

/// `GET /api/storages/export?project=`: every type's storages; errors give `[]`.
#[utoipa::path(
    get,
    path = "/api/storages/export",
    tag = "storages",
    operation_id = "api_storages_export_list",
    params(("project" = Option<i64>, Query, description = "Project id; missing, unknown or invalid gives `[]`")),
    responses(
        (status = 200, description = "The project's export storages of every type, by type (s3, gcs, azure, redis, localfiles) then id; stale syncs are marked `failed` first", body = Vec<crate::api::openapi::LocalFilesStorage>),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list_all(State(state): State<AppState>, Auth(user): Auth, query: Query) -> ApiResult<Json<Value>> {
    let Ok(Some(project)) = query.int("project") else { return Ok(Json(json!([]))) };
    if !state.db.project_exists(user.organization_id, project).await? {
        return Ok(Json(json!([])));
    }
    let mut storages = state.db.list_storages(project, None).await?;
    health_check(&state, &mut storages).await?;
    let order = |s: &ExportStorage| TYPES.iter().position(|t| t.name == s.storage_type).unwrap_or(usize::MAX);
    storages.sort_by_key(|s| (order(s), s.id));
    Ok(Json(Value::Array(storages.iter().map(storage_json).collect())))
}

/// `GET /api/storages/export/{type}?project=`.
#[utoipa::path(
    get,
    path = "/api/storages/export/{type}",
    tag = "storages",
    operation_id = "api_storages_export_type_list",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("project" = i64, Query, description = "Project id"),
        ("ordering" = Option<String>, Query, description = "`id` (default), `-id`, `title`, `-title`, `created_at` or `-created_at`; anything else keeps id order"),
    ),
    responses(
        (status = 200, description = "The project's storages of this type (not paginated); stale syncs are marked `failed` first", body = Vec<crate::api::openapi::LocalFilesStorage>),
        (status = 400, description = "`query parameter \"project\" is required` (under `non_field_errors`)", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type or non-integer `project` (`Not found.`), or `No Project matches the given query.`", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(kind): Path<String>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let t = storage_type(&kind)?;
    let project = match query.int("project") {
        Ok(Some(id)) => id,
        Ok(None) => return Err(ApiError::non_field("query parameter \"project\" is required")),
        Err(_) => return Err(ApiError::no_route()),
    };
    if !state.db.project_exists(user.organization_id, project).await? {
        return Err(ApiError::not_found("Project"));
    }
    let mut storages = state.db.list_storages(project, Some(t.name)).await?;
    health_check(&state, &mut storages).await?;
    match query.get("ordering").unwrap_or("") {
        "-id" => storages.sort_by_key(|s| std::cmp::Reverse(s.id)),
        "title" => storages.sort_by(|a, b| a.fields.title.cmp(&b.fields.title).then(a.id.cmp(&b.id))),
        "-title" => storages.sort_by(|a, b| b.fields.title.cmp(&a.fields.title).then(a.id.cmp(&b.id))),
        "created_at" => storages.sort_by_key(|s| (s.created_at, s.id)),
        "-created_at" => storages.sort_by_key(|s| std::cmp::Reverse((s.created_at, s.id))),
        _ => {}
    }
    Ok(Json(Value::Array(storages.iter().map(storage_json).collect())))
}

/// `POST /api/storages/export/{type}`: create, then sync right away (default).
#[utoipa::path(
    post,
    path = "/api/storages/export/{type}",
    tag = "storages",
    operation_id = "api_storages_export_type_create",
    params(("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet")),
    request_body(content = crate::api::openapi::LocalFilesStorageInput, description = "`project` and `path` are required"),
    responses(
        (status = 201, description = "The new storage; with sync-on-create (default) as it was right after its first sync was queued (`status: queued`)", body = crate::api::openapi::LocalFilesStorage),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, or a failed path check (under `non_field_errors`)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the configured limit", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`)", body = crate::api::openapi::ErrorBody),
        (status = 501, description = "A type labelport cannot export to yet (every type but `localfiles`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(kind): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let t = storage_type(&kind)?;
    let (fields, project) = read_fields(&state, &user, body, default_fields(&state), true).await?;
    if !t.supported {
        return Err(not_supported(t));
    }
    check_path(&state, &fields)?;
    let project = project.ok_or_else(|| ApiError::field("project", "This field is required."))?;
    let mut storage = state.db.create_storage(t.name, project, &fields).await?;
    if state.settings.sync.sync_on_create {
        storage = queue_sync(&state, &storage, true).await?;
    }
    Ok((StatusCode::CREATED, Json(storage_json(&storage))).into_response())
}

/// `POST /api/storages/export/{type}/validate`: checks a new storage, or an existing
/// one (`id`) with the body merged over it. Never stores anything.
#[utoipa::path(
    post,
    path = "/api/storages/export/{type}/validate",
    tag = "storages",
    operation_id = "api_storages_export_type_validate",
    params(("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet")),
    request_body(content = crate::api::openapi::LocalFilesStorageInput, description = "A new storage, or with `id` changes to an existing one (merged over it); `project` is required. Nothing is stored."),
    responses(
        (status = 200, description = "Valid (empty body)"),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, or a failed path check (under `non_field_errors`)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the configured limit", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
        (status = 501, description = "A type labelport cannot export to yet (every type but `localfiles`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn validate(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path(kind): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let t = storage_type(&kind)?;
    let base = match body.get("id") {
        None | Some(Value::Null) => default_fields(&state),
        Some(id) => {
            let id =
                id.as_i64().or_else(|| id.as_str().and_then(parse_id)).ok_or_else(|| ApiError::not_found(t.model))?;
            state.db.storage(user.organization_id, t.name, id).await.or_not_found(t.model)?.fields
        }
    };
    let (fields, _) = read_fields(&state, &user, body, base, true).await?;
    if !t.supported {
        return Err(not_supported(t));
    }
    check_path(&state, &fields)?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /api/storages/export/{type}/form`.
#[utoipa::path(
    get,
    path = "/api/storages/export/{type}/form",
    tag = "storages",
    operation_id = "api_storages_export_type_form",
    params(("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet")),
    responses(
        (status = 200, description = "The UI form layout of this type, verbatim from Label Studio", content_type = "application/json", body = Vec<Object>),
        (status = 404, description = "Unknown type (`Not found.`)", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn form(Path(kind): Path<String>) -> ApiResult<Response> {
    let t = storage_type(&kind)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], t.form).into_response())
}

/// `GET /api/storages/export/{type}/{id}`.
#[utoipa::path(
    get,
    path = "/api/storages/export/{type}/{id}",
    tag = "storages",
    operation_id = "api_storages_export_type_read",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    responses(
        (status = 200, description = "The storage", body = crate::api::openapi::LocalFilesStorage),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn get(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let t = storage_type(&kind)?;
    Ok(Json(storage_json(&find(&state, &user, t, &id).await?)))
}

async fn update(
    state: AppState,
    user: User,
    kind: String,
    id: String,
    body: Value,
    put: bool,
) -> ApiResult<Json<Value>> {
    let t = storage_type(&kind)?;
    let current = find(&state, &user, t, &id).await?;
    let (fields, project) = read_fields(&state, &user, body, current.fields.clone(), put).await?;
    check_path(&state, &fields)?;
    if project.is_some_and(|p| p != current.project_id) {
        return Err(ApiError::field("project", "An export storage cannot be moved to another project."));
    }
    let moved = fields.path != current.fields.path || fields.export_mode != current.fields.export_mode;
    let storage = state.db.update_storage(current.id, &fields, moved).await.or_not_found(t.model)?;
    Ok(Json(storage_json(&storage)))
}

/// `PATCH /api/storages/export/{type}/{id}`: partial; the merged storage is validated.
#[utoipa::path(
    patch,
    path = "/api/storages/export/{type}/{id}",
    tag = "storages",
    operation_id = "api_storages_export_type_partial_update",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    request_body(content = crate::api::openapi::LocalFilesStorageInput, description = "Fields to change; the merged storage is validated. `project` cannot change."),
    responses(
        (status = 200, description = "The updated storage (with `type`); never syncs", body = crate::api::openapi::LocalFilesStorage),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, or a failed path check (under `non_field_errors`)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the configured limit", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn patch(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((kind, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    update(state, user, kind, id, body, false).await
}

/// `PUT /api/storages/export/{type}/{id}`: like PATCH, with `project` required.
#[utoipa::path(
    put,
    path = "/api/storages/export/{type}/{id}",
    tag = "storages",
    operation_id = "api_storages_export_type_update",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    request_body(content = crate::api::openapi::LocalFilesStorageInput, description = "Like PATCH, with `project` required. `project` cannot change."),
    responses(
        (status = 200, description = "The updated storage; never syncs", body = crate::api::openapi::LocalFilesStorage),
        (status = 400, description = "Malformed JSON, wrong types, missing fields, or a failed path check (under `non_field_errors`)", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the configured limit", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn put(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((kind, id)): Path<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    update(state, user, kind, id, body, true).await
}

/// `DELETE /api/storages/export/{type}/{id}`: files already written stay.
#[utoipa::path(
    delete,
    path = "/api/storages/export/{type}/{id}",
    tag = "storages",
    operation_id = "api_storages_export_type_delete",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    responses(
        (status = 204, description = "Deleted; files already written stay"),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let t = storage_type(&kind)?;
    let storage = find(&state, &user, t, &id).await?;
    match state.db.delete_storage(storage.id).await {
        Ok(()) | Err(DbError::NotFound) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/storages/export/{type}/{id}/sync`: queues a sync and answers at once
/// with the storage (`queued`, or the running state when one is already under way).
/// `?full=true` forces a walk over every annotation instead of the change feed.
#[utoipa::path(
    post,
    path = "/api/storages/export/{type}/{id}/sync",
    tag = "storages",
    operation_id = "api_storages_export_type_sync",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("id" = i64, Path, description = "Storage id (per type)"),
        ("full" = Option<bool>, Query, description = "`true`: walk every annotation instead of the change feed"),
    ),
    responses(
        (status = 200, description = "The storage right after queuing (`queued`), or its current state when a sync was already queued or running", body = crate::api::openapi::LocalFilesStorage),
        (status = 400, description = "`{\"message\": \"Storage <id> is not synchronizable\"}` (this exact raw body, not the error shape), or a failed path check (error shape, under `non_field_errors`)", body = crate::api::openapi::SyncRefused),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn sync(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((kind, id)): Path<(String, String)>,
    query: Query,
) -> ApiResult<Json<Value>> {
    let t = storage_type(&kind)?;
    let storage = find(&state, &user, t, &id).await?;
    if !storage.fields.synchronizable {
        return Err(ApiError::raw(
            StatusCode::BAD_REQUEST,
            json!({ "message": format!("Storage {} is not synchronizable", storage.id) }),
        ));
    }
    check_path(&state, &storage.fields)?;
    let storage = queue_sync(&state, &storage, query.flag("full")).await?;
    Ok(Json(storage_json(&storage)))
}

/// `GET /api/storages/export/{type}/{id}/lag` (labelport): how far auto-export is
/// behind the change feed.
#[utoipa::path(
    get,
    path = "/api/storages/export/{type}/{id}/lag",
    tag = "storages",
    operation_id = "api_storages_export_type_lag",
    params(
        ("type" = crate::api::openapi::ExportStorageType, Path, description = "Storage type; only `localfiles` stores anything yet"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    responses(
        (status = 200, description = "How far auto-export is behind the change feed (labelport only)", body = crate::api::openapi::ExportLag),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "Unknown type (`Not found.`), or `No <Model> matches the given query.` (e.g. `No LocalFilesExportStorage matches the given query.`)", body = crate::api::openapi::ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn lag(
    State(state): State<AppState>,
    Auth(user): Auth,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let t = storage_type(&kind)?;
    let storage = find(&state, &user, t, &id).await?;
    let lag = state.db.export_lag(storage.project_id).await?;
    let (pending, oldest) = lag.iter().find(|(sid, ..)| *sid == storage.id).map_or((0, None), |(_, p, o)| (*p, *o));
    let age = oldest.map(|t| ((now_micros() - t).max(0) as f64) / 1e6);
    Ok(Json(json!({
        "id": storage.id,
        "cursor_seq": storage.cursor_seq,
        "pending_changes": pending,
        "oldest_pending_seconds": age,
        "status": storage.status,
    })))
}
