//! Stampedes: many concurrent requests on one sale never sell more than its stock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use stampede_core::{OrderStatus, SaleError, Timestamp, UserId};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::{assert_units, buy, command, open_sale, secs, stampede, user, Harness};
use crate::backend::{Backend, EngineError, OrderView, PurchaseResult};

pub async fn herd_of_buyers_never_oversells(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 100, 1).await;
    let commands = (0..400).map(|i| command(&sale_id, &user(&format!("buyer-{i}")), 1, None)).collect();

    let mut order_ids = HashSet::new();
    for (command, result) in stampede(&backend, commands, secs(1)).await {
        match result {
            Ok(purchase) => {
                assert!(purchase.created);
                assert_eq!((purchase.order.user_id.as_str(), purchase.order.quantity), (command.user.as_str(), 1));
                assert!(order_ids.insert(purchase.order.id), "order ids are unique");
            }
            Err(error) => assert!(matches!(error, EngineError::Sale(SaleError::SoldOut)), "{error:?}"),
        }
    }
    assert_eq!(order_ids.len(), 100, "exactly the stock is held");
    assert_units(&*backend, &sale_id, 0, 100, 0).await;
}

pub async fn herd_with_repeat_buyers_respects_limits(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 100, 3).await;
    // 100 buyers ask 4 times each for 2 units: a limit of 3 lets each hold at most one order.
    let commands = (0..400).map(|i| command(&sale_id, &user(&format!("buyer-{}", i % 100)), 2, None)).collect();

    let mut won: HashMap<UserId, Vec<OrderView>> = HashMap::new();
    let mut limited = Vec::new();
    for (command, result) in stampede(&backend, commands, secs(1)).await {
        match result {
            Ok(purchase) => won.entry(command.user).or_default().push(purchase.order),
            Err(EngineError::Sale(SaleError::LimitReached)) => limited.push(command.user),
            Err(error) => assert!(matches!(error, EngineError::Sale(SaleError::SoldOut)), "{error:?}"),
        }
    }
    assert!(won.values().all(|orders| orders.len() == 1), "one order of 2 per buyer under a limit of 3");
    assert_eq!(won.len(), 50, "exactly the stock is held");
    assert!(limited.iter().all(|who| won.contains_key(who)), "only holders hit the limit");
    for (who, orders) in &won {
        assert_eq!(&backend.orders_of(who).await.expect("orders of buyer"), orders);
    }
    assert_units(&*backend, &sale_id, 0, 100, 0).await;
}

/// What one racing task did.
enum Move {
    Buy(Result<PurchaseResult, EngineError>),
    Cancel(usize, Result<OrderView, EngineError>),
    Pay(usize, Result<OrderView, EngineError>),
    Expire(Result<usize, EngineError>),
}

/// Holders cancel and pay while the expiry job ends their holds and newcomers buy what comes
/// back: every hold ends exactly once and the newcomers get at most the released units.
pub async fn herd_racing_cancellations_keeps_the_ledger(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 20, 1).await;
    let mut holds = Vec::new();
    for i in 0..20 {
        holds.push(buy(&*backend, &sale_id, &user(&format!("holder-{i}")), 1, secs(1)).await);
    }
    let deadline = holds[0].expires_at;
    let moves = race_holders(&backend, &sale_id, &holds, deadline).await;

    let (mut bought, mut paid, mut cancelled, mut expired) = (0, 0, 0, 0);
    for step in moves {
        match step {
            Move::Buy(Ok(_)) => bought += 1,
            Move::Buy(Err(error)) => assert!(matches!(error, EngineError::Sale(SaleError::SoldOut)), "{error:?}"),
            Move::Cancel(i, result) => {
                cancelled += ended_as(&*backend, &holds[i], result, OrderStatus::Cancelled).await
            }
            Move::Pay(i, result) => paid += ended_as(&*backend, &holds[i], result, OrderStatus::Paid).await,
            Move::Expire(result) => expired += result.expect("expire due") as i64,
        }
    }
    assert_eq!(cancelled + paid + expired, 20, "every hold ended exactly once");
    let ledger = assert_units(&*backend, &sale_id, 20 - bought - paid, bought, paid).await;
    assert_eq!((ledger.cancelled, ledger.expired), (cancelled, expired));
    assert_eq!(ledger.orders, 20 + bought);
}

/// Checks a racing pay or cancel against the order's final state; 1 when the call won.
async fn ended_as(
    backend: &dyn Backend,
    hold: &OrderView,
    result: Result<OrderView, EngineError>,
    won: OrderStatus,
) -> i64 {
    let who = user(&hold.user_id);
    let status = backend.order(&hold.id, &who).await.expect("get order").status;
    match result {
        Ok(view) => {
            assert_eq!((view.status, status), (won, won), "the winning call's state is final");
            1
        }
        Err(EngineError::Sale(SaleError::HoldExpired)) => {
            assert_eq!(status, OrderStatus::Expired, "a call that lost to expiry sees the hold expired");
            0
        }
        Err(error) => panic!("unexpected error racing expiry: {error:?}"),
    }
}

/// Holders 0..10 cancel and 10..20 pay a moment before their deadline, while `expire_due`
/// runs at the deadline and 200 newcomers buy.
async fn race_holders(
    backend: &Arc<dyn Backend>,
    sale_id: &str,
    holds: &[OrderView],
    deadline: Timestamp,
) -> Vec<Move> {
    let before = deadline.plus_millis(-1);
    let barrier = Arc::new(Barrier::new(holds.len() + 4 + 200));
    let mut tasks: Vec<JoinHandle<Move>> = Vec::new();
    for (i, hold) in holds.iter().enumerate() {
        let (backend, barrier, id, who) = (backend.clone(), barrier.clone(), hold.id.clone(), user(&hold.user_id));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if i < 10 {
                Move::Cancel(i, backend.cancel(&id, &who, before).await)
            } else {
                Move::Pay(i, backend.pay(&id, &who, Some(format!("psp-{i}")), before).await)
            }
        }));
    }
    for _ in 0..4 {
        let (backend, barrier) = (backend.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            Move::Expire(backend.expire_due(deadline).await)
        }));
    }
    for i in 0..200 {
        let (backend, barrier) = (backend.clone(), barrier.clone());
        let command = command(sale_id, &user(&format!("newcomer-{i}")), 1, None);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            Move::Buy(backend.purchase(command, deadline).await)
        }));
    }
    let mut moves = Vec::with_capacity(tasks.len());
    for task in tasks {
        moves.push(task.await.expect("racing task panicked"));
    }
    moves
}
