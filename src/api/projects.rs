//! Projects (`/api/projects/`), contract §7.1.

use super::auth::Auth;
use super::error::schema::{BodyErrors, ErrorBody, Unauthenticated};
use super::error::{ApiError, ApiResult, OrNotFound};
use super::extract::{parse_id, Body, Id, Query};
use super::fields::Form;
use super::pagination::{page_url, Page};
use super::users::{user_brief, UserCache};
use super::AppState;
use crate::db::{Db, Project, ProjectFilter, ProjectSettings, User};
use crate::time::iso;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Renders a project with Label Studio's keys, in its order.
pub fn project_json(p: &Project, created_by: Option<&User>) -> Value {
    let s = &p.settings;
    let st = &p.stats;
    json!({
        "id": p.id,
        "title": s.title,
        "description": s.description,
        "label_config": s.label_config,
        "expert_instruction": s.expert_instruction,
        "show_instruction": s.show_instruction,
        "show_skip_button": s.show_skip_button,
        "enable_empty_annotation": s.enable_empty_annotation,
        "show_annotation_history": false,
        "organization": p.organization_id,
        "color": s.color,
        "maximum_annotations": s.maximum_annotations,
        "is_published": s.is_published,
        "model_version": s.model_version,
        "is_draft": false,
        "created_by": created_by.map_or(Value::Null, user_brief),
        "created_at": iso(p.created_at),
        "min_annotations_to_start_training": 0,
        "start_training_on_annotation_update": false,
        "show_collab_predictions": true,
        "num_tasks_with_annotations": st.num_tasks_with_annotations,
        "task_number": st.task_number,
        "useful_annotation_number": st.total_annotations_number,
        "ground_truth_number": st.ground_truth_number,
        "skipped_annotations_number": st.skipped_annotations_number,
        "total_annotations_number": st.total_annotations_number,
        "total_predictions_number": st.total_predictions_number,
        "sampling": s.sampling,
        "show_ground_truth_first": false,
        "annotator_evaluation_enabled": false,
        "show_overlap_first": false,
        "overlap_cohort_percentage": 100,
        "task_data_login": null,
        "task_data_password": null,
        "control_weights": {},
        "parsed_label_config": {},
        "evaluate_predictions_automatically": false,
        "config_has_control_tags": false,
        "skip_queue": "REQUEUE_FOR_OTHERS",
        "reveal_preannotations_interactively": false,
        "pinned_at": null,
        "finished_task_number": st.finished_task_number,
        "queue_total": st.task_number,
        "queue_done": st.finished_task_number,
        "config_suitable_for_bulk_annotation": false,
        "state": null,
    })
}

/// Checks that a labeling config is well-formed XML with one root element; the
/// parser's message is the error (400 without `validation_errors`, as in LS).
pub fn check_label_config(xml: &str) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Ok(Event::Empty(_)) => roots += usize::from(depth == 0),
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Text(t)) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(format!(
                    "Content is not allowed outside the root element, position {}",
                    reader.buffer_position()
                ));
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("{e} (position {})", reader.error_position())),
        }
    }
    match (depth, roots) {
        (0, 1) => Ok(()),
        (0, 0) => Err("Document is empty, line 1, column 1".into()),
        (0, _) => Err("Extra content at the end of the document".into()),
        _ => Err("Premature end of data: an element is not closed".into()),
    }
}

/// Validates a create/update body onto `base`.
fn apply_settings(body: Value, mut s: ProjectSettings) -> ApiResult<ProjectSettings> {
    let mut form = Form::new(body)?;
    if let Some(title) = form.string("title", Some(50), true) {
        let title = title.unwrap_or_default();
        if !title.is_empty() && title.chars().count() < 3 {
            form.error("title", "Ensure this field has at least 3 characters.");
        }
        s.title = title;
    }
    if let Some(v) = form.string("description", None, true) {
        s.description = v.unwrap_or_default();
    }
    if let Some(v) = form.string("expert_instruction", None, true) {
        s.expert_instruction = v.unwrap_or_default();
    }
    if let Some(v) = form.string("color", Some(16), true) {
        s.color = v.unwrap_or_else(|| "#FFFFFF".into());
    }
    if let Some(v) = form.string("model_version", None, true) {
        s.model_version = v.unwrap_or_default();
    }
    if let Some(v) = form.string("sampling", None, true) {
        let v = v.unwrap_or_else(|| "Sequential sampling".into());
        const CHOICES: [&str; 3] = ["Sequential sampling", "Uniform sampling", "Uncertainty sampling"];
        if CHOICES.contains(&v.as_str()) {
            s.sampling = v;
        } else {
            form.error("sampling", format!("\"{v}\" is not a valid choice."));
        }
    }
    for (name, slot) in [
        ("show_instruction", &mut s.show_instruction),
        ("show_skip_button", &mut s.show_skip_button),
        ("enable_empty_annotation", &mut s.enable_empty_annotation),
        ("is_published", &mut s.is_published),
    ] {
        if let Some(Some(v)) = form.boolean(name, false) {
            *slot = v;
        }
    }
    if let Some(Some(n)) = form.integer("maximum_annotations", false) {
        if (1..=i32::MAX as i64).contains(&n) {
            s.maximum_annotations = n;
        } else {
            form.error("maximum_annotations", "Ensure this value is greater than or equal to 1.");
        }
    }
    let label_config = form.string("label_config", None, false);
    form.finish()?;
    if let Some(Some(config)) = label_config {
        check_label_config(&config).map_err(ApiError::bad_request)?;
        s.label_config = config;
    }
    Ok(s)
}

async fn render(db: &Db, project: &Project, users: &mut UserCache) -> ApiResult<Value> {
    let creator = users.get(db, project.created_by).await?;
    Ok(project_json(project, creator))
}

/// `POST /api/projects/`.
#[utoipa::path(
    post,
    path = "/api/projects/",
    tag = "projects",
    operation_id = "api_projects_create",
    request_body = schema::ProjectInput,
    responses(
        (status = 201, description = "The new project", body = schema::Project),
        BodyErrors,
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn create(State(state): State<AppState>, Auth(user): Auth, Body(body): Body) -> ApiResult<Response> {
    let settings = apply_settings(body, ProjectSettings::default())?;
    let project = state.db.create_project(user.organization_id, user.id, &settings).await?;
    let body = project_json(&project, Some(&user));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/projects/`: paginated, newest first.
#[utoipa::path(
    get,
    path = "/api/projects/",
    tag = "projects",
    operation_id = "api_projects_list",
    params(
        ("page" = Option<i64>, Query, description = "1-based page number, or `last`"),
        ("page_size" = Option<i64>, Query, description = "Projects per page (default 30, at most 100)"),
        ("ids" = Option<String>, Query, description = "Comma-separated project ids"),
        ("title" = Option<String>, Query, description = "Case-insensitive substring of the title"),
    ),
    responses(
        (status = 200, description = "A page of projects, newest first", body = schema::ProjectPage),
        Unauthenticated,
        (status = 404, description = "Invalid page.", body = ErrorBody),
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    Auth(user): Auth,
    query: Query,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Json<Value>> {
    let page = Page::from_query(&query, 30, 100)?;
    let filter = ProjectFilter {
        ids: query
            .get("ids")
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').filter_map(|id| parse_id(id.trim())).collect()),
        title: query.get("title").filter(|t| !t.is_empty()).map(str::to_owned),
    };
    let count = state.db.count_projects(user.organization_id, &filter).await?;
    let page = page.check(count)?;
    let projects = state.db.list_projects(user.organization_id, &filter, page.offset(), page.size).await?;
    let mut users = UserCache::default();
    let mut results = Vec::with_capacity(projects.len());
    for p in &projects {
        results.push(render(&state.db, p, &mut users).await?);
    }
    let has_next = page.offset() + page.size < count;
    let next = has_next.then(|| page_url(&headers, &uri, Some(page.number + 1)));
    let previous = (page.number > 1).then(|| page_url(&headers, &uri, (page.number > 2).then_some(page.number - 1)));
    Ok(Json(json!({ "count": count, "next": next, "previous": previous, "results": results })))
}

/// `GET /api/projects/{id}/`.
#[utoipa::path(
    get,
    path = "/api/projects/{id}/",
    tag = "projects",
    operation_id = "api_projects_read",
    params(("id" = i64, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = schema::Project),
        Unauthenticated,
        schema::ProjectNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn get(State(state): State<AppState>, Id(id): Id, Auth(user): Auth) -> ApiResult<Json<Value>> {
    let project = state.db.project(user.organization_id, id).await.or_not_found("Project")?;
    Ok(Json(render(&state.db, &project, &mut UserCache::default()).await?))
}

/// `PATCH|PUT /api/projects/{id}/`.
#[utoipa::path(
    method(patch, put),
    path = "/api/projects/{id}/",
    tag = "projects",
    operation_id = "api_projects_partial_update",
    params(("id" = i64, Path, description = "Project id")),
    request_body = schema::ProjectInput,
    responses(
        (status = 200, description = "The updated project", body = schema::Project),
        BodyErrors,
        Unauthenticated,
        schema::ProjectNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    Id(id): Id,
    Auth(user): Auth,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let project = state.db.project(user.organization_id, id).await.or_not_found("Project")?;
    let settings = apply_settings(body, project.settings.clone())?;
    let project = state.db.update_project(user.organization_id, id, &settings).await.or_not_found("Project")?;
    Ok(Json(render(&state.db, &project, &mut UserCache::default()).await?))
}

/// `DELETE /api/projects/{id}/`: cascades to tasks, annotations and storages.
#[utoipa::path(
    delete,
    path = "/api/projects/{id}/",
    tag = "projects",
    operation_id = "api_projects_delete",
    params(("id" = i64, Path, description = "Project id")),
    responses(
        (status = 204, description = "Deleted, with its tasks and annotations"),
        Unauthenticated,
        schema::ProjectNotFound,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn delete(State(state): State<AppState>, Id(id): Id, Auth(user): Auth) -> ApiResult<StatusCode> {
    state.db.delete_project(user.organization_id, id).await.or_not_found("Project")?;
    Ok(StatusCode::NO_CONTENT)
}

/// Documentation-only shapes of this resource's bodies, for the OpenAPI document: the
/// handlers build their JSON with `serde_json` to keep Label Studio's key order, so
/// these types are never constructed.
pub mod schema {
    use crate::api::error::schema::ErrorBody;
    use crate::api::users::schema::UserBrief;
    use utoipa::{IntoResponses, ToSchema};

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

    /// The 404 of an unknown Project id.
    #[derive(IntoResponses)]
    #[response(status = 404, description = "No Project matches the given query.")]
    pub struct ProjectNotFound(pub ErrorBody);
}

#[cfg(test)]
mod tests {
    use super::check_label_config;

    #[test]
    fn label_configs_must_be_well_formed_xml_with_one_root() {
        assert!(check_label_config("<View></View>").is_ok());
        assert!(check_label_config("<View><Text name=\"t\" value=\"$text\"/></View>").is_ok());
        for bad in ["<View>", "<View></Vew>", "", "text", "<View/><View/>", "<View></View>junk"] {
            assert!(check_label_config(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
