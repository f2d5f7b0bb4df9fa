//! What operators look up: every sale, every auction (optionally by status) and any order.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::Timestamp;
use utoipa::{IntoParams, ToSchema};

use crate::auctions::AuctionBody;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::extract::PathId;
use crate::orders::OrderBody;
use crate::sales::SaleBody;
use crate::AppState;

const SALE_STATUSES: [&str; 4] = ["scheduled", "live", "sold_out", "ended"];
const AUCTION_STATUSES: [&str; 3] = ["scheduled", "live", "ended"];

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only the items in this status (`scheduled`, `live`, `sold_out` or `ended`; auctions have
    /// no `sold_out`).
    status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SaleList {
    sales: Vec<SaleBody>,
}

#[derive(Serialize, ToSchema)]
pub struct AuctionList {
    auctions: Vec<AuctionBody>,
}

/// `GET /v1/sales`: every sale, newest first.
#[utoipa::path(
    get, path = "/v1/sales", tag = "sales", operation_id = "list_sales",
    params(ListQuery),
    responses(
        (status = 200, description = "Every sale, newest first (won auction lots are not listed)", body = SaleList),
        (status = 400, description = "`invalid_request`: unknown status", body = ErrorBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
    ),
    security(("admin" = [])),
)]
pub async fn sales(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<SaleList>, ApiError> {
    let wanted = status_filter(query, &SALE_STATUSES)?;
    let mut sales = state.backend.list_sales(Timestamp::now()).await?;
    if let Some(wanted) = wanted {
        sales.retain(|sale| sale.status.as_str() == wanted);
    }
    Ok(Json(SaleList { sales: sales.into_iter().map(SaleBody::from).collect() }))
}

/// `GET /v1/auctions`: every auction, newest first.
#[utoipa::path(
    get, path = "/v1/auctions", tag = "auctions", operation_id = "list_auctions",
    params(ListQuery),
    responses(
        (status = 200, description = "Every auction, newest first", body = AuctionList),
        (status = 400, description = "`invalid_request`: unknown status", body = ErrorBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
    ),
    security(("admin" = [])),
)]
pub async fn auctions(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AuctionList>, ApiError> {
    let wanted = status_filter(query, &AUCTION_STATUSES)?;
    let mut auctions = state.backend.list_auctions(Timestamp::now()).await?;
    if let Some(wanted) = wanted {
        auctions.retain(|auction| auction.status.as_str() == wanted);
    }
    Ok(Json(AuctionList { auctions: auctions.into_iter().map(AuctionBody::from).collect() }))
}

/// `GET /v1/admin/orders/{id}`: any order, whoever placed it.
#[utoipa::path(
    get, path = "/v1/admin/orders/{id}", tag = "orders", operation_id = "admin_order",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
        (status = 404, description = "`not_found`: no such order", body = ErrorBody),
    ),
    security(("admin" = [])),
)]
pub async fn order(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(id): PathId,
) -> Result<Json<OrderBody>, ApiError> {
    Ok(Json(state.backend.any_order(&id).await?.into()))
}

/// The `status` asked for, one of `allowed`; none means every status.
fn status_filter(
    query: Result<Query<ListQuery>, QueryRejection>,
    allowed: &[&'static str],
) -> Result<Option<&'static str>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid(format!("query: {}", rejection.body_text())))?;
    let Some(status) = query.status else { return Ok(None) };
    let known = allowed.iter().copied().find(|name| *name == status);
    known.map(Some).ok_or_else(|| ApiError::invalid(format!("status: must be one of {}", allowed.join(", "))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::{to_bytes, Body};
    use axum::http::{Request, StatusCode};
    use serde_json::{json, Value};
    use stampede_engine::{Backend, Embedded, EmbeddedOptions};
    use tower::ServiceExt;

    use crate::{app, AppState, HttpSettings};

    const ADMIN: &str = "the-admin";

    struct TestApp {
        state: AppState,
        // Dropped last: the store writes into it until the state is gone.
        _dir: tempfile::TempDir,
    }

    impl TestApp {
        async fn start() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let options = EmbeddedOptions { data_dir: dir.path().to_owned(), synchronous_full: false };
            let backend: Arc<dyn Backend> = Embedded::open(options).await.expect("open store");
            let settings = HttpSettings { hashing_slots: 1, ..HttpSettings::default() };
            Self { state: AppState::new(backend, "secret", ADMIN, settings), _dir: dir }
        }

        fn user_token(&self, user: &str) -> String {
            self.state.auth.mint(user, stampede_core::Timestamp::now()).expect("mint token").0
        }

        async fn send(
            &self,
            method: &str,
            path: &str,
            token: Option<&str>,
            body: Option<Value>,
        ) -> (StatusCode, Value) {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
            let response = app(self.state.clone()).oneshot(request.body(body).expect("request")).await.expect("answer");
            let status = response.status();
            let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
            (status, serde_json::from_slice(&bytes).expect("json body"))
        }

        async fn create(&self, path: &str, body: Value) -> Value {
            let (status, created) = self.send("POST", path, Some(ADMIN), Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created
        }
    }

    fn ids(list: &Value, field: &str) -> Vec<String> {
        let items = list[field].as_array().expect("a list");
        items.iter().map(|item| item["id"].as_str().expect("id").to_owned()).collect()
    }

    #[tokio::test]
    async fn lists_need_the_admin_token() {
        let test = TestApp::start().await;
        let user = test.user_token("u_someone");
        for path in ["/v1/sales", "/v1/auctions", "/v1/admin/orders/o_abc_0"] {
            let (status, body) = test.send("GET", path, None, None).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
            let (status, body) = test.send("GET", path, Some(&user), None).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
            let (status, body) = test.send("GET", path, Some("not-the-admin"), None).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
        }
        let (status, body) = test.send("GET", "/v1/sales", Some(ADMIN), None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"sales": []})));
        let (status, body) = test.send("GET", "/v1/auctions", Some(ADMIN), None).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"auctions": []})));
    }

    #[tokio::test]
    async fn sales_are_listed_and_filtered_by_status() {
        let test = TestApp::start().await;
        let live = test.create("/v1/sales", json!({"name": "live", "stock": 3, "price_cents": 100})).await;
        let later = json!({"name": "later", "stock": 3, "price_cents": 100, "starts_at": "2999-01-01T00:00:00Z"});
        let scheduled = test.create("/v1/sales", later).await;

        let (status, all) = test.send("GET", "/v1/sales", Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK);
        let (live_id, scheduled_id) = (live["id"].as_str().unwrap(), scheduled["id"].as_str().unwrap());
        let mut listed = ids(&all, "sales");
        listed.sort();
        let mut expected = vec![live_id.to_owned(), scheduled_id.to_owned()];
        expected.sort();
        assert_eq!(listed, expected);
        let (_, one) = test.send("GET", &format!("/v1/sales/{scheduled_id}"), None, None).await;
        assert!(all["sales"].as_array().unwrap().contains(&one), "listed sales are the sale objects");

        let (_, filtered) = test.send("GET", "/v1/sales?status=scheduled", Some(ADMIN), None).await;
        assert_eq!(ids(&filtered, "sales"), [scheduled_id]);
        let (_, filtered) = test.send("GET", "/v1/sales?status=live", Some(ADMIN), None).await;
        assert_eq!(ids(&filtered, "sales"), [live_id]);
        let (_, filtered) = test.send("GET", "/v1/sales?status=sold_out", Some(ADMIN), None).await;
        assert!(ids(&filtered, "sales").is_empty());
        let (status, body) = test.send("GET", "/v1/sales?status=bogus", Some(ADMIN), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
        assert!(body["error"]["message"].as_str().unwrap().starts_with("status:"), "{body}");
    }

    #[tokio::test]
    async fn auctions_are_listed_and_filtered_by_status() {
        let test = TestApp::start().await;
        let lot = json!({"title": "lamp", "starting_price_cents": 500, "ends_at": "2999-01-01T00:00:00Z"});
        let auction = test.create("/v1/auctions", lot).await;
        let (status, all) = test.send("GET", "/v1/auctions", Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK);
        let (_, one) = test.send("GET", &format!("/v1/auctions/{}", auction["id"].as_str().unwrap()), None, None).await;
        assert_eq!(all, json!({"auctions": [one]}));
        let (_, filtered) = test.send("GET", "/v1/auctions?status=ended", Some(ADMIN), None).await;
        assert_eq!(filtered, json!({"auctions": []}));
        let (status, body) = test.send("GET", "/v1/auctions?status=sold_out", Some(ADMIN), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    }

    #[tokio::test]
    async fn operators_read_any_order() {
        let test = TestApp::start().await;
        let sale = test.create("/v1/sales", json!({"name": "tees", "stock": 3, "price_cents": 100})).await;
        let buyer = test.user_token("u_buyer");
        let path = format!("/v1/sales/{}/orders", sale["id"].as_str().unwrap());
        let (status, order) = test.send("POST", &path, Some(&buyer), None).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");

        let path = format!("/v1/admin/orders/{}", order["id"].as_str().unwrap());
        let (status, seen) = test.send("GET", &path, Some(ADMIN), None).await;
        assert_eq!((status, seen), (StatusCode::OK, order));
        let (status, body) = test.send("GET", "/v1/admin/orders/o_nothing_0", Some(ADMIN), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    }
}
