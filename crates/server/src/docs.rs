//! `GET /docs`: Swagger UI over `/openapi.json`. Its files are built into the binary (see
//! `assets/swagger-ui/README.md`), so the page works offline and needs no CDN.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody};
use crate::extract::PathId;

/// Changes with the vendored version, so a browser's cached copy is never a stale one.
const ETAG: &str = "\"swagger-ui-5.35.0\"";
/// A day: the files change only with a new server version, and the ETag revalidates them.
const ASSET_CACHE: &str = "public, max-age=86400";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file served under `/docs/`, with its content type.
const ASSETS: [(&str, &[u8], &str); 5] = [
    ("swagger-ui-bundle.js", include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js"), JS),
    ("swagger-ui.css", include_bytes!("../assets/swagger-ui/swagger-ui.css"), CSS),
    ("LICENSE", include_bytes!("../assets/swagger-ui/LICENSE"), TEXT),
    ("NOTICE", include_bytes!("../assets/swagger-ui/NOTICE"), TEXT),
    ("swagger-ui-bundle.js.LICENSE.txt", include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"), TEXT),
];

/// The names `GET /docs/{file}` serves.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum DocsFile {
    #[schema(rename = "swagger-ui-bundle.js")]
    Bundle,
    #[schema(rename = "swagger-ui.css")]
    Css,
    #[schema(rename = "LICENSE")]
    License,
    #[schema(rename = "NOTICE")]
    Notice,
    #[schema(rename = "swagger-ui-bundle.js.LICENSE.txt")]
    BundleLicenses,
}

#[utoipa::path(
    get, path = "/docs", tag = "operations", operation_id = "docs",
    responses((status = 200, description = "Swagger UI for this API", content_type = "text/html", body = String)),
)]
pub async fn page() -> Response {
    let headers = [(header::CACHE_CONTROL, "no-cache")];
    (headers, axum::response::Html(include_str!("pages/docs.html"))).into_response()
}

#[utoipa::path(
    get, path = "/docs/{file}", tag = "operations", operation_id = "docs_file",
    params(
        ("file" = inline(DocsFile), Path, description = "A file of the page"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a cached copy"),
    ),
    responses(
        (status = 200, description = "The file",
            content((String = "text/javascript"), (String = "text/css"), (String = "text/plain")),
            headers(("ETag" = String), ("Cache-Control" = String))),
        (status = 304, description = "The cached copy is current"),
        (status = 404, description = "`not_found`: no such file", body = ErrorBody),
    ),
)]
pub async fn asset(PathId(name): PathId, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(&(_, bytes, content_type)) = ASSETS.iter().find(|(file, _, _)| *file == name) else {
        return Err(ApiError::not_found("file"));
    };
    let cached = headers.get(header::IF_NONE_MATCH).is_some_and(|tag| tag.as_bytes() == ETAG.as_bytes());
    let caching = [
        (header::ETAG, HeaderValue::from_static(ETAG)),
        (header::CACHE_CONTROL, HeaderValue::from_static(ASSET_CACHE)),
    ];
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, caching).into_response());
    }
    Ok((caching, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], bytes).into_response())
}
