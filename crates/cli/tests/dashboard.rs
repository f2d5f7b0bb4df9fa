//! The dashboard in a real browser: headless Chromium (driven over the DevTools protocol) opens
//! `/dashboard` on the real binary while purchases and bids run, and the page's DOM must show
//! the stream live, the charts filling, the sale's ledger bar following the purchases, the
//! auction, and the event log. A screenshot is saved in `target/dashboard.png`.
//!
//! Needs Chromium: `scripts/test` installs the Debian package `chromium`; `STAMPEDE_TEST_CHROMIUM`
//! names another binary.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{unique, Api, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    next_id: u64,
}

impl Browser {
    /// Starts headless Chromium and attaches to its first tab.
    async fn launch() -> Browser {
        let binary = std::env::var("STAMPEDE_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut child = Command::new(&binary)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"])
            .args(["--window-size=1400,1000", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {binary} ({error}): install the Debian package `chromium` (scripts/test does)")
            });
        let mut lines = BufReader::new(child.stderr.take().expect("browser stderr")).lines();
        let browser_url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("browser stderr") {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("the browser exited before listening for DevTools");
        })
        .await
        .expect("the browser listens for DevTools within 30 s");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = browser_url.split(':').nth(2).and_then(|rest| rest.split('/').next()).expect("DevTools port");
        let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .expect("DevTools target list")
            .json()
            .await
            .expect("DevTools target list JSON");
        let page = targets.iter().find(|target| target["type"] == "page").expect("a page target");
        let page_url = page["webSocketDebuggerUrl"].as_str().expect("page DevTools URL");
        let (socket, _) = tokio_tungstenite::connect_async(page_url).await.expect("attach to the page");
        Browser { child, _profile: profile, socket, next_id: 1 }
    }

    /// One DevTools command; its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({ "id": id, "method": method, "params": params });
        self.socket.send(Message::Text(command.to_string().into())).await.expect("send a DevTools command");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 30 s"))
                .expect("the DevTools socket closed")
                .expect("DevTools socket error");
            let Message::Text(text) = message else { continue };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == json!(id) {
                assert!(reply["error"].is_null(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its JSON value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await;
        assert!(result["exceptionDetails"].is_null(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    async fn screenshot(&mut self, path: &PathBuf) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png.expect("screenshot base64")).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What the page shows, read from its DOM.
const READ_PAGE: &str = r#"(() => {
  if (!document.getElementById("status")) return { status: "loading" };
  const sale = (id) => { const el = document.querySelector(`[data-sale="${id}"]`);
    return el ? { held: +el.dataset.held, sold: +el.dataset.sold, available: +el.dataset.available } : null; };
  return {
    status: document.getElementById("status").textContent,
    signin: !document.getElementById("signin").hidden,
    points: +(document.getElementById("throughput").dataset.points || 0),
    purchases: document.getElementById("pps").textContent,
    sales: [...document.querySelectorAll("[data-sale]")].map((el) => el.dataset.sale),
    sale: sale(window.SALE_ID),
    auction: (document.querySelector(`[data-auction="${window.AUCTION_ID}"]`) || {}).textContent || null,
    log: document.getElementById("log").childElementCount,
  };
})()"#;

async fn read_page(browser: &mut Browser, sale: &str, auction: &str) -> Value {
    let expression = format!("window.SALE_ID = {sale:?}; window.AUCTION_ID = {auction:?}; {READ_PAGE}");
    browser.eval(&expression).await
}

/// Purchases from fresh users on `sale` until `stop`, `workers` at a time.
fn buy_until(
    api: &Api,
    sale: &str,
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let (api, sale, stop, made) = (api.clone(), sale.to_owned(), stop.clone(), made.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if api.buy(&unique("shopper"), &sale, 1, None).await.status == 201 {
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_live_sale_in_a_real_browser() {
    let server = Server::start().await;
    let api = server.api().clone();
    let sale = api.sale_with(1_000_000, 1, 600).await;
    let auction = api.auction_with(json!({ "title": "Signed guitar" })).await;
    let auction = auction["id"].as_str().expect("auction id").to_owned();
    api.bid(&unique("bidder"), &auction, 50_000, None).await.expect(201);

    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let workers = buy_until(&api, &sale, stop.clone(), made.clone(), 8);

    let mut browser = Browser::launch().await;
    browser.call("Page.enable", json!({})).await;
    // The token as a shop link would pass it; the page keeps it in session storage.
    let url = format!("{}#token={}", api.url("/dashboard"), api.admin_token());
    browser.call("Page.navigate", json!({ "url": url })).await;

    // Live, signed in, with the sale and the auction on it.
    let started = Instant::now();
    let mut first = Value::Null;
    while started.elapsed() < Duration::from_secs(30) {
        first = read_page(&mut browser, &sale, &auction).await;
        if first["status"] == "live" && !first["sale"].is_null() && first["auction"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(first["status"], "live", "the page's stream is live: {first}");
    assert_eq!(first["signin"], false, "the token from the link was taken: {first}");
    let auction_row = first["auction"].as_str().expect("the auction's row");
    assert!(auction_row.contains("Signed guitar") && auction_row.contains("live"), "{auction_row}");

    // The ledger bar follows the purchases: later readings show more units taken.
    let taken = |page: &Value| page["sale"]["held"].as_u64().unwrap_or(0) + page["sale"]["sold"].as_u64().unwrap_or(0);
    let before = taken(&first);
    let moved = poll_page(&mut browser, &sale, &auction, |page| taken(page) >= before + 20).await;
    let later = moved.unwrap_or_else(|| panic!("the ledger bar did not move past {before} units: {first}"));
    let units = &later["sale"];
    assert_eq!(
        units["held"].as_u64().unwrap() + units["sold"].as_u64().unwrap() + units["available"].as_u64().unwrap(),
        1_000_000,
        "the bar's parts add up to the stock: {later}"
    );

    // A few seconds of charts: one point a second, with purchases in them.
    let charted = poll_page(&mut browser, &sale, &auction, |page| {
        let purchases: f64 = page["purchases"].as_str().unwrap_or("").replace(',', "").parse().unwrap_or(0.0);
        page["points"].as_u64().unwrap_or(0) >= 3 && purchases > 0.0
    })
    .await;
    let charted = charted.expect("the throughput chart fills with purchases");
    assert!(charted["log"].as_u64().unwrap_or(0) > 0, "the event log shows lines: {charted}");

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("purchase worker");
    }
    assert!(made.load(Ordering::Relaxed) > 0);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&dir).expect("target dir");
    browser.screenshot(&dir.join("dashboard.png")).await;
}

/// Reads the page every 200 ms until `done` holds (that reading) or 15 s passed (None).
async fn poll_page(browser: &mut Browser, sale: &str, auction: &str, done: impl Fn(&Value) -> bool) -> Option<Value> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let page = read_page(browser, sale, auction).await;
        if done(&page) {
            return Some(page);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
