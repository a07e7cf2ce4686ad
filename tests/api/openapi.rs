//! The OpenAPI document at `GET /api/schema` (issue 2 item 6).

use crate::backend_tests;
use crate::helpers::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

backend_tests!(the_schema_is_an_openapi_document_of_the_core_api, every_documented_operation_is_routed,);

/// The property names of a component schema, through `allOf` and `$ref`.
fn properties(doc: &Value, name: &str) -> Vec<String> {
    let schema = &doc["components"]["schemas"][name];
    let mut out: Vec<String> =
        schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        match part["$ref"].as_str() {
            Some(r) => out.extend(properties(doc, r.rsplit('/').next().unwrap())),
            None => out.extend(part["properties"].as_object().into_iter().flat_map(|p| p.keys().cloned())),
        }
    }
    out
}

async fn schema(app: &TestApp) -> Value {
    let r = app.anon(Method::GET, "/api/schema").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    r.json().await.expect("the schema is JSON")
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn the_schema_is_an_openapi_document_of_the_core_api(app: TestApp) {
    // Act
    let doc = schema(&app).await;

    // Assert
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/projects/", &["get", "post"][..]),
        ("/api/projects/{id}/", &["get", "patch", "put", "delete"]),
        ("/api/projects/{id}/import", &["post"]),
        ("/api/tasks/", &["get", "post"]),
        ("/api/tasks/{id}/", &["get", "patch", "put", "delete"]),
        ("/api/tasks/{id}/annotations/", &["get", "post"]),
        ("/api/annotations/{id}/", &["get", "patch", "put", "delete"]),
        ("/api/current-user/whoami", &["get"]),
        ("/api/current-user", &["get"]),
        ("/api/current-user/token", &["get"]),
        ("/api/current-user/reset-token/", &["post"]),
        ("/api/token/", &["get", "post"]),
        ("/api/token/refresh/", &["post"]),
        ("/api/token/blacklist/", &["post"]),
        ("/health", &["get"]),
        ("/api/version", &["get"]),
        ("/api/schema", &["get"]),
        ("/api/storages/types", &["get"]),
        ("/api/storages/export/types", &["get"]),
        ("/api/storages/export", &["get"]),
        ("/api/storages/export/{type}", &["get", "post"]),
        ("/api/storages/export/{type}/validate", &["post"]),
        ("/api/storages/export/{type}/form", &["get"]),
        ("/api/storages/export/{type}/{id}", &["get", "patch", "put", "delete"]),
        ("/api/storages/export/{type}/{id}/sync", &["post"]),
        ("/api/storages/export/{type}/{id}/lag", &["get"]),
    ] {
        for method in methods {
            assert!(paths.get(path).and_then(|p| p.get(*method)).is_some(), "{method} {path} is documented");
        }
    }
    // The legacy-token scheme (and the Bearer one) are declared and used
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["Token"]["type"], "apiKey");
    assert_eq!(schemes["Token"]["in"], "header");
    assert_eq!(schemes["Token"]["name"], "Authorization");
    assert_eq!(schemes["Bearer"]["scheme"], "bearer");
    let create = &paths["/api/tasks/{id}/annotations/"]["post"];
    assert!(create["security"].as_array().unwrap().contains(&json!({"Token": []})), "{}", create["security"]);
    assert_eq!(create["tags"], json!(["annotations"]));
    assert!(create["responses"]["201"].is_object());
    assert!(create["responses"]["404"].is_object());
    // Export storages: `{type}` is an enum, sync's raw 400 and the 501 are described
    let sync = &paths["/api/storages/export/{type}/{id}/sync"]["post"];
    assert_eq!(sync["tags"], json!(["storages"]));
    let kind = sync["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "type").expect("{type}");
    assert_eq!(kind["in"], "path");
    let kind_ref = kind["schema"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    assert_eq!(doc["components"]["schemas"][kind_ref]["enum"], json!(["s3", "gcs", "azure", "redis", "localfiles"]));
    let refused = sync["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].as_str().unwrap();
    let refused = &doc["components"]["schemas"][refused.rsplit('/').next().unwrap()];
    assert!(refused["oneOf"].as_array().unwrap().contains(&json!({"$ref": "#/components/schemas/NotSynchronizable"})));
    assert!(paths["/api/storages/export/{type}"]["post"]["responses"]["501"].is_object());
    let local = properties(&doc, "LocalFilesStorage");
    for key in ["id", "type", "synchronizable", "path", "status", "meta", "project", "export_mode"] {
        assert!(local.contains(&key.to_owned()), "LocalFilesStorage.{key}");
    }
    let s3 = properties(&doc, "S3Storage");
    for key in ["id", "type", "bucket", "prefix", "s3_endpoint", "region_name", "aws_sse_kms_key_id", "project"] {
        assert!(s3.contains(&key.to_owned()), "S3Storage.{key}");
    }
    let write_only: [(&str, &[&str]); 4] = [
        ("S3", &["aws_access_key_id", "aws_secret_access_key", "aws_session_token"]),
        ("Gcs", &["google_application_credentials"]),
        ("Azure", &["account_name", "account_key"]),
        ("Redis", &["password"]),
    ];
    for (kind, secrets) in write_only {
        let (out, input) =
            (properties(&doc, &format!("{kind}Storage")), properties(&doc, &format!("{kind}StorageInput")));
        assert!(out.contains(&"project".to_owned()) && input.contains(&"project".to_owned()), "{kind}");
        for secret in secrets {
            assert!(!out.contains(&secret.to_string()), "write-only {kind}.{secret} is not in responses");
            assert!(input.contains(&secret.to_string()), "{kind}.{secret} is accepted");
        }
    }
    // Error bodies are described once
    let error = &doc["components"]["schemas"]["ErrorBody"];
    for key in ["id", "status_code", "version", "detail", "exc_info", "validation_errors"] {
        assert!(error["properties"].get(key).is_some(), "ErrorBody.{key}");
    }
    // Operation ids are unique
    let mut ids = HashSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(id) = item.get(method).and_then(|op| op["operationId"].as_str()) {
                assert!(ids.insert(id.to_owned()), "operationId {id} of {method} {path} is used twice");
            }
        }
    }
}

async fn every_documented_operation_is_routed(app: TestApp) {
    // Anonymous requests have no side effects: a routed operation answers 401 (or
    // works, for the public ones); a missing route would be 404 `Not found.` or 405.
    let doc = schema(&app).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let placeholders = path.matches("{id}").count() + path.matches("{type}").count();
        if path.chars().filter(|c| *c == '{').count() != placeholders {
            continue; // only `{id}` and `{type}` are filled in below
        }
        let concrete = path.replace("{id}", "987654").replace("{type}", "localfiles");
        for method in METHODS {
            if item.get(method).is_none() {
                continue;
            }
            let r = app.anon(method.to_uppercase().parse().unwrap(), &concrete).json(&json!({})).send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!status.is_server_error(), "{method} {path}: {status}");
            assert!(
                !(status == StatusCode::NOT_FOUND && body["detail"] == "Not found."),
                "{method} {path} is documented but not routed"
            );
        }
    }
}
