//! Failed token checks from one address are throttled (429 with `Retry-After`) past
//! `auth_failures_per_minute`; valid credentials from the same address keep working.
//! Password logins are limited per attempt, so a right guess past the allowance is
//! refused too.

use crate::helpers::{assert_error, spawn_app_with, Backend};
use reqwest::{Method, StatusCode};
use serde_json::json;

crate::configured_backend_tests!(
    repeated_bad_tokens_get_429_with_retry_after_while_a_valid_token_keeps_working,
    requests_without_credentials_are_not_throttled,
    bad_refresh_tokens_are_throttled_too,
    password_logins_past_the_allowance_get_429_even_with_the_right_password,
);

const ALLOWED: u32 = 5;

async fn repeated_bad_tokens_get_429_with_retry_after_while_a_valid_token_keeps_working(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, |s| s.http.auth_failures_per_minute = ALLOWED).await;
    let bad = |key: &str| app.anon(Method::GET, "/api/projects/").header("Authorization", format!("Token {key}"));

    // Act: the allowance of failures, then more.
    for i in 0..ALLOWED {
        let r = bad(&format!("wrong{i}")).send().await.unwrap();
        assert_error(r, StatusCode::UNAUTHORIZED).await;
    }
    let throttled = bad("wrong-again").send().await.unwrap();

    // Assert
    let retry_after: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let err = assert_error(throttled, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(err["detail"], format!("Request was throttled. Expected available in {retry_after} seconds."));
    let r = app.anon(Method::GET, "/api/projects/").header("X-Api-Key", "wrong").send().await.unwrap();
    assert_error(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.get("/api/projects/").await.status(), StatusCode::OK, "a valid token is never throttled");
}

async fn requests_without_credentials_are_not_throttled(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.http.auth_failures_per_minute = ALLOWED).await;
    for _ in 0..3 * ALLOWED {
        let r = app.anon(Method::GET, "/api/projects/").send().await.unwrap();
        assert_error(r, StatusCode::UNAUTHORIZED).await;
    }
}

async fn bad_refresh_tokens_are_throttled_too(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.http.auth_failures_per_minute = ALLOWED).await;
    let refresh = || app.anon(Method::POST, "/api/token/refresh/").json(&json!({"refresh": "not.a.jwt"}));
    for _ in 0..ALLOWED {
        assert_error(refresh().send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    }
    assert_error(refresh().send().await.unwrap(), StatusCode::TOO_MANY_REQUESTS).await;
    // Malformed bodies are 400, not token checks: still answered as such.
    let r = app.anon(Method::POST, "/api/token/refresh/").json(&json!({})).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST).await;
}

async fn password_logins_past_the_allowance_get_429_even_with_the_right_password(backend: Backend) {
    // Arrange
    let app = spawn_app_with(backend, |s| s.http.auth_failures_per_minute = ALLOWED).await;
    let user = app.state.db.user_by_email("admin@example.com").await.unwrap();
    let hash = labelport::api::auth::hash_password("the right one").unwrap();
    app.state.db.set_password_hash(user.id, &hash).await.unwrap();
    let login = |password: &str| {
        app.anon(Method::POST, "/api/admin/login").json(&json!({"email": "admin@example.com", "password": password}))
    };

    // Act: the allowance spent on guesses, then the right password.
    for i in 0..ALLOWED {
        assert_error(login(&format!("guess {i}")).send().await.unwrap(), StatusCode::BAD_REQUEST).await;
    }
    let right = login("the right one").send().await.unwrap();

    // Assert: refused without a session; token requests are not held up by it.
    assert!(right.headers().get("set-cookie").is_none());
    assert!(right.headers().contains_key("retry-after"));
    assert_error(right, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.get("/api/projects/").await.status(), StatusCode::OK);
}
