//! The current user (`/api/current-user/...`).

use super::auth::Auth;
use super::error::schema::Unauthenticated;
use super::error::ApiResult;
use super::AppState;
use crate::db::{generate_legacy_token, User};
use crate::time::iso;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// Permission codes of an organization member, in Label Studio's order (contract §7.5).
const PERMISSIONS: [&str; 44] = [
    "organizations.create",
    "organizations.view",
    "organizations.change",
    "organizations.delete",
    "organizations.invite",
    "projects.create",
    "projects.view",
    "projects.change",
    "projects.delete",
    "projects.reset_cache",
    "tasks.create",
    "tasks.view",
    "tasks.change",
    "tasks.delete",
    "views.reset",
    "annotations.create",
    "annotations.view",
    "annotations.change",
    "annotations.delete",
    "actions.perform",
    "predictions.any",
    "avatar.any",
    "labels.create",
    "labels.view",
    "labels.change",
    "labels.delete",
    "models.create",
    "models.view",
    "models.change",
    "models.delete",
    "model_provider_connection.create",
    "model_provider_connection.view",
    "model_provider_connection.change",
    "model_provider_connection.delete",
    "webhooks.view",
    "webhooks.change",
    "users.token.any",
    "storages.view",
    "storages.change",
    "storages.sync",
    "views.view",
    "views.create",
    "views.change",
    "views.delete",
];

/// A user as embedded in other objects (`created_by`, expanded `completed_by`).
pub fn user_brief(user: &User) -> Value {
    json!({
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "avatar": null,
    })
}

/// `GET /api/current-user/whoami` (and `GET /api/current-user`).
#[utoipa::path(
    get,
    path = "/api/current-user/whoami",
    tag = "users",
    operation_id = "api_current_user_whoami",
    responses(
        (status = 200, description = "The caller", body = schema::CurrentUser),
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn whoami(State(state): State<AppState>, Auth(user): Auth) -> ApiResult<Json<Value>> {
    let org = state.db.organization(user.organization_id).await?;
    Ok(Json(json!({
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "username": user.username,
        "email": user.email,
        "last_activity": iso(user.last_activity),
        "custom_hotkeys": {},
        "avatar": null,
        "initials": user.initials(),
        "phone": "",
        "active_organization": org.id,
        "active_organization_meta": { "title": org.title, "email": org.owner_email },
        "allow_newsletters": null,
        "date_joined": iso(user.date_joined),
        "permissions": &PERMISSIONS[..],
    })))
}

/// `GET /api/current-user/token`: the caller's legacy token.
#[utoipa::path(
    get,
    path = "/api/current-user/token",
    tag = "users",
    operation_id = "api_current_user_token",
    responses(
        (status = 200, description = "The caller's legacy token", body = schema::LegacyToken),
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn legacy_token(State(state): State<AppState>, Auth(user): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "token": state.db.legacy_token(user.id).await? })))
}

/// `POST /api/current-user/reset-token/`: rotate the caller's legacy token.
#[utoipa::path(
    post,
    path = "/api/current-user/reset-token/",
    tag = "users",
    operation_id = "api_current_user_reset_token",
    responses(
        (status = 200, description = "The caller's new legacy token (the old one stops working)", body = schema::LegacyToken),
        Unauthenticated,
    ),
    security(("Token" = []), ("Bearer" = [])),
)]
pub async fn reset_legacy_token(State(state): State<AppState>, Auth(user): Auth) -> ApiResult<Json<Value>> {
    let token = generate_legacy_token();
    state.db.set_legacy_token(user.id, &token).await?;
    Ok(Json(json!({ "token": token })))
}

/// Users looked up once per request.
#[derive(Default)]
pub struct UserCache(std::collections::HashMap<i64, Option<User>>);

impl UserCache {
    /// The user with this id, if it exists.
    pub async fn get(&mut self, db: &crate::db::Db, id: Option<i64>) -> super::error::ApiResult<Option<&User>> {
        let Some(id) = id else { return Ok(None) };
        let user = match self.0.entry(id) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => slot.insert(match db.user_by_id(id).await {
                Ok(u) => Some(u),
                Err(crate::db::DbError::NotFound) => None,
                Err(e) => return Err(e.into()),
            }),
        };
        Ok(user.as_ref())
    }

    /// Looks up, in one statement, those of `ids` not known yet (a page's annotators:
    /// one statement each was as many round trips).
    pub async fn load(
        &mut self,
        db: &crate::db::Db,
        ids: impl IntoIterator<Item = i64>,
    ) -> super::error::ApiResult<()> {
        let wanted: Vec<i64> = ids.into_iter().filter(|id| !self.0.contains_key(id)).collect();
        for user in db.users_by_ids(&wanted).await? {
            self.0.insert(user.id, Some(user));
        }
        for id in wanted {
            self.0.entry(id).or_insert(None);
        }
        Ok(())
    }
}

/// A user with initials, as embedded in a task's annotations.
pub fn user_with_initials(user: &User) -> Value {
    json!({
        "id": user.id,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "avatar": null,
        "email": user.email,
        "initials": user.initials(),
    })
}

/// `created_username`: `<first>[ <last>] <email>, <id>`.
pub fn created_username(user: Option<&User>) -> String {
    // Written into every exported document: built without `format!`.
    user.map_or_else(String::new, |u| {
        let mut name = String::with_capacity(u.first_name.len() + u.last_name.len() + u.email.len() + 24);
        name.push_str(&u.first_name);
        if !u.last_name.is_empty() {
            name.push(' ');
            name.push_str(&u.last_name);
        }
        name.push(' ');
        name.push_str(&u.email);
        name.push_str(", ");
        name.push_str(itoa::Buffer::new().format(u.id));
        name
    })
}

/// Documentation-only shapes of this resource's bodies, for the OpenAPI document: the
/// handlers build their JSON with `serde_json` to keep Label Studio's key order, so
/// these types are never constructed.
pub mod schema {
    use utoipa::ToSchema;

    /// A user embedded in another object.
    #[derive(ToSchema)]
    pub struct UserBrief {
        pub id: i64,
        pub first_name: String,
        pub last_name: String,
        pub email: String,
        pub avatar: Option<String>,
    }

    /// The current user.
    #[derive(ToSchema)]
    pub struct CurrentUser {
        pub id: i64,
        pub first_name: String,
        pub last_name: String,
        pub username: String,
        pub email: String,
        pub last_activity: String,
        pub initials: String,
        pub active_organization: i64,
        pub date_joined: String,
        /// Permission codes, in Label Studio's order.
        pub permissions: Vec<String>,
    }

    /// A legacy token.
    #[derive(ToSchema)]
    pub struct LegacyToken {
        pub token: String,
    }
}
