//! Projects (`/api/projects/`), contract §7.1.

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_new_project_has_label_studios_keys_in_order_and_defaults,
    a_project_can_be_read_patched_put_and_deleted_through_both_slash_forms,
    the_project_list_is_paginated_newest_first_with_next_and_previous_links,
    a_page_beyond_the_last_or_not_a_number_is_404_invalid_page,
    the_project_list_without_projects_is_an_empty_first_page,
    the_project_list_filters_by_title_and_ids,
    a_title_outside_3_to_50_characters_is_rejected_with_400,
    an_invalid_label_config_is_400_without_validation_errors,
    unknown_and_read_only_fields_in_a_project_body_are_ignored,
    a_form_encoded_project_body_is_accepted,
    project_counters_follow_tasks_annotations_and_predictions,
    kept_task_counters_match_a_recount_after_every_kind_of_change,
    deleting_a_project_deletes_its_tasks_annotations_and_change_feed,
    an_unknown_project_is_404_no_project_matches,
);

const PROJECT_KEYS: &[&str] = &[
    "id",
    "title",
    "description",
    "label_config",
    "expert_instruction",
    "show_instruction",
    "show_skip_button",
    "enable_empty_annotation",
    "show_annotation_history",
    "organization",
    "color",
    "maximum_annotations",
    "is_published",
    "model_version",
    "is_draft",
    "created_by",
    "created_at",
    "min_annotations_to_start_training",
    "start_training_on_annotation_update",
    "show_collab_predictions",
    "num_tasks_with_annotations",
    "task_number",
    "useful_annotation_number",
    "ground_truth_number",
    "skipped_annotations_number",
    "total_annotations_number",
    "total_predictions_number",
    "sampling",
    "show_ground_truth_first",
    "annotator_evaluation_enabled",
    "show_overlap_first",
    "overlap_cohort_percentage",
    "task_data_login",
    "task_data_password",
    "control_weights",
    "parsed_label_config",
    "evaluate_predictions_automatically",
    "config_has_control_tags",
    "skip_queue",
    "reveal_preannotations_interactively",
    "pinned_at",
    "finished_task_number",
    "queue_total",
    "queue_done",
    "config_suitable_for_bulk_annotation",
    "state",
];

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().expect("an object").keys().map(String::as_str).collect()
}

fn project_keys() -> Vec<&'static str> {
    PROJECT_KEYS.to_vec()
}

/// `2026-11-28T18:58:17.423841Z`
fn is_iso_micros(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.' && chrono_like(s)
}

fn chrono_like(s: &str) -> bool {
    s[..4].bytes().all(|b| b.is_ascii_digit()) && s[20..26].bytes().all(|b| b.is_ascii_digit())
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("a JSON body")
}

async fn a_new_project_has_label_studios_keys_in_order_and_defaults(app: TestApp) {
    // Act
    let r = app.post("/api/projects/", &json!({ "title": "Sentiment" })).await;
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json", "responses are JSON without charset");
    let p = json_of(r, StatusCode::CREATED).await;

    // Assert
    assert_eq!(keys(&p), project_keys());
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();
    assert_eq!(p["title"], "Sentiment");
    assert_eq!(p["description"], "");
    assert_eq!(p["label_config"], "<View></View>");
    assert_eq!(p["color"], "#FFFFFF");
    assert_eq!(p["maximum_annotations"], 1);
    assert_eq!(p["organization"], me.organization_id);
    assert_eq!(
        p["created_by"],
        json!({"id": me.id, "first_name": "", "last_name": "", "email": "admin@example.com", "avatar": null})
    );
    assert_eq!(keys(&p["created_by"]), ["id", "first_name", "last_name", "email", "avatar"]);
    assert_eq!(p["sampling"], "Sequential sampling");
    assert_eq!(p["skip_queue"], "REQUEUE_FOR_OTHERS");
    assert_eq!(p["overlap_cohort_percentage"], 100);
    assert_eq!(p["pinned_at"], Value::Null);
    assert_eq!(p["state"], Value::Null);
    assert_eq!(p["show_skip_button"], true);
    assert_eq!(p["is_published"], false);
    for counter in [
        "num_tasks_with_annotations",
        "task_number",
        "useful_annotation_number",
        "ground_truth_number",
        "skipped_annotations_number",
        "total_annotations_number",
        "total_predictions_number",
        "finished_task_number",
        "queue_total",
        "queue_done",
    ] {
        assert_eq!(p[counter], 0, "{counter} of a new project");
    }
    assert!(is_iso_micros(&p["created_at"]), "{}", p["created_at"]);

    // A project with no body at all is valid too (every field is optional).
    let r = app.req(Method::POST, "/api/projects/").header("content-type", "application/json").send().await.unwrap();
    let empty = json_of(r, StatusCode::CREATED).await;
    assert_eq!(empty["title"], "");
}

async fn a_project_can_be_read_patched_put_and_deleted_through_both_slash_forms(app: TestApp) {
    // Arrange: created through the no-slash form
    let r = app.post("/api/projects", &json!({ "title": "no slash" })).await;
    let id = json_of(r, StatusCode::CREATED).await["id"].as_i64().unwrap();

    // Act / Assert: read through both forms
    for path in [format!("/api/projects/{id}/"), format!("/api/projects/{id}")] {
        let p = json_of(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(p["id"], id, "{path}");
        assert_eq!(keys(&p), project_keys(), "{path}");
    }

    // PATCH changes only the given fields
    let p = json_of(
        app.patch(
            &format!("/api/projects/{id}"),
            &json!({"description": "d", "maximum_annotations": 3, "show_instruction": "true"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["title"], "no slash");
    assert_eq!(p["description"], "d");
    assert_eq!(p["maximum_annotations"], 3);
    assert_eq!(p["show_instruction"], true);

    // PUT is accepted as well
    let p = json_of(
        app.put(
            &format!("/api/projects/{id}/"),
            &json!({"title": "renamed", "label_config": "<View><Text name=\"t\" value=\"$text\"/></View>"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(p["title"], "renamed");
    assert_eq!(p["label_config"], "<View><Text name=\"t\" value=\"$text\"/></View>");
    let stored = json_of(app.get(&format!("/api/projects/{id}/")).await, StatusCode::OK).await;
    assert_eq!(stored["title"], "renamed");
    assert_eq!(stored["description"], "d");

    // DELETE: 204 with an empty body, then 404 through both forms
    let r = app.delete(&format!("/api/projects/{id}")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.headers().get("content-type").is_none(), "204 has no content type");
    assert!(r.bytes().await.unwrap().is_empty());
    for path in [format!("/api/projects/{id}/"), format!("/api/projects/{id}")] {
        let body = assert_error(app.get(&path).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "No Project matches the given query.");
    }
    let body = assert_error(app.delete(&format!("/api/projects/{id}/")).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "No Project matches the given query.");
}

async fn the_project_list_is_paginated_newest_first_with_next_and_previous_links(app: TestApp) {
    // Arrange
    let a = app.create_project("first").await;
    let b = app.create_project("second").await;
    let c = app.create_project("third").await;
    let base = &app.address;

    // Act: page 1 of 2
    let page1 = json_of(app.get("/api/projects/?page_size=2").await, StatusCode::OK).await;

    // Assert
    assert_eq!(keys(&page1), ["count", "next", "previous", "results"]);
    assert_eq!(page1["count"], 3);
    assert_eq!(page1["next"], format!("{base}/api/projects/?page_size=2&page=2"));
    assert_eq!(page1["previous"], Value::Null);
    let ids: Vec<i64> = page1["results"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [c, b], "newest first");
    assert_eq!(keys(&page1["results"][0]), project_keys());

    // page 2 of 2, no-slash form
    let page2 = json_of(app.get("/api/projects?page=2&page_size=2").await, StatusCode::OK).await;
    assert_eq!(page2["count"], 3);
    assert_eq!(page2["next"], Value::Null);
    assert_eq!(page2["previous"], format!("{base}/api/projects?page_size=2"));
    assert_eq!(page2["results"].as_array().unwrap().len(), 1);
    assert_eq!(page2["results"][0]["id"], a);

    // Default page size holds all three
    let all = json_of(app.get("/api/projects/").await, StatusCode::OK).await;
    assert_eq!(all["results"].as_array().unwrap().len(), 3);
    assert_eq!(all["next"], Value::Null);

    // A page size above the maximum (100) is capped, a bad one falls back to 30
    for query in ["page_size=1000", "page_size=abc", "page_size=0", "page_size=-5"] {
        let r = json_of(app.get(&format!("/api/projects/?{query}")).await, StatusCode::OK).await;
        assert_eq!(r["results"].as_array().unwrap().len(), 3, "{query}");
    }
}

async fn a_page_beyond_the_last_or_not_a_number_is_404_invalid_page(app: TestApp) {
    app.create_project("only").await;
    for query in [
        "page=2",
        "page=3&page_size=1",
        "page=abc",
        "page=0",
        "page=-1",
        "page=99999999999999999999999",
        "page=9223372036854775807",
        "page=9223372036854775806",
        "page=1.5",
    ] {
        let body = assert_error(app.get(&format!("/api/projects/?{query}")).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "Invalid page.", "{query}");
    }
}

async fn the_project_list_without_projects_is_an_empty_first_page(app: TestApp) {
    let r = json_of(app.get("/api/projects/").await, StatusCode::OK).await;
    assert_eq!(r, json!({"count": 0, "next": null, "previous": null, "results": []}));
    let body = assert_error(app.get("/api/projects/?page=2").await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "Invalid page.");
}

async fn the_project_list_filters_by_title_and_ids(app: TestApp) {
    let cats = app.create_project("Cats and dogs").await;
    let birds = app.create_project("Birds").await;
    let _fish = app.create_project("Fish").await;

    let r = json_of(app.get("/api/projects/?title=CATS").await, StatusCode::OK).await;
    assert_eq!(r["count"], 1);
    assert_eq!(r["results"][0]["id"], cats);

    let r = json_of(app.get(&format!("/api/projects/?ids={cats},{birds},abc")).await, StatusCode::OK).await;
    assert_eq!(r["count"], 2);

    // A title filter with SQL wildcards matches them literally, not as patterns
    let r = json_of(app.get("/api/projects/?title=%25").await, StatusCode::OK).await;
    assert_eq!(r["count"], 0, "no title contains a percent sign");
}

async fn a_title_outside_3_to_50_characters_is_rejected_with_400(app: TestApp) {
    let cases = [
        (json!({"title": "ab"}), "Ensure this field has at least 3 characters."),
        (json!({"title": "x".repeat(51)}), "Ensure this field has no more than 50 characters."),
    ];
    for (body, message) in cases {
        let r = app.post("/api/projects/", &body).await;
        let err = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["detail"], "Validation error");
        assert_eq!(err["validation_errors"], json!({"title": [message]}), "{body}");
    }
    // 3 and 50 characters (counted as characters, not bytes) are fine
    for title in ["abc", &"é".repeat(50)] {
        let r = app.post("/api/projects/", &json!({ "title": title })).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{title}");
    }
    // The same rule applies on PATCH
    let id = app.create_project("valid").await;
    let r = app.patch(&format!("/api/projects/{id}/"), &json!({"title": "no"})).await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["validation_errors"]["title"], json!(["Ensure this field has at least 3 characters."]));
}

async fn an_invalid_label_config_is_400_without_validation_errors(app: TestApp) {
    for config in ["<View>", "<View></Vew>", "not xml", ""] {
        let r = app.post("/api/projects/", &json!({"title": "xml", "label_config": config})).await;
        let err = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert!(err.get("validation_errors").is_none(), "{config:?}: {err}");
        assert_ne!(err["detail"], "Validation error", "{config:?}");
    }
    let id = app.create_project("xml").await;
    let r = app.patch(&format!("/api/projects/{id}/"), &json!({"label_config": "<View><Text></View>"})).await;
    assert_error(r, StatusCode::BAD_REQUEST).await;
    let p = json_of(app.get(&format!("/api/projects/{id}/")).await, StatusCode::OK).await;
    assert_eq!(p["label_config"], "<View></View>", "a rejected PATCH changes nothing");
}

async fn unknown_and_read_only_fields_in_a_project_body_are_ignored(app: TestApp) {
    let r = app
        .post(
            "/api/projects/",
            &json!({"title": "read-only", "id": 424242, "created_at": "2000-01-01T00:00:00Z",
                    "organization": 999, "task_number": 77, "whatever": [1, 2]}),
        )
        .await;
    let p = json_of(r, StatusCode::CREATED).await;
    assert_ne!(p["id"], 424242);
    assert_ne!(p["organization"], 999);
    assert_eq!(p["task_number"], 0);
    assert_ne!(p["created_at"], "2000-01-01T00:00:00.000000Z");
}

async fn a_form_encoded_project_body_is_accepted(app: TestApp) {
    let r = app
        .req(Method::POST, "/api/projects/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("title=From+a+form&show_instruction=true&maximum_annotations=2")
        .send()
        .await
        .unwrap();
    let p = json_of(r, StatusCode::CREATED).await;
    assert_eq!(p["title"], "From a form");
    assert_eq!(p["show_instruction"], true);
    assert_eq!(p["maximum_annotations"], 2);
}

async fn project_counters_follow_tasks_annotations_and_predictions(app: TestApp) {
    // Arrange
    let project = app.create_project("counters").await;
    let tasks = app
        .import(
            project,
            &json!([
                {"data": {"text": "a"}, "predictions": [{"result": [], "score": 0.5}]},
                {"data": {"text": "b"}},
                {"data": {"text": "c"}},
            ]),
        )
        .await;
    app.annotate(tasks[0], &json!({"result": [], "ground_truth": true})).await;
    app.annotate(tasks[0], &json!({"result": []})).await;
    app.annotate(tasks[1], &json!({"result": [], "was_cancelled": true})).await;

    // Act
    let p = json_of(app.get(&format!("/api/projects/{project}/")).await, StatusCode::OK).await;

    // Assert
    assert_eq!(p["task_number"], 3);
    assert_eq!(p["num_tasks_with_annotations"], 1);
    assert_eq!(p["total_annotations_number"], 2);
    assert_eq!(p["skipped_annotations_number"], 1);
    assert_eq!(p["ground_truth_number"], 1);
    assert_eq!(p["total_predictions_number"], 1);
    assert_eq!(p["finished_task_number"], 1);
}

/// `num_tasks_with_annotations` and `finished_task_number` are kept on the project's
/// row (migration 0012): after imports, saves, skips, edits, deletions and new tasks
/// they are still what counting the project's tasks gives.
async fn kept_task_counters_match_a_recount_after_every_kind_of_change(app: TestApp) {
    // Arrange: annotated, skipped-only and plain tasks.
    let project = app.create_project("recount").await;
    let tasks = app
        .import(
            project,
            &json!([
                {"data": {"t": 1}, "annotations": [{"result": []}, {"result": [], "was_cancelled": true}]},
                {"data": {"t": 2}, "annotations": [{"result": [], "was_cancelled": true}]},
                {"data": {"t": 3}},
                {"data": {"t": 4}, "annotations": [{"result": []}]},
            ]),
        )
        .await;
    let recount = || async {
        let counted: (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE project_id = $1 AND total_annotations > 0), \
             (SELECT COUNT(*) FROM tasks WHERE project_id = $1 AND is_labeled = 1)",
        )
        .bind(project)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
        let p = json_of(app.get(&format!("/api/projects/{project}/")).await, StatusCode::OK).await;
        let kept = (p["num_tasks_with_annotations"].as_i64().unwrap(), p["finished_task_number"].as_i64().unwrap());
        assert_eq!(kept, counted, "kept counters (left) against a recount (right)");
        kept
    };
    assert_eq!(recount().await, (2, 2), "after the import");

    // Act and assert, one change at a time.
    let saved = app.annotate(tasks[2], &json!({"result": []})).await;
    assert_eq!(recount().await, (3, 3), "a save labels a plain task");
    let r = app.patch(&format!("/api/annotations/{}/", saved["id"]), &json!({"was_cancelled": true})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(recount().await, (2, 2), "skipping its only annotation unlabels it");
    app.annotate(tasks[1], &json!({"result": []})).await;
    assert_eq!(recount().await, (3, 3), "a save on a skipped-only task");
    let only = app.get(&format!("/api/tasks/{}/", tasks[3])).await.json::<Value>().await.unwrap();
    let r = app.delete(&format!("/api/annotations/{}/", only["annotations"][0]["id"])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(recount().await, (2, 2), "deleting a task's only annotation");
    let r = app.delete(&format!("/api/tasks/{}/", tasks[0])).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(recount().await, (1, 1), "deleting an annotated task");
    let r = app.post("/api/tasks/", &json!({"project": project, "data": {"t": 5}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(recount().await, (1, 1), "a new task");
}

async fn deleting_a_project_deletes_its_tasks_annotations_and_change_feed(app: TestApp) {
    // Arrange
    let project = app.create_project("doomed").await;
    let other = app.create_project("survivor").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"text": "b"}])).await;
    let kept = app.import(other, &json!([{"text": "kept"}])).await;
    let a = app.annotate(tasks[0], &json!({"result": []})).await;
    let kept_annotation = app.annotate(kept[0], &json!({"result": []})).await;
    assert_eq!(app.state.db.changes_since(project, 0, 100).await.unwrap().len(), 1);

    // Act
    let r = app.delete(&format!("/api/projects/{project}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Assert
    for t in &tasks {
        let body = assert_error(app.get(&format!("/api/tasks/{t}/")).await, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "No Task matches the given query.");
    }
    let body = assert_error(app.get(&format!("/api/annotations/{}/", a["id"])).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "No Annotation matches the given query.");
    let body = assert_error(app.get(&format!("/api/tasks/?project={project}")).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["detail"], "No Project matches the given query.");
    assert!(app.state.db.changes_since(project, 0, 100).await.unwrap().is_empty());
    // The other project is untouched
    let r = app.get(&format!("/api/annotations/{}/", kept_annotation["id"])).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.state.db.changes_since(other, 0, 100).await.unwrap().len(), 1);
}

async fn an_unknown_project_is_404_no_project_matches(app: TestApp) {
    for (method, path) in [
        (Method::GET, "/api/projects/987654/"),
        (Method::GET, "/api/projects/987654"),
        (Method::PATCH, "/api/projects/987654/"),
        (Method::PUT, "/api/projects/987654/"),
        (Method::DELETE, "/api/projects/987654/"),
        (Method::POST, "/api/projects/987654/import"),
    ] {
        let r = app.req(method.clone(), path).json(&json!({"title": "nope"})).send().await.unwrap();
        let body = assert_error(r, StatusCode::NOT_FOUND).await;
        assert_eq!(body["detail"], "No Project matches the given query.", "{method} {path}");
    }
}
