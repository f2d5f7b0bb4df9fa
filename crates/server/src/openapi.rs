//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! body types' `ToSchema`, served at `GET /openapi.json`. A new endpoint is one more line in
//! `paths(...)`; the tests below fail until the snapshot in `docs/openapi.json` is updated and
//! every documented operation is routed.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Components, RefOr, Response};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::error::ErrorBody;
use crate::{auctions, dashboard, defense, docs, listing, ops, orders, queue, sales, streams, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stampede",
        description = "Flash sales and live auctions. Every error is `{\"error\": {\"code\", \"message\"}}`; \
            every 429 and 503 carries `Retry-After` (seconds). Users send `Authorization: Bearer <jwt>` \
            (HS256, `sub`, `exp`); admin endpoints take the admin token the same way.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        users::sign_up,
        users::sign_in,
        sales::create,
        sales::get,
        sales::purchase,
        sales::join_waitlist,
        queue::join,
        queue::standing,
        queue::summary,
        queue::set_state,
        queue::page,
        orders::list,
        orders::get,
        orders::pay,
        orders::cancel,
        auctions::create,
        auctions::get,
        auctions::bid,
        auctions::buy_now,
        streams::sale_sse,
        streams::sale_ws,
        streams::auction_sse,
        streams::auction_ws,
        streams::me_sse,
        streams::me_ws,
        defense::endpoints::challenge,
        defense::endpoints::list,
        defense::endpoints::ban,
        defense::endpoints::lift,
        ops::ledger,
        ops::healthz,
        ops::readyz,
        openapi_json,
        docs::page,
        docs::asset,
        listing::sales,
        listing::auctions,
        listing::order,
        dashboard::metrics,
        dashboard::page,
        dashboard::events,
    ),
    components(responses(InvalidRequest, Unauthorized, AdminOnly, Guarded, RateLimited, PayloadTooLarge, Overloaded, Internal, NotFound)),
    modifiers(&Security, &CommonResponses),
    tags(
        (name = "accounts", description = "Built-in accounts and sessions"),
        (name = "sales", description = "Flash sales and purchases (holds)"),
        (name = "orders", description = "The caller's orders: read, pay, cancel"),
        (name = "waiting room", description = "Queues in front of hot sales"),
        (name = "auctions", description = "Live auctions with proxy bidding"),
        (name = "streams", description = "Live state over Server-Sent Events or WebSocket"),
        (name = "defense", description = "Proof of work and bans"),
        (name = "operations", description = "Health, the ledger, this document"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON with a final newline, exactly as `docs/openapi.json` holds it.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /openapi.json`: this API's OpenAPI document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub async fn openapi_json() -> axum::response::Response {
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")];
    (headers, document_json()).into_response()
}

/// `invalid_request`: a field is missing, of the wrong type or out of range; the message names it.
#[derive(ToResponse)]
#[response(description = "`invalid_request`: malformed JSON, a wrong type, a missing field or a value out of range")]
pub struct InvalidRequest(#[allow(dead_code)] ErrorBody<'static>);

/// `unauthorized`: the bearer token is missing, malformed, badly signed or expired.
#[derive(ToResponse)]
#[response(description = "`unauthorized`: the bearer token is missing, malformed, badly signed or expired")]
pub struct Unauthorized(#[allow(dead_code)] ErrorBody<'static>);

/// `forbidden`: a user token on an admin endpoint.
#[derive(ToResponse)]
#[response(description = "`forbidden`: a user token was sent to an admin endpoint")]
pub struct AdminOnly(#[allow(dead_code)] ErrorBody<'static>);

/// What the guard in front of mutating endpoints refuses with.
#[derive(ToResponse)]
#[response(
    description = "`banned` (with `Retry-After`) or `proof_of_work_required` (send a solved `GET /v1/challenge` in `Stampede-Pow`)",
    headers(("Retry-After" = u32, description = "Seconds until the ban ends"))
)]
pub struct Guarded(#[allow(dead_code)] ErrorBody<'static>);

#[derive(ToResponse)]
#[response(
    description = "`rate_limited`: too many requests from this user, address or for this sale",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub struct RateLimited(#[allow(dead_code)] ErrorBody<'static>);

#[derive(ToResponse)]
#[response(description = "`payload_too_large`: the request body is larger than 64 KiB")]
pub struct PayloadTooLarge(#[allow(dead_code)] ErrorBody<'static>);

#[derive(ToResponse)]
#[response(
    description = "`overloaded` (load shedding, the request time limit, saturated password hashing, too many streams) or `unavailable` (the durable store cannot take writes)",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub struct Overloaded(#[allow(dead_code)] ErrorBody<'static>);

#[derive(ToResponse)]
#[response(description = "`internal`: an unexpected failure; the detail is in the server log only")]
pub struct Internal(#[allow(dead_code)] ErrorBody<'static>);

#[derive(ToResponse)]
#[response(description = "`not_found`: no such resource, or an empty path segment (unknown route)")]
pub struct NotFound(#[allow(dead_code)] ErrorBody<'static>);

/// The two ways in: a user's JWT and the admin token, both as `Authorization: Bearer`; stream
/// routes also take the user's JWT as `?access_token=` for browsers.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        let mut user = Http::new(HttpAuthScheme::Bearer);
        user.bearer_format = Some("JWT".to_owned());
        user.description =
            Some("A user's token: HS256 with the server's JWT secret, `sub` = user id, `exp`".to_owned());
        components.add_security_scheme("user", SecurityScheme::Http(user));
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description = Some("The admin token (`STAMPEDE_ADMIN_TOKEN`)".to_owned());
        components.add_security_scheme("admin", SecurityScheme::Http(admin));
        let query = ApiKeyValue::with_description("access_token", "A user's JWT, for clients that cannot set headers");
        components.add_security_scheme("user_query", SecurityScheme::ApiKey(ApiKey::Query(query)));
    }
}

/// Answers every route can give, added where an operation does not list its own: 500 and 503
/// (the panic catcher and the time limit wrap every route), 400 and 413 where a body is read,
/// 404 where a path segment can be empty or name nothing.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                add_common(operation);
            }
        }
    }
}

fn add_common(operation: &mut Operation) {
    let has_path_params = operation
        .parameters
        .iter()
        .flatten()
        .any(|parameter| matches!(parameter, RefOr::T(p) if p.parameter_in == ParameterIn::Path));
    let reads_body = operation.request_body.is_some();
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, (name, _): (&str, RefOr<Response>)| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(utoipa::openapi::Ref::from_response_name(name)));
    };
    if reads_body {
        add("400", InvalidRequest::response());
        add("413", PayloadTooLarge::response());
    }
    if has_path_params {
        add("404", NotFound::response());
    }
    add("500", Internal::response());
    add("503", Overloaded::response());
}

#[cfg(test)]
mod tests;
