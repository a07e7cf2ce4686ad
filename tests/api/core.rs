use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(health_is_up, an_annotation_round_trip_works, requests_without_a_token_get_401);

async fn health_is_up(app: TestApp) {
    let r = app.anon(reqwest::Method::GET, "/health").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "UP"}));
}

async fn an_annotation_round_trip_works(app: TestApp) {
    let project = app.create_project("round trip").await;
    let tasks = app.import(project, &json!([{"text": "a"}, {"data": {"text": "b"}}])).await;
    let a = app.annotate(tasks[0], &json!({"result": [{"value": {"choices": ["x"]}}], "lead_time": 2})).await;
    let id = a["id"].as_i64().unwrap();
    let got: Value = app.get(&format!("/api/annotations/{id}/")).await.json().await.unwrap();
    assert_eq!(got["result"], json!([{"value": {"choices": ["x"]}}]));
    assert_eq!(got["lead_time"], json!(2.0));
    let r = app.delete(&format!("/api/annotations/{id}/")).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(app.get(&format!("/api/annotations/{id}/")).await, StatusCode::NOT_FOUND).await;
}

async fn requests_without_a_token_get_401(app: TestApp) {
    let r = app.anon(reqwest::Method::GET, "/api/projects/").send().await.unwrap();
    let body = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], "Authentication credentials were not provided.");
}
