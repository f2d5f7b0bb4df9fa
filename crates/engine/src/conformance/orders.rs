//! Paying, cancelling and looking up orders, only ever the caller's own.

use stampede_core::{OrderStatus, SaleError, UserId};

use super::{assert_sale_error, assert_units, buy, open_sale, secs, user, Harness};
use crate::backend::Backend;

pub async fn pay_is_idempotent(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let order = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;

    let paid = backend.pay(&order.id, &alice, Some("psp-1".to_owned()), secs(2)).await.expect("pay");
    assert_eq!((paid.id.as_str(), paid.status), (order.id.as_str(), OrderStatus::Paid));
    assert_eq!((paid.payment_ref.as_deref(), paid.updated_at), (Some("psp-1"), secs(2)));
    assert_eq!((paid.created_at, paid.quantity), (order.created_at, 2));

    let again = backend.pay(&order.id, &alice, Some("psp-2".to_owned()), secs(3)).await.expect("pay again");
    assert_eq!(again, paid, "paying twice changes nothing");
    let late = order.expires_at.plus_millis(1);
    let after_deadline = backend.pay(&order.id, &alice, None, late).await.expect("pay again after the deadline");
    assert_eq!(after_deadline, paid, "a paid order never expires");
    assert_eq!(backend.order(&order.id, &alice).await.expect("get order"), paid);
    assert_units(&*backend, &sale_id, 8, 0, 2).await;
}

pub async fn cancel_returns_units(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let order = buy(&*backend, &sale_id, &alice, 3, secs(1)).await;
    assert_units(&*backend, &sale_id, 7, 3, 0).await;

    let cancelled = backend.cancel(&order.id, &alice, secs(2)).await.expect("cancel");
    assert_eq!((cancelled.status, cancelled.updated_at), (OrderStatus::Cancelled, secs(2)));
    assert_units(&*backend, &sale_id, 10, 0, 0).await;
    let again = backend.cancel(&order.id, &alice, secs(3)).await.expect("cancel again");
    assert_eq!(again, cancelled, "cancelling twice changes nothing");
    assert_sale_error(backend.pay(&order.id, &alice, None, secs(4)).await, SaleError::OrderCancelled);
    assert_eq!(backend.order(&order.id, &alice).await.expect("get order"), cancelled);

    buy(&*backend, &sale_id, &alice, 4, secs(5)).await;
    let ledger = assert_units(&*backend, &sale_id, 6, 4, 0).await;
    assert_eq!((ledger.cancelled, ledger.orders), (3, 2));
}

pub async fn paid_orders_cannot_be_cancelled(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let order = buy(&*backend, &sale_id, &alice, 1, secs(1)).await;
    let paid = backend.pay(&order.id, &alice, Some("psp-1".to_owned()), secs(2)).await.expect("pay");

    assert_sale_error(backend.cancel(&order.id, &alice, secs(3)).await, SaleError::OrderPaid);
    assert_eq!(backend.order(&order.id, &alice).await.expect("get order"), paid);
    assert_units(&*backend, &sale_id, 9, 0, 1).await;
}

pub async fn other_users_orders_are_not_found(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let (alice, mallory) = (user("alice"), user("mallory"));
    let order = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;

    assert_sale_error(backend.order(&order.id, &mallory).await, SaleError::OrderNotFound);
    assert_sale_error(backend.pay(&order.id, &mallory, None, secs(2)).await, SaleError::OrderNotFound);
    assert_sale_error(backend.cancel(&order.id, &mallory, secs(3)).await, SaleError::OrderNotFound);
    let late = order.expires_at.plus_millis(1);
    assert_sale_error(backend.pay(&order.id, &mallory, None, late).await, SaleError::OrderNotFound);
    assert!(backend.orders_of(&mallory).await.expect("orders of mallory").is_empty());
    assert_eq!(backend.order(&order.id, &alice).await.expect("get order"), order, "untouched by another user");
    assert_units(&*backend, &sale_id, 8, 2, 0).await;
}

pub async fn malformed_order_ids_are_not_found(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    buy(&*backend, &sale_id, &alice, 1, secs(1)).await;
    let long = "o_".repeat(5_000);
    let ids = [
        "",
        "x",
        "o_zz_zz",
        "o_",
        "o__",
        "o__0",
        "_",
        "o_abc_",
        "o_abc_ffffffffffffffff",
        "o_a-b_1",
        "🦀",
        long.as_str(),
    ];
    for id in ids {
        assert_not_found(&*backend, id, &alice).await;
    }
    assert_not_found(&*backend, &sale_id, &alice).await;
    assert_units(&*backend, &sale_id, 9, 1, 0).await;
}

async fn assert_not_found(backend: &dyn Backend, order_id: &str, who: &UserId) {
    assert_sale_error(backend.order(order_id, who).await, SaleError::OrderNotFound);
    assert_sale_error(backend.pay(order_id, who, None, secs(2)).await, SaleError::OrderNotFound);
    assert_sale_error(backend.cancel(order_id, who, secs(2)).await, SaleError::OrderNotFound);
}

pub async fn orders_of_lists_own_orders_newest_first(h: &mut impl Harness) {
    let backend = h.backend().await;
    let first_sale = open_sale(&*backend, 10, 4).await;
    let second_sale = open_sale(&*backend, 10, 4).await;
    let (alice, bob) = (user("alice"), user("bob"));

    let oldest = buy(&*backend, &first_sale, &alice, 1, secs(1)).await;
    buy(&*backend, &first_sale, &bob, 1, secs(2)).await;
    let middle = buy(&*backend, &second_sale, &alice, 2, secs(3)).await;
    let newest = buy(&*backend, &first_sale, &alice, 1, secs(4)).await;
    backend.cancel(&oldest.id, &alice, secs(5)).await.expect("cancel");

    let listed = backend.orders_of(&alice).await.expect("orders of alice");
    let ids: Vec<_> = listed.iter().map(|order| order.id.as_str()).collect();
    assert_eq!(ids, [newest.id.as_str(), middle.id.as_str(), oldest.id.as_str()]);
    assert!(listed.iter().all(|order| order.user_id == "alice"));
    assert_eq!(listed[2].status, OrderStatus::Cancelled, "the list shows each order's latest state");
    assert_eq!(backend.orders_of(&bob).await.expect("orders of bob").len(), 1);
    assert!(backend.orders_of(&user("nobody")).await.expect("orders of nobody").is_empty());

    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(backend.orders_of(&alice).await.expect("orders of alice"), listed, "the same order after a restart");
}
