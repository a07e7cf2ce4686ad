//! Annotations (`/api/tasks/{id}/annotations/`, `/api/annotations/{id}/`), contract §7.4.

use super::auth::Auth;
use super::error::schema::{BodyErrors, Unauthenticated};
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{Body, Id, Query};
use super::fields::{python_type_name, Form};
use super::tasks::schema::TaskNotFound;
use super::users::{created_username, UserCache};
use super::AppState;
use crate::db::{Annotation, JsonColumn, JsonText, NewAnnotation, User};
use crate::time::{iso, iso_opt, now_micros, parse_any, timesince};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The `last_action` values Label Studio knows.
const LAST_ACTIONS: [&str; 10] = [
    "prediction",
    "propagated_annotation",
    "imported",
    "submitted",
    "updated",
    "skipped",
    "accepted",
    "rejected",
    "fixed_and_accepted",
    "deleted_review",
];

/// Renders an annotation in the API shape; `completed_by` is the id, or the given
/// expanded object (task detail).
pub fn annotation_json<J: JsonColumn>(a: &Annotation<J>, author: Option<&User>, completed_by: Option<Value>) -> Value {
    json!({
        "id": a.id,
        "result": a.result.to_value(),
        "created_username": created_username(author),
        "created_ago": timesince(a.created_at, now_micros()),
        "completed_by": completed_by.unwrap_or_else(|| a.completed_by.into()),
        "was_cancelled": a.was_cancelled,
        "ground_truth": a.ground_truth,
        "created_at": iso(a.created_at),
        "updated_at": iso(a.updated_at),
        "draft_created_at": iso_opt(a.draft_created_at),
        "lead_time": a.lead_time,
        "import_id": a.import_id,
        "last_action": a.last_action,
        "bulk_created": a.bulk_created,
        "task": a.task_id,
        "project": a.project_id,
        "updated_by": a.updated_by,
        "parent_prediction": a.parent_prediction,
        "parent_annotation": a.parent_annotation,
        "last_created_by": a.last_created_by,
    })
}

/// Parses `result`: a list, or a string holding a JSON list. Always 400 on bad input
/// (Label Studio answers 500 for an unparsable string).
pub fn parse_result(value: &Value) -> ApiResult<Value> {
    let value = match value {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|_| ApiError::bad_request("annotation \"result\" can't be parse from str to JSON"))?,
        other => other.clone(),
    };
    match value {
        Value::Array(_) => Ok(value),
        Value::Null => Ok(json!([])),
        _ => Err(ApiError::bad_request("annotation \"result\" field in annotation must be list")),
    }
}

/// Validates an annotation body onto `base`, checking referenced users (of the
/// organization) and parent annotations and predictions (of the project).
pub async fn apply_annotation(
    state: &AppState,
    organization_id: i64,
    project_id: i64,
    body: Value,
    query: Option<&Query>,
    mut a: NewAnnotation,
) -> ApiResult<NewAnnotation> {
    let mut form = Form::new(body)?;
    if let Some(Some(v)) = form.boolean("was_cancelled", false) {
        a.was_cancelled = v;
    } else if query.is_some_and(|q| q.flag("was_cancelled")) {
        a.was_cancelled = true;
    }
    if let Some(Some(v)) = form.boolean("ground_truth", false) {
        a.ground_truth = v;
    }
    if let Some(Some(v)) = form.boolean("bulk_created", true) {
        a.bulk_created = v;
    }
    if let Some(v) = form.number("lead_time", true) {
        a.lead_time = v;
    }
    if let Some(v) = form.pk("completed_by", true) {
        a.completed_by = v;
    }
    for (name, slot) in [
        ("import_id", &mut a.import_id),
        ("parent_prediction", &mut a.parent_prediction),
        ("parent_annotation", &mut a.parent_annotation),
    ] {
        if let Some(v) = form.integer(name, true) {
            *slot = v;
        }
    }
    // Parents given in this body; ones kept from before were checked when they were set.
    let parent_prediction = a.parent_prediction.filter(|_| form.has("parent_prediction"));
    let parent_annotation = a.parent_annotation.filter(|_| form.has("parent_annotation"));
    if let Some(v) = form.string("last_action", None, true) {
        match v {
            Some(action) if !LAST_ACTIONS.contains(&action.as_str()) => {
                form.error("last_action", format!("\"{action}\" is not a valid choice."))
            }
            v => a.last_action = v,
        }
    }
    if let Some(v) = form.string("draft_created_at", None, true) {
        match v.map(|s| parse_any(&s)) {
            Some(None) => form.error(
                "draft_created_at",
                "Datetime has wrong format. Use one of these formats instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].",
            ),
            Some(Some(t)) => a.draft_created_at = Some(t),
            None => a.draft_created_at = None,
        }
    }
    let result = form.raw("result").cloned();
    form.finish()?;
    if let Some(result) = result {
        a.result = parse_result(&result)?;
    }
    if let Some(user_id) = a.completed_by {
        if !state.db.user_in_organization(user_id, organization_id).await? {
            return Err(ApiError::field("completed_by", format!("Invalid pk \"{user_id}\" - object does not exist.")));
        }
    }
    if let Some(id) = parent_prediction {
        if !state.db.prediction_in_project(id, project_id).await? {
            return Err(ApiError::field("parent_prediction", format!("Invalid pk \"{id}\" - object does not exist.")));
        }
    }
    if let Some(id) = parent_annotation {
        if !state.db.annotation_in_project(id, project_id).await? {
            return Err(ApiError::field("parent_annotation", format!("Invalid pk \"{id}\" - object does not exist.")));
        }
    }
    Ok(a)
}

async fn render(state: &AppState, a: &Annotation, caller: &User) -> ApiResult<Value> {
    // Mostly the caller's own annotation: its author is already at hand.
    if a.completed_by == Some(caller.id) {
        return Ok(annotation_json(a, Some(caller), None));
    }
    let mut users = UserCache::default();
    let author = users.get(&state.db, a.completed_by).await?;
    Ok(annotation_json(a, author, None))
}

/// `POST /api/tasks/{id}/annotations/`.
#[utoipa::path(
    post,
    path = "/api/tasks/{id}/annotations/",
    tag = "annotations",
    operation_id = "api_tasks_annotations_create",
    params(
        ("id" = i64, Path, description = "Task id"),
        ("was_cancelled" = Option<bool>, Query, description = "Create a skipped annotation"),
    ),
    request_body = schema::AnnotationInput,
    responses(
        (status = 201, description = "The new annotation", body = schema::Annotation),
        BodyErrors,
        Unauthenticated,
        TaskNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    Id(task_id): Id,
    Auth(user): Auth,
    query: Query,
    Body(body): Body,
) -> ApiResult<Response> {
    let task = state.db.task(user.organization_id, task_id).await.or_not_found("Task")?;
    if !body.is_object() {
        return Err(ApiError::non_field(format!(
            "Invalid data. Expected a dictionary, but got {}.",
            python_type_name(&body)
        )));
    }
    let new = apply_annotation(
        &state,
        user.organization_id,
        task.project_id,
        body,
        Some(&query),
        NewAnnotation { result: json!([]), ..Default::default() },
    )
    .await?;
    let annotation = state.db.create_annotation(&task, user.id, &new).await.or_not_found("Task")?;
    state.changes_committed();
    Ok((StatusCode::CREATED, Json(render(&state, &annotation, &user).await?)).into_response())
}

/// `GET /api/tasks/{id}/annotations/`: the task's non-cancelled annotations by id.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/annotations/",
    tag = "annotations",
    operation_id = "api_tasks_annotations_list",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task's non-cancelled annotations, by id", body = Vec<schema::Annotation>),
        Unauthenticated,
        TaskNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list_for_task(State(state): State<AppState>, Id(task_id): Id, Auth(user): Auth) -> ApiResult<Json<Value>> {
    let task = state.db.task(user.organization_id, task_id).await.or_not_found("Task")?;
    let annotations: Vec<Annotation<JsonText>> = state.db.annotations_for_tasks(&[task.id], false).await?;
    let mut users = UserCache::default();
    let mut out = Vec::with_capacity(annotations.len());
    for a in &annotations {
        let author = users.get(&state.db, a.completed_by).await?;
        out.push(annotation_json(a, author, None));
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /api/annotations/{id}/`.
#[utoipa::path(
    get,
    path = "/api/annotations/{id}/",
    tag = "annotations",
    operation_id = "api_annotations_read",
    params(("id" = i64, Path, description = "Annotation id")),
    responses(
        (status = 200, description = "The annotation", body = schema::Annotation),
        Unauthenticated,
        schema::AnnotationNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn get(State(state): State<AppState>, Id(id): Id, Auth(user): Auth) -> ApiResult<Json<Value>> {
    let annotation = state.db.annotation(user.organization_id, id).await.or_not_found("Annotation")?;
    Ok(Json(render(&state, &annotation, &user).await?))
}

/// `PATCH|PUT /api/annotations/{id}/`.
#[utoipa::path(
    method(patch, put),
    path = "/api/annotations/{id}/",
    tag = "annotations",
    operation_id = "api_annotations_partial_update",
    params(("id" = i64, Path, description = "Annotation id")),
    request_body = schema::AnnotationInput,
    responses(
        (status = 200, description = "The updated annotation", body = schema::Annotation),
        BodyErrors,
        Unauthenticated,
        schema::AnnotationNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    Id(id): Id,
    Auth(user): Auth,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let current = state.db.annotation(user.organization_id, id).await.or_not_found("Annotation")?;
    let new = apply_annotation(&state, user.organization_id, current.project_id, body, None, current.to_new()).await?;
    let annotation =
        state.db.update_annotation(user.organization_id, id, user.id, &new).await.or_not_found("Annotation")?;
    state.changes_committed();
    Ok(Json(render(&state, &annotation, &user).await?))
}

/// `DELETE /api/annotations/{id}/`.
#[utoipa::path(
    delete,
    path = "/api/annotations/{id}/",
    tag = "annotations",
    operation_id = "api_annotations_delete",
    params(("id" = i64, Path, description = "Annotation id")),
    responses(
        (status = 204, description = "Deleted"),
        Unauthenticated,
        schema::AnnotationNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn delete(State(state): State<AppState>, Id(id): Id, Auth(user): Auth) -> ApiResult<StatusCode> {
    state.db.delete_annotation(user.organization_id, id).await.or_not_found("Annotation")?;
    state.changes_committed();
    Ok(StatusCode::NO_CONTENT)
}

/// Documentation-only shapes of this resource's bodies, for the OpenAPI document: the
/// handlers build their JSON with `serde_json` to keep Label Studio's key order, so
/// these types are never constructed.
pub mod schema {
    use crate::api::error::schema::ErrorBody;
    use serde_json::Value;
    use utoipa::{IntoResponses, ToSchema};

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

    /// The 404 of an unknown Annotation id.
    #[derive(IntoResponses)]
    #[response(status = 404, description = "No Annotation matches the given query.")]
    pub struct AnnotationNotFound(pub ErrorBody);
}
