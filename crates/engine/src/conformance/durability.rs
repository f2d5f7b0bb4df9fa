//! Acknowledged means durable: after a restart on the same storage everything acknowledged is
//! back and behaves as before, and holds that fell due while down expire on the first sweep.

use std::future::Future;
use std::time::Duration;

use stampede_core::{OrderStatus, SaleError, Timestamp, UserId};

use super::waitlist::only_hold;
use super::{
    assert_sale_error, assert_units, balanced_ledger, buy, command, open_sale, secs, spec, units, user, Harness, T0,
};
use crate::backend::{Backend, EngineError, Ledger, NewSale, NewUser, OrderView, SaleView, UserRecord};

/// Everything the suite can read back about some sales and users.
#[derive(Debug, PartialEq)]
struct Snapshot {
    sales: Vec<(SaleView, Ledger)>,
    orders: Vec<Vec<OrderView>>,
    users: Vec<Option<UserRecord>>,
}

async fn snapshot(backend: &dyn Backend, sale_ids: &[&str], people: &[UserId], now: Timestamp) -> Snapshot {
    let mut snapshot = Snapshot { sales: Vec::new(), orders: Vec::new(), users: Vec::new() };
    for id in sale_ids {
        let sale = backend.sale(id, now).await.expect("get sale");
        snapshot.sales.push((sale, balanced_ledger(backend, id).await));
    }
    for who in people {
        let orders = backend.orders_of(who).await.expect("orders of user");
        for order in &orders {
            assert_eq!(&backend.order(&order.id, who).await.expect("get order"), order);
        }
        snapshot.orders.push(orders);
        snapshot.users.push(backend.find_user(who.as_str()).await.expect("find user"));
    }
    snapshot
}

pub async fn restart_keeps_acknowledged_state(h: &mut impl Harness) {
    let backend = h.backend().await;
    let people = ["alice", "bob", "carol", "dave", "erin", "frank", "greg", "hank", "ivan"].map(user);
    let [alice, bob, carol, dave, erin, frank, greg, hank, ivan] = &people;
    for name in ["alice", "bob"] {
        let new = NewUser { username: name.to_owned(), password_hash: format!("hash-{name}") };
        backend.create_user(new).await.expect("create user");
    }
    let busy = open_sale(&*backend, 5, 2).await;
    let roomy = open_sale(&*backend, 10, 2).await;
    let later = NewSale { starts_at: Some(secs(1000)), ends_at: Some(secs(2000)), ..spec(7, 1) };
    let scheduled = backend.create_sale(later, T0).await.expect("create sale").id;

    let daves = buy(&*backend, &busy, dave, 1, secs(1)).await;
    let alices = backend.purchase(command(&busy, alice, 2, Some("k-a")), secs(10)).await.expect("keyed purchase");
    let bobs = buy(&*backend, &busy, bob, 1, secs(2)).await;
    backend.pay(&bobs.id, bob, Some("psp-b".to_owned()), secs(3)).await.expect("pay");
    let carols = buy(&*backend, &busy, carol, 1, secs(4)).await;
    backend.cancel(&carols.id, carol, secs(5)).await.expect("cancel");
    assert_eq!(backend.expire_due(daves.expires_at).await.expect("expire due"), 1);
    buy(&*backend, &busy, erin, 2, secs(126)).await;
    assert_eq!(backend.join_waitlist(&busy, frank, units(1), secs(127)).await.expect("join"), 1);
    assert_eq!(backend.join_waitlist(&busy, greg, units(2), secs(128)).await.expect("join"), 2);
    buy(&*backend, &roomy, hank, 2, secs(128)).await;
    assert_units(&*backend, &busy, 0, 4, 1).await;

    let sales = [busy.as_str(), roomy.as_str(), scheduled.as_str()];
    let before = snapshot(&*backend, &sales, &people, secs(128)).await;
    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(snapshot(&*backend, &sales, &people, secs(128)).await, before);

    let replay = backend.purchase(command(&busy, alice, 2, Some("k-a")), secs(129)).await.expect("replay");
    assert_eq!((replay.order, replay.created), (alices.order.clone(), false));
    assert_sale_error(backend.purchase(command(&roomy, hank, 1, None), secs(129)).await, SaleError::LimitReached);
    buy(&*backend, &roomy, ivan, 1, secs(129)).await;
    assert_sale_error(backend.purchase(command(&busy, ivan, 1, None), secs(129)).await, SaleError::SoldOut);
    let again = backend.join_waitlist(&busy, frank, units(1), secs(129)).await;
    assert_sale_error(again, SaleError::AlreadyWaitlisted);
    assert_sale_error(backend.cancel(&bobs.id, bob, secs(129)).await, SaleError::OrderPaid);
    assert_sale_error(backend.pay(&carols.id, carol, None, secs(129)).await, SaleError::OrderCancelled);
    assert_sale_error(backend.pay(&daves.id, dave, None, secs(129)).await, SaleError::HoldExpired);

    // Released units still go to the restored waitlist in order: frank (1) before greg (2).
    backend.cancel(&alices.order.id, alice, secs(129)).await.expect("cancel");
    only_hold(&*backend, frank, 1, secs(129)).await;
    assert!(backend.orders_of(greg).await.expect("orders of greg").is_empty());
    assert_units(&*backend, &busy, 1, 3, 1).await;

    let before = snapshot(&*backend, &sales, &people, secs(130)).await;
    assert_eq!(before.sales[0].0.waitlisted, 1);
    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(snapshot(&*backend, &sales, &people, secs(130)).await, before, "changes after a restart are durable");
}

pub async fn holds_due_while_down_expire_after_restart(h: &mut impl Harness) {
    let backend = h.backend().await;
    let (alice, bob, dave, erin) = (user("alice"), user("bob"), user("dave"), user("erin"));
    let sale_id = open_sale(&*backend, 3, 3).await;
    let other_id = open_sale(&*backend, 1, 1).await;
    let alices = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;
    let bobs = buy(&*backend, &sale_id, &bob, 1, secs(1)).await;
    backend.pay(&bobs.id, &bob, None, secs(2)).await.expect("pay");
    backend.join_waitlist(&sale_id, &dave, units(1), secs(3)).await.expect("join");
    let erins = buy(&*backend, &other_id, &erin, 1, secs(1)).await;
    assert_units(&*backend, &sale_id, 0, 2, 1).await;

    h.restart().await;
    let backend = h.backend().await;
    let back_up = secs(500);
    assert_units(&*backend, &sale_id, 0, 2, 1).await;
    assert_units(&*backend, &other_id, 0, 1, 0).await;
    // Expiry has not run since the restart; the overdue hold must still not be payable.
    assert_sale_error(backend.pay(&erins.id, &erin, None, back_up).await, SaleError::HoldExpired);
    assert_units(&*backend, &other_id, 1, 0, 0).await;

    assert_eq!(backend.expire_due(back_up).await.expect("expire due"), 1);
    assert_eq!(backend.order(&alices.id, &alice).await.expect("get order").status, OrderStatus::Expired);
    only_hold(&*backend, &dave, 1, back_up).await;
    assert_units(&*backend, &sale_id, 1, 1, 1).await;
    assert_eq!(backend.expire_due(back_up).await.expect("expire due"), 0);

    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(backend.order(&alices.id, &alice).await.expect("get order").status, OrderStatus::Expired);
    only_hold(&*backend, &dave, 1, back_up).await;
    let ledger = assert_units(&*backend, &sale_id, 1, 1, 1).await;
    assert_eq!(ledger.expired, 2);
    assert_eq!(assert_units(&*backend, &other_id, 1, 0, 0).await.expired, 1);
}

/// User ids come from token subjects and payment refs from request bodies: any text, stored
/// and read back exactly.
pub async fn unusual_strings_survive_restart(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 50, 2).await;
    let names =
        ["123", "null", "true", "{\"a\":1}", "spaced out name", "ünï-ユーザー-🦀", "quote\"back\\slash", "nul\0inside"];
    let people = names.map(user);
    let mut orders = Vec::new();
    for (i, who) in people.iter().enumerate() {
        let key = ["42", "null", "\"quoted\"", "[1]", "k-4", "k-5", "k-6", "k-7"][i];
        let bought = backend.purchase(command(&sale_id, who, 1, Some(key)), secs(1)).await.expect("purchase");
        let payment_ref = format!("{}-ref\0\n\t{}", names[i], i);
        let paid = backend.pay(&bought.order.id, who, Some(payment_ref), secs(2)).await.expect("pay");
        assert_eq!(paid.user_id, names[i]);
        orders.push((key, paid));
    }

    h.restart().await;
    let backend = h.backend().await;
    for (who, (key, paid)) in people.iter().zip(&orders) {
        assert_eq!(&backend.order(&paid.id, who).await.expect("get order"), paid, "{who:?}");
        assert_eq!(backend.orders_of(who).await.expect("orders of user"), vec![paid.clone()], "{who:?}");
        let replay = backend.purchase(command(&sale_id, who, 1, Some(key)), secs(3)).await.expect("replay");
        assert_eq!((&replay.order, replay.created), (paid, false), "{who:?} key {key:?}");
    }
    assert_units(&*backend, &sale_id, 42, 0, 8).await;
}

/// "Stops taking work": after `shutdown` no change is acknowledged, and no call hangs (a
/// request racing a graceful shutdown must get an answer). The bound only turns a hang into a
/// failure; it is not a timing assertion.
pub async fn calls_after_shutdown_fail_without_hanging(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 5, 2).await;
    let alice = user("alice");
    buy(&*backend, &sale_id, &alice, 1, secs(1)).await;
    backend.shutdown().await;

    assert!(!backend.ready().await, "a stopped backend is not ready");
    let refused = answer("purchase", backend.purchase(command(&sale_id, &alice, 1, None), secs(2))).await;
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "purchase after shutdown: {refused:?}");
    let ledger = answer("ledger", backend.ledger(&sale_id)).await;
    assert!(!matches!(ledger, Ok(ref l) if !l.consistent()), "ledger after shutdown: {ledger:?}");

    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(backend.orders_of(&alice).await.expect("orders of alice").len(), 1, "the refused purchase is gone");
    assert_units(&*backend, &sale_id, 4, 1, 0).await;
}

async fn answer<T>(what: &str, call: impl Future<Output = T>) -> T {
    let bound = Duration::from_secs(10);
    let answered = tokio::time::timeout(bound, call).await;
    answered.unwrap_or_else(|_| panic!("{what} after shutdown hung (no answer within {bound:?})"))
}
