//! The backend conformance suite: one set of behavioural cases every [`Backend`] must pass,
//! instantiated per backend with [`backend_conformance!`](crate::backend_conformance).
//!
//! Cases talk to the backend only through the trait and pass `now` explicitly, so expiry and
//! sale windows are driven without sleeping. Each case gets a fresh backend from the factory;
//! [`Harness::restart`] stands in for a process restart on the same durable storage.
//!
//! Contract details the cases pin down beyond the trait's doc comments: sale and order ids are
//! opaque (never parsed here); `Ledger::cancelled` and `Ledger::expired` count units, and
//! `Ledger::orders` counts orders of every status.

mod auctions;
mod durability;
mod expiry;
mod herd;
mod idempotency;
mod ledger;
mod listing;
mod orders;
mod purchase;
mod sales;
mod users;
mod waitlist;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use stampede_core::{IdempotencyKey, Quantity, SaleError, Timestamp, UserId};
use tokio::sync::Barrier;

pub use self::auctions::{
    a_leader_raising_their_maximum_keeps_the_price, an_unpaid_win_is_not_for_sale_to_others,
    bids_below_the_minimum_are_too_low, buy_now_ends_the_auction_at_once, changes_announce_sales_orders_and_auctions,
    closing_gives_the_winner_a_hold_to_pay, concurrent_replays_make_one_bid, create_and_get_auction,
    equal_maxima_go_to_the_earlier_bid, hard_close_refuses_the_bid_at_the_end, no_winner_below_the_reserve,
    pre_bids_count_from_the_start, proxy_bidding_charges_one_increment_over_the_runner_up,
    racing_bidders_leave_a_consistent_auction, repeated_bid_keys_replay_the_bid, restart_keeps_auctions_and_wins,
    soft_close_extends_up_to_the_cap, the_seller_may_not_bid, unknown_auction_is_not_found,
};
pub use self::durability::{
    calls_after_shutdown_fail_without_hanging, holds_due_while_down_expire_after_restart,
    restart_keeps_acknowledged_state, unusual_strings_survive_restart,
};
pub use self::expiry::{
    expire_due_waits_for_the_deadline, pay_at_the_deadline_expires_the_hold, pay_just_before_the_deadline_wins,
    pay_racing_expiry_has_one_winner,
};
pub use self::herd::{
    herd_of_buyers_never_oversells, herd_racing_cancellations_keeps_the_ledger, herd_with_repeat_buyers_respects_limits,
};
pub use self::idempotency::{
    concurrent_replays_make_one_order, idempotency_keys_are_per_user, replay_after_restart_returns_the_same_order,
};
pub use self::ledger::ledger_tracks_a_mix_of_operations;
pub use self::listing::{
    auctions_are_listed_newest_first_and_lots_are_not_sales, operators_find_any_order, sales_are_listed_newest_first,
};
pub use self::orders::{
    cancel_returns_units, malformed_order_ids_are_not_found, orders_of_lists_own_orders_newest_first,
    other_users_orders_are_not_found, paid_orders_cannot_be_cancelled, pay_is_idempotent,
};
pub use self::purchase::{
    per_user_limit_counts_held_and_paid, purchase_beyond_stock_is_sold_out, purchase_holds_units,
    purchase_only_inside_the_sale_window, quantity_above_the_limit_is_invalid,
};
pub use self::sales::{
    create_and_get_sale, sale_defenses_are_kept, sale_starts_at_creation_by_default, sale_status_follows_the_clock,
    unknown_sale_is_not_found,
};
pub use self::users::users_are_unique_by_username;
pub use self::waitlist::{
    expired_units_go_to_the_waitlist, released_units_go_to_the_waitlist_in_order, waitlist_only_when_sold_out,
};
use crate::backend::{Backend, EngineError, Ledger, LedgerCounts, NewSale, OrderView, PurchaseCommand, PurchaseResult};

/// What a backend needs to provide to run the suite. The futures need not be `Send`: cases run
/// on the test's own task, and opening a backend often is not provably `Send` in generic code.
pub trait Harness {
    /// The backend under test; a fresh one after each [`Harness::restart`].
    fn backend(&self) -> impl Future<Output = Arc<dyn Backend>>;
    /// Shuts the backend down and opens it again on the same durable storage, as a restart of
    /// the process would.
    fn restart(&mut self) -> impl Future<Output = ()>;
}

/// Instantiates every conformance case as a `#[tokio::test]` for one backend.
///
/// `$make` is called with no arguments and must return a future of a fresh
/// [`Harness`](crate::conformance::Harness), e.g. `backend_conformance!(MyHarness::start);`.
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! backend_conformance {
    ($make:expr) => {
        $crate::backend_conformance!(@cases $make;
            create_and_get_sale,
            sale_defenses_are_kept,
            sale_starts_at_creation_by_default,
            unknown_sale_is_not_found,
            sale_status_follows_the_clock,
            purchase_holds_units,
            purchase_beyond_stock_is_sold_out,
            per_user_limit_counts_held_and_paid,
            quantity_above_the_limit_is_invalid,
            purchase_only_inside_the_sale_window,
            herd_of_buyers_never_oversells,
            herd_with_repeat_buyers_respects_limits,
            herd_racing_cancellations_keeps_the_ledger,
            concurrent_replays_make_one_order,
            idempotency_keys_are_per_user,
            replay_after_restart_returns_the_same_order,
            pay_is_idempotent,
            cancel_returns_units,
            paid_orders_cannot_be_cancelled,
            other_users_orders_are_not_found,
            malformed_order_ids_are_not_found,
            orders_of_lists_own_orders_newest_first,
            expire_due_waits_for_the_deadline,
            pay_just_before_the_deadline_wins,
            pay_at_the_deadline_expires_the_hold,
            pay_racing_expiry_has_one_winner,
            waitlist_only_when_sold_out,
            released_units_go_to_the_waitlist_in_order,
            expired_units_go_to_the_waitlist,
            users_are_unique_by_username,
            restart_keeps_acknowledged_state,
            holds_due_while_down_expire_after_restart,
            unusual_strings_survive_restart,
            calls_after_shutdown_fail_without_hanging,
            ledger_tracks_a_mix_of_operations,
            create_and_get_auction,
            unknown_auction_is_not_found,
            proxy_bidding_charges_one_increment_over_the_runner_up,
            equal_maxima_go_to_the_earlier_bid,
            a_leader_raising_their_maximum_keeps_the_price,
            bids_below_the_minimum_are_too_low,
            the_seller_may_not_bid,
            soft_close_extends_up_to_the_cap,
            hard_close_refuses_the_bid_at_the_end,
            pre_bids_count_from_the_start,
            closing_gives_the_winner_a_hold_to_pay,
            an_unpaid_win_is_not_for_sale_to_others,
            no_winner_below_the_reserve,
            buy_now_ends_the_auction_at_once,
            repeated_bid_keys_replay_the_bid,
            concurrent_replays_make_one_bid,
            racing_bidders_leave_a_consistent_auction,
            restart_keeps_auctions_and_wins,
            changes_announce_sales_orders_and_auctions,
            sales_are_listed_newest_first,
            auctions_are_listed_newest_first_and_lots_are_not_sales,
            operators_find_any_order,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            // Multi-threaded so the herd cases race for real.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let mut harness = ($make)().await;
                $crate::conformance::$case(&mut harness).await;
            }
        )*
    };
}

/// An arbitrary fixed start of time, far from the real clock so nothing depends on it.
const T0: Timestamp = Timestamp(1_800_000_000_000);
const HOLD_SECONDS: u32 = 120;

fn secs(seconds: u32) -> Timestamp {
    T0.plus_seconds(seconds)
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid user id")
}

fn units(n: u32) -> Quantity {
    Quantity::new(i64::from(n)).expect("valid quantity")
}

fn spec(stock: u32, per_user_limit: u32) -> NewSale {
    NewSale {
        name: "conformance sneakers".to_owned(),
        stock,
        price_cents: 12_900,
        starts_at: None,
        ends_at: None,
        per_user_limit,
        hold_seconds: HOLD_SECONDS,
        stock_buckets: 1,
        room: None,
        proof_of_work: false,
    }
}

/// A sale live from `T0`, without an end; returns its id.
async fn open_sale(backend: &dyn Backend, stock: u32, per_user_limit: u32) -> String {
    backend.create_sale(spec(stock, per_user_limit), T0).await.expect("create sale").id
}

fn command(sale_id: &str, who: &UserId, n: u32, key: Option<&str>) -> PurchaseCommand {
    PurchaseCommand {
        sale_id: sale_id.to_owned(),
        user: who.clone(),
        quantity: units(n),
        idempotency_key: key.map(|k| IdempotencyKey::new(k).expect("valid idempotency key")),
    }
}

/// A purchase that must succeed.
async fn buy(backend: &dyn Backend, sale_id: &str, who: &UserId, n: u32, now: Timestamp) -> OrderView {
    let result = backend.purchase(command(sale_id, who, n, None), now).await;
    let purchased = result.unwrap_or_else(|error| panic!("purchase of {n} by {who} failed: {error:?}"));
    assert!(purchased.created, "a purchase without a key must create an order");
    purchased.order
}

#[track_caller]
fn assert_sale_error<T: Debug>(result: Result<T, EngineError>, expected: SaleError) {
    match result {
        Err(EngineError::Sale(error)) if error == expected => {}
        other => panic!("expected Sale({expected:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_sale_not_found<T: Debug>(result: Result<T, EngineError>) {
    assert!(matches!(result, Err(EngineError::SaleNotFound)), "expected SaleNotFound, got {result:?}");
}

/// The ledger, checked for `available + held + sold == stock` in both views and live == store.
async fn balanced_ledger(backend: &dyn Backend, sale_id: &str) -> Ledger {
    let ledger = backend.ledger(sale_id).await.expect("ledger");
    assert!(ledger.consistent(), "ledger inconsistent: {ledger:?}");
    ledger
}

/// Checks the ledger (both views) and the sale view against the expected unit counts.
async fn assert_units(backend: &dyn Backend, sale_id: &str, available: i64, held: i64, sold: i64) -> Ledger {
    let ledger = balanced_ledger(backend, sale_id).await;
    let expected = LedgerCounts { available, held, sold };
    assert_eq!(ledger.live, expected, "ledger of {sale_id}: {ledger:?}");
    let sale = backend.sale(sale_id, T0).await.expect("get sale");
    let seen = (i64::from(sale.available), i64::from(sale.held), i64::from(sale.sold));
    assert_eq!(seen, (available, held, sold), "sale view of {sale_id}: {sale:?}");
    ledger
}

type Attempt = (PurchaseCommand, Result<PurchaseResult, EngineError>);

/// Sends every purchase at once, each from its own task, released together by a barrier.
async fn stampede(backend: &Arc<dyn Backend>, commands: Vec<PurchaseCommand>, now: Timestamp) -> Vec<Attempt> {
    all_at_once(backend, commands, move |backend, command| async move { backend.purchase(command, now).await }).await
}

/// Makes every call at once, each from its own task, released together by a barrier; returns
/// each command with its result, in the order given.
async fn all_at_once<C, R, F, Fut>(backend: &Arc<dyn Backend>, commands: Vec<C>, call: F) -> Vec<(C, R)>
where
    C: Clone + Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<dyn Backend>, C) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = R> + Send,
{
    let barrier = Arc::new(Barrier::new(commands.len()));
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|command| {
            let (backend, barrier, call) = (backend.clone(), barrier.clone(), call.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let result = call(backend, command.clone()).await;
                (command, result)
            })
        })
        .collect();
    let mut attempts = Vec::with_capacity(tasks.len());
    for task in tasks {
        attempts.push(task.await.expect("racing task panicked"));
    }
    attempts
}
