//! Annotations (`/api/tasks/{id}/annotations/`, `/api/annotations/{id}/`), contract §7.4.

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use labelport::db::ChangeOp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_created_annotation_has_label_studios_keys_and_values,
    was_cancelled_can_be_given_as_a_query_parameter,
    a_result_given_as_a_json_string_is_parsed,
    the_annotation_list_of_a_task_is_a_plain_array_without_cancelled_ones,
    patching_an_annotation_changes_only_the_given_fields_and_refreshes_updated_at,
    deleting_an_annotation_is_204_and_then_404,
    creating_updating_and_deleting_annotations_is_recorded_in_the_change_feed_in_order,
    annotations_update_the_task_counters,
    completed_by_may_name_another_member_of_the_organization,
    an_unknown_task_or_annotation_is_404_json,
    every_annotation_path_works_with_and_without_its_trailing_slash,
    a_missing_lead_time_and_a_real_one_are_both_stored_in_any_order,
    concurrent_annotation_writes_all_succeed_and_each_is_in_the_change_feed,
);

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

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().expect("an object").keys().map(String::as_str).collect()
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("a JSON body")
}

/// A project with one task; returns `(project, task)`.
async fn one_task(app: &TestApp) -> (i64, i64) {
    let project = app.create_project("annotations").await;
    let task = app.import(project, &json!([{"text": "a"}])).await[0];
    (project, task)
}

fn choice(value: &str) -> Value {
    json!([{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [value]}}])
}

async fn a_created_annotation_has_label_studios_keys_and_values(app: TestApp) {
    // Arrange
    let (project, task) = one_task(&app).await;
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();

    // Act
    let r = app
        .post(&format!("/api/tasks/{task}/annotations/"), &json!({"result": choice("Positive"), "lead_time": 1.5}))
        .await;
    let a = json_of(r, StatusCode::CREATED).await;

    // Assert
    assert_eq!(keys(&a), ANNOTATION_KEYS);
    assert_eq!(a["result"], choice("Positive"));
    assert_eq!(a["created_username"], format!(" admin@example.com, {}", me.id));
    assert_eq!(a["created_ago"], "0\u{a0}minutes");
    assert_eq!(a["completed_by"], me.id);
    assert_eq!(a["was_cancelled"], false);
    assert_eq!(a["ground_truth"], false);
    assert_eq!(a["draft_created_at"], Value::Null);
    assert_eq!(a["lead_time"], json!(1.5));
    assert_eq!(a["import_id"], Value::Null);
    assert_eq!(a["last_action"], Value::Null);
    assert_eq!(a["bulk_created"], false);
    assert_eq!(a["task"], task);
    assert_eq!(a["project"], project);
    assert_eq!(a["updated_by"], me.id);
    assert_eq!(a["parent_prediction"], Value::Null);
    assert_eq!(a["parent_annotation"], Value::Null);
    assert_eq!(a["last_created_by"], Value::Null);
    let created_at = a["created_at"].as_str().unwrap();
    assert_eq!(created_at.len(), 27, "{created_at}");
    assert!(created_at.ends_with('Z'));

    // Every optional field can be set
    let r = app
        .post(
            &format!("/api/tasks/{task}/annotations/"),
            &json!({"result": [], "ground_truth": true, "import_id": 7, "last_action": "submitted",
                    "draft_created_at": "2026-11-28T18:58:17.423841Z", "parent_annotation": a["id"],
                    "id": 999999, "task": 123456, "unknown": "ignored"}),
        )
        .await;
    let b = json_of(r, StatusCode::CREATED).await;
    assert_eq!(b["ground_truth"], true);
    assert_eq!(b["import_id"], 7);
    assert_eq!(b["last_action"], "submitted");
    assert_eq!(b["draft_created_at"], "2026-11-28T18:58:17.423841Z");
    assert_eq!(b["parent_annotation"], a["id"]);
    assert_ne!(b["id"], 999999, "read-only fields are ignored");
    assert_eq!(b["task"], task);
}

async fn was_cancelled_can_be_given_as_a_query_parameter(app: TestApp) {
    let (_, task) = one_task(&app).await;
    let r = app.post(&format!("/api/tasks/{task}/annotations/?was_cancelled=1"), &json!({"result": []})).await;
    let a = json_of(r, StatusCode::CREATED).await;
    assert_eq!(a["was_cancelled"], true);
}

async fn a_result_given_as_a_json_string_is_parsed(app: TestApp) {
    let (_, task) = one_task(&app).await;
    let text = serde_json::to_string(&choice("Negative")).unwrap();
    let a = app.annotate(task, &json!({ "result": text })).await;
    assert_eq!(a["result"], choice("Negative"));
    let a = app.annotate(task, &json!({})).await;
    assert_eq!(a["result"], json!([]), "result defaults to an empty list");
}

async fn the_annotation_list_of_a_task_is_a_plain_array_without_cancelled_ones(app: TestApp) {
    // Arrange
    let (_, task) = one_task(&app).await;
    let first = app.annotate(task, &json!({"result": choice("A")})).await;
    app.annotate(task, &json!({"result": [], "was_cancelled": true})).await;
    let third = app.annotate(task, &json!({"result": choice("B")})).await;

    // Act
    let list = json_of(app.get(&format!("/api/tasks/{task}/annotations/")).await, StatusCode::OK).await;

    // Assert
    let list = list.as_array().expect("a plain array");
    let ids: Vec<&Value> = list.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&first["id"], &third["id"]]);
    assert_eq!(keys(&list[0]), ANNOTATION_KEYS);
    assert_eq!(list[0], first);

    // A task without annotations lists []
    let project = app.create_project("empty").await;
    let empty = app.import(project, &json!([{"text": "b"}])).await[0];
    let list = json_of(app.get(&format!("/api/tasks/{empty}/annotations/")).await, StatusCode::OK).await;
    assert_eq!(list, json!([]));
}

async fn patching_an_annotation_changes_only_the_given_fields_and_refreshes_updated_at(app: TestApp) {
    // Arrange
    let (_, task) = one_task(&app).await;
    let a = app.annotate(task, &json!({"result": choice("A"), "lead_time": 1.0})).await;
    let id = a["id"].as_i64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    // Act
    let r = app.patch(&format!("/api/annotations/{id}/"), &json!({"lead_time": 3})).await;
    let patched = json_of(r, StatusCode::OK).await;

    // Assert
    assert_eq!(keys(&patched), ANNOTATION_KEYS);
    assert_eq!(patched["lead_time"], json!(3.0));
    assert_eq!(patched["result"], choice("A"));
    assert_eq!(patched["created_at"], a["created_at"]);
    assert!(patched["updated_at"].as_str().unwrap() > a["updated_at"].as_str().unwrap(), "updated_at is refreshed");
    assert_eq!(patched["updated_by"], a["completed_by"]);

    let r = app
        .patch(
            &format!("/api/annotations/{id}"),
            &json!({"result": choice("B"), "was_cancelled": false, "ground_truth": "true"}),
        )
        .await;
    let patched = json_of(r, StatusCode::OK).await;
    assert_eq!(patched["result"], choice("B"));
    assert_eq!(patched["ground_truth"], true);
    assert_eq!(patched["lead_time"], json!(3.0));

    let r = app.put(&format!("/api/annotations/{id}/"), &json!({"lead_time": null})).await;
    let put = json_of(r, StatusCode::OK).await;
    assert_eq!(put["lead_time"], Value::Null);

    let stored = json_of(app.get(&format!("/api/annotations/{id}/")).await, StatusCode::OK).await;
    assert_eq!(stored, put);
}

async fn deleting_an_annotation_is_204_and_then_404(app: TestApp) {
    let (_, task) = one_task(&app).await;
    let id = app.annotate(task, &json!({"result": []})).await["id"].as_i64().unwrap();
    let r = app.delete(&format!("/api/annotations/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());
    for (method, path) in [
        (Method::GET, format!("/api/annotations/{id}/")),
        (Method::PATCH, format!("/api/annotations/{id}/")),
        (Method::DELETE, format!("/api/annotations/{id}/")),
    ] {
        let r = app.req(method.clone(), &path).json(&json!({})).send().await.unwrap();
        let body = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "No Annotation matches the given query.", "{method}");
    }
    let list = json_of(app.get(&format!("/api/tasks/{task}/annotations/")).await, StatusCode::OK).await;
    assert_eq!(list, json!([]));
}

async fn creating_updating_and_deleting_annotations_is_recorded_in_the_change_feed_in_order(app: TestApp) {
    // Arrange
    let (project, task) = one_task(&app).await;
    let (other_project, other_task) = one_task(&app).await;

    // Act
    let a = app.annotate(task, &json!({"result": []})).await["id"].as_i64().unwrap();
    let b = app.annotate(task, &json!({"result": []})).await["id"].as_i64().unwrap();
    app.annotate(other_task, &json!({"result": []})).await;
    let r = app.patch(&format!("/api/annotations/{a}/"), &json!({"result": choice("X")})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.delete(&format!("/api/annotations/{b}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A rejected update records nothing
    let r = app.patch(&format!("/api/annotations/{a}/"), &json!({"result": 5})).await;
    assert_error(r, StatusCode::BAD_REQUEST).await;

    // Assert
    let changes = app.state.db.changes_since(project, 0, 100).await.unwrap();
    let feed: Vec<(i64, i64, ChangeOp)> = changes.iter().map(|c| (c.task_id, c.annotation_id, c.op)).collect();
    assert_eq!(
        feed,
        [
            (task, a, ChangeOp::Upsert),
            (task, b, ChangeOp::Upsert),
            (task, a, ChangeOp::Upsert),
            (task, b, ChangeOp::Delete),
        ]
    );
    assert!(changes.iter().all(|c| c.project_id == project));
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    // Reading after a cursor returns only newer entries
    let after = app.state.db.changes_since(project, changes[1].seq, 100).await.unwrap();
    assert_eq!(after, changes[2..]);
    assert_eq!(app.state.db.changes_since(other_project, 0, 100).await.unwrap().len(), 1);
}

async fn annotations_update_the_task_counters(app: TestApp) {
    let (_, task) = one_task(&app).await;
    let a = app.annotate(task, &json!({"result": []})).await["id"].as_i64().unwrap();
    app.annotate(task, &json!({"result": [], "was_cancelled": true})).await;
    let t = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;
    assert_eq!(t["total_annotations"], 1);
    assert_eq!(t["cancelled_annotations"], 1);
    assert_eq!(t["is_labeled"], true);

    app.delete(&format!("/api/annotations/{a}/")).await;
    let t = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;
    assert_eq!(t["total_annotations"], 0);
    assert_eq!(t["cancelled_annotations"], 1);
    assert_eq!(t["is_labeled"], false);
}

async fn completed_by_may_name_another_member_of_the_organization(app: TestApp) {
    let (_, task) = one_task(&app).await;
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();
    let colleague = app
        .state
        .db
        .create_user(labelport::db::NewUser {
            email: "colleague@example.com",
            password_hash: None,
            legacy_token: None,
            organization_id: Some(me.organization_id),
            new_organization: false,
        })
        .await
        .unwrap();
    let a = app.annotate(task, &json!({"result": [], "completed_by": colleague.id})).await;
    assert_eq!(a["completed_by"], colleague.id);
    assert_eq!(a["created_username"], format!(" colleague@example.com, {}", colleague.id));
    assert_eq!(a["updated_by"], me.id);
}

async fn an_unknown_task_or_annotation_is_404_json(app: TestApp) {
    for (method, path, model) in [
        (Method::GET, "/api/tasks/987654/", "Task"),
        (Method::PATCH, "/api/tasks/987654/", "Task"),
        (Method::DELETE, "/api/tasks/987654/", "Task"),
        (Method::GET, "/api/tasks/987654/annotations/", "Task"),
        (Method::POST, "/api/tasks/987654/annotations/", "Task"),
        (Method::GET, "/api/annotations/987654/", "Annotation"),
        (Method::PATCH, "/api/annotations/987654/", "Annotation"),
        (Method::PUT, "/api/annotations/987654", "Annotation"),
        (Method::DELETE, "/api/annotations/987654", "Annotation"),
    ] {
        let r = app.req(method.clone(), path).json(&json!({"result": []})).send().await.unwrap();
        let body = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], format!("No {model} matches the given query."), "{method} {path}");
    }
}

async fn every_annotation_path_works_with_and_without_its_trailing_slash(app: TestApp) {
    let (_, task) = one_task(&app).await;
    let id = app.annotate(task, &json!({"result": []})).await["id"].as_i64().unwrap();
    for path in [format!("/api/annotations/{id}/"), format!("/api/annotations/{id}")] {
        assert_eq!(app.get(&path).await.status(), StatusCode::OK, "GET {path}");
        assert_eq!(app.patch(&path, &json!({"lead_time": 1})).await.status(), StatusCode::OK, "PATCH {path}");
        assert_eq!(app.put(&path, &json!({"lead_time": 2})).await.status(), StatusCode::OK, "PUT {path}");
    }
    let r = app.delete(&format!("/api/annotations/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

async fn a_missing_lead_time_and_a_real_one_are_both_stored_in_any_order(app: TestApp) {
    // Alternating NULL and real values through the same (cached) statements.
    let (_, task) = one_task(&app).await;
    for i in 0..8 {
        let lead_time = 1.5 + f64::from(i);
        let a = app.annotate(task, &json!({"result": []})).await;
        assert_eq!(a["lead_time"], Value::Null);
        let b = app.annotate(task, &json!({"result": [], "lead_time": lead_time})).await;
        assert_eq!(b["lead_time"], json!(lead_time));
        let path = format!("/api/annotations/{}/", a["id"]);
        let r = app.patch(&path, &json!({"lead_time": lead_time})).await;
        assert_eq!(json_of(r, StatusCode::OK).await["lead_time"], json!(lead_time));
        let r = app.patch(&path, &json!({"lead_time": null})).await;
        assert_eq!(json_of(r, StatusCode::OK).await["lead_time"], Value::Null);
    }
}

async fn concurrent_annotation_writes_all_succeed_and_each_is_in_the_change_feed(app: TestApp) {
    // Arrange
    let (project, task) = one_task(&app).await;
    let n = 24;

    // Act
    let path = format!("/api/tasks/{task}/annotations/");
    let bodies: Vec<Value> = (0..n).map(|i| json!({"result": [], "lead_time": i})).collect();
    let responses = futures::future::join_all(bodies.iter().map(|body| app.post(&path, body))).await;

    // Assert
    let mut ids = Vec::new();
    for r in responses {
        ids.push(json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    let changes = app.state.db.changes_since(project, 0, 1000).await.unwrap();
    let mut recorded: Vec<i64> = changes.iter().map(|c| c.annotation_id).collect();
    recorded.sort();
    assert_eq!(recorded, ids);
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let t = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;
    assert_eq!(t["total_annotations"], n);
}
