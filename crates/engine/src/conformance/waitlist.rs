//! The waitlist: released units go first come, first served to those waiting, as fresh holds.

use stampede_core::{OrderStatus, SaleError, SaleStatus, Timestamp, UserId};

use super::{assert_sale_error, assert_units, buy, command, open_sale, secs, units, user, Harness, HOLD_SECONDS};
use crate::backend::{Backend, OrderView};

pub async fn waitlist_only_when_sold_out(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 2, 2).await;
    let (alice, bob, carol, erin) = (user("alice"), user("bob"), user("carol"), user("erin"));
    let join = |who, n, at| backend.join_waitlist(&sale_id, who, units(n), secs(at));

    assert_sale_error(join(&alice, 1, 1).await, SaleError::StockAvailable);
    buy(&*backend, &sale_id, &bob, 2, secs(2)).await;
    assert_eq!(join(&alice, 1, 3).await.expect("alice joins"), 1);
    assert_eq!(join(&carol, 2, 4).await.expect("carol joins"), 2);
    assert_sale_error(join(&alice, 1, 5).await, SaleError::AlreadyWaitlisted);
    assert_sale_error(join(&bob, 1, 5).await, SaleError::LimitReached);
    assert_sale_error(join(&erin, 3, 5).await, SaleError::InvalidQuantity);

    let sale = backend.sale(&sale_id, secs(6)).await.expect("get sale");
    assert_eq!((sale.status, sale.waitlisted), (SaleStatus::SoldOut, 2));
    assert_sale_error(backend.purchase(command(&sale_id, &erin, 1, None), secs(6)).await, SaleError::SoldOut);
    assert!(backend.orders_of(&alice).await.expect("orders of alice").is_empty(), "waiting is not an order");
    assert_units(&*backend, &sale_id, 0, 2, 0).await;
}

pub async fn released_units_go_to_the_waitlist_in_order(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 3, 2).await;
    let [alice, bob, carol, dave, erin, frank, greg] =
        ["alice", "bob", "carol", "dave", "erin", "frank", "greg"].map(user);
    let bobs = buy(&*backend, &sale_id, &bob, 2, secs(1)).await;
    let erins = buy(&*backend, &sale_id, &erin, 1, secs(1)).await;
    for (place, (who, n)) in [(&alice, 1), (&carol, 2), (&dave, 1)].into_iter().enumerate() {
        let joined = backend.join_waitlist(&sale_id, who, units(n), secs(2)).await.expect("join waitlist");
        assert_eq!(joined as usize, place + 1);
    }

    // Two units back: alice (1) is served; carol (2) waits for more and dave may not skip her.
    backend.cancel(&bobs.id, &bob, secs(10)).await.expect("cancel");
    let alices = only_hold(&*backend, &alice, 1, secs(10)).await;
    assert!(backend.orders_of(&dave).await.expect("orders of dave").is_empty(), "no skipping the queue");
    assert_waiting(&*backend, &sale_id, 2).await;
    assert_sale_error(backend.purchase(command(&sale_id, &frank, 1, None), secs(11)).await, SaleError::SoldOut);
    let place = backend.join_waitlist(&sale_id, &frank, units(1), secs(11)).await.expect("frank joins");
    assert_eq!(place, 3, "places count only those still waiting");
    assert_units(&*backend, &sale_id, 1, 2, 0).await;

    backend.cancel(&erins.id, &erin, secs(20)).await.expect("cancel");
    let carols = only_hold(&*backend, &carol, 2, secs(20)).await;
    backend.pay(&alices.id, &alice, Some("psp-1".to_owned()), secs(21)).await.expect("pay a waitlist hold");
    assert_waiting(&*backend, &sale_id, 2).await;

    backend.cancel(&carols.id, &carol, secs(30)).await.expect("cancel");
    only_hold(&*backend, &dave, 1, secs(30)).await;
    only_hold(&*backend, &frank, 1, secs(30)).await;
    assert_waiting(&*backend, &sale_id, 0).await;
    assert_sale_error(backend.purchase(command(&sale_id, &greg, 1, None), secs(31)).await, SaleError::SoldOut);
    assert_units(&*backend, &sale_id, 0, 2, 1).await;
}

pub async fn expired_units_go_to_the_waitlist(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 1, 1).await;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let bobs = buy(&*backend, &sale_id, &bob, 1, secs(1)).await;
    backend.join_waitlist(&sale_id, &alice, units(1), secs(2)).await.expect("alice joins");
    backend.join_waitlist(&sale_id, &carol, units(1), secs(3)).await.expect("carol joins");

    assert_eq!(backend.expire_due(bobs.expires_at.plus_millis(-1)).await.expect("expire due"), 0);
    assert_eq!(backend.expire_due(bobs.expires_at).await.expect("expire due"), 1, "granted holds are not counted");
    let alices = only_hold(&*backend, &alice, 1, bobs.expires_at).await;
    assert_waiting(&*backend, &sale_id, 1).await;
    assert_units(&*backend, &sale_id, 0, 1, 0).await;

    // A pay that finds its hold overdue releases the units to the waitlist in the same call.
    assert_sale_error(backend.pay(&alices.id, &alice, None, alices.expires_at).await, SaleError::HoldExpired);
    let carols = only_hold(&*backend, &carol, 1, alices.expires_at).await;
    assert_waiting(&*backend, &sale_id, 0).await;

    assert_eq!(backend.expire_due(carols.expires_at).await.expect("expire due"), 1);
    assert_eq!(backend.order(&carols.id, &carol).await.expect("get order").status, OrderStatus::Expired);
    let ledger = assert_units(&*backend, &sale_id, 1, 0, 0).await;
    assert_eq!((ledger.expired, ledger.orders), (3, 3));
}

/// The user's only order: a fresh hold of `n` units made at `at`.
pub(super) async fn only_hold(backend: &dyn Backend, who: &UserId, n: u32, at: Timestamp) -> OrderView {
    let orders = backend.orders_of(who).await.expect("orders of user");
    let [order] = orders.as_slice() else { panic!("expected one order for {who}, got {orders:?}") };
    assert_eq!((order.status, order.quantity), (OrderStatus::Held, n), "{order:?}");
    assert_eq!((order.created_at, order.expires_at), (at, at.plus_seconds(HOLD_SECONDS)), "{order:?}");
    assert_eq!(&backend.order(&order.id, who).await.expect("get order"), order);
    order.clone()
}

async fn assert_waiting(backend: &dyn Backend, sale_id: &str, waiting: u32) {
    let sale = backend.sale(sale_id, secs(0)).await.expect("get sale");
    assert_eq!(sale.waitlisted, waiting, "{sale:?}");
}
