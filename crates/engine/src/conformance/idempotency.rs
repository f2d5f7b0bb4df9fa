//! Exactly once: one `(user, idempotency key)` makes at most one order, racing or replayed.

use stampede_core::{OrderStatus, SaleError};

use super::{assert_sale_error, assert_units, command, open_sale, secs, stampede, user, Harness};

pub async fn concurrent_replays_make_one_order(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let commands = (0..32).map(|_| command(&sale_id, &alice, 2, Some("checkout-1"))).collect();

    let attempts = stampede(&backend, commands, secs(1)).await;
    let orders: Vec<_> = attempts.into_iter().map(|(_, result)| result.expect("keyed purchase")).collect();
    let first = &orders[0].order;
    assert!(orders.iter().all(|purchase| purchase.order.id == first.id), "every replay names the same order");
    assert_eq!(orders.iter().filter(|purchase| purchase.created).count(), 1, "exactly one request created it");
    assert_eq!((first.quantity, first.status), (2, OrderStatus::Held));
    assert_eq!(backend.orders_of(&alice).await.expect("orders of alice").len(), 1);
    assert_units(&*backend, &sale_id, 8, 2, 0).await;

    backend.pay(&first.id, &alice, Some("psp-1".to_owned()), secs(2)).await.expect("pay");
    let replay = backend.purchase(command(&sale_id, &alice, 2, Some("checkout-1")), secs(3)).await;
    let replay = replay.expect("replay after payment");
    assert!(!replay.created);
    assert_eq!((replay.order.id.as_str(), replay.order.status), (first.id.as_str(), OrderStatus::Paid));
    assert_units(&*backend, &sale_id, 8, 0, 2).await;
}

pub async fn idempotency_keys_are_per_user(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let keyed = |who, n, key| command(&sale_id, who, n, Some(key));

    let alices = backend.purchase(keyed(&alice, 2, "checkout-1"), secs(1)).await.expect("alice buys");
    let bobs = backend.purchase(keyed(&bob, 2, "checkout-1"), secs(2)).await.expect("bob buys with the same key");
    assert!(alices.created && bobs.created);
    assert_ne!(alices.order.id, bobs.order.id);
    assert_eq!(bobs.order.user_id, "bob");

    let second = backend.purchase(keyed(&alice, 2, "checkout-2"), secs(3)).await.expect("a new key buys again");
    assert!(second.created);
    assert_ne!(second.order.id, alices.order.id);
    assert_sale_error(backend.purchase(keyed(&alice, 1, "checkout-3"), secs(4)).await, SaleError::LimitReached);
    let replay = backend.purchase(keyed(&alice, 2, "checkout-1"), secs(5)).await.expect("replay at the limit");
    assert_eq!((replay.order.id.as_str(), replay.created), (alices.order.id.as_str(), false));
    assert_units(&*backend, &sale_id, 4, 6, 0).await;
}

pub async fn replay_after_restart_returns_the_same_order(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let original = backend.purchase(command(&sale_id, &alice, 3, Some("checkout-1")), secs(1)).await;
    let original = original.expect("keyed purchase").order;

    h.restart().await;
    let backend = h.backend().await;
    let replay = backend.purchase(command(&sale_id, &alice, 3, Some("checkout-1")), secs(2)).await;
    let replay = replay.expect("replay after restart");
    assert!(!replay.created, "the key survived the restart");
    assert_eq!(replay.order, original);
    assert_units(&*backend, &sale_id, 7, 3, 0).await;
}
