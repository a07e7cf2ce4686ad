//! Tasks (`/api/tasks/`), contract §7.3.

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use labelport::db::{ChangeOp, NewUser};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_created_task_has_label_studios_keys_in_order,
    inner_ids_count_from_1_per_project,
    a_task_without_project_or_data_is_rejected_with_400,
    the_task_detail_has_label_studios_keys_and_all_annotations_expanded,
    the_task_list_has_label_studios_shape_and_totals,
    the_task_list_with_fields_all_has_the_detail_keys,
    the_task_list_is_paginated_and_a_page_beyond_the_end_is_404_invalid_page,
    the_task_list_without_a_project_is_404_with_exactly_label_studios_body,
    the_task_list_of_an_unknown_or_malformed_project_is_404_json,
    annotators_are_listed_once_each,
    patching_a_task_returns_it_with_annotations_and_predictions,
    patching_the_overlap_recomputes_is_labeled,
    deleting_a_task_deletes_its_annotations_and_records_deletes_in_the_change_feed,
    every_task_path_works_with_and_without_its_trailing_slash,
    a_page_size_over_1000_is_capped_at_1000,
    pages_hold_the_tasks_in_id_order_whether_found_by_inner_id_or_by_offset,
    pages_with_fields_all_hold_every_task_once_with_exactly_its_annotations_and_predictions,
    the_last_page_and_a_task_hold_their_own_annotations_whether_pages_go_by_inner_id_or_by_offset,
    the_totals_of_the_task_list_and_the_project_follow_every_kind_of_change,
    the_totals_stay_exact_under_concurrent_changes_to_the_same_tasks,
);

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().expect("an object").keys().map(String::as_str).collect()
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("a JSON body")
}

const CREATE_KEYS: &[&str] = &[
    "id",
    "data",
    "meta",
    "created_at",
    "updated_at",
    "is_labeled",
    "overlap",
    "inner_id",
    "total_annotations",
    "cancelled_annotations",
    "total_predictions",
    "comment_count",
    "unresolved_comment_count",
    "last_comment_updated_at",
    "project",
    "updated_by",
    "file_upload",
    "comment_authors",
];

const LIST_KEYS: &[&str] = &[
    "id",
    "drafts",
    "annotators",
    "inner_id",
    "cancelled_annotations",
    "total_annotations",
    "total_predictions",
    "annotations_results",
    "predictions_results",
    "file_upload",
    "storage_filename",
    "annotations_ids",
    "predictions_model_versions",
    "updated_by",
    "data",
    "meta",
    "created_at",
    "updated_at",
    "is_labeled",
    "overlap",
    "comment_count",
    "unresolved_comment_count",
    "last_comment_updated_at",
    "project",
    "comment_authors",
];

const DETAIL_KEYS: &[&str] = &[
    "id",
    "predictions",
    "annotations",
    "drafts",
    "annotators",
    "inner_id",
    "cancelled_annotations",
    "total_annotations",
    "total_predictions",
    "completed_at",
    "annotations_results",
    "predictions_results",
    "predictions_score",
    "file_upload",
    "storage_filename",
    "annotations_ids",
    "predictions_model_versions",
    "avg_lead_time",
    "draft_exists",
    "updated_by",
    "data",
    "meta",
    "created_at",
    "updated_at",
    "is_labeled",
    "overlap",
    "comment_count",
    "unresolved_comment_count",
    "last_comment_updated_at",
    "project",
    "comment_authors",
];

const ANNOTATION_KEYS: &[&str] = &[
    "id",
    "result",
    "created_username",
    "created_ago",
    "completed_by",
    "was_cancelled",
    "ground_truth",
    "created_at",
    "updated_at",
    "draft_created_at",
    "lead_time",
    "import_id",
    "last_action",
    "bulk_created",
    "task",
    "project",
    "updated_by",
    "parent_prediction",
    "parent_annotation",
    "last_created_by",
];

async fn a_created_task_has_label_studios_keys_in_order(app: TestApp) {
    // Arrange
    let project = app.create_project("tasks").await;

    // Act
    let r = app.post("/api/tasks/", &json!({"project": project, "data": {"text": "created via tasks api"}})).await;
    let t = json_of(r, StatusCode::CREATED).await;

    // Assert
    assert_eq!(keys(&t), CREATE_KEYS);
    assert_eq!(t["data"], json!({"text": "created via tasks api"}));
    assert_eq!(t["meta"], json!({}));
    assert_eq!(t["project"], project);
    assert_eq!(t["is_labeled"], false);
    assert_eq!(t["overlap"], 1);
    assert_eq!(t["inner_id"], 1);
    assert_eq!(t["total_annotations"], 0);
    assert_eq!(t["updated_by"], Value::Null);
    assert_eq!(t["file_upload"], Value::Null);
    assert_eq!(t["comment_authors"], json!([]));
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));

    // meta is kept; a numeric string is a valid project pk
    let r =
        app.post("/api/tasks", &json!({"project": project.to_string(), "data": {"n": 1}, "meta": {"m": true}})).await;
    let t = json_of(r, StatusCode::CREATED).await;
    assert_eq!(t["meta"], json!({"m": true}));
    assert_eq!(t["inner_id"], 2);
}

async fn inner_ids_count_from_1_per_project(app: TestApp) {
    let a = app.create_project("a project").await;
    let b = app.create_project("b project").await;
    let imported = app.import(a, &json!([{"text": "1"}, {"text": "2"}])).await;
    let created =
        json_of(app.post("/api/tasks/", &json!({"project": a, "data": {"text": "3"}})).await, StatusCode::CREATED)
            .await;
    let in_b = app.import(b, &json!([{"text": "1"}])).await;

    let inner = |id: i64| {
        let app = &app;
        async move {
            json_of(app.get(&format!("/api/tasks/{id}/")).await, StatusCode::OK).await["inner_id"].as_i64().unwrap()
        }
    };
    assert_eq!(inner(imported[0]).await, 1);
    assert_eq!(inner(imported[1]).await, 2);
    assert_eq!(created["inner_id"], 3);
    assert_eq!(inner(in_b[0]).await, 1);
}

async fn a_task_without_project_or_data_is_rejected_with_400(app: TestApp) {
    let project = app.create_project("required").await;
    let cases = [
        (json!({}), json!({"project": ["This field is required."], "data": ["This field is required."]})),
        (json!({"data": {"a": 1}}), json!({"project": ["This field is required."]})),
        (json!({"project": project}), json!({"data": ["This field is required."]})),
    ];
    for (body, errors) in cases {
        let err = assert_error(app.post("/api/tasks/", &body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["detail"], "Validation error", "{body}");
        assert_eq!(err["validation_errors"], errors, "{body}");
    }
}

async fn the_task_detail_has_label_studios_keys_and_all_annotations_expanded(app: TestApp) {
    // Arrange
    let project = app.create_project("detail").await;
    let task = app
        .import(
            project,
            &json!([{"data": {"text": "t"}, "predictions": [{"result": [{"x": 1}], "score": 0.9, "model_version": "v1"}]}]),
        )
        .await[0];
    let kept = app.annotate(task, &json!({"result": [{"v": 1}], "lead_time": 2.0})).await;
    let skipped = app.annotate(task, &json!({"result": [], "was_cancelled": true})).await;
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();

    // Act
    let t = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;

    // Assert
    assert_eq!(keys(&t), DETAIL_KEYS);
    let annotations = t["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 2, "cancelled annotations are included");
    assert_eq!(annotations[0]["id"], kept["id"]);
    assert_eq!(annotations[1]["id"], skipped["id"]);
    assert_eq!(keys(&annotations[0]), ANNOTATION_KEYS);
    assert_eq!(
        annotations[0]["completed_by"],
        json!({"id": me.id, "first_name": "", "last_name": "", "avatar": null,
               "email": "admin@example.com", "initials": "ad"})
    );
    assert_eq!(keys(&annotations[0]["completed_by"]), ["id", "first_name", "last_name", "avatar", "email", "initials"]);
    assert_eq!(t["total_annotations"], 1);
    assert_eq!(t["cancelled_annotations"], 1);
    assert_eq!(t["total_predictions"], 1);
    assert_eq!(t["is_labeled"], true);
    assert_eq!(t["updated_by"], json!([{"user_id": me.id}]));
    assert_eq!(t["avg_lead_time"], json!(2.0));
    assert_eq!(t["completed_at"], kept["created_at"]);
    let predictions = t["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 1);
    assert_eq!(predictions[0]["result"], json!([{"x": 1}]));
    assert_eq!(predictions[0]["score"], json!(0.9));
    assert_eq!(predictions[0]["model_version"], "v1");
    assert_eq!(predictions[0]["task"], task);
}

async fn the_task_list_has_label_studios_shape_and_totals(app: TestApp) {
    // Arrange
    let project = app.create_project("list").await;
    let tasks = app
        .import(
            project,
            &json!([
                {"data": {"text": "a"}, "predictions": [{"result": []}, {"result": []}]},
                {"data": {"text": "b"}},
                {"data": {"text": "c"}},
            ]),
        )
        .await;
    let a1 = app.annotate(tasks[0], &json!({"result": []})).await;
    let a2 = app.annotate(tasks[0], &json!({"result": []})).await;
    app.annotate(tasks[1], &json!({"result": [], "was_cancelled": true})).await;
    let other = app.create_project("other").await;
    app.import(other, &json!([{"text": "elsewhere"}])).await;
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();

    // Act
    let r = app.get(&format!("/api/tasks/?project={project}")).await;
    let list = json_of(r, StatusCode::OK).await;

    // Assert
    assert_eq!(keys(&list), ["total_annotations", "total_predictions", "total", "tasks"]);
    assert_eq!(list["total"], 3);
    assert_eq!(list["total_annotations"], 2, "cancelled ones are not counted");
    assert_eq!(list["total_predictions"], 2);
    let items = list["tasks"].as_array().unwrap();
    let ids: Vec<i64> = items.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, tasks);
    for t in items {
        assert_eq!(keys(t), LIST_KEYS);
    }
    assert_eq!(items[0]["annotators"], json!([me.id]));
    let mut ids: Vec<String> = items[0]["annotations_ids"].as_str().unwrap().split(',').map(str::to_owned).collect();
    ids.sort();
    let mut want = vec![a1["id"].to_string(), a2["id"].to_string()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(items[0]["total_annotations"], 2);
    assert_eq!(items[0]["updated_by"], json!([{"user_id": me.id}]));
    assert_eq!(items[2]["annotators"], json!([]));
    assert_eq!(items[2]["annotations_ids"], "");
    assert_eq!(items[2]["updated_by"], json!([]));
}

async fn the_task_list_with_fields_all_has_the_detail_keys(app: TestApp) {
    let project = app.create_project("fields").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    app.annotate(task, &json!({"result": []})).await;
    let list = json_of(app.get(&format!("/api/tasks/?project={project}&fields=all")).await, StatusCode::OK).await;
    let t = &list["tasks"][0];
    assert_eq!(keys(t), DETAIL_KEYS);
    assert_eq!(t["annotations"].as_array().unwrap().len(), 1);
}

async fn the_task_list_is_paginated_and_a_page_beyond_the_end_is_404_invalid_page(app: TestApp) {
    // Arrange
    let project = app.create_project("pages").await;
    let tasks =
        app.import(project, &json!([{"text": "1"}, {"text": "2"}, {"text": "3"}, {"text": "4"}, {"text": "5"}])).await;

    // Act / Assert
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = app.get(&format!("/api/tasks/?project={project}&page={page}&page_size=2")).await;
        let body = json_of(r, StatusCode::OK).await;
        assert_eq!(body["total"], 5, "total counts all tasks, not the page");
        seen.extend(body["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()));
    }
    assert_eq!(seen, tasks);
    for query in ["page=4&page_size=2", "page=2", "page=0", "page=abc"] {
        let r = app.get(&format!("/api/tasks/?project={project}&{query}")).await;
        let body = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "Invalid page.", "{query}");
    }
    // Default page size is 100
    let r = app.get(&format!("/api/tasks/?project={project}")).await;
    assert_eq!(json_of(r, StatusCode::OK).await["tasks"].as_array().unwrap().len(), 5);

    // An empty project lists an empty first page
    let empty = app.create_project("empty").await;
    let r = app.get(&format!("/api/tasks?project={empty}")).await;
    assert_eq!(
        json_of(r, StatusCode::OK).await,
        json!({"total_annotations": 0, "total_predictions": 0, "total": 0, "tasks": []})
    );
}

async fn a_page_size_over_1000_is_capped_at_1000(app: TestApp) {
    // Arrange
    let project = app.create_project("big pages").await;
    let tasks: Vec<Value> = (0..1003).map(|i| json!({ "text": i.to_string() })).collect();
    let ids = app.import(project, &Value::Array(tasks)).await;

    // Act
    let first = json_of(app.get(&format!("/api/tasks/?project={project}&page_size=5000")).await, StatusCode::OK).await;
    let second =
        json_of(app.get(&format!("/api/tasks/?project={project}&page_size=5000&page=2")).await, StatusCode::OK).await;

    // Assert: pages of 1000, the second holds the rest
    assert_eq!(first["total"], 1003);
    let page_ids = |page: &Value| -> Vec<i64> {
        page["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect()
    };
    assert_eq!(page_ids(&first), ids[..1000]);
    assert_eq!(page_ids(&second), ids[1000..]);
}

/// Every page of size `size` of the project, concatenated: the listed task ids.
async fn all_pages(app: &TestApp, project: i64, size: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for page in 1.. {
        let r = app.get(&format!("/api/tasks/?project={project}&page={page}&page_size={size}")).await;
        if r.status() == StatusCode::NOT_FOUND {
            break;
        }
        let body = json_of(r, StatusCode::OK).await;
        ids.extend(body["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()));
    }
    ids
}

async fn pages_hold_the_tasks_in_id_order_whether_found_by_inner_id_or_by_offset(app: TestApp) {
    // Arrange: imported and created tasks, beside another project's tasks in between
    let project = app.create_project("paged").await;
    let other = app.create_project("other").await;
    let mut ids = app.import(project, &json!([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}])).await;
    app.import(other, &json!([{"n": 0}, {"n": 0}])).await;
    for n in 6..=7 {
        let r = app.post("/api/tasks/", &json!({"project": project, "data": {"n": n}})).await;
        ids.push(json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap());
    }
    ids.extend(app.import(project, &json!([{"n": 8}, {"n": 9}])).await);

    // Act / Assert: inner ids 1..9 in id order, so pages are inner-id ranges
    let org = app.state.db.user_by_email("admin@example.com").await.unwrap().organization_id;
    let totals = app.state.db.task_totals(org, project).await.unwrap();
    assert!(totals.pages_by_inner_id, "{totals:?}");
    for size in [1, 2, 4, 9, 100] {
        assert_eq!(all_pages(&app, project, size).await, ids, "pages of {size} by inner id");
    }

    // Act / Assert: a deleted task leaves a gap in the inner ids, so pages go by offset
    let r = app.delete(&format!("/api/tasks/{}/", ids[2])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    ids.remove(2);
    let totals = app.state.db.task_totals(org, project).await.unwrap();
    assert!(!totals.pages_by_inner_id, "{totals:?}");
    for size in [1, 2, 3, 8, 100] {
        assert_eq!(all_pages(&app, project, size).await, ids, "pages of {size} by offset");
    }
    let r = app.post("/api/tasks/", &json!({"project": project, "data": {"n": 10}})).await;
    ids.push(json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap());
    assert_eq!(all_pages(&app, project, 3).await, ids, "a task created after the delete");
}

/// The ids of the tasks on a page and of each task's annotations, in order.
async fn page_annotations(app: &TestApp, path: &str) -> Vec<(i64, Vec<i64>)> {
    let body = json_of(app.get(path).await, StatusCode::OK).await;
    let tasks = body["tasks"].as_array().unwrap().iter();
    let ids = |a: &Value| a["annotations_ids"].as_str().unwrap().split(',').filter_map(|s| s.parse().ok()).collect();
    tasks.map(|t| (t["id"].as_i64().unwrap(), ids(t))).collect()
}

/// A page read together with the project's totals (inner-id ranges), the last page
/// (whose place the totals give), pages by offset after a delete and a task's detail
/// all show each task with exactly its own annotations; another organization's
/// project and task stay 404.
async fn the_last_page_and_a_task_hold_their_own_annotations_whether_pages_go_by_inner_id_or_by_offset(app: TestApp) {
    // Arrange: task i has i % 3 annotations
    let project = app.create_project("annotated pages").await;
    let tasks: Vec<Value> = (0..8)
        .map(|i| json!({ "data": { "n": i }, "annotations": (0..i % 3).map(|_| json!({"result": []})).collect::<Vec<_>>() }))
        .collect();
    let ids = app.import(project, &Value::Array(tasks)).await;
    let mut expected = Vec::new();
    for &id in &ids {
        let detail = json_of(app.get(&format!("/api/tasks/{id}/")).await, StatusCode::OK).await;
        let annotations: Vec<i64> =
            detail["annotations"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
        assert!(detail["annotations"].as_array().unwrap().iter().all(|a| a["task"] == json!(id)));
        expected.push((id, annotations));
    }
    let stranger = app.user_in_other_organization("stranger@example.com").await;
    let as_stranger =
        |path: String| app.anon(Method::GET, &path).header("Authorization", format!("Token {stranger}")).send();

    // Act / Assert: pages of 3 by inner id: 1, 2 and the last (3)
    let page = |p: &str| format!("/api/tasks/?project={project}&page_size=3&page={p}");
    assert_eq!(page_annotations(&app, &page("1")).await, expected[0..3]);
    assert_eq!(page_annotations(&app, &page("last")).await, expected[6..8]);
    assert_eq!(page_annotations(&app, &page("3")).await, expected[6..8]);
    assert_eq!(as_stranger(page("1")).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(as_stranger(format!("/api/tasks/{}/", ids[1])).await.unwrap().status(), StatusCode::NOT_FOUND);

    // Act / Assert: after a delete, pages go by offset
    let r = app.delete(&format!("/api/tasks/{}/", ids[1])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expected.remove(1);
    assert_eq!(page_annotations(&app, &page("1")).await, expected[0..3]);
    assert_eq!(page_annotations(&app, &page("2")).await, expected[3..6]);
    assert_eq!(page_annotations(&app, &page("last")).await, expected[6..7]);
}

async fn pages_with_fields_all_hold_every_task_once_with_exactly_its_annotations_and_predictions(app: TestApp) {
    // Arrange: task i has i % 3 annotations (every second one cancelled) and i % 2 predictions
    let project = app.create_project("all fields").await;
    let tasks: Vec<Value> = (0..25)
        .map(|i| {
            let annotations: Vec<Value> =
                (0..i % 3).map(|k| json!({ "result": [], "was_cancelled": k == 1, "lead_time": i })).collect();
            let predictions: Vec<Value> = (0..i % 2).map(|_| json!({ "result": [], "score": 0.5 })).collect();
            json!({ "data": { "n": i }, "annotations": annotations, "predictions": predictions })
        })
        .collect();
    let ids = app.import(project, &Value::Array(tasks)).await;
    let other = app.create_project("other").await;
    app.import(other, &json!([{"data": {"n": -1}, "annotations": [{"result": []}], "predictions": [{"result": []}]}]))
        .await;

    // Act: pages of 7
    let mut seen = Vec::new();
    for page in 1..=4 {
        let r = app.get(&format!("/api/tasks/?project={project}&fields=all&page_size=7&page={page}")).await;
        let body = json_of(r, StatusCode::OK).await;
        assert_eq!(
            (&body["total"], &body["total_annotations"], &body["total_predictions"]),
            (&json!(25), &json!(16), &json!(12)),
            "totals are the project's, non-cancelled annotations only"
        );
        seen.extend(body["tasks"].as_array().unwrap().clone());
    }
    let r = app.get(&format!("/api/tasks/?project={project}&fields=all&page_size=7&page=5")).await;
    assert_error(r, StatusCode::NOT_FOUND).await;

    // Assert
    assert_eq!(seen.iter().map(|t| t["id"].as_i64().unwrap()).collect::<Vec<_>>(), ids);
    for task in &seen {
        let n = task["data"]["n"].as_i64().unwrap();
        let annotations = task["annotations"].as_array().unwrap();
        let predictions = task["predictions"].as_array().unwrap();
        assert_eq!((annotations.len() as i64, predictions.len() as i64), (n % 3, n % 2), "task {n}");
        assert!(annotations.iter().chain(predictions).all(|a| a["task"] == task["id"]), "task {n}: {task}");
        let ids: Vec<String> = annotations.iter().map(|a| a["id"].to_string()).collect();
        assert_eq!(task["annotations_ids"], ids.join(","), "task {n}");
        assert_eq!(task["total_annotations"], json!(n % 3 - (n % 3 == 2) as i64), "task {n}");
        assert_eq!(task["cancelled_annotations"], json!((n % 3 == 2) as i64), "task {n}");
        assert_eq!(task["total_predictions"], json!(n % 2), "task {n}");
    }
}

async fn the_task_list_without_a_project_is_404_with_exactly_label_studios_body(app: TestApp) {
    for path in ["/api/tasks/", "/api/tasks", "/api/tasks/?project=", "/api/tasks/?page=1"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers().get("content-type").unwrap(), "application/json", "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"detail": "Neither project nor view id specified"}),
            "{path}"
        );
    }
}

async fn the_task_list_of_an_unknown_or_malformed_project_is_404_json(app: TestApp) {
    for query in ["project=987654", "project=abc", "project=-1", "project=0", "project=1.5"] {
        let r = app.get(&format!("/api/tasks/?{query}")).await;
        let body = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "No Project matches the given query.", "{query}");
    }
}

async fn annotators_are_listed_once_each(app: TestApp) {
    // Arrange: two members of one organization alternate on a task
    let project = app.create_project("annotators").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();
    let colleague = app
        .state
        .db
        .create_user(NewUser {
            email: "colleague@example.com",
            password_hash: None,
            legacy_token: None,
            organization_id: Some(me.organization_id),
            new_organization: false,
        })
        .await
        .unwrap();
    for author in [me.id, colleague.id, me.id] {
        app.annotate(task, &json!({"result": [], "completed_by": author})).await;
    }

    // Act
    let list = json_of(app.get(&format!("/api/tasks/?project={project}")).await, StatusCode::OK).await;
    let detail = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;

    // Assert
    for t in [&list["tasks"][0], &detail] {
        let mut annotators: Vec<i64> =
            t["annotators"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        annotators.sort();
        assert_eq!(annotators, [me.id, colleague.id], "{}", t["annotators"]);
    }
    // Each annotation's author expanded (the page's annotators are looked up together).
    let all = json_of(app.get(&format!("/api/tasks/?project={project}&fields=all")).await, StatusCode::OK).await;
    for t in [&all["tasks"][0], &detail] {
        let emails: Vec<&str> =
            t["annotations"].as_array().unwrap().iter().map(|a| a["completed_by"]["email"].as_str().unwrap()).collect();
        assert_eq!(emails, ["admin@example.com", "colleague@example.com", "admin@example.com"], "{t}");
    }
}

async fn patching_a_task_returns_it_with_annotations_and_predictions(app: TestApp) {
    // Arrange
    let project = app.create_project("patch").await;
    let task = app.import(project, &json!([{"data": {"text": "old"}, "predictions": [{"result": []}]}])).await[0];
    let a = app.annotate(task, &json!({"result": []})).await;

    // Act
    let r = app.patch(&format!("/api/tasks/{task}/"), &json!({"data": {"text": "new"}})).await;
    let t = json_of(r, StatusCode::OK).await;

    // Assert
    let mut want: Vec<&str> = CREATE_KEYS.to_vec();
    want.extend(["annotations", "predictions"]);
    assert_eq!(keys(&t), want);
    assert_eq!(t["data"], json!({"text": "new"}));
    assert_eq!(t["meta"], json!({}));
    assert_eq!(t["annotations"].as_array().unwrap().len(), 1);
    assert_eq!(t["annotations"][0]["id"], a["id"]);
    assert_eq!(t["predictions"].as_array().unwrap().len(), 1);

    // meta alone leaves data alone; PUT behaves the same
    let r = app.put(&format!("/api/tasks/{task}"), &json!({"meta": {"k": "v"}})).await;
    let t = json_of(r, StatusCode::OK).await;
    assert_eq!(t["data"], json!({"text": "new"}));
    assert_eq!(t["meta"], json!({"k": "v"}));
    let stored = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;
    assert_eq!(stored["data"], json!({"text": "new"}));
    assert_eq!(stored["meta"], json!({"k": "v"}));
}

async fn patching_the_overlap_recomputes_is_labeled(app: TestApp) {
    let project = app.create_project("overlap").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    app.annotate(task, &json!({"result": []})).await;
    let t = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;
    assert_eq!(t["is_labeled"], true);

    let r = app.patch(&format!("/api/tasks/{task}/"), &json!({"overlap": 2})).await;
    let t = json_of(r, StatusCode::OK).await;
    assert_eq!(t["overlap"], 2);
    assert_eq!(t["is_labeled"], false);
}

async fn deleting_a_task_deletes_its_annotations_and_records_deletes_in_the_change_feed(app: TestApp) {
    // Arrange
    let project = app.create_project("delete task").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let a1 = app.annotate(tasks[0], &json!({"result": []})).await["id"].as_i64().unwrap();
    let a2 = app.annotate(tasks[0], &json!({"result": []})).await["id"].as_i64().unwrap();
    let other = app.annotate(tasks[1], &json!({"result": []})).await["id"].as_i64().unwrap();

    // Act
    let r = app.delete(&format!("/api/tasks/{}/", tasks[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());

    // Assert
    let body = assert_error(app.get(&format!("/api/tasks/{}/", tasks[0])).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "No Task matches the given query.");
    for a in [a1, a2] {
        let body = assert_error(app.get(&format!("/api/annotations/{a}/")).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "No Annotation matches the given query.");
    }
    assert_eq!(app.get(&format!("/api/annotations/{other}/")).await.status(), StatusCode::OK);
    let changes = app.state.db.changes_since(project, 0, 100).await.unwrap();
    let feed: Vec<(i64, i64, ChangeOp)> = changes.iter().map(|c| (c.task_id, c.annotation_id, c.op)).collect();
    assert_eq!(
        feed,
        [
            (tasks[0], a1, ChangeOp::Upsert),
            (tasks[0], a2, ChangeOp::Upsert),
            (tasks[1], other, ChangeOp::Upsert),
            (tasks[0], a1, ChangeOp::Delete),
            (tasks[0], a2, ChangeOp::Delete),
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let list = json_of(app.get(&format!("/api/tasks/?project={project}")).await, StatusCode::OK).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["total_annotations"], 1);
    let body = assert_error(app.delete(&format!("/api/tasks/{}", tasks[0])).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "No Task matches the given query.");
}

async fn every_task_path_works_with_and_without_its_trailing_slash(app: TestApp) {
    let project = app.create_project("slashes").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    for (method, path, status) in [
        (Method::GET, format!("/api/tasks/?project={project}"), StatusCode::OK),
        (Method::GET, format!("/api/tasks?project={project}"), StatusCode::OK),
        (Method::GET, format!("/api/tasks/{task}/"), StatusCode::OK),
        (Method::GET, format!("/api/tasks/{task}"), StatusCode::OK),
        (Method::PATCH, format!("/api/tasks/{task}/"), StatusCode::OK),
        (Method::PATCH, format!("/api/tasks/{task}"), StatusCode::OK),
        (Method::GET, format!("/api/tasks/{task}/annotations/"), StatusCode::OK),
        (Method::GET, format!("/api/tasks/{task}/annotations"), StatusCode::OK),
        (Method::POST, format!("/api/tasks/{task}/annotations/"), StatusCode::CREATED),
        (Method::POST, format!("/api/tasks/{task}/annotations"), StatusCode::CREATED),
        (Method::POST, "/api/tasks/".to_owned(), StatusCode::CREATED),
        (Method::POST, "/api/tasks".to_owned(), StatusCode::CREATED),
    ] {
        let body = json!({"project": project, "data": {"text": "x"}, "result": []});
        let r = app.req(method.clone(), &path).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{method} {path}: {:?}", r.text().await);
    }
}

/// Asserts that the task list's totals and the project's counters, which are kept (not
/// counted per request), equal what a fresh count over the project gives.
async fn assert_totals_are_counts(app: &TestApp, project: i64, after: &str) {
    let count = |sql: &'static str| async move {
        let n: i64 = sqlx::query_scalar(sql).bind(project).fetch_one(app.state.db.pool()).await.unwrap();
        n
    };
    let tasks = count("SELECT COUNT(*) FROM tasks WHERE project_id = $1").await;
    let annotations = count("SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND was_cancelled = 0").await;
    let cancelled = count("SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND was_cancelled = 1").await;
    let predictions = count("SELECT COUNT(*) FROM predictions WHERE project_id = $1").await;
    let list = json_of(app.get(&format!("/api/tasks/?project={project}")).await, StatusCode::OK).await;
    let p = json_of(app.get(&format!("/api/projects/{project}/")).await, StatusCode::OK).await;
    let got = [
        &list["total"],
        &list["total_annotations"],
        &list["total_predictions"],
        &p["task_number"],
        &p["total_annotations_number"],
        &p["skipped_annotations_number"],
        &p["total_predictions_number"],
    ];
    let want = [tasks, annotations, predictions, tasks, annotations, cancelled, predictions];
    assert_eq!(got, want.map(Value::from).each_ref(), "after {after}: list and project totals against counts");
}

async fn the_totals_of_the_task_list_and_the_project_follow_every_kind_of_change(app: TestApp) {
    // Arrange: a project and another one, both with cancelled annotations and predictions
    let import = json!([
        {"data": {"text": "a"}, "annotations": [{"result": []}, {"result": [], "was_cancelled": true}],
         "predictions": [{"result": []}, {"result": []}]},
        {"data": {"text": "b"}, "annotations": [{"result": [], "was_cancelled": true}]},
        {"data": {"text": "c"}, "predictions": [{"result": []}]},
    ]);
    let project = app.create_project("totals").await;
    let other = app.create_project("other").await;
    let tasks = app.import(project, &import).await;
    assert_totals_are_counts(&app, project, "an import").await;
    let other_tasks = app.import(other, &import).await;
    assert_totals_are_counts(&app, project, "another project's import").await;
    assert_totals_are_counts(&app, other, "the other project's import").await;

    // Act and assert, one kind of change at a time
    let a = app.annotate(tasks[2], &json!({"result": []})).await["id"].as_i64().unwrap();
    assert_totals_are_counts(&app, project, "an annotation created").await;
    app.annotate(tasks[2], &json!({"result": [], "was_cancelled": true})).await;
    assert_totals_are_counts(&app, project, "a cancelled annotation created").await;
    let app = &app;
    let patch = |cancelled: bool| async move {
        let r = app.patch(&format!("/api/annotations/{a}/"), &json!({"was_cancelled": cancelled})).await;
        json_of(r, StatusCode::OK).await
    };
    patch(true).await;
    assert_totals_are_counts(app, project, "an annotation patched to cancelled").await;
    patch(true).await;
    assert_totals_are_counts(app, project, "a cancelled annotation patched to cancelled again").await;
    patch(false).await;
    assert_totals_are_counts(app, project, "an annotation patched back").await;
    let r = app.delete(&format!("/api/annotations/{a}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_totals_are_counts(app, project, "an annotation deleted").await;
    let r = app.post("/api/tasks/", &json!({"project": project, "data": {"text": "d"}})).await;
    json_of(r, StatusCode::CREATED).await;
    assert_totals_are_counts(app, project, "a task created").await;
    json_of(app.patch(&format!("/api/tasks/{}/", tasks[1]), &json!({"overlap": 2})).await, StatusCode::OK).await;
    assert_totals_are_counts(app, project, "a task patched").await;
    let r = app.delete(&format!("/api/tasks/{}/", tasks[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_totals_are_counts(app, project, "a task with annotations (one cancelled) and predictions deleted").await;
    app.annotate(other_tasks[1], &json!({"result": []})).await;
    let r = app.delete(&format!("/api/tasks/{}/", other_tasks[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_totals_are_counts(app, other, "the other project's annotation and task changes").await;
    let r = app.delete(&format!("/api/projects/{other}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_totals_are_counts(app, project, "another project's changes and deletion").await;
    let list = json_of(app.get(&format!("/api/tasks/?project={project}")).await, StatusCode::OK).await;
    let totals = [&list["total"], &list["total_annotations"], &list["total_predictions"]];
    assert_eq!(totals, [&json!(3), &json!(0), &json!(1)], "b, c and d; two cancelled annotations; c's prediction");
}

async fn the_totals_stay_exact_under_concurrent_changes_to_the_same_tasks(app: TestApp) {
    // Arrange: each kept total changes by a difference read under the task's lock, so
    // writers of the same task (and an import of the same project) must not lose one.
    let project = app.create_project("concurrent").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let (app, tasks) = (&app, &tasks);
    let writer = |i: usize| async move {
        let a = app.annotate(tasks[i % 2], &json!({"result": []})).await["id"].as_i64().unwrap();
        let r = app.patch(&format!("/api/annotations/{a}/"), &json!({"was_cancelled": true})).await;
        assert_eq!(r.status(), StatusCode::OK);
        if i.is_multiple_of(2) {
            let r = app.patch(&format!("/api/annotations/{a}/"), &json!({"was_cancelled": false})).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        if i.is_multiple_of(3) {
            let r = app.delete(&format!("/api/annotations/{a}/")).await;
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
    };
    let import = json!([{"data": {"text": "c"}, "annotations": [{"result": [], "was_cancelled": true}],
                         "predictions": [{"result": []}]}]);

    // Act
    let writers = futures::future::join_all((0..12).map(writer));
    let imports = futures::future::join_all((0..3).map(|_| app.import(project, &import)));
    tokio::join!(writers, imports);

    // Assert
    assert_totals_are_counts(app, project, "concurrent annotation writes and imports").await;
}
