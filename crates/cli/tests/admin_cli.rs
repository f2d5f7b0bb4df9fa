//! The admin commands as a black box: the real `stampede` binary run against a real server,
//! its tables and `--json` output, bans that take effect, and the errors an operator sees.
mod common;

use std::process::Output;

use serde_json::{json, Value};

use common::Server;

/// Runs `stampede <args>` against `server` with `token` as the admin token.
async fn stampede_with(server: &Server, token: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(args)
        .env("STAMPEDE_URL", &server.api().base)
        .env("STAMPEDE_ADMIN_TOKEN", token)
        .env_remove("STAMPEDE_LOG")
        .output()
        .await
        .expect("run the stampede binary")
}

/// Runs an admin command that must succeed; returns its stdout.
async fn stampede(server: &Server, args: &[&str]) -> String {
    let output = stampede_with(server, &server.api().admin_token, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stampede {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Runs an admin command with `--json`; returns what it printed, parsed.
async fn stampede_json(server: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = stampede(server, &args).await;
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("stampede {args:?} printed no JSON ({error}): {text}"))
}

/// Runs a command that must fail; returns its stderr.
async fn failing(server: &Server, token: &str, args: &[&str]) -> String {
    let output = stampede_with(server, token, args).await;
    assert!(!output.status.success(), "stampede {args:?} should have failed");
    assert!(output.stdout.is_empty(), "nothing on stdout when failing: {:?}", output.stdout);
    String::from_utf8(output.stderr).expect("utf-8 stderr")
}

/// The table's rows split into cells, the header first; checks that every cell starts where
/// its header does.
fn table(text: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let header = lines.first().expect("a header line");
    let starts: Vec<usize> = header
        .match_indices(|c: char| c != ' ')
        .filter(|&(i, _)| i == 0 || header.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| i)
        .collect();
    let mut rows = Vec::new();
    for line in &lines {
        for &start in &starts[1..] {
            let aligned = line.len() <= start || line.as_bytes()[start - 1] == b' ';
            assert!(aligned, "a cell does not start under its header:\n{text}");
        }
        let cells: Vec<String> = starts
            .iter()
            .enumerate()
            .map(|(n, &start)| {
                let end = starts.get(n + 1).map_or(line.len(), |&next| next.min(line.len()));
                line.get(start..end).unwrap_or("").trim().to_owned()
            })
            .collect();
        rows.push(cells);
    }
    rows
}

fn column<'a>(rows: &'a [Vec<String>], header: &str) -> Vec<&'a str> {
    let index = rows[0].iter().position(|cell| cell == header).unwrap_or_else(|| panic!("no {header} column"));
    rows[1..].iter().map(|row| row[index].as_str()).collect()
}

#[tokio::test]
async fn sales_are_created_shown_and_listed() {
    let server = Server::start().await;
    let created = stampede_json(
        &server,
        &[
            "sale",
            "create",
            "--name",
            "Launch sneakers",
            "--stock",
            "5",
            "--price-cents",
            "12900",
            "--per-user-limit",
            "2",
        ],
    )
    .await;
    let id = created["id"].as_str().expect("sale id").to_owned();
    assert_eq!((created["stock"].as_u64(), created["status"].as_str()), (Some(5), Some("live")));
    assert_eq!(created, server.api().sale(&id).await, "--json prints the server's sale");

    let shown = stampede(&server, &["sale", "get", &id]).await;
    assert!(shown.lines().any(|line| line.split_whitespace().collect::<Vec<_>>() == ["id", id.as_str()]), "{shown}");
    assert!(shown.lines().any(|line| line.starts_with("name ") && line.ends_with("Launch sneakers")), "{shown}");

    let later = stampede_json(
        &server,
        &[
            "sale",
            "create",
            "--name",
            "Later",
            "--stock",
            "1",
            "--price-cents",
            "5",
            "--starts-at",
            "2999-01-01T00:00:00Z",
        ],
    )
    .await;
    let later_id = later["id"].as_str().expect("sale id");
    assert_eq!(later["status"], "scheduled");

    let listed = stampede(&server, &["sale", "list"]).await;
    let rows = table(&listed);
    assert_eq!(column(&rows, "ID"), [later_id, id.as_str()], "newest first:\n{listed}");
    assert_eq!(column(&rows, "NAME"), ["Later", "Launch sneakers"]);
    assert_eq!(column(&rows, "STATUS"), ["scheduled", "live"]);
    assert_eq!(column(&rows, "PRICE"), ["0.05", "129.00"]);
    assert_eq!(column(&rows, "AVAILABLE"), ["1", "5"]);

    let scheduled = stampede_json(&server, &["sale", "list", "--status", "scheduled"]).await;
    assert_eq!(scheduled, json!({"sales": [later]}));
    let all = stampede_json(&server, &["sale", "list"]).await;
    assert_eq!(all["sales"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn any_order_is_shown_to_the_operator() {
    let server = Server::start().await;
    let api = server.api();
    let sale_id = api.sale_with(10, 3, 600).await;
    let order = api.buy("alice", &sale_id, 2, Some("k-1")).await.expect(201).clone();
    let order_id = order["id"].as_str().expect("order id");

    assert_eq!(stampede_json(&server, &["order", "get", order_id]).await, order);
    let shown = stampede(&server, &["order", "get", order_id]).await;
    for (field, value) in [("user_id", "alice"), ("quantity", "2"), ("status", "held"), ("payment_ref", "-")] {
        let line = format!("{field} {value}");
        assert!(shown.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line), "{line}:\n{shown}");
    }
    let missing = failing(&server, &api.admin_token, &["order", "get", "o_nothing_0"]).await;
    assert_eq!(missing.trim_end(), "error: not_found: order not found");
}

#[tokio::test]
async fn bans_take_effect_until_lifted() {
    let server = Server::start_with_env(&[("STAMPEDE_LIMITS", "on")]).await;
    let api = server.api();
    let sale_id = api.sale_with(10, 1, 600).await;

    let ban = stampede_json(&server, &["user", "ban", "mallory", "--seconds", "600", "--reason", "card testing"]).await;
    assert_eq!((ban["subject"].as_str(), ban["reason"].as_str()), (Some("user:mallory"), Some("card testing")));
    api.buy("mallory", &sale_id, 1, None).await.expect_error(403, "banned");
    api.buy("alice", &sale_id, 1, None).await.expect(201);

    stampede(&server, &["ip", "ban", "203.0.113.9", "--seconds", "60"]).await;
    let rows = table(&stampede(&server, &["ban", "list"]).await);
    let mut subjects = column(&rows, "SUBJECT");
    subjects.sort_unstable();
    assert_eq!(subjects, ["ip:203.0.113.9", "user:mallory"]);
    assert!(column(&rows, "REASON").contains(&"card testing"));

    let lifted = stampede(&server, &["user", "unban", "mallory"]).await;
    assert_eq!(lifted.trim_end(), "lifted the ban on user:mallory");
    // No longer banned; still suspect, so the server asks for proof of work first.
    let proof = api.solved_challenge(Some("mallory")).await;
    let retry = api.buy_request("mallory", &sale_id, 1, None).header("Stampede-Pow", proof);
    api.send(retry).await.expect(201);
    let again = failing(&server, &api.admin_token, &["user", "unban", "mallory"]).await;
    assert_eq!(again.trim_end(), "error: not_found: ban not found");
    let bans = stampede_json(&server, &["ban", "list"]).await;
    assert_eq!(bans["bans"].as_array().map(Vec::len), Some(1), "{bans}");
}

#[tokio::test]
async fn failures_are_clear_and_exit_non_zero() {
    let mut server = Server::start().await;
    let wrong = failing(&server, "not-the-admin-token", &["sale", "list"]).await;
    assert!(wrong.starts_with("error: unauthorized: "), "{wrong}");
    let user_token = server.api().token("alice");
    let forbidden = failing(&server, &user_token, &["sale", "list"]).await;
    assert!(forbidden.starts_with("error: forbidden: "), "{forbidden}");
    let no_token = failing(&server, "", &["sale", "list"]).await;
    assert!(no_token.contains("--admin-token"), "says how to give the token: {no_token}");

    let token = server.api().admin_token.clone();
    let bad_filter = failing(&server, &token, &["sale", "list", "--status", "sleeping"]).await;
    assert!(bad_filter.starts_with("error: invalid_request: status: "), "{bad_filter}");
    let unknown = failing(&server, &token, &["sale", "get", "s_doesnotexist"]).await;
    assert_eq!(unknown.trim_end(), "error: not_found: sale not found");
    let bad_sale =
        failing(&server, &token, &["sale", "create", "--name", " ", "--stock", "1", "--price-cents", "1"]).await;
    assert!(bad_sale.starts_with("error: invalid_request: name: "), "{bad_sale}");
    let limits_off = failing(&server, &token, &["user", "ban", "mallory"]).await;
    assert!(limits_off.starts_with("error: limits_off: "), "{limits_off}");

    server.kill9().await;
    let down = failing(&server, &token, &["sale", "list"]).await;
    assert!(down.starts_with("error: cannot connect to the server at "), "{down}");
}
