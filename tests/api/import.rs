//! Task import (`POST /api/projects/{id}/import`), contract §7.2.

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use labelport::db::ChangeOp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    an_import_answers_with_label_studios_summary,
    task_ids_are_returned_only_when_asked,
    a_flat_object_becomes_the_whole_data_and_a_single_object_is_one_task,
    imported_annotations_and_predictions_are_stored_and_counted,
    imported_annotations_are_recorded_in_the_change_feed,
    an_empty_list_is_400_no_tasks_added,
    a_text_plain_import_is_415,
    an_import_works_with_and_without_a_trailing_slash,
    a_bad_task_in_an_import_rejects_the_whole_import,
    a_missing_prediction_score_and_a_real_one_are_both_stored_in_any_order,
    concurrent_imports_get_distinct_inner_ids,
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

async fn tasks_of(app: &TestApp, project: i64) -> Vec<Value> {
    let r = app.get(&format!("/api/tasks/?project={project}&fields=all")).await;
    json_of(r, StatusCode::OK).await["tasks"].as_array().unwrap().clone()
}

async fn an_import_answers_with_label_studios_summary(app: TestApp) {
    // Arrange
    let project = app.create_project("import").await;

    // Act
    let r = app
        .post(
            &format!("/api/projects/{project}/import"),
            &json!([{"data": {"text": "a"}, "annotations": [{"result": []}]}, {"text": "b"}]),
        )
        .await;
    let summary = json_of(r, StatusCode::CREATED).await;

    // Assert
    assert_eq!(
        keys(&summary),
        [
            "task_count",
            "annotation_count",
            "prediction_count",
            "duration",
            "file_upload_ids",
            "could_be_tasks_list",
            "found_formats",
            "data_columns",
        ]
    );
    assert_eq!(summary["task_count"], 2);
    assert_eq!(summary["annotation_count"], 1);
    assert_eq!(summary["prediction_count"], 0);
    assert!(summary["duration"].is_f64());
    assert_eq!(summary["file_upload_ids"], json!([]));
    assert_eq!(summary["could_be_tasks_list"], false);
    assert_eq!(summary["found_formats"], json!([]));
    assert_eq!(summary["data_columns"], json!([]));
    assert_eq!(tasks_of(&app, project).await.len(), 2);
}

async fn task_ids_are_returned_only_when_asked(app: TestApp) {
    let project = app.create_project("ids").await;
    let r = app
        .post(&format!("/api/projects/{project}/import?return_task_ids=true"), &json!([{"text": "a"}, {"text": "b"}]))
        .await;
    let summary = json_of(r, StatusCode::CREATED).await;
    let ids: Vec<i64> = summary["task_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let listed: Vec<i64> = tasks_of(&app, project).await.iter().map(|t| t["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, listed, "task_ids are in input order");
    assert_eq!(keys(&summary).last(), Some(&"task_ids"));
}

async fn a_flat_object_becomes_the_whole_data_and_a_single_object_is_one_task(app: TestApp) {
    let project = app.create_project("flat").await;
    let r = app.post(&format!("/api/projects/{project}/import"), &json!({"text": "x", "meta_info": "y"})).await;
    assert_eq!(json_of(r, StatusCode::CREATED).await["task_count"], 1);
    let tasks = tasks_of(&app, project).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["data"], json!({"text": "x", "meta_info": "y"}));
    assert_eq!(tasks[0]["meta"], json!({}));

    // {"data": ..., "meta": ...} keeps meta apart
    app.import(project, &json!([{"data": {"text": "z"}, "meta": {"source": "s"}}])).await;
    let tasks = tasks_of(&app, project).await;
    assert_eq!(tasks[1]["data"], json!({"text": "z"}));
    assert_eq!(tasks[1]["meta"], json!({"source": "s"}));
}

async fn imported_annotations_and_predictions_are_stored_and_counted(app: TestApp) {
    // Arrange
    let project = app.create_project("preannotated").await;
    let me = app.state.db.user_by_email("admin@example.com").await.unwrap();
    let result = json!([{"from_name": "c", "to_name": "t", "type": "choices", "value": {"choices": ["A"]}}]);

    // Act
    let r = app
        .post(
            &format!("/api/projects/{project}/import?return_task_ids=1"),
            &json!([{
                "data": {"text": "a"},
                "annotations": [
                    {"result": result, "lead_time": 2.5, "completed_by": me.id},
                    {"result": [], "was_cancelled": true, "completed_by": {"id": me.id, "email": "admin@example.com"}},
                ],
                "predictions": [{"result": result, "score": 0.8, "model_version": "m1"}],
            }]),
        )
        .await;
    let summary = json_of(r, StatusCode::CREATED).await;

    // Assert
    assert_eq!(summary["task_count"], 1);
    assert_eq!(summary["annotation_count"], 2);
    assert_eq!(summary["prediction_count"], 1);
    let task = summary["task_ids"][0].as_i64().unwrap();
    let t = json_of(app.get(&format!("/api/tasks/{task}/")).await, StatusCode::OK).await;
    assert_eq!(t["total_annotations"], 1);
    assert_eq!(t["cancelled_annotations"], 1);
    assert_eq!(t["total_predictions"], 1);
    assert_eq!(t["is_labeled"], true);
    let a = &t["annotations"][0];
    assert_eq!(a["result"], result);
    assert_eq!(a["lead_time"], json!(2.5));
    assert_eq!(a["bulk_created"], true);
    assert_eq!(a["completed_by"]["id"], me.id);
    assert_eq!(t["predictions"][0]["score"], json!(0.8));
    assert_eq!(t["predictions"][0]["model_version"], "m1");
    let list = json_of(app.get(&format!("/api/tasks/?project={project}")).await, StatusCode::OK).await;
    assert_eq!(list["total_annotations"], 1);
    assert_eq!(list["total_predictions"], 1);
}

async fn imported_annotations_are_recorded_in_the_change_feed(app: TestApp) {
    let project = app.create_project("feed").await;
    let tasks = app
        .import(
            project,
            &json!([
                {"data": {"text": "a"}, "annotations": [{"result": []}, {"result": []}]},
                {"data": {"text": "b"}},
                {"data": {"text": "c"}, "annotations": [{"result": []}]},
            ]),
        )
        .await;
    let changes = app.state.db.changes_since(project, 0, 100).await.unwrap();
    let feed: Vec<(i64, ChangeOp)> = changes.iter().map(|c| (c.task_id, c.op)).collect();
    assert_eq!(feed, [(tasks[0], ChangeOp::Upsert), (tasks[0], ChangeOp::Upsert), (tasks[2], ChangeOp::Upsert),]);
    let t = json_of(app.get(&format!("/api/tasks/{}/", tasks[0])).await, StatusCode::OK).await;
    let mut ids: Vec<i64> = t["annotations"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    ids.sort();
    let recorded: Vec<i64> = changes[..2].iter().map(|c| c.annotation_id).collect();
    assert_eq!(ids, recorded);
}

async fn an_empty_list_is_400_no_tasks_added(app: TestApp) {
    let project = app.create_project("empty").await;
    let r = app.post(&format!("/api/projects/{project}/import"), &json!([])).await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(err["detail"], "Validation error");
    assert_eq!(err["validation_errors"], json!({"non_field_errors": ["load_tasks: No tasks added"]}));
}

async fn a_text_plain_import_is_415(app: TestApp) {
    let project = app.create_project("plain").await;
    let r = app
        .req(Method::POST, &format!("/api/projects/{project}/import"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    let err = assert_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(err["detail"], "Unsupported media type \"text/plain\" in request.");
    assert!(tasks_of(&app, project).await.is_empty());
}

async fn an_import_works_with_and_without_a_trailing_slash(app: TestApp) {
    let project = app.create_project("slash").await;
    for path in [format!("/api/projects/{project}/import"), format!("/api/projects/{project}/import/")] {
        let r = app.post(&path, &json!([{"text": "a"}])).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    assert_eq!(tasks_of(&app, project).await.len(), 2);
}

async fn a_bad_task_in_an_import_rejects_the_whole_import(app: TestApp) {
    let project = app.create_project("atomic").await;
    let r = app
        .post(&format!("/api/projects/{project}/import"), &json!([{"text": "fine"}, {"data": "not an object"}]))
        .await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    let message = err["validation_errors"]["non_field_errors"][0].as_str().unwrap();
    assert!(message.starts_with("Task #2"), "{message}");
    assert!(tasks_of(&app, project).await.is_empty(), "nothing was imported");
    assert!(app.state.db.changes_since(project, 0, 100).await.unwrap().is_empty());
}

async fn a_missing_prediction_score_and_a_real_one_are_both_stored_in_any_order(app: TestApp) {
    let project = app.create_project("scores").await;
    for i in 0..8 {
        let score = 0.25 + f64::from(i);
        let tasks = app
            .import(
                project,
                &json!([
                    {"data": {"n": i}, "predictions": [{"result": []}], "annotations": [{"result": []}]},
                    {"data": {"n": i}, "predictions": [{"result": [], "score": score}],
                     "annotations": [{"result": [], "lead_time": score}]},
                ]),
            )
            .await;
        let a = json_of(app.get(&format!("/api/tasks/{}/", tasks[0])).await, StatusCode::OK).await;
        assert_eq!(a["predictions"][0]["score"], Value::Null);
        assert_eq!(a["annotations"][0]["lead_time"], Value::Null);
        let b = json_of(app.get(&format!("/api/tasks/{}/", tasks[1])).await, StatusCode::OK).await;
        assert_eq!(b["predictions"][0]["score"], json!(score));
        assert_eq!(b["annotations"][0]["lead_time"], json!(score));
    }
}

async fn concurrent_imports_get_distinct_inner_ids(app: TestApp) {
    // Arrange
    let project = app.create_project("parallel").await;
    let (batches, per_batch) = (8, 5);
    let body: Vec<Value> = (0..per_batch).map(|i| json!({"n": i})).collect();
    let body = Value::Array(body);
    let path = format!("/api/projects/{project}/import");

    // Act
    let responses = futures::future::join_all((0..batches).map(|_| app.post(&path, &body))).await;

    // Assert
    for r in responses {
        assert_eq!(json_of(r, StatusCode::CREATED).await["task_count"], per_batch);
    }
    let tasks = tasks_of(&app, project).await;
    let mut inner: Vec<i64> = tasks.iter().map(|t| t["inner_id"].as_i64().unwrap()).collect();
    inner.sort();
    assert_eq!(inner, (1..=batches * per_batch).collect::<Vec<i64>>());
}

/// On PostgreSQL, an import finds the tasks it just created by their range of inner
/// ids: it reads none of the project's other tasks, so its cost does not grow with
/// the project. (Joined on the inner id alone, the planner hashed every task of the
/// table, since its statistics had not seen the new rows yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_import_reads_only_the_tasks_it_creates() {
    // Arrange: a project of 3,000 tasks.
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await;
    let project = app.create_project("growing").await;
    let tasks = |n: usize| {
        let one = json!({"data": {"text": "x"}, "annotations": [{"result": []}], "predictions": [{"result": []}]});
        Value::Array(vec![one; n])
    };
    app.import(project, &tasks(3000)).await;
    let stats = sqlx::PgPool::connect(&app.state.settings.database_url).await.unwrap();
    // An import's connection is closed when it ends, which reports its statistics.
    let task_stats = |inserted: i64| {
        let stats = stats.clone();
        async move {
            for _ in 0..300 {
                let (ins, read): (i64, i64) = sqlx::query_as(
                    "SELECT n_tup_ins, COALESCE(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'tasks'",
                )
                .fetch_one(&stats)
                .await
                .unwrap();
                if ins >= inserted {
                    return read;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the import's statistics were not reported");
        }
    };
    let read_before = task_stats(3000).await;

    // Act: a second import, of 500 tasks.
    app.import(project, &tasks(500)).await;

    // Assert
    let read = task_stats(3500).await - read_before;
    assert!(read < 3000, "the import scanned the project's tasks: {read} rows read");
    let got = json_of(app.get(&format!("/api/projects/{project}/")).await, StatusCode::OK).await;
    assert_eq!((got["task_number"].as_i64(), got["total_annotations_number"].as_i64()), (Some(3500), Some(3500)));
}
