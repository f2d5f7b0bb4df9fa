//! Live auctions: proxy bidding, closing, buy-now, the winner's order, idempotency, races and
//! restarts, and the change feed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use stampede_core::{
    AuctionError, AuctionStatus, BidStatus, IdempotencyKey, Ladder, OrderStatus, SaleStatus, Timestamp, UserId,
};
use tokio::sync::broadcast;

use super::{all_at_once, buy, open_sale, secs, user, Harness, T0};
use crate::backend::{AuctionView, Backend, BidCommand, BidResult, EngineError, NewAuction};
use crate::changes::Change;

const START: i64 = 1_000;
const PAYMENT_SECONDS: u32 = 3_600;

pub(super) fn auction_spec() -> NewAuction {
    NewAuction {
        title: "conformance lot".to_owned(),
        seller_id: "seller".to_owned(),
        starting_price_cents: START,
        reserve_price_cents: None,
        buy_now_price_cents: None,
        starts_at: None,
        ends_at: secs(600),
        soft_close_seconds: 60,
        extend_seconds: 60,
        max_extensions: Some(2),
        ladder: Ladder::standard(),
        payment_seconds: PAYMENT_SECONDS,
    }
}

async fn open_auction(backend: &dyn Backend, spec: NewAuction) -> AuctionView {
    backend.create_auction(spec, T0).await.expect("create auction")
}

fn bid_command(auction_id: &str, who: &UserId, max: i64, key: Option<&str>) -> BidCommand {
    BidCommand {
        auction_id: auction_id.to_owned(),
        user: who.clone(),
        max_amount_cents: max,
        idempotency_key: key.map(|k| IdempotencyKey::new(k).expect("valid key")),
    }
}

/// A bid that must be accepted.
pub(super) async fn bid(backend: &dyn Backend, auction_id: &str, who: &UserId, max: i64, now: Timestamp) -> BidResult {
    let result = backend.bid(bid_command(auction_id, who, max, None), now).await;
    let result = result.unwrap_or_else(|error| panic!("bid of {max} by {who} failed: {error:?}"));
    assert!(result.created, "a bid without a key is a new bid");
    result
}

#[track_caller]
fn assert_auction_error<T: std::fmt::Debug>(result: Result<T, EngineError>, expected: AuctionError) {
    match result {
        Err(EngineError::Auction(error)) if error == expected => {}
        other => panic!("expected Auction({expected:?}), got {other:?}"),
    }
}

/// The increment of the standard ladder at `price`.
fn step(price: i64) -> i64 {
    Ladder::standard().increment_at(price)
}

pub async fn create_and_get_auction(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut spec = auction_spec();
    spec.reserve_price_cents = Some(5_000);
    spec.buy_now_price_cents = Some(9_000);
    let created = open_auction(&*backend, spec).await;
    assert!(!created.id.is_empty());
    assert_eq!((created.title.as_str(), created.seller_id.as_str()), ("conformance lot", "seller"));
    assert_eq!(created.status, AuctionStatus::Live);
    assert_eq!((created.current_price_cents, created.min_next_bid_cents), (START, START));
    assert_eq!((created.leader_id.as_deref(), created.bid_count), (None, 0));
    assert_eq!((created.starts_at, created.ends_at, created.extensions), (T0, secs(600), 0));
    assert_eq!((created.reserve_met, created.has_reserve), (false, true));
    assert_eq!(created.buy_now_price_cents, Some(9_000));
    assert_eq!((created.winner_id.as_deref(), created.order_id.as_deref()), (None, None));
    let fetched = backend.auction(&created.id, T0).await.expect("get auction");
    assert_eq!(fetched, created);
    assert_eq!(backend.auction(&created.id, secs(600)).await.expect("get auction").status, AuctionStatus::Ended);
    let other = open_auction(&*backend, auction_spec()).await;
    assert_ne!(other.id, created.id);
}

pub async fn unknown_auction_is_not_found(h: &mut impl Harness) {
    let backend = h.backend().await;
    let alice = user("alice");
    for id in ["a_doesnotexist0000", "", "x", "a_{x}", "🦀"] {
        assert!(matches!(backend.auction(id, T0).await, Err(EngineError::AuctionNotFound)), "{id}");
        let bid = backend.bid(bid_command(id, &alice, START, None), T0).await;
        assert!(matches!(bid, Err(EngineError::AuctionNotFound)), "{id}: {bid:?}");
        assert!(matches!(backend.buy_now(id, &alice, T0).await, Err(EngineError::AuctionNotFound)), "{id}");
    }
}

pub async fn proxy_bidding_charges_one_increment_over_the_runner_up(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));

    let first = bid(&*backend, &id, &alice, 5_000, secs(1)).await;
    assert_eq!(
        (first.status, first.current_price_cents, first.leader_id.as_str()),
        (BidStatus::Leading, START, "alice")
    );
    let second = bid(&*backend, &id, &bob, 2_000, secs(2)).await;
    assert_eq!((second.status, second.current_price_cents), (BidStatus::Outbid, 2_000 + step(2_000)));
    assert_eq!(second.leader_id, "alice");
    let third = bid(&*backend, &id, &carol, 8_000, secs(3)).await;
    assert_eq!((third.status, third.current_price_cents), (BidStatus::Leading, 5_000 + step(5_000)));

    let view = backend.auction(&id, secs(4)).await.expect("get auction");
    assert_eq!((view.leader_id.as_deref(), view.bid_count), (Some("carol"), 3));
    assert_eq!(view.current_price_cents, 5_000 + step(5_000));
    assert_eq!(view.min_next_bid_cents, view.current_price_cents + step(view.current_price_cents));
    assert!(third.id != first.id && third.id != second.id);
}

pub async fn equal_maxima_go_to_the_earlier_bid(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    bid(&*backend, &id, &user("alice"), 3_000, secs(1)).await;
    let tie = bid(&*backend, &id, &user("bob"), 3_000, secs(2)).await;
    assert_eq!((tie.status, tie.current_price_cents, tie.leader_id.as_str()), (BidStatus::Outbid, 3_000, "alice"));
}

pub async fn a_leader_raising_their_maximum_keeps_the_price(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let alice = user("alice");
    bid(&*backend, &id, &alice, 2_000, secs(1)).await;
    bid(&*backend, &id, &user("bob"), 1_500, secs(2)).await;
    let price = 1_500 + step(1_500);
    let raised = bid(&*backend, &id, &alice, 9_000, secs(3)).await;
    assert_eq!((raised.status, raised.current_price_cents), (BidStatus::Leading, price));
    let lower = backend.bid(bid_command(&id, &alice, 8_000, None), secs(4)).await;
    assert_auction_error(lower, AuctionError::BidTooLow { minimum_cents: 9_001 });
}

pub async fn bids_below_the_minimum_are_too_low(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let bob = user("bob");
    let low = backend.bid(bid_command(&id, &bob, START - 1, None), secs(1)).await;
    assert_auction_error(low, AuctionError::BidTooLow { minimum_cents: START });
    bid(&*backend, &id, &user("alice"), 1_200, secs(2)).await;
    let minimum = START + step(START);
    let low = backend.bid(bid_command(&id, &bob, minimum - 1, None), secs(3)).await;
    assert_auction_error(low, AuctionError::BidTooLow { minimum_cents: minimum });
    let at_minimum = bid(&*backend, &id, &bob, minimum, secs(4)).await;
    assert_eq!(
        (at_minimum.status, at_minimum.current_price_cents),
        (BidStatus::Outbid, 1_200.min(minimum + step(minimum)))
    );
}

pub async fn the_seller_may_not_bid(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut spec = auction_spec();
    spec.buy_now_price_cents = Some(5_000);
    let id = open_auction(&*backend, spec).await.id;
    let seller = user("seller");
    assert_auction_error(
        backend.bid(bid_command(&id, &seller, 5_000, None), secs(1)).await,
        AuctionError::SellerMayNotBid,
    );
    assert_auction_error(backend.buy_now(&id, &seller, secs(1)).await, AuctionError::SellerMayNotBid);
}

pub async fn soft_close_extends_up_to_the_cap(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    bid(&*backend, &id, &user("early"), 1_100, secs(100)).await;
    assert_eq!(
        backend.auction(&id, secs(100)).await.expect("get").ends_at,
        secs(600),
        "no extension outside the window"
    );
    bid(&*backend, &id, &user("late1"), 2_000, secs(590)).await;
    let view = backend.auction(&id, secs(590)).await.expect("get");
    assert_eq!((view.ends_at, view.extensions), (secs(650), 1));
    bid(&*backend, &id, &user("late2"), 3_000, secs(649)).await;
    assert_eq!(backend.auction(&id, secs(649)).await.expect("get").ends_at, secs(709));
    bid(&*backend, &id, &user("late3"), 4_000, secs(700)).await;
    let capped = backend.auction(&id, secs(700)).await.expect("get");
    assert_eq!((capped.ends_at, capped.extensions), (secs(709), 2), "the cap of 2 extensions holds");
    let late = backend.bid(bid_command(&id, &user("late4"), 9_000, None), secs(709)).await;
    assert_auction_error(late, AuctionError::NotLive);
}

pub async fn hard_close_refuses_the_bid_at_the_end(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut spec = auction_spec();
    spec.soft_close_seconds = 0;
    let id = open_auction(&*backend, spec).await.id;
    let last = bid(&*backend, &id, &user("alice"), 2_000, Timestamp(secs(600).0 - 1)).await;
    assert_eq!(last.status, BidStatus::Leading);
    assert_eq!(backend.auction(&id, secs(599)).await.expect("get").ends_at, secs(600));
    let late = backend.bid(bid_command(&id, &user("bob"), 5_000, None), secs(600)).await;
    assert_auction_error(late, AuctionError::NotLive);
}

pub async fn pre_bids_count_from_the_start(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut spec = auction_spec();
    spec.starts_at = Some(secs(100));
    let id = open_auction(&*backend, spec).await.id;
    assert_eq!(backend.auction(&id, T0).await.expect("get").status, AuctionStatus::Scheduled);
    bid(&*backend, &id, &user("alice"), 3_000, secs(10)).await;
    let second = bid(&*backend, &id, &user("bob"), 2_000, secs(20)).await;
    assert_eq!((second.leader_id.as_str(), second.current_price_cents), ("alice", 2_000 + step(2_000)));
    let live = backend.auction(&id, secs(100)).await.expect("get");
    assert_eq!((live.status, live.bid_count, live.ends_at), (AuctionStatus::Live, 2, secs(600)));
}

pub async fn closing_gives_the_winner_a_hold_to_pay(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let (alice, bob) = (user("alice"), user("bob"));
    bid(&*backend, &id, &alice, 4_000, secs(1)).await;
    bid(&*backend, &id, &bob, 3_000, secs(2)).await;
    let price = 3_000 + step(3_000);
    assert_eq!(backend.close_due_auctions(secs(599)).await.expect("close"), 0, "not due yet");
    assert_eq!(backend.close_due_auctions(secs(605)).await.expect("close"), 1);
    assert_eq!(backend.close_due_auctions(secs(606)).await.expect("close"), 0, "each auction closes once");

    let ended = backend.auction(&id, secs(606)).await.expect("get");
    assert_eq!((ended.status, ended.winner_id.as_deref()), (AuctionStatus::Ended, Some("alice")));
    assert_eq!((ended.current_price_cents, ended.ends_at), (price, secs(600)));
    let order_id = ended.order_id.expect("the winner's order");
    let order = backend.order(&order_id, &alice).await.expect("winner's order");
    assert_eq!((order.status, order.quantity), (OrderStatus::Held, 1));
    assert_eq!(order.expires_at, secs(605).plus_seconds(PAYMENT_SECONDS));
    assert!(backend.order(&order_id, &bob).await.is_err(), "only the winner sees the order");
    let lot = backend.sale(&order.sale_id, secs(606)).await.expect("the lot's sale");
    assert_eq!((lot.price_cents, lot.stock, lot.held, lot.available), (price, 1, 1, 0));
    let paid = backend.pay(&order_id, &alice, Some("pay-1".to_owned()), secs(700)).await.expect("pay");
    assert_eq!(paid.status, OrderStatus::Paid);
    assert_auction_error(backend.bid(bid_command(&id, &bob, 9_000, None), secs(606)).await, AuctionError::NotLive);
}

pub async fn an_unpaid_win_is_not_for_sale_to_others(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let alice = user("alice");
    bid(&*backend, &id, &alice, 4_000, secs(1)).await;
    backend.close_due_auctions(secs(600)).await.expect("close");
    let order_id = backend.auction(&id, secs(600)).await.expect("get").order_id.expect("order");
    let lot_id = backend.order(&order_id, &alice).await.expect("order").sale_id;
    let after_hold = secs(600).plus_seconds(PAYMENT_SECONDS + 1);
    backend.expire_due(after_hold).await.expect("expire");
    let order = backend.order(&order_id, &alice).await.expect("order");
    assert_eq!(order.status, OrderStatus::Expired);
    let lot = backend.sale(&lot_id, after_hold).await.expect("lot");
    assert_eq!((lot.status, lot.available), (SaleStatus::Ended, 1));
    let grab = backend.purchase(super::command(&lot_id, &user("mallory"), 1, None), after_hold).await;
    assert!(grab.is_err(), "the lot is not sold to someone else: {grab:?}");
}

pub async fn no_winner_below_the_reserve(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut spec = auction_spec();
    spec.reserve_price_cents = Some(5_000);
    let id = open_auction(&*backend, spec).await.id;
    let under = bid(&*backend, &id, &user("alice"), 4_000, secs(1)).await;
    assert_eq!(under.current_price_cents, START);
    assert!(!backend.auction(&id, secs(1)).await.expect("get").reserve_met);
    assert_eq!(backend.close_due_auctions(secs(600)).await.expect("close"), 1);
    let ended = backend.auction(&id, secs(600)).await.expect("get");
    assert_eq!((ended.status, ended.winner_id, ended.order_id), (AuctionStatus::Ended, None, None));

    let id = open_auction(&*backend, {
        let mut spec = auction_spec();
        spec.reserve_price_cents = Some(5_000);
        spec
    })
    .await
    .id;
    let met = bid(&*backend, &id, &user("bob"), 6_000, secs(1)).await;
    assert_eq!(met.current_price_cents, 5_000, "meeting the reserve raises the price to it");
    assert!(backend.auction(&id, secs(1)).await.expect("get").reserve_met);
}

pub async fn buy_now_ends_the_auction_at_once(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut spec = auction_spec();
    spec.buy_now_price_cents = Some(7_500);
    let id = open_auction(&*backend, spec.clone()).await.id;
    let bob = user("bob");
    let bought = backend.buy_now(&id, &bob, secs(5)).await.expect("buy now");
    assert_eq!((bought.status, bought.winner_id.as_deref()), (AuctionStatus::Ended, Some("bob")));
    assert_eq!((bought.current_price_cents, bought.buy_now_price_cents), (7_500, None));
    let order = backend.order(&bought.order_id.expect("order"), &bob).await.expect("order");
    assert_eq!(order.status, OrderStatus::Held);
    assert_eq!(backend.sale(&order.sale_id, secs(5)).await.expect("lot").price_cents, 7_500);
    assert_auction_error(backend.buy_now(&id, &user("carol"), secs(6)).await, AuctionError::NotLive);
    assert_auction_error(
        backend.bid(bid_command(&id, &user("carol"), 9_000, None), secs(6)).await,
        AuctionError::NotLive,
    );
    assert_eq!(backend.close_due_auctions(secs(700)).await.expect("close"), 0, "already ended");

    let id = open_auction(&*backend, spec).await.id;
    bid(&*backend, &id, &user("alice"), 2_000, secs(1)).await;
    assert_eq!(backend.auction(&id, secs(1)).await.expect("get").buy_now_price_cents, None);
    assert_auction_error(backend.buy_now(&id, &bob, secs(2)).await, AuctionError::BuyNowUnavailable);
}

pub async fn repeated_bid_keys_replay_the_bid(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = backend.bid(bid_command(&id, &alice, 3_000, Some("k1")), secs(1)).await.expect("bid");
    assert!(first.created);
    bid(&*backend, &id, &bob, 5_000, secs(2)).await;
    let again = backend.bid(bid_command(&id, &alice, 3_000, Some("k1")), secs(3)).await.expect("replay");
    assert!(!again.created);
    assert_eq!(
        (again.id, again.status, again.current_price_cents),
        (first.id, first.status, first.current_price_cents)
    );
    let reused = backend.bid(bid_command(&id, &alice, 4_000, Some("k1")), secs(4)).await;
    assert_auction_error(reused, AuctionError::KeyReused);
    let others = backend.bid(bid_command(&id, &bob, 9_000, Some("k1")), secs(5)).await.expect("bob's own key");
    assert!(others.created, "keys are per user");
    assert_eq!(backend.auction(&id, secs(6)).await.expect("get").bid_count, 3);
}

pub async fn concurrent_replays_make_one_bid(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    let alice = user("alice");
    let commands = (0..16).map(|_| bid_command(&id, &alice, 4_000, Some("same"))).collect();
    let results = race(&backend, commands, secs(1)).await;
    let ids: HashSet<String> = results.iter().map(|(_, r)| r.as_ref().expect("bid").id.clone()).collect();
    assert_eq!(ids.len(), 1, "one bid for one key");
    assert_eq!(results.iter().filter(|(_, r)| r.as_ref().is_ok_and(|b| b.created)).count(), 1);
    assert_eq!(backend.auction(&id, secs(2)).await.expect("get").bid_count, 1);
}

pub async fn racing_bidders_leave_a_consistent_auction(h: &mut impl Harness) {
    let backend = h.backend().await;
    let id = open_auction(&*backend, auction_spec()).await.id;
    // Distinct maxima, so the leader and price follow from the accepted set alone.
    let commands = (0..40).map(|i| bid_command(&id, &user(&format!("bidder{i}")), 1_000 + i * 137, None)).collect();
    let results = race(&backend, commands, secs(1)).await;
    let mut accepted: Vec<i64> =
        results.iter().filter(|(_, r)| r.is_ok()).map(|(command, _)| command.max_amount_cents).collect();
    for (command, result) in &results {
        if let Err(error) = result {
            assert!(
                matches!(error, EngineError::Auction(AuctionError::BidTooLow { .. })),
                "{} got {error:?}",
                command.user
            );
        }
    }
    accepted.sort_unstable();
    let view = backend.auction(&id, secs(2)).await.expect("get");
    assert_eq!(view.bid_count as usize, accepted.len());
    let (top, runner_up) = (accepted[accepted.len() - 1], accepted.get(accepted.len().wrapping_sub(2)).copied());
    let winner = results.iter().find(|(c, r)| r.is_ok() && c.max_amount_cents == top).expect("top bid").0.user.clone();
    assert_eq!(view.leader_id.as_deref(), Some(winner.as_str()));
    let expected = runner_up.map_or(START, |second| top.min(second + step(second)));
    assert_eq!(view.current_price_cents, expected);
}

pub async fn restart_keeps_auctions_and_wins(h: &mut impl Harness) {
    let backend = h.backend().await;
    let open = open_auction(&*backend, auction_spec()).await.id;
    let won = open_auction(&*backend, auction_spec()).await.id;
    let (alice, bob) = (user("alice"), user("bob"));
    bid(&*backend, &open, &alice, 3_000, secs(1)).await;
    backend.bid(bid_command(&open, &bob, 2_500, Some("kb")), secs(590)).await.expect("bid");
    bid(&*backend, &won, &bob, 2_000, secs(1)).await;
    backend.close_due_auctions(secs(600)).await.expect("close");
    let before_open = backend.auction(&open, secs(591)).await.expect("get");
    let before_won = backend.auction(&won, secs(601)).await.expect("get");
    drop(backend);

    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(backend.auction(&open, secs(591)).await.expect("get"), before_open);
    assert_eq!(backend.auction(&won, secs(601)).await.expect("get"), before_won);
    let order = backend.order(before_won.order_id.as_deref().expect("order"), &bob).await.expect("order");
    assert_eq!(order.status, OrderStatus::Held);
    let replay = backend.bid(bid_command(&open, &bob, 2_500, Some("kb")), secs(592)).await.expect("replay");
    assert!(!replay.created, "the key survives the restart");
    let next = bid(&*backend, &open, &user("carol"), 9_000, secs(593)).await;
    assert_eq!(next.current_price_cents, 3_000 + step(3_000));
}

pub async fn changes_announce_sales_orders_and_auctions(h: &mut impl Harness) {
    let backend = h.backend().await;
    let mut changes = backend.changes();
    let sale_id = open_sale(&*backend, 3, 1).await;
    let alice = user("alice");
    let order = buy(&*backend, &sale_id, &alice, 1, T0).await;
    expect_change(&mut changes, |c| matches!(c, Change::Sale { sale_id: s } if **s == *sale_id)).await;
    expect_change(
        &mut changes,
        |c| matches!(c, Change::Order { user, order_id } if *user == alice && *order_id == order.id),
    )
    .await;

    let id = open_auction(&*backend, auction_spec()).await.id;
    bid(&*backend, &id, &alice, 2_000, secs(1)).await;
    expect_change(&mut changes, |c| matches!(c, Change::Auction { auction_id } if **auction_id == *id)).await;
    bid(&*backend, &id, &user("bob"), 5_000, secs(2)).await;
    expect_change(
        &mut changes,
        |c| matches!(c, Change::Outbid { user, auction_id } if *user == alice && **auction_id == *id),
    )
    .await;
    backend.close_due_auctions(secs(600)).await.expect("close");
    expect_change(
        &mut changes,
        |c| matches!(c, Change::AuctionWon { user, auction_id, .. } if user.as_str() == "bob" && **auction_id == *id),
    )
    .await;
}

/// Waits (bounded) for a change matching `wanted`; other changes are skipped. Scale-out changes
/// travel through Redis, so they may arrive a moment after the call returned.
async fn expect_change(changes: &mut broadcast::Receiver<Change>, wanted: impl Fn(&Change) -> bool) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match changes.recv().await {
                Ok(change) if wanted(&change) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the change feed closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the expected change did not arrive");
}

/// Sends every bid at once, each from its own task.
async fn race(
    backend: &Arc<dyn Backend>,
    commands: Vec<BidCommand>,
    now: Timestamp,
) -> Vec<(BidCommand, Result<BidResult, EngineError>)> {
    all_at_once(backend, commands, move |backend, command| async move { backend.bid(command, now).await }).await
}
