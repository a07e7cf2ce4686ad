//! File uploads to `POST /api/projects/{id}/import` (contract §7.2): JSON, JSON Lines,
//! CSV, TSV and text files as `multipart/form-data`, all-or-nothing.

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_json_file_of_tasks_is_imported_with_label_studios_summary,
    a_csv_file_gives_one_task_per_row_with_string_values,
    a_tsv_a_json_lines_and_a_text_file_are_imported_together,
    a_malformed_file_is_400_and_imports_nothing_from_any_file,
    an_unsupported_file_type_is_400,
    a_multipart_body_without_files_is_400,
    a_multipart_import_without_credentials_is_401,
);

crate::configured_backend_tests!(an_upload_over_the_import_limit_is_413);

fn file(name: &str, content: &str) -> Part {
    Part::bytes(content.as_bytes().to_vec()).file_name(name.to_owned())
}

async fn upload(app: &TestApp, project: i64, form: Form) -> reqwest::Response {
    app.req(Method::POST, &format!("/api/projects/{project}/import?return_task_ids=true"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("a JSON body")
}

async fn task_data(app: &TestApp, project: i64) -> Vec<Value> {
    let r = app.get(&format!("/api/tasks/?project={project}&fields=all")).await;
    let tasks = json_of(r, StatusCode::OK).await["tasks"].as_array().unwrap().clone();
    tasks.iter().map(|t| t["data"].clone()).collect()
}

async fn a_json_file_of_tasks_is_imported_with_label_studios_summary(app: TestApp) {
    // Arrange
    let project = app.create_project("files").await;
    let content = r#"[{"text": "a"}, {"text": "b"}, {"data": {"text": "c"}, "annotations": [{"result": []}]}]"#;

    // Act
    let r = upload(&app, project, Form::new().part("file", file("tasks.json", content))).await;

    // Assert
    let summary = json_of(r, StatusCode::CREATED).await;
    assert_eq!(summary["task_count"], 3);
    assert_eq!(summary["annotation_count"], 1);
    assert_eq!(summary["found_formats"], json!({".json": 1}));
    assert_eq!(summary["data_columns"], json!(["text"]));
    assert_eq!(summary["could_be_tasks_list"], false);
    assert_eq!(summary["task_ids"].as_array().unwrap().len(), 3);
    assert_eq!(task_data(&app, project).await, [json!({"text": "a"}), json!({"text": "b"}), json!({"text": "c"})]);
}

async fn a_csv_file_gives_one_task_per_row_with_string_values(app: TestApp) {
    // Arrange
    let project = app.create_project("csv").await;

    // Act
    let r = upload(&app, project, Form::new().part("file", file("tasks.csv", "text,score\nx,1\n\"y, z\",2\n"))).await;

    // Assert
    let summary = json_of(r, StatusCode::CREATED).await;
    assert_eq!(summary["task_count"], 2);
    assert_eq!(summary["found_formats"], json!({".csv": 1}));
    assert_eq!(summary["data_columns"], json!(["text", "score"]));
    assert_eq!(summary["could_be_tasks_list"], true);
    assert_eq!(
        task_data(&app, project).await,
        [json!({"text": "x", "score": "1"}), json!({"text": "y, z", "score": "2"})]
    );
}

async fn a_tsv_a_json_lines_and_a_text_file_are_imported_together(app: TestApp) {
    // Arrange
    let project = app.create_project("mixed").await;
    let form = Form::new()
        .part("a", file("a.tsv", "text\tlabel\nfrom tsv\tpos\n"))
        .part("b", file("b.jsonl", "{\"text\": \"from jsonl 1\"}\n\n{\"data\": {\"text\": \"from jsonl 2\"}}\n"))
        .part("c", file("c.TXT", "from txt 1\r\n\r\nfrom txt 2\n"));

    // Act
    let summary = json_of(upload(&app, project, form).await, StatusCode::CREATED).await;

    // Assert
    assert_eq!(summary["task_count"], 5);
    assert_eq!(summary["found_formats"], json!({".tsv": 1, ".jsonl": 1, ".txt": 1}));
    assert_eq!(
        task_data(&app, project).await,
        [
            json!({"text": "from tsv", "label": "pos"}),
            json!({"text": "from jsonl 1"}),
            json!({"text": "from jsonl 2"}),
            json!({"text": "from txt 1"}),
            json!({"text": "from txt 2"}),
        ]
    );
}

async fn a_malformed_file_is_400_and_imports_nothing_from_any_file(app: TestApp) {
    let project = app.create_project("bad files").await;
    for (name, content, message) in [
        ("bad.json", "[{\"text\": \"a\"},", "Can't import file \"bad.json\": invalid JSON"),
        ("bad.json", "42", "Can't import file \"bad.json\": a JSON file must hold a list of tasks or one task"),
        ("bad.jsonl", "{\"text\": \"a\"}\n{nope}\n", "Can't import file \"bad.jsonl\": line 2: invalid JSON"),
        ("bad.csv", "text,score\nx,1\ny\n", "Can't import file \"bad.csv\": "),
        ("bad.tsv", "a\tb\n1\t2\t3\n", "Can't import file \"bad.tsv\": "),
        ("bad.txt", "\u{0}\u{0}\u{ff}", ""),
    ] {
        // Arrange: a good file first, then the bad one.
        let good = file("good.csv", "text\nfine\n");
        let bad =
            if name == "bad.txt" { Part::bytes(vec![0xff, 0xfe, 0x00]).file_name(name) } else { file(name, content) };

        // Act
        let r = upload(&app, project, Form::new().part("file", good).part("file", bad)).await;

        // Assert
        let err = assert_error(r, StatusCode::BAD_REQUEST).await;
        let got = err["validation_errors"]["non_field_errors"][0].as_str().unwrap_or_default().to_owned();
        assert!(got.starts_with(message) && got.contains(name), "{name}: {got}");
    }
    assert_eq!(task_data(&app, project).await, Vec::<Value>::new(), "nothing was imported");
}

async fn an_unsupported_file_type_is_400(app: TestApp) {
    let project = app.create_project("png").await;
    let r = upload(&app, project, Form::new().part("file", file("image.png", "not really"))).await;
    let err = assert_error(r, StatusCode::BAD_REQUEST).await;
    assert!(err["validation_errors"]["non_field_errors"][0].as_str().unwrap().contains("unsupported file format"));
}

async fn a_multipart_body_without_files_is_400(app: TestApp) {
    let project = app.create_project("no files").await;
    for form in [Form::new().text("note", "hello"), Form::new().text("url", "http://127.0.0.1/tasks.json")] {
        let r = upload(&app, project, form).await;
        assert_error(r, StatusCode::BAD_REQUEST).await;
    }
    // A body that is not multipart at all despite its content type.
    let r = app
        .req(Method::POST, &format!("/api/projects/{project}/import"))
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("garbage")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(task_data(&app, project).await, Vec::<Value>::new());
}

async fn a_multipart_import_without_credentials_is_401(app: TestApp) {
    let project = app.create_project("anon").await;
    let r = app
        .anon(Method::POST, &format!("/api/projects/{project}/import"))
        .multipart(Form::new().part("file", file("tasks.txt", "a\n")))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED).await;
}

async fn an_upload_over_the_import_limit_is_413(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, |s| s.http.max_import_bytes = 64 * 1024).await;
    let project = app.create_project("big").await;
    let big = "line of text\n".repeat(10_000);

    // Act
    let r = upload(&app, project, Form::new().part("file", file("big.txt", &big))).await;

    // Assert
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(task_data(&app, project).await, Vec::<Value>::new());
}
