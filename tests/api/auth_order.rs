//! Authentication comes before method dispatch (contract §1.1): without valid
//! credentials a wrong method on an authenticated route is 401, as in Label Studio;
//! public routes keep their 405 and unknown paths their 404 (§2.4).

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(
    a_wrong_method_without_credentials_on_an_authenticated_route_is_401,
    a_wrong_method_with_a_bad_token_is_401_invalid_token,
    a_wrong_method_on_a_public_route_is_405_without_credentials,
    an_unknown_api_path_is_a_json_404_with_or_without_credentials,
);

const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";

/// One wrong method on every authenticated route, in both slash forms.
fn wrong_methods() -> Vec<(Method, &'static str)> {
    vec![
        (Method::DELETE, "/api/projects/"),
        (Method::PUT, "/api/projects"),
        (Method::POST, "/api/projects/987654/"),
        (Method::GET, "/api/projects/987654/import"),
        (Method::DELETE, "/api/projects/987654/import/"),
        (Method::DELETE, "/api/tasks/"),
        (Method::POST, "/api/tasks/987654"),
        (Method::DELETE, "/api/tasks/987654/annotations/"),
        (Method::POST, "/api/annotations/987654/"),
        (Method::POST, "/api/current-user/whoami"),
        (Method::DELETE, "/api/current-user"),
        (Method::POST, "/api/current-user/token"),
        (Method::GET, "/api/current-user/reset-token/"),
        (Method::DELETE, "/api/token/"),
        (Method::PATCH, "/api/storages/types"),
        (Method::PATCH, "/api/storages/export/types"),
        (Method::DELETE, "/api/storages/export"),
        (Method::DELETE, "/api/storages/export/localfiles"),
        (Method::GET, "/api/storages/export/s3/validate"),
        (Method::POST, "/api/storages/export/gcs/form"),
        (Method::POST, "/api/storages/export/azure/987654"),
        (Method::GET, "/api/storages/export/redis/987654/sync"),
        (Method::POST, "/api/storages/export/localfiles/987654/lag/"),
    ]
}

async fn a_wrong_method_without_credentials_on_an_authenticated_route_is_401(app: TestApp) {
    for (method, path) in wrong_methods() {
        // Act
        let r = app.anon(method.clone(), path).json(&json!({})).send().await.unwrap();

        // Assert
        assert_eq!(r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Token"), "{method} {path}");
        let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], NO_CREDENTIALS, "{method} {path}");
    }
}

async fn a_wrong_method_with_a_bad_token_is_401_invalid_token(app: TestApp) {
    for (method, path) in wrong_methods() {
        let r = app
            .anon(method.clone(), path)
            .header("Authorization", "Token 0000000000000000000000000000000000000000")
            .send()
            .await
            .unwrap();
        let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], "Invalid token.", "{method} {path}");
    }
}

async fn a_wrong_method_on_a_public_route_is_405_without_credentials(app: TestApp) {
    for (method, path) in [
        (Method::POST, "/health"),
        (Method::DELETE, "/api/version"),
        (Method::POST, "/api/schema"),
        (Method::GET, "/api/token/refresh/"),
        (Method::GET, "/api/token/refresh"),
        (Method::GET, "/api/token/blacklist/"),
    ] {
        let r = app.anon(method.clone(), path).send().await.unwrap();
        let err = assert_error(r, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(err["detail"], format!("Method \"{method}\" not allowed."), "{method} {path}");
    }
}

async fn an_unknown_api_path_is_a_json_404_with_or_without_credentials(app: TestApp) {
    for path in ["/api/nothing-here", "/api/projects/1/nothing", "/api/storages/export/localfiles/1/2/3", "/nowhere"] {
        for request in [app.anon(Method::GET, path), app.req(Method::GET, path), app.anon(Method::DELETE, path)] {
            let err = assert_error(request.send().await.unwrap(), StatusCode::NOT_FOUND).await;
            assert_eq!(err["detail"], "Not found.", "{path}");
        }
    }
}
