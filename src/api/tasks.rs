//! Tasks (`/api/tasks/`), contract §7.3.

use super::annotations::annotation_json;
use super::auth::Auth;
use super::error::schema::{BodyErrors, DetailBody, Unauthenticated};
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{Body, Id, Query};
use super::fields::Form;
use super::pagination::Page;
use super::users::{user_with_initials, UserCache};
use super::AppState;
use crate::db::{Annotation, Db, JsonColumn, JsonText, Prediction, Task};
use crate::restyle::{Style, Writer};
use crate::time::{iso, now_micros, timesince};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The task object of create and update responses (without annotations).
pub fn task_json(t: &Task) -> Value {
    json!({
        "id": t.id,
        "data": t.data,
        "meta": t.meta,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "is_labeled": t.is_labeled,
        "overlap": t.overlap,
        "inner_id": t.inner_id,
        "total_annotations": t.total_annotations,
        "cancelled_annotations": t.cancelled_annotations,
        "total_predictions": t.total_predictions,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": null,
        "project": t.project_id,
        "updated_by": t.updated_by,
        "file_upload": null,
        "comment_authors": [],
    })
}

/// A prediction object.
pub fn prediction_json(p: &Prediction) -> Value {
    json!({
        "id": p.id,
        "result": p.result,
        "model_version": p.model_version,
        "created_ago": timesince(p.created_at, now_micros()),
        "score": p.score,
        "cluster": null,
        "neighbors": null,
        "mislabeling": 0.0,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at),
        "model": null,
        "model_run": null,
        "task": p.task_id,
        "project": p.project_id,
    })
}

/// Most tasks on one page of `GET /api/tasks/` (larger `page_size`s are capped): a
/// page's cost grows with its size, and Label Studio's clients page anyway.
pub const MAX_TASK_PAGE_SIZE: i64 = 1000;

/// A task's annotations and predictions, for rendering a page of tasks: loaded in two
/// queries and grouped per task, so a page costs time in proportion to its own size.
struct Related {
    annotations: HashMap<i64, Vec<Annotation<JsonText>>>,
    predictions: HashMap<i64, Vec<Prediction>>,
    users: UserCache,
    detailed: bool,
}

impl Related {
    /// What the list (`detailed == false`) or detail endpoint shows of `tasks`.
    async fn load<J>(db: &Db, tasks: &[Task<J>], detailed: bool) -> ApiResult<Related> {
        let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        // Results stay stored text: a list page shows none, and a detailed one parses each once.
        let annotations = db.annotations_for_tasks(&ids, true).await?;
        Related::with_annotations(db, &ids, annotations, detailed).await
    }

    /// [`load`](Self::load) of the tasks `ids` whose annotations were read already.
    async fn with_annotations(
        db: &Db,
        ids: &[i64],
        annotations: Vec<Annotation<JsonText>>,
        detailed: bool,
    ) -> ApiResult<Related> {
        let predictions = if detailed { db.predictions_for_tasks(ids).await? } else { Vec::new() };
        Related::of(db, annotations, predictions, detailed).await
    }

    /// Groups the annotations and predictions read for some tasks, and reads their
    /// annotators where the detail shows them.
    async fn of(
        db: &Db,
        annotations: Vec<Annotation<JsonText>>,
        predictions: Vec<Prediction>,
        detailed: bool,
    ) -> ApiResult<Related> {
        let mut users = UserCache::default();
        if detailed {
            users.load(db, annotations.iter().filter_map(|a| a.completed_by)).await?;
        }
        Ok(Related {
            annotations: by_task(annotations, |a| a.task_id),
            predictions: by_task(predictions, |p| p.task_id),
            users,
            detailed,
        })
    }

    /// Writes the task object, straight to bytes ([`Writer`], serde_json's compact
    /// form): a page of tasks is the API's most frequent answer, and building `Value`
    /// trees for it took a third of its CPU. Key order as Label Studio's.
    async fn write_task<J: JsonColumn>(&mut self, db: &Db, w: &mut Writer<'_>, t: &Task<J>) -> ApiResult<()> {
        let mine: &[Annotation<JsonText>] = self.annotations.get(&t.id).map_or(&[], Vec::as_slice);
        w.open();
        w.key("id");
        w.int(t.id);
        if self.detailed {
            let predictions: Vec<Value> =
                self.predictions.get(&t.id).into_iter().flatten().map(prediction_json).collect();
            w.key("predictions");
            w.value(&predictions);
            w.key("annotations");
            w.open_list();
            for a in mine {
                let author = self.users.get(db, a.completed_by).await?;
                let expanded = author.map(user_with_initials).unwrap_or(Value::Null);
                w.item();
                w.value(&annotation_json(a, author, Some(expanded)));
            }
            w.close_list();
        }
        w.key("drafts");
        w.raw("[]");
        w.key("annotators");
        let mut annotators: Vec<i64> = Vec::new();
        for id in mine.iter().filter_map(|a| a.completed_by) {
            if !annotators.contains(&id) {
                annotators.push(id);
            }
        }
        w.value(&annotators);
        w.key("inner_id");
        w.int(t.inner_id);
        w.key("cancelled_annotations");
        w.int(t.cancelled_annotations);
        w.key("total_annotations");
        w.int(t.total_annotations);
        w.key("total_predictions");
        w.int(t.total_predictions);
        if self.detailed {
            w.key("completed_at");
            w.stamp(mine.iter().filter(|a| !a.was_cancelled).map(|a| a.created_at).max());
        }
        w.key("annotations_results");
        w.raw("\"\"");
        w.key("predictions_results");
        w.raw("\"\"");
        if self.detailed {
            w.key("predictions_score");
            w.null();
        }
        w.key("file_upload");
        w.null();
        w.key("storage_filename");
        w.null();
        w.key("annotations_ids");
        let ids: Vec<String> = mine.iter().map(|a| a.id.to_string()).collect();
        w.plain_str(ids.join(",").as_bytes());
        w.key("predictions_model_versions");
        w.raw("[]");
        if self.detailed {
            let times: Vec<f64> = mine.iter().filter_map(|a| a.lead_time).collect();
            w.key("avg_lead_time");
            w.opt_float((!times.is_empty()).then(|| times.iter().sum::<f64>() / times.len() as f64));
            w.key("draft_exists");
            w.bool(false);
        }
        w.key("updated_by");
        w.open_list();
        if let Some(id) = t.updated_by {
            w.item();
            w.open();
            w.key("user_id");
            w.int(id);
            w.close();
        }
        w.close_list();
        w.key("data");
        w.json_text(&t.data.json_text());
        w.key("meta");
        w.json_text(&t.meta.json_text());
        w.key("created_at");
        w.stamp(Some(t.created_at));
        w.key("updated_at");
        w.stamp(Some(t.updated_at));
        w.key("is_labeled");
        w.bool(t.is_labeled);
        w.key("overlap");
        w.int(t.overlap);
        w.key("comment_count");
        w.int(0);
        w.key("unresolved_comment_count");
        w.int(0);
        w.key("last_comment_updated_at");
        w.null();
        w.key("project");
        w.int(t.project_id);
        w.key("comment_authors");
        w.raw("[]");
        w.close();
        Ok(())
    }
}

/// Groups rows by task id, keeping their order.
fn by_task<T>(rows: Vec<T>, task_id: impl Fn(&T) -> i64) -> HashMap<i64, Vec<T>> {
    let mut groups: HashMap<i64, Vec<T>> = HashMap::new();
    for row in rows {
        groups.entry(task_id(&row)).or_default().push(row);
    }
    groups
}

/// A `200 OK` whose body is JSON written already.
fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Reads a project reference: pk syntax, then existence in the caller's organization.
pub async fn project_field(state: &AppState, form: &mut Form, organization_id: i64) -> ApiResult<Option<i64>> {
    let Some(Some(id)) = form.pk("project", false) else {
        return Ok(None);
    };
    if state.db.project_exists(organization_id, id).await? {
        Ok(Some(id))
    } else {
        form.error("project", format!("Invalid pk \"{id}\" - object does not exist."));
        Ok(None)
    }
}

/// `POST /api/tasks/`.
#[utoipa::path(
    post,
    path = "/api/tasks/",
    tag = "tasks",
    operation_id = "api_tasks_create",
    request_body = schema::TaskInput,
    responses(
        (status = 201, description = "The new task", body = schema::Task),
        BodyErrors,
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn create(State(state): State<AppState>, Auth(user): Auth, Body(body): Body) -> ApiResult<Response> {
    let mut form = Form::new(body)?;
    form.require("project");
    form.require("data");
    let project = project_field(&state, &mut form, user.organization_id).await?;
    let data = form.object("data", false).flatten();
    let meta = form.object("meta", true).flatten().unwrap_or_else(|| json!({}));
    form.finish()?;
    let (Some(project), Some(data)) = (project, data) else {
        return Err(ApiError::bad_request("Invalid task."));
    };
    let task = state.db.create_task(user.organization_id, project, &data, &meta).await.or_not_found("Project")?;
    Ok((StatusCode::CREATED, Json(task_json(&task))).into_response())
}

/// `GET /api/tasks/?project=<id>`: paginated tasks of a project.
#[utoipa::path(
    get,
    path = "/api/tasks/",
    tag = "tasks",
    operation_id = "api_tasks_list",
    params(
        ("project" = i64, Query, description = "Project id (required)"),
        ("page" = Option<i64>, Query, description = "1-based page number"),
        ("page_size" = Option<i64>, Query, description = "Tasks per page (default 100, at most 1000)"),
        ("fields" = Option<String>, Query, description = "`all` adds annotations and predictions"),
    ),
    responses(
        (status = 200, description = "A page of the project's tasks, by id", body = schema::TaskPage),
        Unauthenticated,
        (status = 404, description = "No `project`, unknown project, or Invalid page.", body = DetailBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list(State(state): State<AppState>, Auth(user): Auth, query: Query) -> ApiResult<Response> {
    let project = match query.int("project") {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Err(ApiError::raw(
                StatusCode::NOT_FOUND,
                json!({ "detail": "Neither project nor view id specified" }),
            ))
        }
        Err(_) => return Err(ApiError::not_found("Project")),
    };
    let asked = Page::from_query(&query, 100, MAX_TASK_PAGE_SIZE)?;
    // The totals' read is also the check that the project is the caller's. The page asked
    // for is read with them, where the project allows (`page=last` needs the totals first).
    let window = asked.known_offset().map(|offset| (offset, asked.size));
    let (totals, read_with) =
        state.db.task_totals_and_page(user.organization_id, project, window).await.or_not_found("Project")?;
    let page = asked.check(totals.tasks)?;
    let detailed = query.get("fields") == Some("all");
    let (tasks, mut related) = match read_with {
        Some((tasks, annotations)) => {
            let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
            let related = Related::with_annotations(&state.db, &ids, annotations, detailed).await?;
            (tasks, related)
        }
        None => {
            let tasks: Vec<Task<JsonText>> = state.db.list_tasks(project, &totals, page.offset(), page.size).await?;
            let related = Related::load(&state.db, &tasks, detailed).await?;
            (tasks, related)
        }
    };
    let mut body = Vec::with_capacity(256 + 1024 * tasks.len());
    let mut w = Writer::new(&mut body, Style::Api);
    w.open();
    w.key("total_annotations");
    w.int(totals.annotations);
    w.key("total_predictions");
    w.int(totals.predictions);
    w.key("total");
    w.int(totals.tasks);
    w.key("tasks");
    w.open_list();
    for t in &tasks {
        w.item();
        related.write_task(&state.db, &mut w, t).await?;
    }
    w.close_list();
    w.close();
    Ok(json_response(body))
}

/// `GET /api/tasks/{id}/`.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/",
    tag = "tasks",
    operation_id = "api_tasks_read",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task with all its annotations and predictions", body = schema::Task),
        Unauthenticated,
        schema::TaskNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn get(State(state): State<AppState>, Id(id): Id, Auth(user): Auth) -> ApiResult<Response> {
    let (task, annotations, predictions) =
        state.db.task_in_full(user.organization_id, id).await.or_not_found("Task")?;
    let mut related = Related::of(&state.db, annotations, predictions, true).await?;
    let mut body = Vec::with_capacity(2048);
    related.write_task(&state.db, &mut Writer::new(&mut body, Style::Api), &task).await?;
    Ok(json_response(body))
}

/// `PATCH|PUT /api/tasks/{id}/`.
#[utoipa::path(
    method(patch, put),
    path = "/api/tasks/{id}/",
    tag = "tasks",
    operation_id = "api_tasks_partial_update",
    params(("id" = i64, Path, description = "Task id")),
    request_body(content = Object, description = "`data`, `meta` and/or `overlap`"),
    responses(
        (status = 200, description = "The updated task", body = schema::Task),
        BodyErrors,
        Unauthenticated,
        schema::TaskNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    Id(id): Id,
    Auth(user): Auth,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let task = state.db.task(user.organization_id, id).await.or_not_found("Task")?;
    let mut form = Form::new(body)?;
    let data = form.object("data", false).flatten().unwrap_or(task.data);
    let meta = form.object("meta", true).flatten().unwrap_or(task.meta);
    let mut overlap = task.overlap;
    if let Some(Some(n)) = form.integer("overlap", false) {
        if n >= 1 {
            overlap = n;
        } else {
            form.error("overlap", "Ensure this value is greater than or equal to 1.");
        }
    }
    form.finish()?;
    let task =
        state.db.update_task(user.organization_id, id, &data, &meta, overlap, user.id).await.or_not_found("Task")?;
    let mut body = task_json(&task);
    let annotations: Vec<Annotation<JsonText>> = state.db.annotations_for_tasks(&[task.id], true).await?;
    let predictions = state.db.predictions_for_tasks(&[task.id]).await?;
    let mut users = UserCache::default();
    let mut list = Vec::new();
    for a in &annotations {
        let author = users.get(&state.db, a.completed_by).await?;
        list.push(annotation_json(a, author, None));
    }
    body["annotations"] = list.into();
    body["predictions"] = predictions.iter().map(prediction_json).collect::<Vec<_>>().into();
    Ok(Json(body))
}

/// `DELETE /api/tasks/{id}/`: also deletes its annotations (recorded in the change feed).
#[utoipa::path(
    delete,
    path = "/api/tasks/{id}/",
    tag = "tasks",
    operation_id = "api_tasks_delete",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 204, description = "Deleted, with its annotations"),
        Unauthenticated,
        schema::TaskNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn delete(State(state): State<AppState>, Id(id): Id, Auth(user): Auth) -> ApiResult<StatusCode> {
    state.db.delete_task(user.organization_id, id).await.or_not_found("Task")?;
    state.changes_committed();
    Ok(StatusCode::NO_CONTENT)
}

/// Documentation-only shapes of this resource's bodies, for the OpenAPI document: the
/// handlers build their JSON with `serde_json` to keep Label Studio's key order, so
/// these types are never constructed.
pub mod schema {
    use crate::api::annotations::schema::Annotation;
    use crate::api::error::schema::ErrorBody;
    use serde_json::Value;
    use utoipa::{IntoResponses, ToSchema};

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

    /// The 404 of an unknown Task id.
    #[derive(IntoResponses)]
    #[response(status = 404, description = "No Task matches the given query.")]
    pub struct TaskNotFound(pub ErrorBody);
}
