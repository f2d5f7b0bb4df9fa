//! Single purchases: the hold they create and every reason to refuse one.

use stampede_core::{OrderStatus, SaleError, SaleStatus};

use super::{assert_sale_error, assert_units, buy, command, open_sale, secs, spec, user, Harness, HOLD_SECONDS, T0};
use crate::backend::NewSale;

pub async fn purchase_holds_units(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let now = secs(5);

    let result = backend.purchase(command(&sale_id, &alice, 3, None), now).await.expect("purchase");
    assert!(result.created);
    let order = result.order;
    assert!(!order.id.is_empty());
    assert_eq!((order.sale_id.as_str(), order.user_id.as_str()), (sale_id.as_str(), "alice"));
    assert_eq!((order.quantity, order.status), (3, OrderStatus::Held));
    assert_eq!(order.expires_at, now.plus_seconds(HOLD_SECONDS));
    assert_eq!((order.created_at, order.updated_at), (now, now));
    assert_eq!(order.payment_ref, None);

    assert_eq!(backend.order(&order.id, &alice).await.expect("get order"), order);
    assert_eq!(backend.orders_of(&alice).await.expect("orders of alice"), vec![order]);
    assert_eq!(backend.sale(&sale_id, now).await.expect("get sale").status, SaleStatus::Live);
    assert_units(&*backend, &sale_id, 7, 3, 0).await;
}

pub async fn purchase_beyond_stock_is_sold_out(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 3, 3).await;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));

    buy(&*backend, &sale_id, &alice, 2, secs(1)).await;
    let too_many = backend.purchase(command(&sale_id, &bob, 2, None), secs(2)).await;
    assert_sale_error(too_many, SaleError::SoldOut);
    buy(&*backend, &sale_id, &bob, 1, secs(3)).await;
    assert_sale_error(backend.purchase(command(&sale_id, &carol, 1, None), secs(4)).await, SaleError::SoldOut);

    assert_eq!(backend.sale(&sale_id, secs(4)).await.expect("get sale").status, SaleStatus::SoldOut);
    assert!(backend.orders_of(&carol).await.expect("orders of carol").is_empty());
    assert_units(&*backend, &sale_id, 0, 3, 0).await;
}

pub async fn per_user_limit_counts_held_and_paid(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 3).await;
    let (alice, bob) = (user("alice"), user("bob"));

    let paid = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;
    backend.pay(&paid.id, &alice, Some("psp-1".to_owned()), secs(2)).await.expect("pay");
    let held = buy(&*backend, &sale_id, &alice, 1, secs(3)).await;
    let over = backend.purchase(command(&sale_id, &alice, 1, None), secs(4)).await;
    assert_sale_error(over, SaleError::LimitReached);

    backend.cancel(&held.id, &alice, secs(5)).await.expect("cancel");
    buy(&*backend, &sale_id, &alice, 1, secs(6)).await;
    assert_sale_error(backend.purchase(command(&sale_id, &alice, 1, None), secs(7)).await, SaleError::LimitReached);
    buy(&*backend, &sale_id, &bob, 3, secs(8)).await;
    assert_units(&*backend, &sale_id, 4, 4, 2).await;
}

pub async fn quantity_above_the_limit_is_invalid(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 3, 2).await;
    let alice = user("alice");

    let result = backend.purchase(command(&sale_id, &alice, 3, None), secs(1)).await;
    assert_sale_error(result, SaleError::InvalidQuantity);
    let result = backend.purchase(command(&sale_id, &alice, 50, None), secs(1)).await;
    assert_sale_error(result, SaleError::InvalidQuantity);
    assert!(backend.orders_of(&alice).await.expect("orders of alice").is_empty());
    assert_units(&*backend, &sale_id, 3, 0, 0).await;
}

pub async fn purchase_only_inside_the_sale_window(h: &mut impl Harness) {
    let backend = h.backend().await;
    let new = NewSale { starts_at: Some(secs(10)), ends_at: Some(secs(60)), ..spec(5, 5) };
    let sale_id = backend.create_sale(new, T0).await.expect("create sale").id;
    let alice = user("alice");
    let try_at = |now| backend.purchase(command(&sale_id, &alice, 1, None), now);

    assert_sale_error(try_at(T0).await, SaleError::NotLive);
    assert_sale_error(try_at(secs(10).plus_millis(-1)).await, SaleError::NotLive);
    assert_sale_error(try_at(secs(60)).await, SaleError::NotLive);
    assert_sale_error(try_at(secs(3600)).await, SaleError::NotLive);
    try_at(secs(10)).await.expect("purchase at the start");
    try_at(secs(60).plus_millis(-1)).await.expect("purchase just before the end");
    assert_units(&*backend, &sale_id, 3, 2, 0).await;
}
