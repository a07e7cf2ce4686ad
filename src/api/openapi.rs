//! The API's self-description at `GET /api/schema` (OpenAPI 3, JSON).

use axum::Json;
use utoipa::OpenApi;

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(info(title = "labelport", description = "Label Studio-compatible export-storage API"))]
pub struct ApiDoc;

/// `GET /api/schema`.
pub async fn schema() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
