//! Hold deadlines: every hold ends exactly once, and pay racing expiry has one winner.

use std::sync::Arc;

use stampede_core::{OrderStatus, SaleError, Timestamp};
use tokio::sync::Barrier;

use super::{assert_sale_error, assert_units, buy, open_sale, secs, user, Harness, HOLD_SECONDS};
use crate::backend::{Backend, EngineError, OrderView};

pub async fn expire_due_waits_for_the_deadline(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;
    let second = buy(&*backend, &sale_id, &bob, 1, secs(5)).await;
    assert_eq!(first.expires_at, secs(1 + HOLD_SECONDS));

    assert_eq!(backend.expire_due(secs(2)).await.expect("expire due"), 0);
    assert_eq!(backend.expire_due(first.expires_at.plus_millis(-1)).await.expect("expire due"), 0);
    assert_eq!(backend.order(&first.id, &alice).await.expect("get order").status, OrderStatus::Held);
    assert_units(&*backend, &sale_id, 7, 3, 0).await;

    assert_eq!(backend.expire_due(first.expires_at).await.expect("expire due"), 1);
    assert_eq!(backend.order(&first.id, &alice).await.expect("get order").status, OrderStatus::Expired);
    assert_eq!(backend.order(&second.id, &bob).await.expect("get order").status, OrderStatus::Held);
    assert_units(&*backend, &sale_id, 9, 1, 0).await;
    assert_eq!(backend.expire_due(first.expires_at).await.expect("expire due"), 0, "a hold ends once");

    assert_sale_error(backend.pay(&first.id, &alice, None, secs(200)).await, SaleError::HoldExpired);
    assert_sale_error(backend.cancel(&first.id, &alice, secs(200)).await, SaleError::HoldExpired);
    assert_eq!(backend.expire_due(secs(10_000)).await.expect("expire due"), 1);
    let ledger = assert_units(&*backend, &sale_id, 10, 0, 0).await;
    assert_eq!((ledger.expired, ledger.orders), (3, 2));
}

pub async fn pay_just_before_the_deadline_wins(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let alice = user("alice");
    let order = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;

    let paid = backend.pay(&order.id, &alice, Some("psp-1".to_owned()), order.expires_at.plus_millis(-1)).await;
    assert_eq!(paid.expect("pay a millisecond early").status, OrderStatus::Paid);
    assert_eq!(backend.expire_due(secs(10_000)).await.expect("expire due"), 0);
    assert_eq!(backend.order(&order.id, &alice).await.expect("get order").status, OrderStatus::Paid);
    assert_units(&*backend, &sale_id, 8, 0, 2).await;
}

pub async fn pay_at_the_deadline_expires_the_hold(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 10, 4).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let late = buy(&*backend, &sale_id, &alice, 2, secs(1)).await;
    let later = buy(&*backend, &sale_id, &bob, 1, secs(1)).await;

    // No expire_due has run: the call itself must end the hold and give the units back.
    assert_sale_error(backend.pay(&late.id, &alice, None, late.expires_at).await, SaleError::HoldExpired);
    assert_eq!(backend.order(&late.id, &alice).await.expect("get order").status, OrderStatus::Expired);
    assert_units(&*backend, &sale_id, 9, 1, 0).await;
    assert_sale_error(backend.pay(&late.id, &alice, None, late.expires_at).await, SaleError::HoldExpired);

    let long_after = later.expires_at.plus_millis(5_000);
    assert_sale_error(backend.cancel(&later.id, &bob, long_after).await, SaleError::HoldExpired);
    let ledger = assert_units(&*backend, &sale_id, 10, 0, 0).await;
    assert_eq!(ledger.expired, 3);
    assert_eq!(backend.expire_due(secs(10_000)).await.expect("expire due"), 0, "nothing left to expire");
}

/// Rounds alternate paying a millisecond early (either may win) and exactly at the deadline
/// (pay must lose, but either call may be the one that ends the hold).
pub async fn pay_racing_expiry_has_one_winner(h: &mut impl Harness) {
    let backend = h.backend().await;
    let alice = user("alice");
    for round in 0..100 {
        let sale_id = open_sale(&*backend, 1, 1).await;
        let order = buy(&*backend, &sale_id, &alice, 1, secs(1)).await;
        let early = round % 2 == 0;
        let pay_at = if early { order.expires_at.plus_millis(-1) } else { order.expires_at };
        let (paid, expired) = race_pay_and_expiry(&backend, &order, pay_at).await;
        let status = backend.order(&order.id, &alice).await.expect("get order").status;
        match paid {
            Ok(view) => {
                assert!(early, "round {round}: pay at the deadline must not succeed");
                assert_eq!((view.status, status, expired), (OrderStatus::Paid, OrderStatus::Paid, 0), "round {round}");
                assert_units(&*backend, &sale_id, 0, 0, 1).await;
            }
            Err(EngineError::Sale(SaleError::HoldExpired)) => {
                assert_eq!(status, OrderStatus::Expired, "round {round}");
                assert!(expired == 1 || !early, "round {round}: an early pay loses only to expire_due");
                let ledger = assert_units(&*backend, &sale_id, 1, 0, 0).await;
                assert_eq!(ledger.expired, 1, "round {round}");
            }
            Err(error) => panic!("round {round}: unexpected error {error:?}"),
        }
    }
}

async fn race_pay_and_expiry(
    backend: &Arc<dyn Backend>,
    order: &OrderView,
    pay_at: Timestamp,
) -> (Result<OrderView, EngineError>, usize) {
    let barrier = Arc::new(Barrier::new(2));
    let pay = {
        let (backend, barrier, id, who) = (backend.clone(), barrier.clone(), order.id.clone(), user(&order.user_id));
        tokio::spawn(async move {
            barrier.wait().await;
            backend.pay(&id, &who, Some("psp-race".to_owned()), pay_at).await
        })
    };
    let expire = {
        let (backend, barrier, deadline) = (backend.clone(), barrier.clone(), order.expires_at);
        tokio::spawn(async move {
            barrier.wait().await;
            backend.expire_due(deadline).await
        })
    };
    let paid = pay.await.expect("pay task panicked");
    let expired = expire.await.expect("expiry task panicked").expect("expire due");
    (paid, expired)
}
