//! Task import (`POST /api/projects/{id}/import`), contract §7.2.

use super::annotations::parse_result;
use super::auth::Auth;
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{Id, Query};
use super::fields::{python_type_name, Form};
use super::import_files::{ImportInput, Uploaded};
use super::AppState;
use crate::db::{NewAnnotation, NewPrediction, NewTask};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Instant;

fn task_error(index: usize, message: impl std::fmt::Display) -> ApiError {
    ApiError::non_field(format!("Task #{}: {message}", index + 1))
}

fn parse_annotation(value: &Value) -> Result<NewAnnotation, String> {
    let mut form = Form::new(value.clone())
        .map_err(|_| format!("an annotation must be an object, got {}", python_type_name(value)))?;
    let mut a = NewAnnotation { result: json!([]), last_action: Some("imported".into()), ..Default::default() };
    a.was_cancelled = form.boolean("was_cancelled", false).flatten().unwrap_or(false);
    a.ground_truth = form.boolean("ground_truth", false).flatten().unwrap_or(false);
    a.lead_time = form.number("lead_time", true).flatten();
    // `completed_by` may be an id or an expanded user object.
    a.completed_by = match form.raw("completed_by") {
        Some(Value::Object(user)) => user.get("id").and_then(Value::as_i64),
        Some(_) => form.pk("completed_by", true).flatten(),
        None => None,
    };
    if form.has_errors() {
        return Err(
            "an annotation has a field of the wrong type (was_cancelled, ground_truth, lead_time or completed_by)"
                .into(),
        );
    }
    if let Some(result) = form.raw("result") {
        a.result =
            parse_result(result).map_err(|_| "annotation \"result\" field in annotation must be list".to_owned())?;
    }
    Ok(a)
}

fn parse_prediction(value: &Value) -> Result<NewPrediction, String> {
    let mut form = Form::new(value.clone())
        .map_err(|_| format!("a prediction must be an object, got {}", python_type_name(value)))?;
    let score = form.number("score", true).flatten();
    let model_version = form.string("model_version", None, true).flatten().unwrap_or_default();
    if form.has_errors() {
        return Err("a prediction has a field of the wrong type (score or model_version)".into());
    }
    let result = match form.raw("result") {
        Some(r) => parse_result(r).map_err(|_| "prediction \"result\" must be a list".to_owned())?,
        None => json!([]),
    };
    Ok(NewPrediction { result, score, model_version })
}

fn list_of<'a>(task: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match task.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("\"{key}\" must be a list, got {}", python_type_name(other))),
    }
}

/// Turns one input item into a task: `{"data": {...}, "annotations": [...], ...}`,
/// or a flat object that becomes `data` as a whole.
fn parse_task(item: &Value) -> Result<NewTask, String> {
    let Value::Object(obj) = item else {
        return Err(format!("a task must be a JSON object, got {}", python_type_name(item)));
    };
    let Some(data) = obj.get("data") else {
        return Ok(NewTask { data: item.clone(), meta: json!({}), annotations: vec![], predictions: vec![] });
    };
    if !data.is_object() {
        return Err(format!("\"data\" must be a JSON object, got {}", python_type_name(data)));
    }
    let meta = match obj.get("meta") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(other) => return Err(format!("\"meta\" must be a JSON object, got {}", python_type_name(other))),
    };
    let annotations = list_of(obj, "annotations")?.iter().map(parse_annotation).collect::<Result<_, _>>()?;
    let predictions = list_of(obj, "predictions")?.iter().map(parse_prediction).collect::<Result<_, _>>()?;
    Ok(NewTask { data: data.clone(), meta, annotations, predictions })
}

/// The data keys of all tasks, in order of first appearance.
fn data_columns(tasks: &[NewTask]) -> Vec<String> {
    let mut seen = HashSet::new();
    tasks
        .iter()
        .filter_map(|t| t.data.as_object())
        .flat_map(|data| data.keys())
        .filter(|key| seen.insert(key.as_str()))
        .cloned()
        .collect()
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
            (crate::api::openapi::ImportFiles = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 201, description = "What was imported", body = crate::api::openapi::ImportSummary),
        (status = 400, description = "Malformed JSON, wrong types or missing fields, or more tasks than `LABELPORT_MAX_IMPORT_TASKS`", body = crate::api::openapi::ErrorBody),
        (status = 413, description = "Body over the import limit (`LABELPORT_MAX_IMPORT_BYTES`)", body = crate::api::openapi::ErrorBody),
        (status = 415, description = "Not JSON or a form", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No Project matches the given query.", body = crate::api::openapi::ErrorBody),
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
    let (items, files) = match input {
        ImportInput::Json(Value::Array(items)) => (items, None),
        ImportInput::Json(obj @ Value::Object(_)) => (vec![obj], None),
        ImportInput::Json(other) => {
            return Err(ApiError::non_field(format!(
                "load_tasks: expected a list of tasks, got {}",
                python_type_name(&other)
            )))
        }
        ImportInput::Files(Uploaded { items, found_formats, could_be_tasks_list }) => {
            (items, Some((found_formats, could_be_tasks_list)))
        }
    };
    if items.is_empty() {
        return Err(ApiError::non_field("load_tasks: No tasks added"));
    }
    // Label Studio's TASKS_MAX_NUMBER check, with its wording.
    let max = state.settings.http.max_import_tasks;
    if items.len() > max {
        return Err(ApiError::non_field(format!(
            "Maximum task number is {max}, current task number is {}",
            items.len()
        )));
    }
    let tasks: Vec<NewTask> = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_task(item).map_err(|e| task_error(i, e)))
        .collect::<Result<_, _>>()?;
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
