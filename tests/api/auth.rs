//! Authentication (legacy tokens, `X-Api-Key`, personal access tokens and Bearer
//! access tokens) and the current user, contract §1 and §7.5.

use crate::backend_tests;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

backend_tests!(
    a_legacy_token_authenticates_with_a_case_insensitive_keyword,
    x_api_key_authenticates_and_overrides_the_authorization_header,
    every_bad_credential_gets_label_studios_401_message,
    authentication_is_checked_before_the_object_is_looked_up,
    whoami_has_label_studios_keys_in_order_at_both_paths,
    the_legacy_token_can_be_read_and_reset,
    a_personal_access_token_is_a_long_lived_jwt_refresh_token,
    a_second_personal_access_token_is_409_while_one_is_live,
    personal_access_tokens_are_listed_without_their_signature,
    a_personal_access_token_is_exchanged_for_a_300_second_bearer_access_token,
    a_personal_access_token_used_directly_as_bearer_is_401,
    refreshing_a_garbage_or_wrong_kind_of_token_is_401_token_is_invalid,
    a_refresh_without_the_refresh_field_is_400,
    a_blacklisted_token_can_neither_be_refreshed_nor_used,
    an_expired_or_foreign_access_token_is_401,
    a_reset_legacy_token_stays_reset_after_a_restart,
    a_token_naming_another_user_than_the_owner_of_its_jti_is_401,
);

crate::configured_backend_tests!(a_user_token_of_5_characters_or_fewer_is_not_applied);

const NO_CREDENTIALS: &str = "Authentication credentials were not provided.";

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().expect("an object").keys().map(String::as_str).collect()
}

async fn json_of(r: reqwest::Response, status: StatusCode) -> Value {
    let got = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).expect("a JSON body")
}

/// The payload of a JWT, decoded without checking the signature.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("three JWT segments");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

async fn whoami_with(app: &TestApp, name: &str, value: &str) -> reqwest::Response {
    app.anon(Method::GET, "/api/current-user/whoami").header(name, value).send().await.unwrap()
}

async fn new_pat(app: &TestApp) -> String {
    let r = app.post("/api/token/", &json!({})).await;
    json_of(r, StatusCode::CREATED).await["token"].as_str().unwrap().to_owned()
}

async fn refresh(app: &TestApp, pat: &str) -> reqwest::Response {
    app.anon(Method::POST, "/api/token/refresh/").json(&json!({ "refresh": pat })).send().await.unwrap()
}

async fn access_token(app: &TestApp, pat: &str) -> String {
    json_of(refresh(app, pat).await, StatusCode::OK).await["access"].as_str().unwrap().to_owned()
}

async fn a_legacy_token_authenticates_with_a_case_insensitive_keyword(app: TestApp) {
    for keyword in ["Token", "token", "TOKEN"] {
        let r = whoami_with(&app, "Authorization", &format!("{keyword} {}", app.token)).await;
        let me = json_of(r, StatusCode::OK).await;
        assert_eq!(me["email"], "admin@example.com", "{keyword}");
    }
}

async fn x_api_key_authenticates_and_overrides_the_authorization_header(app: TestApp) {
    let r = whoami_with(&app, "X-Api-Key", &app.token).await;
    assert_eq!(json_of(r, StatusCode::OK).await["email"], "admin@example.com");

    // A good key wins over a bad Authorization header ...
    let r = app
        .anon(Method::GET, "/api/current-user/whoami")
        .header("Authorization", "Token deadbeef")
        .header("X-Api-Key", &app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // ... and a bad key loses even with a good Authorization header.
    let r = app.req(Method::GET, "/api/current-user/whoami").header("X-Api-Key", "deadbeef").send().await.unwrap();
    let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Invalid token.");
}

async fn every_bad_credential_gets_label_studios_401_message(app: TestApp) {
    // Arrange: a valid access token, to misuse
    let access = access_token(&app, &new_pat(&app).await).await;
    let cases: Vec<(Option<(&str, String)>, &str)> = vec![
        (None, NO_CREDENTIALS),
        (Some(("Authorization", "Token deadbeef".into())), "Invalid token."),
        (Some(("Authorization", "Token".into())), "Invalid token header. No credentials provided."),
        (Some(("Authorization", "Token a b".into())), "Invalid token header. Token string should not contain spaces."),
        (Some(("Authorization", "Bearer garbage".into())), NO_CREDENTIALS),
        (Some(("Authorization", "Bearer".into())), NO_CREDENTIALS),
        (Some(("Authorization", format!("bearer {access}"))), NO_CREDENTIALS),
        (Some(("Authorization", "Basic YWRtaW46YWRtaW4=".into())), NO_CREDENTIALS),
        (Some(("Authorization", "".into())), NO_CREDENTIALS),
        (Some(("X-Api-Key", access.clone())), "Invalid token."),
        (Some(("X-Api-Key", "x".repeat(5000))), "Invalid token."),
    ];
    for (header, detail) in cases {
        // Act
        let mut req = app.anon(Method::GET, "/api/projects/");
        if let Some((name, value)) = &header {
            req = req.header(*name, value);
        }
        let r = req.send().await.unwrap();

        // Assert
        assert_eq!(r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Token"), "{header:?}");
        let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], detail, "{header:?}");
        assert_eq!(err["exc_info"], Value::Null);
        assert!(err.get("validation_errors").is_none());
    }
}

async fn authentication_is_checked_before_the_object_is_looked_up(app: TestApp) {
    for (method, path) in [
        (Method::GET, "/api/projects/"),
        (Method::POST, "/api/projects/"),
        (Method::GET, "/api/projects/987654/"),
        (Method::PATCH, "/api/projects/987654"),
        (Method::DELETE, "/api/projects/987654/"),
        (Method::POST, "/api/projects/987654/import"),
        (Method::GET, "/api/tasks/"),
        (Method::GET, "/api/tasks/?project=987654"),
        (Method::POST, "/api/tasks/"),
        (Method::GET, "/api/tasks/987654/"),
        (Method::PATCH, "/api/tasks/987654/"),
        (Method::DELETE, "/api/tasks/987654/"),
        (Method::GET, "/api/tasks/987654/annotations/"),
        (Method::POST, "/api/tasks/987654/annotations/"),
        (Method::GET, "/api/annotations/987654/"),
        (Method::PATCH, "/api/annotations/987654/"),
        (Method::DELETE, "/api/annotations/987654/"),
        (Method::GET, "/api/current-user/whoami"),
        (Method::GET, "/api/current-user"),
        (Method::GET, "/api/current-user/token"),
        (Method::POST, "/api/current-user/reset-token/"),
        (Method::GET, "/api/token/"),
        (Method::POST, "/api/token/"),
    ] {
        let r = app.anon(method.clone(), path).json(&json!({"not": "even valid"})).send().await.unwrap();
        let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], NO_CREDENTIALS, "{method} {path}");
    }
}

async fn whoami_has_label_studios_keys_in_order_at_both_paths(app: TestApp) {
    // Act
    let me = json_of(app.get("/api/current-user/whoami").await, StatusCode::OK).await;

    // Assert
    assert_eq!(
        keys(&me),
        [
            "id",
            "first_name",
            "last_name",
            "username",
            "email",
            "last_activity",
            "custom_hotkeys",
            "avatar",
            "initials",
            "phone",
            "active_organization",
            "active_organization_meta",
            "allow_newsletters",
            "date_joined",
            "permissions",
        ]
    );
    let user = app.state.db.user_by_email("admin@example.com").await.unwrap();
    assert_eq!(me["id"], user.id);
    assert_eq!(me["email"], "admin@example.com");
    assert_eq!(me["username"], "");
    assert_eq!(me["initials"], "ad");
    assert_eq!(me["custom_hotkeys"], json!({}));
    assert_eq!(me["avatar"], Value::Null);
    assert_eq!(me["phone"], "");
    assert_eq!(me["allow_newsletters"], Value::Null);
    assert_eq!(me["active_organization"], user.organization_id);
    assert_eq!(me["active_organization_meta"], json!({"title": "Label Studio", "email": "admin@example.com"}));
    assert!(me["date_joined"].as_str().unwrap().ends_with('Z'));
    let permissions: Vec<&str> = me["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(permissions.len(), 44);
    assert_eq!(permissions[0], "organizations.create");
    assert_eq!(permissions[43], "views.delete");
    for p in ["storages.view", "storages.change", "storages.sync", "users.token.any"] {
        assert!(permissions.contains(&p), "{p}");
    }

    // The same body at the other paths the SDK calls
    for path in ["/api/current-user", "/api/current-user/", "/api/current-user/whoami/"] {
        let other = json_of(app.get(path).await, StatusCode::OK).await;
        assert_eq!(other, me, "{path}");
    }
}

async fn the_legacy_token_can_be_read_and_reset(app: TestApp) {
    let r = app.get("/api/current-user/token").await;
    assert_eq!(json_of(r, StatusCode::OK).await, json!({"token": app.token}));

    // Act
    let r = app.post("/api/current-user/reset-token/", &json!({})).await;
    let new = json_of(r, StatusCode::OK).await["token"].as_str().unwrap().to_owned();

    // Assert
    assert_ne!(new, app.token);
    assert_eq!(new.len(), 40);
    let err = assert_error(app.get("/api/current-user/whoami").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Invalid token.");
    let r = whoami_with(&app, "Authorization", &format!("Token {new}")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn a_personal_access_token_is_a_long_lived_jwt_refresh_token(app: TestApp) {
    let pat = new_pat(&app).await;
    let c = claims(&pat);
    let user = app.state.db.user_by_email("admin@example.com").await.unwrap();
    assert_eq!(c["token_type"], "refresh");
    assert_eq!(c["user_id"], user.id.to_string(), "user_id is a string");
    let jti = c["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 32);
    assert!(jti.bytes().all(|b| b.is_ascii_hexdigit()));
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert!(exp - iat > 100 * 365 * 24 * 3600, "lives for ~200 years");
}

async fn a_second_personal_access_token_is_409_while_one_is_live(app: TestApp) {
    new_pat(&app).await;
    let r = app.post("/api/token", &json!({})).await;
    let err = assert_error(r, StatusCode::CONFLICT).await;
    assert_eq!(err["detail"], "You already have a valid token. Please revoke it before creating a new one.");
}

async fn personal_access_tokens_are_listed_without_their_signature(app: TestApp) {
    assert_eq!(json_of(app.get("/api/token/").await, StatusCode::OK).await, json!([]));
    let pat = new_pat(&app).await;
    let (unsigned, _) = pat.rsplit_once('.').unwrap();
    assert_eq!(json_of(app.get("/api/token").await, StatusCode::OK).await, json!([{ "token": unsigned }]));
}

async fn a_personal_access_token_is_exchanged_for_a_300_second_bearer_access_token(app: TestApp) {
    // Arrange
    let pat = new_pat(&app).await;

    // Act: no Authorization header needed, both slash forms
    let access = access_token(&app, &pat).await;
    let r = app.anon(Method::POST, "/api/token/refresh").json(&json!({ "refresh": pat })).send().await.unwrap();
    let body = json_of(r, StatusCode::OK).await;
    assert_eq!(keys(&body), ["access"]);

    // Assert
    let c = claims(&access);
    assert_eq!(c["token_type"], "access");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 300);
    let r = whoami_with(&app, "Authorization", &format!("Bearer {access}")).await;
    assert_eq!(json_of(r, StatusCode::OK).await["email"], "admin@example.com");
    // A Bearer token works on every endpoint, e.g. creating a project
    let r = app
        .anon(Method::POST, "/api/projects/")
        .header("Authorization", format!("Bearer {access}"))
        .json(&json!({"title": "via bearer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn a_personal_access_token_used_directly_as_bearer_is_401(app: TestApp) {
    let pat = new_pat(&app).await;
    let r = whoami_with(&app, "Authorization", &format!("Bearer {pat}")).await;
    let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], NO_CREDENTIALS);
    // Nor is it a legacy token
    let r = whoami_with(&app, "Authorization", &format!("Token {pat}")).await;
    let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Invalid token.");
}

async fn refreshing_a_garbage_or_wrong_kind_of_token_is_401_token_is_invalid(app: TestApp) {
    let access = access_token(&app, &new_pat(&app).await).await;
    for token in ["garbage".to_owned(), "a.b.c".to_owned(), access, app.token.clone(), String::new()] {
        let err = assert_error(refresh(&app, &token).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], "Token is invalid", "{token:?}");
    }
}

async fn a_refresh_without_the_refresh_field_is_400(app: TestApp) {
    for path in ["/api/token/refresh/", "/api/token/blacklist/"] {
        let r = app.anon(Method::POST, path).json(&json!({})).send().await.unwrap();
        let err = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(err["validation_errors"], json!({"refresh": ["This field is required."]}), "{path}");
        let r = app.anon(Method::POST, path).json(&json!({"refresh": ["a list"]})).send().await.unwrap();
        let err = assert_error(r, StatusCode::BAD_REQUEST).await;
        assert!(err["validation_errors"]["refresh"].is_array(), "{path}");
    }
}

async fn a_blacklisted_token_can_neither_be_refreshed_nor_used(app: TestApp) {
    // Arrange
    let pat = new_pat(&app).await;
    let access = access_token(&app, &pat).await;

    // Act
    let r = app.anon(Method::POST, "/api/token/blacklist/").json(&json!({ "refresh": pat })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());

    // Assert
    let err = assert_error(refresh(&app, &pat).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Token is blacklisted");
    let r = whoami_with(&app, "Authorization", &format!("Bearer {access}")).await;
    let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], NO_CREDENTIALS);
    assert_eq!(json_of(app.get("/api/token/").await, StatusCode::OK).await, json!([]));
    // A new token can be created once the old one is revoked
    let again = new_pat(&app).await;
    assert_ne!(again, pat);
    assert_eq!(refresh(&app, &again).await.status(), StatusCode::OK);
}

async fn an_expired_or_foreign_access_token_is_401(app: TestApp) {
    use jsonwebtoken::{encode, EncodingKey, Header};
    // Arrange: a live PAT, and the server's own signing secret
    let pat = new_pat(&app).await;
    let jti = claims(&pat)["jti"].as_str().unwrap().to_owned();
    let user_id = claims(&pat)["user_id"].as_str().unwrap().to_owned();
    let secret = labelport::startup::jwt_secret(&app.state.db, &app.state.secrets).await.unwrap();
    let now = chrono_now();
    let sign = |claims: Value, secret: &str| {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let cases = [
        (
            "expired",
            sign(
                json!({"token_type": "access", "exp": now - 10, "iat": now - 310, "jti": jti, "user_id": user_id}),
                &secret,
            ),
        ),
        (
            "signed with another secret",
            sign(
                json!({"token_type": "access", "exp": now + 300, "iat": now, "jti": jti, "user_id": user_id}),
                "not the secret",
            ),
        ),
        (
            "unknown jti",
            sign(
                json!({"token_type": "access", "exp": now + 300, "iat": now, "jti": "0".repeat(32), "user_id": user_id}),
                &secret,
            ),
        ),
        (
            "user id not a number",
            sign(json!({"token_type": "access", "exp": now + 300, "iat": now, "jti": jti, "user_id": "one"}), &secret),
        ),
        (
            "no such user",
            sign(
                json!({"token_type": "access", "exp": now + 300, "iat": now, "jti": jti, "user_id": "987654"}),
                &secret,
            ),
        ),
    ];
    for (case, token) in cases {
        let r = whoami_with(&app, "Authorization", &format!("Bearer {token}")).await;
        let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], NO_CREDENTIALS, "{case}");
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn a_reset_legacy_token_stays_reset_after_a_restart(app: TestApp) {
    // Arrange: the bootstrap user got LABEL_STUDIO_USER_TOKEN when it was created; reset it
    let r = app.post("/api/current-user/reset-token/", &json!({})).await;
    let new = json_of(r, StatusCode::OK).await["token"].as_str().unwrap().to_owned();

    // Act: start again on the same database with the same environment
    let url = app.state.settings.database_url.clone();
    let old = app.token.clone();
    let restarted = spawn_app_with(Backend::Sqlite, |s| {
        s.database_url = url;
        s.bootstrap_user.as_mut().unwrap().token = Some(old);
    })
    .await;

    // Assert: the old token stays revoked, the new one works
    let r = restarted.get("/api/current-user/whoami").await;
    let err = assert_error(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Invalid token.");
    let r = whoami_with(&restarted, "Authorization", &format!("Token {new}")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

async fn a_user_token_of_5_characters_or_fewer_is_not_applied(backend: Backend) {
    for token in ["a", "abcde"] {
        // Arrange and Act
        let app = spawn_app_with(backend, |s| s.bootstrap_user.as_mut().unwrap().token = Some(token.into())).await;

        // Assert: the user exists, with a random token instead
        let user = app.state.db.user_by_email("admin@example.com").await.expect("the bootstrap user is created");
        let legacy_token = app.state.db.legacy_token(user.id).await.unwrap();
        assert_eq!(legacy_token.len(), 40, "{token}");
        let err = assert_error(app.get("/api/current-user/whoami").await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(err["detail"], "Invalid token.", "{token}");
        let r = whoami_with(&app, "Authorization", &format!("Token {legacy_token}")).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // Six characters are enough
    let app = spawn_app_with(backend, |s| s.bootstrap_user.as_mut().unwrap().token = Some("abcdef".into())).await;
    assert_eq!(app.get("/api/current-user/whoami").await.status(), StatusCode::OK);
}

async fn a_token_naming_another_user_than_the_owner_of_its_jti_is_401(app: TestApp) {
    use jsonwebtoken::{encode, EncodingKey, Header};
    // Arrange: the admin's live PAT, a user of another organization, and tokens signed
    // with the server's secret that pair the admin's jti with the other user's id
    let pat = new_pat(&app).await;
    let jti = claims(&pat)["jti"].as_str().unwrap().to_owned();
    let other_token = app.user_in_other_organization("other@example.com").await;
    let other = app.state.db.user_by_legacy_token(&other_token).await.unwrap();
    let secret = labelport::startup::jwt_secret(&app.state.db, &app.state.secrets).await.unwrap();
    let now = chrono_now();
    let forge = |token_type: &str, exp: i64| {
        let claims =
            json!({"token_type": token_type, "exp": exp, "iat": now, "jti": jti, "user_id": other.id.to_string()});
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };

    // Act
    let access = whoami_with(&app, "Authorization", &format!("Bearer {}", forge("access", now + 300))).await;
    let refreshed = refresh(&app, &forge("refresh", now + 3600)).await;

    // Assert
    let err = assert_error(access, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], NO_CREDENTIALS);
    let err = assert_error(refreshed, StatusCode::UNAUTHORIZED).await;
    assert_eq!(err["detail"], "Token is invalid");
    // ... while the genuine PAT still works
    let access = access_token(&app, &pat).await;
    let r = whoami_with(&app, "Authorization", &format!("Bearer {access}")).await;
    assert_eq!(json_of(r, StatusCode::OK).await["email"], "admin@example.com");
}
