//! Organizations: a user never sees or changes another organization's projects,
//! tasks or annotations (404), and cannot point at its users (issue 2 item 2).

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    another_organizations_projects_are_invisible_in_the_list,
    another_organizations_project_is_404_for_every_project_endpoint,
    another_organizations_task_is_404_for_every_task_endpoint,
    another_organizations_annotation_is_404_for_every_annotation_endpoint,
    another_organizations_objects_are_unchanged_after_foreign_attempts,
    a_task_cannot_be_created_in_another_organizations_project,
    annotations_cannot_be_attributed_to_another_organizations_user,
    a_user_of_another_organization_sees_its_own_organization_in_whoami,
    bearer_access_tokens_are_scoped_to_their_users_organization,
    personal_access_tokens_are_listed_per_user,
    a_parent_annotation_or_prediction_must_be_in_the_annotations_project,
);

/// The admin's project with one task and one annotation, and a stranger's token.
struct World {
    project: i64,
    task: i64,
    annotation: i64,
    stranger: String,
}

async fn world(app: &TestApp) -> World {
    let project = app.create_project("private").await;
    let task = app.import(project, &json!([{"text": "secret"}])).await[0];
    let annotation =
        app.annotate(task, &json!({"result": [{"value": {"choices": ["A"]}}]})).await["id"].as_i64().unwrap();
    let stranger = app.user_in_other_organization("stranger@example.com").await;
    World { project, task, annotation, stranger }
}

fn as_stranger(app: &TestApp, w: &World, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.anon(method, path).header("Authorization", format!("Token {}", w.stranger))
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("a JSON body")
}

/// Sends each request as the stranger and expects `No <model> matches the given query.`
async fn expect_404s(app: &TestApp, w: &World, requests: Vec<(Method, String, Value)>, model: &str) {
    for (method, path, body) in requests {
        let r = as_stranger(app, w, method.clone(), &path).json(&body).send().await.unwrap();
        let err = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(err["detail"], format!("No {model} matches the given query."), "{method} {path}");
    }
}

async fn another_organizations_projects_are_invisible_in_the_list(app: TestApp) {
    // Arrange
    let w = world(&app).await;
    let r =
        as_stranger(&app, &w, Method::POST, "/api/projects/").json(&json!({"title": "theirs"})).send().await.unwrap();
    let theirs = json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap();

    // Act
    let r = as_stranger(&app, &w, Method::GET, "/api/projects/").send().await.unwrap();
    let stranger_view = json_of(r, StatusCode::OK).await;
    let admin_view = json_of(app.get("/api/projects/").await, StatusCode::OK).await;

    // Assert
    assert_eq!(stranger_view["count"], 1);
    assert_eq!(stranger_view["results"][0]["id"], theirs);
    assert_eq!(admin_view["count"], 1);
    assert_eq!(admin_view["results"][0]["id"], w.project);
    // Filtering by a foreign id does not reveal it
    let r = as_stranger(&app, &w, Method::GET, &format!("/api/projects/?ids={}", w.project)).send().await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await["count"], 0);
}

async fn another_organizations_project_is_404_for_every_project_endpoint(app: TestApp) {
    let w = world(&app).await;
    let p = w.project;
    expect_404s(
        &app,
        &w,
        vec![
            (Method::GET, format!("/api/projects/{p}/"), json!({})),
            (Method::GET, format!("/api/projects/{p}"), json!({})),
            (Method::PATCH, format!("/api/projects/{p}/"), json!({"title": "mine now"})),
            (Method::PUT, format!("/api/projects/{p}/"), json!({"title": "mine now"})),
            (Method::DELETE, format!("/api/projects/{p}/"), json!({})),
            (Method::POST, format!("/api/projects/{p}/import"), json!([{"text": "spam"}])),
            (Method::GET, format!("/api/tasks/?project={p}"), json!({})),
        ],
        "Project",
    )
    .await;
}

async fn another_organizations_task_is_404_for_every_task_endpoint(app: TestApp) {
    let w = world(&app).await;
    let t = w.task;
    expect_404s(
        &app,
        &w,
        vec![
            (Method::GET, format!("/api/tasks/{t}/"), json!({})),
            (Method::PATCH, format!("/api/tasks/{t}/"), json!({"data": {"text": "mine"}})),
            (Method::PUT, format!("/api/tasks/{t}"), json!({"data": {"text": "mine"}})),
            (Method::DELETE, format!("/api/tasks/{t}/"), json!({})),
            (Method::GET, format!("/api/tasks/{t}/annotations/"), json!({})),
            (Method::POST, format!("/api/tasks/{t}/annotations/"), json!({"result": []})),
        ],
        "Task",
    )
    .await;
}

async fn another_organizations_annotation_is_404_for_every_annotation_endpoint(app: TestApp) {
    let w = world(&app).await;
    let a = w.annotation;
    expect_404s(
        &app,
        &w,
        vec![
            (Method::GET, format!("/api/annotations/{a}/"), json!({})),
            (Method::PATCH, format!("/api/annotations/{a}/"), json!({"result": []})),
            (Method::PUT, format!("/api/annotations/{a}"), json!({"result": []})),
            (Method::DELETE, format!("/api/annotations/{a}/"), json!({})),
        ],
        "Annotation",
    )
    .await;
}

async fn another_organizations_objects_are_unchanged_after_foreign_attempts(app: TestApp) {
    // Arrange
    let w = world(&app).await;
    let project_before = app.get(&format!("/api/projects/{}/", w.project)).await.text().await.unwrap();
    let task_before: Value = app.get(&format!("/api/tasks/{}/", w.task)).await.json().await.unwrap();
    let feed_before = app.state.db.changes_since(w.project, 0, 100).await.unwrap();

    // Act: every write the stranger might try
    for (method, path, body) in [
        (Method::PATCH, format!("/api/projects/{}/", w.project), json!({"title": "hacked"})),
        (Method::POST, format!("/api/projects/{}/import", w.project), json!([{"text": "spam"}])),
        (Method::PATCH, format!("/api/tasks/{}/", w.task), json!({"data": {"text": "hacked"}})),
        (Method::POST, format!("/api/tasks/{}/annotations/", w.task), json!({"result": []})),
        (Method::PATCH, format!("/api/annotations/{}/", w.annotation), json!({"result": []})),
        (Method::DELETE, format!("/api/annotations/{}/", w.annotation), json!({})),
        (Method::DELETE, format!("/api/tasks/{}/", w.task), json!({})),
        (Method::DELETE, format!("/api/projects/{}/", w.project), json!({})),
    ] {
        let r = as_stranger(&app, &w, method.clone(), &path).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
    }

    // Assert
    let project_after = app.get(&format!("/api/projects/{}/", w.project)).await.text().await.unwrap();
    assert_eq!(project_after, project_before);
    let task_after: Value = app.get(&format!("/api/tasks/{}/", w.task)).await.json().await.unwrap();
    assert_eq!(task_after["data"], task_before["data"]);
    assert_eq!(task_after["annotations"], task_before["annotations"]);
    assert_eq!(app.state.db.changes_since(w.project, 0, 100).await.unwrap(), feed_before);
    let list: Value = app.get(&format!("/api/tasks/?project={}", w.project)).await.json().await.unwrap();
    assert_eq!(list["total"], 1);
}

async fn a_task_cannot_be_created_in_another_organizations_project(app: TestApp) {
    let w = world(&app).await;
    let r = as_stranger(&app, &w, Method::POST, "/api/tasks/")
        .json(&json!({"project": w.project, "data": {"text": "spam"}}))
        .send()
        .await
        .unwrap();
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        err["validation_errors"],
        json!({"project": [format!("Invalid pk \"{}\" - object does not exist.", w.project)]})
    );
    let list: Value = app.get(&format!("/api/tasks/?project={}", w.project)).await.json().await.unwrap();
    assert_eq!(list["total"], 1);
}

async fn annotations_cannot_be_attributed_to_another_organizations_user(app: TestApp) {
    // Arrange
    let w = world(&app).await;
    let stranger = app.state.db.user_by_legacy_token(&w.stranger).await.unwrap();
    let message = format!("Invalid pk \"{}\" - object does not exist.", stranger.id);

    // Act / Assert: create, update
    let r = app
        .post(&format!("/api/tasks/{}/annotations/", w.task), &json!({"result": [], "completed_by": stranger.id}))
        .await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["validation_errors"], json!({"completed_by": [message]}));
    let r = app.patch(&format!("/api/annotations/{}/", w.annotation), &json!({"completed_by": stranger.id})).await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["validation_errors"], json!({"completed_by": [message]}));

    // ... and import
    let r = app
        .post(
            &format!("/api/projects/{}/import", w.project),
            &json!([{"data": {"text": "x"}, "annotations": [{"result": [], "completed_by": stranger.id}]}]),
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let list: Value = app.get(&format!("/api/tasks/?project={}", w.project)).await.json().await.unwrap();
    assert_eq!(list["total"], 1);
    assert_eq!(list["total_annotations"], 1);
}

async fn a_user_of_another_organization_sees_its_own_organization_in_whoami(app: TestApp) {
    let w = world(&app).await;
    let admin = json_of(app.get("/api/current-user/whoami").await, StatusCode::OK).await;
    let r = as_stranger(&app, &w, Method::GET, "/api/current-user/whoami").send().await.unwrap();
    let stranger = json_of(r, StatusCode::OK).await;
    assert_eq!(stranger["email"], "stranger@example.com");
    assert_eq!(stranger["initials"], "st");
    assert_ne!(stranger["active_organization"], admin["active_organization"]);
    assert_eq!(stranger["active_organization_meta"]["email"], "stranger@example.com");
}

async fn bearer_access_tokens_are_scoped_to_their_users_organization(app: TestApp) {
    // Arrange: a PAT and an access token for the stranger
    let w = world(&app).await;
    let r = as_stranger(&app, &w, Method::POST, "/api/token/").send().await.unwrap();
    let pat = json_of(r, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned();
    let r = app.anon(Method::POST, "/api/token/refresh/").json(&json!({ "refresh": pat })).send().await.unwrap();
    let access = json_of(r, StatusCode::OK).await["access"].as_str().unwrap().to_owned();
    let bearer =
        |method: Method, path: &str| app.anon(method, path).header("Authorization", format!("Bearer {access}"));

    // Act / Assert
    let r = bearer(Method::GET, "/api/projects/").send().await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await["count"], 0);
    for path in [
        format!("/api/projects/{}/", w.project),
        format!("/api/tasks/{}/", w.task),
        format!("/api/annotations/{}/", w.annotation),
    ] {
        let r = bearer(Method::GET, &path).send().await.unwrap();
        assert_error(r, StatusCode::NOT_FOUND).await;
    }
}

async fn personal_access_tokens_are_listed_per_user(app: TestApp) {
    let w = world(&app).await;
    let r = app.post("/api/token/", &json!({})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = as_stranger(&app, &w, Method::GET, "/api/token/").send().await.unwrap();
    assert_eq!(json_of(r, StatusCode::OK).await, json!([]));
    // The stranger can still create its own (the admin's live token does not count)
    let r = as_stranger(&app, &w, Method::POST, "/api/token/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn a_parent_annotation_or_prediction_must_be_in_the_annotations_project(app: TestApp) {
    // Arrange: the admin's task with an annotation and a prediction; a second project of
    // the admin's; and a stranger's project with a task and an annotation
    let w = world(&app).await;
    let with_prediction = json!([{"data": {"text": "p"}, "predictions": [{"result": []}]}]);
    let task = app.import(w.project, &with_prediction).await[0];
    let detail: Value = app.get(&format!("/api/tasks/{task}/")).await.json().await.unwrap();
    let prediction = detail["predictions"][0]["id"].as_i64().expect("the task shows its prediction");
    let elsewhere = app.create_project("elsewhere").await;
    let elsewhere_task = app.import(elsewhere, &json!([{"text": "e"}])).await[0];
    let r = as_stranger(&app, &w, Method::POST, "/api/projects/").json(&json!({"title": "theirs"})).send().await;
    let theirs = r.unwrap().json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let r = as_stranger(&app, &w, Method::POST, &format!("/api/projects/{theirs}/import?return_task_ids=true"))
        .json(&json!([{"text": "t"}]))
        .send()
        .await;
    let their_task = r.unwrap().json::<Value>().await.unwrap()["task_ids"][0].as_i64().unwrap();
    let r = as_stranger(&app, &w, Method::POST, &format!("/api/tasks/{their_task}/annotations/"))
        .json(&json!({"result": []}))
        .send()
        .await;
    let their_annotation = r.unwrap().json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let cases = [
        ("parent_annotation", w.annotation, "the admin's annotation"),
        ("parent_prediction", prediction, "the admin's prediction"),
        ("parent_annotation", 987_654, "no such annotation"),
    ];

    for (field, id, case) in cases {
        // Act: the stranger points at it, creating and updating
        let create = as_stranger(&app, &w, Method::POST, &format!("/api/tasks/{their_task}/annotations/"))
            .json(&json!({"result": [], field: id}))
            .send()
            .await
            .unwrap();
        let update = as_stranger(&app, &w, Method::PATCH, &format!("/api/annotations/{their_annotation}/"))
            .json(&json!({field: id}))
            .send()
            .await
            .unwrap();

        // Assert
        for r in [create, update] {
            let err = assert_error(r, StatusCode::BAD_REQUEST).await;
            assert_eq!(
                err["validation_errors"][field],
                json!([format!("Invalid pk \"{id}\" - object does not exist.")]),
                "{case}"
            );
        }
    }
    // The admin's own objects in another project of the organization do not qualify either
    let r = app
        .post(&format!("/api/tasks/{elsewhere_task}/annotations/"), &json!({"parent_annotation": w.annotation}))
        .await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    // ... while those of the same project do, and null clears them
    let a = app.annotate(task, &json!({"parent_annotation": w.annotation, "parent_prediction": prediction})).await;
    assert_eq!(
        (a["parent_annotation"].as_i64(), a["parent_prediction"].as_i64()),
        (Some(w.annotation), Some(prediction))
    );
    let id = a["id"].as_i64().unwrap();
    let r = app.patch(&format!("/api/annotations/{id}/"), &json!({"parent_annotation": null, "lead_time": 1})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["parent_annotation"], Value::Null);
    // The stranger's annotation is unchanged
    let r = as_stranger(&app, &w, Method::GET, &format!("/api/annotations/{their_annotation}/")).send().await;
    let theirs: Value = r.unwrap().json().await.unwrap();
    assert_eq!((theirs["parent_annotation"].clone(), theirs["parent_prediction"].clone()), (Value::Null, Value::Null));
}
