//! Task import (`POST /api/projects/{id}/import`), contract §7.2.

use super::auth::Auth;
use super::error::schema::{BodyErrors, ErrorBody, Unauthenticated};
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{Id, Query};
use super::import_files::ImportInput;
use super::import_parse::object_keys;
use super::projects::schema::ProjectNotFound;
use super::AppState;
use crate::db::NewTask;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Instant;

/// The data keys of all tasks, in order of first appearance.
fn data_columns(tasks: &[NewTask]) -> Vec<String> {
    let mut seen = HashSet::new();
    tasks.iter().flat_map(|t| object_keys(&t.data)).filter(|key| seen.insert(key.clone())).collect()
}

/// `POST /api/projects/{id}/import`.
#[utoipa::path(
    post,
    path = "/api/projects/{id}/import",
    tag = "import",
    operation_id = "api_projects_import",
    params(
        ("id" = i64, Path, description = "Project id"),
        ("return_task_ids" = Option<bool>, Query, description = "Add `task_ids` to the summary"),
    ),
    request_body(
        description = "A list of tasks (`{\"data\": {...}, \"annotations\": [...], \"predictions\": [...], \"meta\": {...}}` or a flat data object), or a single task; or `multipart/form-data` files (.json, .jsonl, .csv, .tsv, .txt)",
        content(
            (Vec<Object> = "application/json"),
            (schema::ImportFiles = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 201, description = "What was imported", body = schema::ImportSummary),
        BodyErrors,
        // After BodyErrors, so that these replace its 400 and 413.
        (status = 400, description = "Malformed JSON, wrong types or missing fields, or more tasks than `LABELPORT_MAX_IMPORT_TASKS`", body = ErrorBody),
        (status = 413, description = "Body over the import limit (`LABELPORT_MAX_IMPORT_BYTES`)", body = ErrorBody),
        Unauthenticated,
        ProjectNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn import(
    State(state): State<AppState>,
    Id(project_id): Id,
    Auth(user): Auth,
    query: Query,
    input: ImportInput,
) -> ApiResult<Response> {
    let started = Instant::now();
    state.db.project(user.organization_id, project_id).await.or_not_found("Project")?;
    let ImportInput { tasks, files } = input;
    let tasks = tasks?;
    let authors: HashSet<i64> =
        tasks.iter().flat_map(|t| t.annotations.iter().filter_map(|a| a.completed_by)).collect();
    for id in authors {
        if !state.db.user_in_organization(id, user.organization_id).await? {
            return Err(ApiError::non_field(format!("completed_by: user {id} is not a member of this organization")));
        }
    }
    // Label Studio reports the data keys and formats of uploaded files only.
    let (found_formats, could_be_tasks_list, data_columns) = match files {
        None => (json!([]), false, vec![]),
        Some((formats, tables)) => (Value::Object(formats), tables, data_columns(&tasks)),
    };
    let summary = state.db.import_tasks(project_id, user.id, &tasks).await?;
    if summary.annotation_count > 0 {
        state.changes_committed();
    }
    let mut body = json!({
        "task_count": summary.task_ids.len(),
        "annotation_count": summary.annotation_count,
        "prediction_count": summary.prediction_count,
        "duration": started.elapsed().as_secs_f64(),
        "file_upload_ids": [],
        "could_be_tasks_list": could_be_tasks_list,
        "found_formats": found_formats,
        "data_columns": data_columns,
    });
    if query.flag("return_task_ids") {
        body["task_ids"] = summary.task_ids.into();
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Documentation-only shapes of this resource's bodies, for the OpenAPI document: the
/// handlers build their JSON with `serde_json` to keep Label Studio's key order, so
/// these types are never constructed.
pub mod schema {
    use utoipa::ToSchema;

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
}
