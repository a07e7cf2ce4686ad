//! The API's self-description at `GET /api/schema` (OpenAPI 3.1, JSON).
//!
//! This module only assembles the document. Each handler carries a `#[utoipa::path]`
//! with Label Studio's canonical path (the other slash form is served too, see
//! [`super`]); the shapes of its bodies live beside it, in its module's `schema`, and
//! the error responses many endpoints share in [`error::schema`].

use super::{admin, annotations, auth, error, health, import, metrics, projects, storages, tasks, users};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "labelport",
        description = "Label Studio-compatible API (Label Studio 1.23.2 wire format): projects, \
                       task import, tasks, annotations, current user, personal access tokens, and export \
                       storages (local files, S3, GCS, Azure Blob, Redis; auto-export of annotations and on-demand sync), \
                       and the admin page's cookie sign-in."
    ),
    paths(
        health::health,
        health::ready,
        metrics::metrics,
        health::version,
        schema,
        users::whoami,
        users::legacy_token,
        users::reset_legacy_token,
        auth::list_tokens,
        auth::create_token,
        auth::refresh_token,
        auth::blacklist_token,
        projects::list,
        projects::create,
        projects::get,
        projects::update,
        projects::delete,
        import::import,
        tasks::list,
        tasks::create,
        tasks::get,
        tasks::update,
        tasks::delete,
        annotations::list_for_task,
        annotations::create,
        annotations::get,
        annotations::update,
        annotations::delete,
        storages::types,
        storages::list_all,
        storages::list,
        storages::create,
        storages::validate,
        storages::form,
        storages::get,
        storages::patch,
        storages::put,
        storages::delete,
        storages::sync,
        storages::lag,
        admin::login,
        admin::logout,
        admin::session,
    ),
    components(schemas(
        error::schema::ErrorBody,
        users::schema::UserBrief,
        projects::schema::Project,
        projects::schema::ProjectInput,
        projects::schema::ProjectPage,
        tasks::schema::Task,
        tasks::schema::TaskInput,
        tasks::schema::TaskPage,
        tasks::schema::Prediction,
        annotations::schema::Annotation,
        annotations::schema::AnnotationInput,
        import::schema::ImportSummary,
        import::schema::ImportFiles,
        error::schema::DetailBody,
        users::schema::CurrentUser,
        users::schema::LegacyToken,
        auth::schema::PersonalToken,
        auth::schema::RefreshRequest,
        auth::schema::AccessToken,
        storages::schema::ExportStorageType,
        storages::schema::StorageTypeInfo,
        storages::schema::SyncStatus,
        storages::schema::ExportMode,
        storages::schema::StorageCommon,
        storages::schema::LocalFilesStorage,
        storages::schema::S3Storage,
        storages::schema::GcsStorage,
        storages::schema::AzureStorage,
        storages::schema::RedisStorage,
        storages::schema::ExportStorage,
        storages::schema::StorageCommonInput,
        storages::schema::LocalFilesStorageInput,
        storages::schema::S3StorageInput,
        storages::schema::GcsStorageInput,
        storages::schema::AzureStorageInput,
        storages::schema::RedisStorageInput,
        storages::schema::ExportStorageInput,
        storages::schema::NotSynchronizable,
        storages::schema::SyncRefused,
        storages::schema::ExportLag,
        admin::schema::Login,
        admin::schema::SessionUser,
        admin::schema::Session,
    )),
    modifiers(&SecuritySchemes, &CurrentUserAlias, &StorageTypesAlias, &PutOperationIds),
    tags(
        (name = "projects", description = "Projects"),
        (name = "import", description = "Task import"),
        (name = "tasks", description = "Tasks"),
        (name = "annotations", description = "Annotations"),
        (name = "storages", description = "Export storages: where annotations are written, and their syncs"),
        (name = "users", description = "The current user and its legacy token"),
        (name = "tokens", description = "Personal access tokens (JWT refresh tokens) and Bearer access tokens"),
        (name = "service", description = "Health, version and this document"),
        (name = "admin", description = "The admin page's cookie sign-in (a session instead of a token)"),
    )
)]
pub struct ApiDoc;

/// Declares how clients authenticate.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "Token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Legacy token: `Authorization: Token <key>` (or the key alone in `X-Api-Key`).",
            ))),
        );
        components.add_security_scheme(
            "Bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A 5-minute access token from `POST /api/token/refresh/` (not the personal access token itself).",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api/current-user` answers like `GET /api/current-user/whoami` (the SDK calls
/// both; Label Studio Community only has the latter). One handler serves both paths.
struct CurrentUserAlias;

impl Modify for CurrentUserAlias {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(whoami) = openapi.paths.paths.get("/api/current-user/whoami") else { return };
        let mut alias = whoami.clone();
        if let Some(get) = alias.get.as_mut() {
            get.operation_id = Some("api_current_user_read".into());
        }
        openapi.paths.paths.insert("/api/current-user".into(), alias);
    }
}

/// `GET /api/storages/types` (Label Studio's import storage types) answers like
/// `GET /api/storages/export/types`: the same list. One handler serves both paths.
struct StorageTypesAlias;

impl Modify for StorageTypesAlias {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(export) = openapi.paths.paths.get("/api/storages/export/types") else { return };
        let mut alias = export.clone();
        if let Some(get) = alias.get.as_mut() {
            get.operation_id = Some("api_storages_types_list".into());
        }
        openapi.paths.paths.insert("/api/storages/types".into(), alias);
    }
}

/// One handler serves `PATCH` and `PUT`, so both get its `*_partial_update` id; `PUT`
/// is renamed `*_update`, as in Label Studio's own schema, to keep ids unique.
struct PutOperationIds;

impl Modify for PutOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            if let Some(put) = item.put.as_mut() {
                if let Some(id) = put.operation_id.as_deref().and_then(|id| id.strip_suffix("_partial_update")) {
                    put.operation_id = Some(format!("{id}_update"));
                }
            }
        }
    }
}

/// `GET /api/schema`.
#[utoipa::path(
    get,
    path = "/api/schema",
    tag = "service",
    responses((status = 200, description = "This OpenAPI document", content_type = "application/json", body = Object))
)]
pub async fn schema() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::ApiDoc;
    use utoipa::OpenApi;

    #[test]
    fn a_handler_s_own_response_replaces_the_shared_one_of_its_status() {
        // Arrange
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let description = |path: &str, method: &str, status: &str| {
            doc["paths"][path][method]["responses"][status]["description"].as_str().unwrap().to_owned()
        };

        // Act: the shared BodyErrors, then the handler's own 400 and 413 or StorageChecks
        let import_400 = description("/api/projects/{id}/import", "post", "400");
        let import_413 = description("/api/projects/{id}/import", "post", "413");
        let storage_400 = description("/api/storages/export/{type}", "post", "400");

        // Assert
        assert!(import_400.contains("LABELPORT_MAX_IMPORT_TASKS"), "{import_400}");
        assert!(import_413.contains("LABELPORT_MAX_IMPORT_BYTES"), "{import_413}");
        assert!(storage_400.contains("bucket-name rule"), "{storage_400}");
        assert_eq!(description("/api/projects/{id}/import", "post", "415"), "Not JSON or a form");
        assert_eq!(description("/api/projects/", "post", "400"), "Malformed JSON, wrong types or missing fields");
    }
}
