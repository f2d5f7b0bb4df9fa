use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::http::HeaderValue;
use hyper::{Method, StatusCode, Uri};
use serde::Deserialize;

use crate::conn::{self, Conn};
use crate::open_loop::{self, run_open_loop};
use crate::runner::run_phase;
use crate::token::try_mint_token;
use crate::workload::{self, Healthz, Purchase, Workload};
use crate::{LoadError, OpenLoop, OpenLoopReport, Phase, Report, Target};

/// Flash-sale purchase load: many distinct users ordering from a few sales.
#[derive(Clone, Debug)]
pub struct PurchaseScenario {
    /// Sales created for the run; users are spread over them (user `u` buys from sale
    /// `u % sales`).
    pub sales: usize,
    pub stock_per_sale: u32,
    /// Distinct users; consecutive requests come from different users, wrapping around.
    pub users: usize,
    pub quantity: u32,
    pub per_user_limit: u32,
    /// Send a unique `Idempotency-Key` with every order.
    pub idempotency_keys: bool,
    /// `stock_buckets` of the sales (scale-out mode); 1 keeps each sale whole.
    pub stock_buckets: u32,
    /// Solve a proof-of-work challenge (`GET /v1/challenge`) for each order before sending it,
    /// as a client the server finds risky must.
    pub pow: bool,
}

/// Holds must not expire mid-run, or released units would make stock look endless.
const HOLD_SECONDS: u64 = 3600;
/// Tokens outlive the phase by this much so slow set-up never yields 401s.
const TOKEN_MARGIN: Duration = Duration::from_secs(3600);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
const PRICE_CENTS: u64 = 1000;
/// Longest error body quoted in `LoadError::UnexpectedStatus`.
const QUOTED_BODY: usize = 300;

#[derive(Deserialize)]
struct CreatedSale {
    id: String,
}

/// `GET /healthz` at fixed concurrency: the server's ceiling for a trivial request.
pub async fn healthz(target: &Target, phase: &Phase) -> Result<Report, LoadError> {
    let workload = Workload::Healthz(Healthz::new(target.addr)?);
    run_phase("healthz", &target.addrs(), phase, workload).await
}

/// Creates `scenario.sales` fresh sales, then orders from them at fixed concurrency.
///
/// Orders placed during warm-up take stock too but are not in the report.
pub async fn purchases(target: &Target, phase: &Phase, scenario: &PurchaseScenario) -> Result<Report, LoadError> {
    let ttl = phase.warmup + phase.duration + TOKEN_MARGIN;
    let purchase = purchase_workload(target, scenario, ttl).await?;
    run_phase("purchases", &target.addrs(), phase, Workload::Purchase(purchase)).await
}

/// Creates `scenario.sales` fresh sales, then offers orders at a fixed rate (open loop).
/// Proof of work is not offered here: solving would make the generator, not the server, the
/// bottleneck.
pub async fn purchases_open_loop(
    target: &Target,
    open: &OpenLoop,
    scenario: &PurchaseScenario,
) -> Result<OpenLoopReport, LoadError> {
    if scenario.pow {
        return Err(LoadError::InvalidScenario("proof of work is not offered open loop"));
    }
    open_loop::validate(open)?;
    let ttl = open.warmup + open.duration + TOKEN_MARGIN;
    let purchase = purchase_workload(target, scenario, ttl).await?;
    run_open_loop("purchases", &target.addrs(), open, Workload::Purchase(purchase)).await
}

async fn purchase_workload(target: &Target, scenario: &PurchaseScenario, ttl: Duration) -> Result<Purchase, LoadError> {
    validate(scenario)?;
    let run_id = run_id();
    let tokens = mint_user_tokens(&target.jwt_secret, scenario.users, ttl.as_secs()).await?;
    let sale_ids = create_sales(target, scenario, &run_id).await?;
    let order_uris = sale_ids.iter().map(|id| workload::order_uri(id)).collect::<Result<Vec<Uri>, LoadError>>()?;
    Ok(Purchase {
        host: workload::host_header(target.addr)?,
        order_uris,
        tokens,
        body: order_body(scenario.quantity),
        idempotency_prefix: scenario.idempotency_keys.then(|| format!("lg-{run_id}")),
        next_user: AtomicUsize::new(0),
        pow: scenario.pow,
    })
}

fn validate(scenario: &PurchaseScenario) -> Result<(), LoadError> {
    if scenario.sales == 0 {
        return Err(LoadError::InvalidScenario("sales must be at least 1"));
    }
    if scenario.users == 0 {
        return Err(LoadError::InvalidScenario("users must be at least 1"));
    }
    Ok(())
}

/// Distinguishes this run's sale names and idempotency keys from earlier runs'.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or(0);
    format!("{nanos:x}")
}

fn order_body(quantity: u32) -> Bytes {
    Bytes::from(format!(r#"{{"quantity":{quantity}}}"#))
}

/// Signing thousands of tokens is CPU work, so it runs off the reactor and before timing.
pub(crate) async fn mint_user_tokens(secret: &str, users: usize, ttl_secs: u64) -> Result<Vec<HeaderValue>, LoadError> {
    let secret = secret.to_owned();
    let minting = tokio::task::spawn_blocking(move || mint_all(&secret, users, ttl_secs));
    minting.await.map_err(LoadError::Worker)?
}

fn mint_all(secret: &str, users: usize, ttl_secs: u64) -> Result<Vec<HeaderValue>, LoadError> {
    let mut tokens = Vec::with_capacity(users);
    for user in 0..users {
        let token = try_mint_token(secret, &user_id(user), ttl_secs)?;
        tokens.push(workload::bearer(&token, "user token")?);
    }
    Ok(tokens)
}

pub(crate) fn user_id(user: usize) -> String {
    format!("loadgen-{user}")
}

pub(crate) async fn create_sales(
    target: &Target,
    scenario: &PurchaseScenario,
    run_id: &str,
) -> Result<Vec<String>, LoadError> {
    let admin = workload::bearer(&target.admin_token, "admin token")?;
    let host = workload::host_header(target.addr)?;
    let mut conn = conn::connect(target.addr).await?;
    let mut ids = Vec::with_capacity(scenario.sales);
    for index in 0..scenario.sales {
        let name = format!("loadgen {run_id} #{index}");
        let body = sale_body(scenario, &name);
        ids.push(create_sale(&mut conn, &host, &admin, body).await?);
    }
    Ok(ids)
}

fn sale_body(scenario: &PurchaseScenario, name: &str) -> Bytes {
    let sale = serde_json::json!({
        "name": name,
        "stock": scenario.stock_per_sale,
        "price_cents": PRICE_CENTS,
        "per_user_limit": scenario.per_user_limit,
        "hold_seconds": HOLD_SECONDS,
        "stock_buckets": scenario.stock_buckets,
    });
    Bytes::from(sale.to_string())
}

async fn create_sale(
    conn: &mut Conn,
    host: &HeaderValue,
    admin: &HeaderValue,
    body: Bytes,
) -> Result<String, LoadError> {
    const WHAT: &str = "sale creation";
    let uri = Uri::from_static("/v1/sales");
    let mut request = workload::json_request(Method::POST, uri, host, body);
    request.headers_mut().insert(AUTHORIZATION, admin.clone());
    let (status, body) = tokio::time::timeout(SETUP_TIMEOUT, conn.fetch(request))
        .await
        .map_err(|_| LoadError::RequestTimeout { what: WHAT })?
        .map_err(|source| LoadError::Request { what: WHAT, source })?;
    if status != StatusCode::CREATED {
        return Err(unexpected_status(WHAT, status, &body));
    }
    let sale: CreatedSale =
        serde_json::from_slice(&body).map_err(|source| LoadError::InvalidResponse { what: WHAT, source })?;
    Ok(sale.id)
}

pub(crate) fn unexpected_status(what: &'static str, status: StatusCode, body: &[u8]) -> LoadError {
    let quoted = &body[..body.len().min(QUOTED_BODY)];
    LoadError::UnexpectedStatus { what, status: status.as_u16(), body: String::from_utf8_lossy(quoted).into_owned() }
}
