//! Waiting rooms over HTTP: joining, where a ticket stands, the room at a glance, admin states,
//! the pass check on purchases, and the job that lets people in (pushing each admission on the
//! user's event stream).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use stampede_core::{RoomConfig, RoomState, SaleStatus, Timestamp, UserId};
use stampede_engine::rooms::{Joined, Rooms, Standing};
use stampede_engine::{EngineError, SaleView};
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};
use utoipa::ToSchema;

use crate::auth::{Admin, User};
use crate::defense::pass::commitment;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, PathId};
use crate::AppState;

/// Header carrying a waiting-room pass on purchases.
const PASS_HEADER: &str = "stampede-pass";
/// How often each room lets people in.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// What a sale asks of buyers beyond a token, as fixed when it was created.
pub struct SaleDefenses {
    pub room: Option<RoomConfig>,
    pub proof_of_work: bool,
}

/// A sale's defenses, read once per process (sales never change them).
pub async fn defenses(state: &AppState, sale_id: &str) -> Result<Arc<SaleDefenses>, EngineError> {
    if let Some(found) = crate::lock(&state.sale_defenses).get(sale_id) {
        return Ok(found.clone());
    }
    let sale = state.backend.sale(sale_id, Timestamp::now()).await?;
    let room = sale.room.as_ref().map(|settings| settings.config(sale.starts_at, state.signer.seed(sale_id)));
    let found = Arc::new(SaleDefenses { room, proof_of_work: sale.proof_of_work });
    crate::lock(&state.sale_defenses).insert(sale_id.to_owned(), found.clone());
    Ok(found)
}

fn rooms_of(state: &AppState) -> Result<&dyn Rooms, ApiError> {
    state.rooms.as_deref().ok_or_else(|| ApiError::not_found("waiting room"))
}

async fn room_of(state: &AppState, sale_id: &str) -> Result<(Arc<SaleDefenses>, RoomConfig), ApiError> {
    let defenses = defenses(state, sale_id).await?;
    let room = defenses.room.clone().ok_or_else(|| ApiError::not_found("waiting room"))?;
    Ok((defenses, room))
}

/// Refuses a purchase on a waiting-room sale without a valid pass for this user and sale.
pub fn check_pass(state: &AppState, headers: &HeaderMap, sale_id: &str, user: &UserId) -> Result<(), ApiError> {
    let pass = headers.get(PASS_HEADER).and_then(|value| value.to_str().ok());
    match pass {
        Some(pass) if state.signer.check_pass(pass, sale_id, user, Timestamp::now()) => Ok(()),
        Some(_) => Err(pass_required("the pass is not valid for this user and sale, or it expired")),
        None => Err(pass_required("this sale has a waiting room: join it and buy with the pass it gives")),
    }
}

fn pass_required(why: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "pass_required", why)
}

#[derive(Serialize, ToSchema)]
pub struct TicketBody {
    ticket: String,
    /// `waiting`, `admitted` or `finished`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eta_seconds: Option<u64>,
    /// False in a pre-queue before the start: the order is drawn then.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_known: Option<bool>,
    /// `unlikely` when the people ahead already want more than is left; then joining the
    /// waitlist is the better bet.
    #[serde(skip_serializing_if = "Option::is_none")]
    odds: Option<&'static str>,
    /// For `Stampede-Pass` on purchases, once admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass_expires_at: Option<String>,
}

fn ticket_body(state: &AppState, sale: &SaleView, user: &UserId, ticket: String, standing: Standing) -> TicketBody {
    let mut body = TicketBody {
        ticket,
        status: "waiting",
        position: None,
        eta_seconds: None,
        order_known: None,
        odds: None,
        pass: None,
        pass_expires_at: None,
    };
    match standing {
        Standing::Waiting { ahead, order_known, eta_seconds } => {
            let left = sale.available + sale.held;
            body.position = Some(ahead.saturating_add(1));
            body.eta_seconds = Some(eta_seconds);
            body.order_known = Some(order_known);
            body.odds = Some(if order_known && ahead >= left { "unlikely" } else { "fair" });
        }
        Standing::Admitted { pass_expires_at, .. } => {
            body.status = "admitted";
            body.pass = Some(state.signer.pass(&sale.id, user, pass_expires_at));
            body.pass_expires_at = Some(pass_expires_at.to_rfc3339());
        }
        Standing::Finished => body.status = "finished",
    }
    body
}

/// `POST /v1/sales/{id}/queue`: a ticket (the same one again for a user who has one).
#[utoipa::path(
    post, path = "/v1/sales/{id}/queue", tag = "waiting room", operation_id = "join_queue",
    params(("id" = String, Path, description = "Sale id")),
    responses(
        (status = 201, description = "A new ticket", body = TicketBody),
        (status = 200, description = "The ticket the caller has already", body = TicketBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Guarded),
        (status = 404, description = "`not_found`: no such sale, or it has no waiting room", body = ErrorBody),
        (status = 409, description = "`queue_not_open` or `queue_closed`", body = ErrorBody),
        (status = 429, response = crate::openapi::RateLimited),
    ),
    security(("user" = [])),
)]
pub async fn join(
    State(state): State<AppState>,
    User(user): User,
    PathId(sale_id): PathId,
) -> Result<(StatusCode, Json<TicketBody>), ApiError> {
    let (_, room) = room_of(&state, &sale_id).await?;
    let now = Timestamp::now();
    let Joined { ticket, standing, new } = rooms_of(&state)?.join(&sale_id, &room, &user, now).await?;
    let sale = state.backend.sale(&sale_id, now).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ticket_body(&state, &sale, &user, ticket, standing))))
}

/// `GET /v1/sales/{id}/queue/{ticket}`: where the caller's ticket stands.
#[utoipa::path(
    get, path = "/v1/sales/{id}/queue/{ticket}", tag = "waiting room", operation_id = "queue_standing",
    params(("id" = String, Path, description = "Sale id"), ("ticket" = String, Path, description = "The caller's ticket")),
    responses(
        (status = 200, description = "Where the ticket stands, or the pass once admitted", body = TicketBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 404, description = "`not_found`: no such sale, waiting room or ticket, or another user's ticket", body = ErrorBody),
    ),
    security(("user" = [])),
)]
pub async fn standing(
    State(state): State<AppState>,
    User(user): User,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<TicketBody>, ApiError> {
    let Path((sale_id, ticket)) = path.map_err(|_| ApiError::not_found("ticket"))?;
    let (_, room) = room_of(&state, &sale_id).await?;
    let now = Timestamp::now();
    let standing = rooms_of(&state)?.standing(&sale_id, &room, &ticket, &user, now).await?;
    let sale = state.backend.sale(&sale_id, now).await?;
    Ok(Json(ticket_body(&state, &sale, &user, ticket, standing)))
}

/// A waiting room at a glance.
#[derive(Serialize, ToSchema)]
#[schema(as = WaitingRoom)]
pub struct RoomBody {
    sale_id: String,
    /// `fifo` or `shuffled`.
    mode: &'static str,
    /// `open`, `paused`, `admit_all` or `closed`.
    state: &'static str,
    opens_at: String,
    starts_at: String,
    waiting: u32,
    active: u32,
    admitted: u32,
    admit_per_minute: u32,
    max_active: u32,
    rate_per_second: f64,
    /// SHA-256 (hex) of the shuffle seed written in decimal, published from the start.
    seed_commitment: String,
    /// The seed itself, once the sale has started.
    seed: Option<String>,
}

fn state_name(state: RoomState) -> &'static str {
    match state {
        RoomState::Open => "open",
        RoomState::Paused => "paused",
        RoomState::AdmitAll => "admit_all",
        RoomState::Closed => "closed",
    }
}

async fn room_body(state: &AppState, sale_id: &str, room: &RoomConfig) -> Result<RoomBody, ApiError> {
    let now = Timestamp::now();
    let summary = rooms_of(state)?.summary(sale_id, room, now).await?;
    Ok(RoomBody {
        sale_id: sale_id.to_owned(),
        mode: room.mode.as_str(),
        state: state_name(summary.state),
        opens_at: room.opens_at.to_rfc3339(),
        starts_at: room.starts_at.to_rfc3339(),
        waiting: summary.waiting,
        active: summary.active,
        admitted: summary.admitted,
        admit_per_minute: room.admit_per_minute,
        max_active: room.max_active,
        rate_per_second: summary.rate_per_second,
        seed_commitment: commitment(room.seed),
        seed: (now >= room.starts_at).then(|| room.seed.to_string()),
    })
}

/// `GET /rooms/{id}`: the waiting room as a page for people: join, see the place move, buy with
/// the pass, solving a proof-of-work puzzle in the browser when asked. Self-contained (no CDN).
#[utoipa::path(
    get, path = "/rooms/{id}", tag = "waiting room", operation_id = "room_page",
    params(("id" = String, Path, description = "Sale id (read by the page's script)")),
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
pub async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("pages/room.html"))
}

/// `GET /v1/sales/{id}/queue`: the room at a glance, with the shuffle's commitment and seed.
#[utoipa::path(
    get, path = "/v1/sales/{id}/queue", tag = "waiting room", operation_id = "queue_summary",
    params(("id" = String, Path, description = "Sale id")),
    responses(
        (status = 200, description = "The room", body = RoomBody),
        (status = 404, description = "`not_found`: no such sale, or it has no waiting room", body = ErrorBody),
    ),
)]
pub async fn summary(State(state): State<AppState>, PathId(sale_id): PathId) -> Result<Json<RoomBody>, ApiError> {
    let (_, room) = room_of(&state, &sale_id).await?;
    Ok(Json(room_body(&state, &sale_id, &room).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct SetState {
    /// `open`, `paused` (nobody let in), `admit_all` or `closed` (no joining either).
    #[schema(examples("open", "paused", "admit_all", "closed"))]
    state: String,
}

/// `POST /v1/admin/sales/{id}/queue {"state": "open|paused|admit_all|closed"}`.
#[utoipa::path(
    post, path = "/v1/admin/sales/{id}/queue", tag = "waiting room", operation_id = "set_queue_state",
    params(("id" = String, Path, description = "Sale id")),
    request_body = SetState,
    responses(
        (status = 200, description = "The room", body = RoomBody),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::AdminOnly),
        (status = 404, description = "`not_found`: no such sale, or it has no waiting room", body = ErrorBody),
    ),
    security(("admin" = [])),
)]
pub async fn set_state(
    State(state): State<AppState>,
    _admin: Admin,
    PathId(sale_id): PathId,
    JsonBody(body): JsonBody<SetState>,
) -> Result<Json<RoomBody>, ApiError> {
    let (_, room) = room_of(&state, &sale_id).await?;
    let wanted = match body.state.as_str() {
        "open" => RoomState::Open,
        "paused" => RoomState::Paused,
        "admit_all" => RoomState::AdmitAll,
        "closed" => RoomState::Closed,
        _ => return Err(ApiError::invalid("state: must be open, paused, admit_all or closed")),
    };
    rooms_of(&state)?.set_state(&sale_id, &room, wanted).await?;
    Ok(Json(room_body(&state, &sale_id, &room).await?))
}

#[derive(Serialize)]
struct Admitted<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sale_id: &'a str,
    pass: String,
    pass_expires_at: String,
}

/// Positions are pushed this often (when they changed) to people following their events.
const POSITION_EVERY_TICKS: u32 = 10;

#[derive(Serialize)]
struct Position<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sale_id: &'a str,
    ticket: &'a str,
    position: u32,
    eta_seconds: u64,
    order_known: bool,
}

/// Lets people into every room each tick and pushes changed positions every second, until
/// `stop` turns true.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut ticker = interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pushed: HashMap<(String, UserId), u32> = HashMap::new();
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(POSITION_EVERY_TICKS) {
            push_positions(&state, &mut pushed).await;
        }
        let Some(rooms) = state.rooms.as_deref() else { continue };
        let sales = match rooms.sales().await {
            Ok(sales) => sales,
            Err(error) => {
                tracing::warn!(%error, "listing waiting rooms failed");
                continue;
            }
        };
        for sale_id in sales {
            if let Err(error) = admit(&state, &sale_id).await {
                tracing::warn!(code = error.code, message = %error.message, sale = %sale_id, "letting people in failed");
            }
        }
    }
}

/// Each waiting room's people in the Prometheus text format (for `/metrics`).
pub(crate) async fn render_metrics(state: &AppState, out: &mut String) {
    use std::fmt::Write as _;
    let Some(rooms) = state.rooms.as_deref() else { return };
    let mut lines = Vec::new();
    for sale_id in rooms.sales().await.unwrap_or_default() {
        let Ok((_, room)) = room_of(state, &sale_id).await else { continue };
        if let Ok(summary) = rooms.summary(&sale_id, &room, Timestamp::now()).await {
            lines.push((sale_id, summary.waiting, summary.active));
        }
    }
    lines.sort();
    out.push_str("# HELP stampede_queue_users People in a sale's waiting room: waiting, or let in and not done.\n");
    out.push_str("# TYPE stampede_queue_users gauge\n");
    for (sale_id, waiting, active) in lines {
        let _ = writeln!(out, "stampede_queue_users{{sale=\"{sale_id}\",state=\"waiting\"}} {waiting}");
        let _ = writeln!(out, "stampede_queue_users{{sale=\"{sale_id}\",state=\"active\"}} {active}");
    }
}

async fn admit(state: &AppState, sale_id: &str) -> Result<(), ApiError> {
    let (_, room) = room_of(state, sale_id).await?;
    let now = Timestamp::now();
    let sale = state.backend.sale(sale_id, now).await?;
    let buyable = if sale.status == SaleStatus::Live { sale.available } else { 0 };
    let admitted = rooms_of(state)?.admit_due(sale_id, &room, buyable, now).await?;
    state.telemetry.admitted(admitted.len() as u64);
    let mut by_user: HashMap<&UserId, Timestamp> = HashMap::new();
    for (user, pass_expires_at) in &admitted {
        by_user.insert(user, *pass_expires_at);
    }
    for (user, pass_expires_at) in by_user {
        if !state.hub.follows_personal(user) {
            continue;
        }
        let pass = state.signer.pass(sale_id, user, pass_expires_at);
        let event = Admitted { kind: "admitted", sale_id, pass, pass_expires_at: pass_expires_at.to_rfc3339() };
        state.hub.publish_personal(user, "admitted", &event);
    }
    Ok(())
}

/// Sends each follower waiting in a room their position, when it changed since the last push.
async fn push_positions(state: &AppState, pushed: &mut HashMap<(String, UserId), u32>) {
    let Some(rooms) = state.rooms.as_deref() else { return };
    let (Ok(sales), followers) = (rooms.sales().await, state.hub.followers()) else { return };
    let now = Timestamp::now();
    let mut seen = HashMap::new();
    for sale_id in &sales {
        let Ok((_, room)) = room_of(state, sale_id).await else { continue };
        for user in &followers {
            let Ok(Some(ticket)) = rooms.ticket_of(sale_id, user).await else { continue };
            let Ok(Standing::Waiting { ahead, order_known, eta_seconds }) =
                rooms.standing(sale_id, &room, &ticket, user, now).await
            else {
                continue;
            };
            let position = ahead.saturating_add(1);
            let key = (sale_id.clone(), user.clone());
            if pushed.get(&key) != Some(&position) {
                let event =
                    Position { kind: "queue_position", sale_id, ticket: &ticket, position, eta_seconds, order_known };
                state.hub.publish_personal(user, "queue_position", &event);
            }
            seen.insert(key, position);
        }
    }
    *pushed = seen;
}
