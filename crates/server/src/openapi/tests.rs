use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request, StatusCode};
use stampede_engine::{Backend, Embedded, EmbeddedOptions};
use tower::ServiceExt;

use super::*;
use crate::{app, AppState, HttpSettings};

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
const UPDATE_VAR: &str = "STAMPEDE_UPDATE_OPENAPI";

/// `(method, path)` of every documented operation, methods in upper case.
fn documented() -> BTreeSet<(String, String)> {
    let value = serde_json::to_value(document()).expect("document as JSON");
    let paths = value["paths"].as_object().expect("paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        let methods = item.as_object().expect("path item").keys();
        for method in methods.filter(|m| matches!(m.as_str(), "get" | "post" | "put" | "patch" | "delete")) {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// `(method, path)` of every route `app()` builds, read from the source of `lib.rs` (axum
/// cannot list a router's routes): each `.route("PATH", get(..).post(..))` before the tests.
fn routed_in_source() -> BTreeSet<(String, String)> {
    let source = include_str!("../lib.rs");
    let app_source = source.split("#[cfg(test)]").next().expect("source");
    let mut routes = BTreeSet::new();
    for call in app_source.split(".route(\"").skip(1) {
        let (path, rest) = call.split_once('"').expect("route path literal");
        let handlers = rest.split(".route").next().unwrap_or(rest);
        for method in ["get", "post", "put", "patch", "delete"] {
            let called = [format!(" {method}("), format!("({method}("), format!(".{method}("), format!("::{method}(")];
            if called.iter().any(|pattern| handlers.contains(pattern.as_str())) {
                routes.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    routes
}

async fn test_app(dir: &tempfile::TempDir) -> axum::Router {
    let options = EmbeddedOptions { data_dir: dir.path().to_owned(), synchronous_full: false };
    let backend: Arc<dyn Backend> = Embedded::open(options).await.expect("open store");
    app(AppState::new(backend, "secret", "admin", HttpSettings::default()))
}

#[test]
fn the_snapshot_matches_the_generated_document() {
    let generated = document_json();
    if std::env::var(UPDATE_VAR).is_ok_and(|value| value == "1") {
        std::fs::write(SNAPSHOT, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is not the document the code generates; review the change, then \
         rewrite it with `{UPDATE_VAR}=1 cargo test -p stampede-server openapi` and commit it"
    );
}

#[test]
fn every_route_is_documented_and_every_operation_routed_in_source() {
    let routed = routed_in_source();
    let documented = documented();
    assert!(routed.len() > 20, "the route parser found only {routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes without #[utoipa::path] in openapi.rs paths(...): {undocumented:?}");
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(unrouted.is_empty(), "documented operations app() does not route: {unrouted:?}");
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let dir = tempfile::tempdir().expect("temp dir");
    let router = test_app(&dir).await;
    for (method, path) in documented() {
        let uri = path.replace('{', "x").replace('}', "");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let request = Request::builder().method(method.clone()).uri(&uri).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("router answers");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let unknown_route = status == StatusCode::NOT_FOUND && body["error"]["message"] == "route not found";
        assert!(!unknown_route, "{method} {uri}: the router has no such route");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: the route does not take {method}");
    }
}

#[tokio::test]
async fn the_document_and_the_docs_page_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let router = test_app(&dir).await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");

    let response = router.clone().oneshot(get("/openapi.json")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let body = to_bytes(response.into_body(), 1 << 22).await.expect("body");
    assert_eq!(body, document_json().as_bytes());

    let response = router.clone().oneshot(get("/docs")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let page = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("docs/swagger-ui-bundle.js") && page.contains("openapi.json"), "{page}");

    let response = router.clone().oneshot(get("/docs/swagger-ui-bundle.js")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/javascript; charset=utf-8");
    let etag = response.headers()["etag"].clone();
    let revalidate = Request::get("/docs/swagger-ui-bundle.js").header("if-none-match", etag).body(Body::empty());
    let response = router.clone().oneshot(revalidate.expect("request")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    let response = router.oneshot(get("/docs/swagger-ui.css.map")).await.expect("answer");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}
