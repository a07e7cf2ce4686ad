//! The admin page at `/` and its cookie sign-in: sessions, CSRF checks, sign-out.

use crate::backend_tests;
use crate::helpers::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    the_admin_page_and_its_assets_are_served_with_a_strict_content_security_policy,
    a_password_sign_in_sets_a_strict_http_only_cookie_that_authenticates,
    a_wrong_password_or_unknown_email_is_refused_without_saying_which,
    a_sign_in_without_email_or_password_is_400_at_the_field,
    a_state_changing_request_with_the_cookie_needs_the_csrf_header,
    signing_out_ends_the_session,
    the_admin_api_answers_with_and_without_a_trailing_slash_like_every_api_route,
);

const PASSWORD: &str = "correct horse battery";

async fn with_password(app: &TestApp) {
    let user = app.state.db.user_by_email("admin@example.com").await.unwrap();
    let hash = labelport::api::auth::hash_password(PASSWORD).unwrap();
    app.state.db.set_password_hash(user.id, &hash).await.unwrap();
}

/// Signs in; returns the `Cookie` header value and the CSRF token.
async fn sign_in(app: &TestApp) -> (String, String) {
    with_password(app).await;
    let r = app
        .anon(Method::POST, "/api/admin/login")
        .json(&json!({ "email": "admin@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    (cookie, body["csrf_token"].as_str().unwrap().to_owned())
}

async fn the_admin_page_and_its_assets_are_served_with_a_strict_content_security_policy(app: TestApp) {
    // Act
    let page = app.anon(Method::GET, "/").send().await.unwrap();
    // Assert
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/admin/app.js"));
    for (path, kind) in [("/admin/app.js", "text/javascript"), ("/admin/app.css", "text/css")] {
        let r = app.anon(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
    }
}

async fn a_password_sign_in_sets_a_strict_http_only_cookie_that_authenticates(app: TestApp) {
    // Arrange
    with_password(&app).await;
    // Act
    let r = app
        .anon(Method::POST, "/api/admin/login")
        .json(&json!({ "email": "admin@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    // Assert
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{attribute} in {set_cookie}");
    }
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["email"], "admin@example.com");
    let cookie = set_cookie.split(';').next().unwrap();
    let me = app.anon(Method::GET, "/api/current-user/whoami").header("Cookie", cookie).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let session: Value = app
        .anon(Method::GET, "/api/admin/session")
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["csrf_token"], body["csrf_token"]);
    // A made-up cookie is no session.
    let forged = app
        .anon(Method::GET, "/api/current-user/whoami")
        .header("Cookie", "labelport_session=0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_error(forged, StatusCode::UNAUTHORIZED).await;
}

async fn a_wrong_password_or_unknown_email_is_refused_without_saying_which(app: TestApp) {
    with_password(&app).await;
    for (email, password) in [("admin@example.com", "wrong"), ("nobody@example.com", PASSWORD)] {
        let r = app
            .anon(Method::POST, "/api/admin/login")
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("set-cookie").is_none());
        let body = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            body["validation_errors"]["non_field_errors"],
            json!(["Unable to log in with provided credentials."]),
            "{email}"
        );
    }
}

async fn a_sign_in_without_email_or_password_is_400_at_the_field(app: TestApp) {
    let cases = [
        (json!({}), "email"),
        (json!({ "email": "admin@example.com" }), "password"),
        (json!({ "email": 5, "password": "x" }), "email"),
    ];
    for (body, field) in cases {
        let r = app.anon(Method::POST, "/api/admin/login").json(&body).send().await.unwrap();
        let error = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert!(error["validation_errors"][field].is_array(), "{body}: {error}");
    }
}

async fn a_state_changing_request_with_the_cookie_needs_the_csrf_header(app: TestApp) {
    // Arrange
    let (cookie, csrf) = sign_in(&app).await;
    let post = |csrf: Option<&str>| {
        let r = app.anon(Method::POST, "/api/projects/").header("Cookie", &cookie).json(&json!({ "title": "cookie" }));
        match csrf {
            Some(value) => r.header("X-CSRFToken", value),
            None => r,
        }
    };
    // Act / Assert
    for bad in [None, Some("wrong"), Some("")] {
        let body = assert_error(post(bad).send().await.unwrap(), StatusCode::FORBIDDEN).await;
        assert_eq!(body["detail"], "CSRF Failed: CSRF token missing or incorrect.", "{bad:?}");
    }
    assert_eq!(post(Some(&csrf)).send().await.unwrap().status(), StatusCode::CREATED);
    // Token auth is unchanged: no CSRF header needed.
    assert_eq!(app.post("/api/projects/", &json!({ "title": "token" })).await.status(), StatusCode::CREATED);
}

async fn signing_out_ends_the_session(app: TestApp) {
    // Arrange
    let (cookie, csrf) = sign_in(&app).await;
    // Act
    let out = app
        .anon(Method::POST, "/api/admin/logout")
        .header("Cookie", &cookie)
        .header("X-CSRFToken", &csrf)
        .send()
        .await
        .unwrap();
    // Assert
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let me = app.anon(Method::GET, "/api/current-user/whoami").header("Cookie", &cookie).send().await.unwrap();
    assert_error(me, StatusCode::UNAUTHORIZED).await;
    let session = app.anon(Method::GET, "/api/admin/session").header("Cookie", &cookie).send().await.unwrap();
    assert_error(session, StatusCode::UNAUTHORIZED).await;
}

async fn the_admin_api_answers_with_and_without_a_trailing_slash_like_every_api_route(app: TestApp) {
    // Arrange
    with_password(&app).await;
    let credentials = json!({ "email": "admin@example.com", "password": PASSWORD });

    // Act
    let login = app.anon(Method::POST, "/api/admin/login/").json(&credentials).send().await.unwrap();
    let session = app.anon(Method::GET, "/api/admin/session/").send().await.unwrap();
    let bare = app.anon(Method::GET, "/api/admin/session").send().await.unwrap();

    // Assert
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.headers().contains_key("set-cookie"));
    assert_eq!(session.status(), StatusCode::UNAUTHORIZED, "no cookie: the handler's own answer, not a 404");
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let detail = |v: Value| v["detail"].clone();
    assert_eq!(detail(session.json().await.unwrap()), detail(bare.json().await.unwrap()));
}
