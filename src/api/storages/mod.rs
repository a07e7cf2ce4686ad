//! Export storages (`/api/storages/export/...`), contract §3, §4, §6.
//!
//! Every type has the same routes, served from its [`TypeSpec`]: the type's fields
//! (write-only ones sealed), response order, checks and connection check. A type
//! whose spec has no target constructor answers 501 on create and validate.

pub mod schema;

use super::auth::Auth;
use super::error::schema::{BodyErrors, ErrorBody, Unauthenticated};
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{parse_id, Body, Query};
use super::fields::Form;
use super::AppState;
use crate::db::{DbError, ExportStorage, PathClaim, StorageFields, User};
use crate::storage::local_path;
use crate::storage::spec::{type_spec, ConfigError, FieldKind, TargetConfig, TypeSpec, TYPES};
use crate::sync::{state, target_config};
use crate::time::{iso, iso_opt, now_micros};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// The spec whose response layout serves unknown types (never reached in practice).
const LOCAL_SPEC: &TypeSpec = TYPES[4];

fn storage_type(name: &str) -> ApiResult<&'static TypeSpec> {
    type_spec(name).ok_or_else(ApiError::no_route)
}

fn not_supported(t: &TypeSpec) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("Export storage type \"{}\" is not supported by this labelport version yet.", t.name),
    )
}

/// Renders a storage with its type's keys in Label Studio's order (write-only
/// fields never appear), plus `export_mode` (ours).
pub fn storage_json(s: &ExportStorage) -> Value {
    let f = &s.fields;
    let keys = type_spec(&s.storage_type).map_or(LOCAL_SPEC.response, |t| t.response);
    let mut out = Map::new();
    for key in keys {
        let value = match *key {
            "id" => json!(s.id),
            "type" => json!(s.storage_type),
            "synchronizable" => json!(f.synchronizable),
            "path" if s.storage_type == "localfiles" => json!(f.path),
            "regex_filter" => json!(f.regex_filter),
            "use_blob_urls" => json!(f.use_blob_urls),
            "last_sync" => json!(iso_opt(s.last_sync)),
            "last_sync_count" => json!(s.last_sync_count),
            "last_sync_job" => json!(s.last_sync_job),
            "status" => json!(s.status),
            "traceback" => json!(s.traceback),
            "meta" => s.meta.clone(),
            "title" => json!(f.title),
            "description" => json!(f.description),
            "created_at" => json!(iso(s.created_at)),
            "can_delete_objects" => json!(f.can_delete_objects),
            "project" => json!(s.project_id),
            other => f.config.get(other).cloned().unwrap_or(Value::Null),
        };
        out.insert((*key).to_owned(), value);
    }
    out.insert("export_mode".into(), json!(f.export_mode));
    Value::Object(out)
}

/// Validates the fields of a body over `base`; returns the merged fields and the
/// project id (checked against the caller's organization) if the body has one.
/// Write-only fields are merged into the sealed secrets.
async fn read_fields(
    state: &AppState,
    user: &User,
    t: &TypeSpec,
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
    let mut config = match std::mem::take(&mut f.config) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut secrets = open_secrets(state, &f)?;
    let mut secrets_changed = false;
    for field in t.fields {
        match field.kind {
            FieldKind::LocalPath => {
                if let Some(v) = form.string(field.name, None, true) {
                    f.path = local_path::normalize(v.as_deref());
                }
            }
            FieldKind::Text => match form.string(field.name, None, true) {
                Some(v) if field.secret => {
                    secrets_changed = true;
                    match v.filter(|v| !v.is_empty()) {
                        Some(v) => secrets.insert(field.name.into(), Value::String(v)),
                        None => secrets.remove(field.name),
                    };
                }
                Some(v) => {
                    config.insert(field.name.into(), v.map_or(Value::Null, Value::String));
                }
                None => {
                    if !field.secret {
                        config.entry(field.name).or_insert(Value::Null);
                    }
                }
            },
            FieldKind::SmallInt { default } => match form.integer(field.name, true) {
                Some(Some(v)) if !(0..=32767).contains(&v) => {
                    form.error(field.name, "Ensure this value is less than or equal to 32767.");
                }
                Some(v) => {
                    config.insert(field.name.into(), v.map_or(Value::Null, |v| json!(v)));
                }
                None => {
                    config.entry(field.name).or_insert(json!(default));
                }
            },
        }
    }
    f.config = Value::Object(config);
    // Sealed anew only when a write-only field was sent: the same secrets keep their
    // ciphertext, so the storage's target (keyed by its configuration) is kept too.
    if secrets_changed {
        f.secrets = state.secrets.seal_map(&secrets);
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

fn open_secrets(state: &AppState, f: &StorageFields) -> ApiResult<Map<String, Value>> {
    state.secrets.open_map(f.secrets.as_deref()).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))
}

/// The type's field checks (no connection): Label Studio's messages and statuses.
async fn check_fields(state: &AppState, t: &TypeSpec, f: &StorageFields) -> ApiResult<TargetConfig> {
    let config = target_config(f, &state.secrets).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    (t.check)(&config, &state.targets).await.map_err(config_error)?;
    Ok(config)
}

fn config_error(e: ConfigError) -> ApiError {
    match e {
        ConfigError::Field(field, message) => ApiError::field(field, message),
        ConfigError::NonField(message) => ApiError::non_field(message),
        ConfigError::Forbidden(message) => ApiError::new(StatusCode::FORBIDDEN, message),
    }
}

/// The local directory a storage of a type with a local path would use, claimed for
/// the caller's organization (issue #12: directories are confined per organization).
fn path_claim<'a>(t: &TypeSpec, user: &User, f: &'a StorageFields) -> Option<PathClaim<'a>> {
    let local = t.fields.iter().any(|field| field.kind == FieldKind::LocalPath);
    Some(PathClaim {
        organization_id: user.organization_id,
        path: f.path.as_deref().filter(|_| local)?,
        overlaps: local_path::overlap,
    })
}

/// Maps a refused path claim to a 400 under `path`; other errors pass through.
fn path_taken(f: &StorageFields) -> impl Fn(DbError) -> ApiError + '_ {
    move |e| match e {
        DbError::Conflict => ApiError::field("path", local_path::taken_message(f.path.as_deref().unwrap_or_default())),
        e => e.into(),
    }
}

/// Reaches the target as configured (list, HEAD, PING); a failure is a 400 with the
/// cause, or with Label Studio's generic message where it hides the cause.
async fn check_connection(state: &AppState, t: &TypeSpec, config: &TargetConfig, masked: bool) -> ApiResult<()> {
    if !t.checks_connection {
        return Ok(());
    }
    let outcome = match crate::storage::spec::build(t.name, config, &state.targets) {
        Ok(target) => target.validate().await,
        Err(e) => Err(e),
    };
    outcome.map_err(|e| {
        tracing::info!(storage_type = t.name, error.message = %e, "storage connection check failed");
        if masked {
            ApiError::non_field("Error validating storage connection")
        } else {
            ApiError::non_field(e.to_string())
        }
    })
}

fn default_fields(state: &AppState, t: &TypeSpec) -> StorageFields {
    let mut config = Map::new();
    for field in t.fields.iter().filter(|f| !f.secret) {
        let value = match field.kind {
            FieldKind::SmallInt { default } => json!(default),
            _ => Value::Null,
        };
        if field.kind != FieldKind::LocalPath {
            config.insert(field.name.into(), value);
        }
    }
    StorageFields {
        synchronizable: true,
        export_mode: if state.settings.sync.task_mode_default { "task" } else { "annotation" }.into(),
        config: Value::Object(config),
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
    let now = now_micros();
    for s in storages.iter_mut() {
        // Only an `in_progress` storage with an old ping can be stale: a list taken while
        // a sync runs (and pings) asks the database nothing more.
        let Some(failed) = state::stale(s, now, false) else { continue };
        // A live job keeps it as it is; read first, so that this needs no write.
        if state.db.active_job(s.id).await?.is_some() {
            continue;
        }
        // Only while still idle: a sync queued since the check above keeps its state.
        if state.db.set_sync_state_if_idle(s.id, &failed).await? {
            s.status = failed.status;
            s.traceback = failed.traceback;
        } else {
            *s = state.db.storage_by_id(s.id).await?;
        }
    }
    Ok(())
}

async fn find(state: &AppState, user: &User, t: &TypeSpec, raw_id: &str) -> ApiResult<ExportStorage> {
    let id = parse_id(raw_id).ok_or_else(ApiError::no_route)?;
    state.db.storage(user.organization_id, t.name, id).await.or_not_found(t.model)
}

/// `GET /api/storages/export/types` (and `/api/storages/types`).
#[utoipa::path(
    get,
    path = "/api/storages/export/types",
    tag = "storages",
    operation_id = "api_storages_export_types_list",
    responses((status = 200, description = "Every storage type, in Label Studio's order (also served at `/api/storages/types`)", body = Vec<schema::StorageTypeInfo>)),
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
        (status = 200, description = "The project's export storages of every type, by type (s3, gcs, azure, redis, localfiles) then id; stale syncs are marked `failed` first", body = Vec<schema::ExportStorage>),
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list_all(State(state): State<AppState>, Auth(user): Auth, query: Query) -> ApiResult<Json<Value>> {
    let Ok(Some(project)) = query.int("project") else { return Ok(Json(json!([]))) };
    let Some(mut storages) = state.db.list_storages(user.organization_id, project, None).await? else {
        return Ok(Json(json!([])));
    };
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
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("project" = i64, Query, description = "Project id"),
        ("ordering" = Option<String>, Query, description = "`id` (default), `-id`, `title`, `-title`, `created_at` or `-created_at`; anything else keeps id order"),
    ),
    responses(
        (status = 200, description = "The project's storages of this type (not paginated); stale syncs are marked `failed` first", body = Vec<schema::ExportStorage>),
        (status = 400, description = "`query parameter \"project\" is required` (under `non_field_errors`)", body = ErrorBody),
        Unauthenticated,
        (status = 404, description = "Unknown type or non-integer `project` (`Not found.`), or `No Project matches the given query.`", body = ErrorBody),
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
    let Some(mut storages) = state.db.list_storages(user.organization_id, project, Some(t.name)).await? else {
        return Err(ApiError::not_found("Project"));
    };
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
    params(("type" = schema::ExportStorageType, Path, description = "Storage type")),
    request_body(content = schema::ExportStorageInput, description = "`project` and `path` are required"),
    responses(
        (status = 201, description = "The new storage; with sync-on-create (default) as it was right after its first sync was queued (`status: queued`)", body = schema::ExportStorage),
        BodyErrors,
        schema::StorageChecks,
        Unauthenticated,
        schema::UnknownStorageType,
        schema::TypeNotSupported,
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
    let (fields, project) = read_fields(&state, &user, t, body, default_fields(&state, t), true).await?;
    if t.build.is_none() {
        return Err(not_supported(t));
    }
    let config = check_fields(&state, t, &fields).await?;
    check_connection(&state, t, &config, false).await?;
    let project = project.ok_or_else(|| ApiError::field("project", "This field is required."))?;
    let claim = path_claim(t, &user, &fields);
    let mut storage =
        state.db.create_storage(t.name, project, &fields, claim.as_ref()).await.map_err(path_taken(&fields))?;
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
    params(("type" = schema::ExportStorageType, Path, description = "Storage type")),
    request_body(content = schema::ExportStorageInput, description = "A new storage, or with `id` changes to an existing one (merged over it); `project` is required. Nothing is stored."),
    responses(
        (status = 200, description = "Valid (empty body)"),
        BodyErrors,
        schema::StorageChecks,
        Unauthenticated,
        schema::StorageNotFound,
        schema::TypeNotSupported,
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
        None | Some(Value::Null) => default_fields(&state, t),
        Some(id) => {
            let id =
                id.as_i64().or_else(|| id.as_str().and_then(parse_id)).ok_or_else(|| ApiError::not_found(t.model))?;
            state.db.storage(user.organization_id, t.name, id).await.or_not_found(t.model)?.fields
        }
    };
    let (fields, _) = read_fields(&state, &user, t, body, base, true).await?;
    if t.build.is_none() {
        return Err(not_supported(t));
    }
    let config = check_fields(&state, t, &fields).await?;
    if let Some(claim) = path_claim(t, &user, &fields) {
        if state.db.local_path_taken(&claim).await? {
            return Err(path_taken(&fields)(DbError::Conflict));
        }
    }
    check_connection(&state, t, &config, t.masks_validate_errors).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /api/storages/export/{type}/form`.
#[utoipa::path(
    get,
    path = "/api/storages/export/{type}/form",
    tag = "storages",
    operation_id = "api_storages_export_type_form",
    params(("type" = schema::ExportStorageType, Path, description = "Storage type")),
    responses(
        (status = 200, description = "The UI form layout of this type, verbatim from Label Studio", content_type = "application/json", body = Vec<Object>),
        schema::UnknownStorageType,
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
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    responses(
        (status = 200, description = "The storage", body = schema::ExportStorage),
        Unauthenticated,
        schema::StorageNotFound,
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
    let (fields, project) = read_fields(&state, &user, t, body, current.fields.clone(), put).await?;
    check_fields(&state, t, &fields).await?;
    if project.is_some_and(|p| p != current.project_id) {
        return Err(ApiError::field("project", "An export storage cannot be moved to another project."));
    }
    // A new location (path, bucket, prefix, endpoint, …) needs a new full export.
    let moved = fields.path != current.fields.path
        || fields.export_mode != current.fields.export_mode
        || fields.config != current.fields.config;
    let claim = path_claim(t, &user, &fields);
    let storage = match state.db.update_storage(current.id, &fields, moved, claim.as_ref()).await {
        Err(DbError::Conflict) => return Err(path_taken(&fields)(DbError::Conflict)),
        other => other.or_not_found(t.model)?,
    };
    Ok(Json(storage_json(&storage)))
}

/// `PATCH /api/storages/export/{type}/{id}`: partial; the merged storage is validated.
#[utoipa::path(
    patch,
    path = "/api/storages/export/{type}/{id}",
    tag = "storages",
    operation_id = "api_storages_export_type_partial_update",
    params(
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    request_body(content = schema::ExportStorageInput, description = "Fields to change; the merged storage is validated. `project` cannot change."),
    responses(
        (status = 200, description = "The updated storage (with `type`); never syncs", body = schema::ExportStorage),
        BodyErrors,
        schema::StorageChecks,
        Unauthenticated,
        schema::StorageNotFound,
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
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    request_body(content = schema::ExportStorageInput, description = "Like PATCH, with `project` required. `project` cannot change."),
    responses(
        (status = 200, description = "The updated storage; never syncs", body = schema::ExportStorage),
        BodyErrors,
        schema::StorageChecks,
        Unauthenticated,
        schema::StorageNotFound,
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
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    responses(
        (status = 204, description = "Deleted; files already written stay"),
        Unauthenticated,
        schema::StorageNotFound,
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
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("id" = i64, Path, description = "Storage id (per type)"),
        ("full" = Option<bool>, Query, description = "`true`: walk every annotation instead of the change feed"),
    ),
    responses(
        (status = 200, description = "The storage right after queuing (`queued`), or its current state when a sync was already queued or running", body = schema::ExportStorage),
        (status = 400, description = "`{\"message\": \"Storage <id> is not synchronizable\"}` (this exact raw body, not the error shape), or a failed path check (error shape, under `non_field_errors`)", body = schema::SyncRefused),
        Unauthenticated,
        schema::StorageNotFound,
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
    check_fields(&state, t, &storage.fields).await?;
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
        ("type" = schema::ExportStorageType, Path, description = "Storage type"),
        ("id" = i64, Path, description = "Storage id (per type)"),
    ),
    responses(
        (status = 200, description = "How far auto-export is behind the change feed (labelport only)", body = schema::ExportLag),
        Unauthenticated,
        schema::StorageNotFound,
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
