use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::types::*;

const T0: Timestamp = Timestamp(1_800_000_000_000);
const HOLD: u32 = 60;

fn config(stock: u32, per_user_limit: u32) -> SaleConfig {
    SaleConfig {
        name: "sneakers".to_string(),
        stock,
        price_cents: 12_900,
        starts_at: T0,
        ends_at: None,
        per_user_limit,
        hold_seconds: HOLD,
        created_at: T0,
        room: None,
        proof_of_work: false,
    }
}

fn new_sale(stock: u32, per_user_limit: u32) -> Sale {
    Sale::new(config(stock, per_user_limit))
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(text).unwrap()
}

fn units(n: u32) -> Quantity {
    Quantity::new(i64::from(n)).unwrap()
}

fn secs(n: u32) -> Timestamp {
    T0.plus_seconds(n)
}

fn touched(orders: &[OrderSeq], waitlist: &[u32]) -> Touched {
    Touched { orders: orders.to_vec(), waitlist: waitlist.to_vec() }
}

fn buy(sale: &mut Sale, who: &UserId, n: u32, now: Timestamp) -> Result<OrderSeq, SaleError> {
    let outcome = sale.purchase(who, units(n), None, now, &mut Touched::default())?;
    Ok(outcome.seq())
}

fn buy_keyed(sale: &mut Sale, who: &UserId, n: u32, k: &str, now: Timestamp) -> Result<PurchaseOutcome, SaleError> {
    sale.purchase(who, units(n), Some(key(k)), now, &mut Touched::default())
}

fn pay(sale: &mut Sale, seq: OrderSeq, who: &UserId, now: Timestamp) -> (Result<(), SaleError>, Touched) {
    let mut touched = Touched::default();
    let result = sale.pay(seq, who, Some("psp-1".to_string()), now, &mut touched);
    (result, touched)
}

fn cancel(sale: &mut Sale, seq: OrderSeq, who: &UserId, now: Timestamp) -> (Result<(), SaleError>, Touched) {
    let mut touched = Touched::default();
    let result = sale.cancel(seq, who, now, &mut touched);
    (result, touched)
}

fn expire(sale: &mut Sale, now: Timestamp) -> Touched {
    let mut touched = Touched::default();
    sale.expire_due(now, &mut touched);
    touched
}

fn join(sale: &mut Sale, who: &UserId, n: u32, now: Timestamp) -> (Result<u32, SaleError>, Touched) {
    let mut touched = Touched::default();
    let result = sale.join_waitlist(who, units(n), now, &mut touched);
    (result, touched)
}

fn ledger(sale: &Sale) -> [u32; 3] {
    [sale.available(), sale.held(), sale.sold()]
}

fn status(sale: &Sale, seq: OrderSeq) -> OrderStatus {
    sale.order(seq).unwrap().status
}

fn entry_status(sale: &Sale, position: u32) -> WaitlistStatus {
    sale.waitlist_entry(position).unwrap().status
}

fn waitlist_of(sale: &Sale) -> Vec<WaitlistEntry> {
    (0..).map_while(|position| sale.waitlist_entry(position).cloned()).collect()
}

#[test]
fn purchase_creates_a_hold_until_now_plus_hold_seconds() {
    let mut sale = new_sale(10, 2);
    let alice = user("alice");
    let mut changes = Touched::default();

    let outcome = sale.purchase(&alice, units(2), Some(key("k1")), secs(5), &mut changes);

    assert_eq!(outcome, Ok(PurchaseOutcome::Created(0)));
    assert_eq!(changes, touched(&[0], &[]));
    let order = sale.order(0).unwrap();
    assert_eq!(order.user, alice);
    assert_eq!(order.quantity, 2);
    assert_eq!(order.status, OrderStatus::Held);
    assert_eq!(order.created_at, secs(5));
    assert_eq!(order.expires_at, secs(5 + HOLD));
    assert_eq!(order.idempotency_key, Some(key("k1")));
    assert_eq!(ledger(&sale), [8, 2, 0]);
    assert_eq!(sale.units_of(&alice), 2);
    assert_eq!(sale.next_deadline(), Some(secs(5 + HOLD)));
}

#[test]
fn purchase_beyond_available_is_sold_out() {
    let mut sale = new_sale(3, 5);
    buy(&mut sale, &user("alice"), 2, T0).unwrap();
    let mut changes = Touched::default();

    let result = sale.purchase(&user("bob"), units(2), None, T0, &mut changes);

    assert_eq!(result, Err(SaleError::SoldOut));
    assert!(changes.is_empty());
    assert_eq!(ledger(&sale), [1, 2, 0]);
    assert_eq!(buy(&mut sale, &user("bob"), 1, T0), Ok(1));
    assert_eq!(sale.status(T0), SaleStatus::SoldOut);
}

#[test]
fn limit_counts_held_and_paid_units() {
    let mut sale = new_sale(10, 3);
    let alice = user("alice");
    let paid = buy(&mut sale, &alice, 1, T0).unwrap();
    pay(&mut sale, paid, &alice, T0).0.unwrap();
    let held = buy(&mut sale, &alice, 1, T0).unwrap();

    assert_eq!(buy(&mut sale, &alice, 2, T0), Err(SaleError::LimitReached));
    assert_eq!(buy(&mut sale, &alice, 1, T0), Ok(2));
    assert_eq!(buy(&mut sale, &alice, 1, T0), Err(SaleError::LimitReached));

    cancel(&mut sale, held, &alice, T0).0.unwrap();
    assert_eq!(sale.units_of(&alice), 2);
    assert_eq!(buy(&mut sale, &alice, 1, T0), Ok(3));
    assert_eq!(buy(&mut sale, &user("bob"), 3, T0), Ok(4));
}

#[test]
fn quantity_above_the_per_user_limit_is_invalid() {
    let mut sale = new_sale(100, 2);

    assert_eq!(buy(&mut sale, &user("alice"), 3, T0), Err(SaleError::InvalidQuantity));
    assert_eq!(join(&mut sale, &user("alice"), 3, T0).0, Err(SaleError::InvalidQuantity));
    assert_eq!(ledger(&sale), [100, 0, 0]);
}

#[test]
fn purchases_outside_the_window_are_not_live() {
    let mut sale = Sale::new(SaleConfig { starts_at: secs(10), ends_at: Some(secs(20)), ..config(10, 1) });

    assert_eq!(sale.status(secs(9)), SaleStatus::Scheduled);
    assert_eq!(buy(&mut sale, &user("a"), 1, secs(10).plus_millis(-1)), Err(SaleError::NotLive));
    assert_eq!(buy(&mut sale, &user("a"), 1, secs(10)), Ok(0));
    assert_eq!(buy(&mut sale, &user("b"), 1, secs(20).plus_millis(-1)), Ok(1));
    assert_eq!(buy(&mut sale, &user("c"), 1, secs(20)), Err(SaleError::NotLive));
    assert_eq!(buy(&mut sale, &user("c"), 1, secs(30)), Err(SaleError::NotLive));
    assert_eq!(sale.status(secs(20)), SaleStatus::Ended);
    assert_eq!(ledger(&sale), [8, 2, 0]);
}

#[test]
fn idempotent_replay_returns_the_same_order() {
    let mut sale = new_sale(10, 5);
    let (alice, bob) = (user("alice"), user("bob"));
    assert_eq!(buy_keyed(&mut sale, &alice, 2, "k1", T0), Ok(PurchaseOutcome::Created(0)));
    let mut changes = Touched::default();

    let replay = sale.purchase(&alice, units(1), Some(key("k1")), secs(1), &mut changes);

    assert_eq!(replay, Ok(PurchaseOutcome::Existing(0)));
    assert!(changes.is_empty());
    assert_eq!(ledger(&sale), [8, 2, 0]);
    assert_eq!(buy_keyed(&mut sale, &alice, 1, "k2", T0), Ok(PurchaseOutcome::Created(1)));
    assert_eq!(buy_keyed(&mut sale, &bob, 1, "k1", T0), Ok(PurchaseOutcome::Created(2)));
    assert_eq!(buy_keyed(&mut sale, &bob, 1, "k1", T0), Ok(PurchaseOutcome::Existing(2)));
}

#[test]
fn replay_wins_over_sold_out_limit_window_and_cancellation() {
    let mut sale = Sale::new(SaleConfig { ends_at: Some(secs(30)), ..config(1, 1) });
    let alice = user("alice");
    assert_eq!(buy_keyed(&mut sale, &alice, 1, "k", T0), Ok(PurchaseOutcome::Created(0)));

    assert_eq!(sale.status(T0), SaleStatus::SoldOut);
    assert_eq!(buy_keyed(&mut sale, &alice, 1, "k", secs(1)), Ok(PurchaseOutcome::Existing(0)));
    assert_eq!(buy_keyed(&mut sale, &alice, 1, "other", secs(1)), Err(SaleError::LimitReached));
    cancel(&mut sale, 0, &alice, secs(2)).0.unwrap();
    assert_eq!(buy_keyed(&mut sale, &alice, 1, "k", secs(3)), Ok(PurchaseOutcome::Existing(0)));
    assert_eq!(buy_keyed(&mut sale, &alice, 1, "k", secs(30)), Ok(PurchaseOutcome::Existing(0)));
    assert_eq!(sale.orders().len(), 1);
    assert_eq!(ledger(&sale), [1, 0, 0]);
}

#[test]
fn pay_is_idempotent() {
    let mut sale = new_sale(5, 2);
    let alice = user("alice");
    let seq = buy(&mut sale, &alice, 2, T0).unwrap();

    assert_eq!(pay(&mut sale, seq, &alice, secs(1)), (Ok(()), touched(&[seq], &[])));
    assert_eq!(ledger(&sale), [3, 0, 2]);
    let order = sale.order(seq).unwrap().clone();
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.payment_ref.as_deref(), Some("psp-1"));
    assert_eq!(order.updated_at, secs(1));

    assert_eq!(pay(&mut sale, seq, &alice, secs(HOLD + 5)), (Ok(()), Touched::default()));
    assert_eq!(sale.order(seq), Some(&order));
    assert_eq!(ledger(&sale), [3, 0, 2]);
    assert_eq!(sale.units_of(&alice), 2);
}

#[test]
fn pay_just_before_the_deadline_succeeds() {
    let mut sale = new_sale(5, 1);
    let alice = user("alice");
    let seq = buy(&mut sale, &alice, 1, T0).unwrap();

    assert_eq!(pay(&mut sale, seq, &alice, secs(HOLD).plus_millis(-1)).0, Ok(()));
    assert_eq!(status(&sale, seq), OrderStatus::Paid);
}

#[test]
fn pay_at_the_deadline_expires_the_hold_and_returns_its_units() {
    let mut sale = new_sale(5, 2);
    let alice = user("alice");
    let seq = buy(&mut sale, &alice, 2, T0).unwrap();

    let (result, changes) = pay(&mut sale, seq, &alice, secs(HOLD));

    assert_eq!(result, Err(SaleError::HoldExpired));
    assert_eq!(changes, touched(&[seq], &[]));
    assert_eq!(status(&sale, seq), OrderStatus::Expired);
    assert_eq!(ledger(&sale), [5, 0, 0]);
    assert_eq!(sale.units_of(&alice), 0);
    assert_eq!(pay(&mut sale, seq, &alice, secs(HOLD + 1)), (Err(SaleError::HoldExpired), Touched::default()));
    assert!(expire(&mut sale, secs(HOLD + 1)).is_empty());
}

#[test]
fn cancel_returns_units_and_is_idempotent() {
    let mut sale = new_sale(5, 2);
    let alice = user("alice");
    let seq = buy(&mut sale, &alice, 2, T0).unwrap();

    assert_eq!(cancel(&mut sale, seq, &alice, secs(1)), (Ok(()), touched(&[seq], &[])));
    assert_eq!(status(&sale, seq), OrderStatus::Cancelled);
    assert_eq!(ledger(&sale), [5, 0, 0]);
    assert_eq!(sale.units_of(&alice), 0);

    assert_eq!(cancel(&mut sale, seq, &alice, secs(2)), (Ok(()), Touched::default()));
    assert_eq!(pay(&mut sale, seq, &alice, secs(2)).0, Err(SaleError::OrderCancelled));
    assert_eq!(ledger(&sale), [5, 0, 0]);
}

#[test]
fn cancelling_a_paid_order_is_refused() {
    let mut sale = new_sale(5, 1);
    let alice = user("alice");
    let seq = buy(&mut sale, &alice, 1, T0).unwrap();
    pay(&mut sale, seq, &alice, T0).0.unwrap();

    assert_eq!(cancel(&mut sale, seq, &alice, secs(1)), (Err(SaleError::OrderPaid), Touched::default()));
    assert_eq!(status(&sale, seq), OrderStatus::Paid);
    assert_eq!(ledger(&sale), [4, 0, 1]);
}

#[test]
fn cancelling_a_hold_past_its_deadline_expires_it() {
    let mut sale = new_sale(5, 1);
    let alice = user("alice");
    let seq = buy(&mut sale, &alice, 1, T0).unwrap();

    assert_eq!(cancel(&mut sale, seq, &alice, secs(HOLD)), (Err(SaleError::HoldExpired), touched(&[seq], &[])));
    assert_eq!(status(&sale, seq), OrderStatus::Expired);
    assert_eq!(ledger(&sale), [5, 0, 0]);
}

#[test]
fn expire_due_expires_exactly_the_due_holds() {
    let mut sale = new_sale(10, 3);
    let (alice, bob) = (user("alice"), user("bob"));
    let first = buy(&mut sale, &alice, 1, T0).unwrap();
    let paid = buy(&mut sale, &alice, 2, T0).unwrap();
    let later = buy(&mut sale, &bob, 3, secs(5)).unwrap();
    pay(&mut sale, paid, &alice, secs(1)).0.unwrap();

    assert!(expire(&mut sale, secs(HOLD).plus_millis(-1)).is_empty());
    assert_eq!(expire(&mut sale, secs(HOLD)), touched(&[first], &[]));
    assert_eq!(status(&sale, first), OrderStatus::Expired);
    assert_eq!(status(&sale, paid), OrderStatus::Paid);
    assert_eq!(status(&sale, later), OrderStatus::Held);
    assert_eq!(ledger(&sale), [5, 3, 2]);

    assert_eq!(expire(&mut sale, secs(HOLD + 60)), touched(&[later], &[]));
    assert_eq!(ledger(&sale), [8, 0, 2]);
    assert_eq!(sale.units_of(&alice), 2);
    assert_eq!(sale.units_of(&bob), 0);
    assert!(expire(&mut sale, secs(HOLD * 10)).is_empty());
}

#[test]
fn a_hold_stamped_earlier_than_the_last_one_still_expires_on_time() {
    let mut sale = new_sale(5, 1);
    let (alice, bob) = (user("alice"), user("bob"));
    let bobs = buy(&mut sale, &bob, 1, secs(10)).unwrap();
    let alices = buy(&mut sale, &alice, 1, secs(5)).unwrap();

    assert_eq!(sale.next_deadline(), Some(secs(5 + HOLD)));
    assert_eq!(expire(&mut sale, secs(5 + HOLD)), touched(&[alices], &[]));
    assert_eq!(expire(&mut sale, secs(10 + HOLD)), touched(&[bobs], &[]));
}

#[test]
fn another_users_order_is_not_found() {
    let mut sale = new_sale(5, 1);
    let (alice, mallory) = (user("alice"), user("mallory"));
    let seq = buy(&mut sale, &alice, 1, T0).unwrap();

    assert_eq!(pay(&mut sale, seq, &mallory, T0), (Err(SaleError::OrderNotFound), Touched::default()));
    assert_eq!(cancel(&mut sale, seq, &mallory, T0), (Err(SaleError::OrderNotFound), Touched::default()));
    assert_eq!(pay(&mut sale, seq + 1, &alice, T0).0, Err(SaleError::OrderNotFound));
    assert_eq!(cancel(&mut sale, 99, &alice, T0).0, Err(SaleError::OrderNotFound));
    assert_eq!(status(&sale, seq), OrderStatus::Held);
}

#[test]
fn joining_the_waitlist_needs_too_few_available_units() {
    let mut sale = new_sale(2, 2);
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    buy(&mut sale, &alice, 1, T0).unwrap();

    assert_eq!(join(&mut sale, &bob, 1, T0).0, Err(SaleError::StockAvailable));
    assert_eq!(join(&mut sale, &bob, 2, T0), (Ok(1), touched(&[], &[0])));
    assert_eq!(join(&mut sale, &bob, 2, T0).0, Err(SaleError::AlreadyWaitlisted));
    assert_eq!(join(&mut sale, &carol, 2, T0), (Ok(2), touched(&[], &[1])));
    assert_eq!(join(&mut sale, &alice, 2, T0).0, Err(SaleError::LimitReached));
    assert_eq!(sale.waitlist_place(&carol), Some(2));
    assert_eq!(sale.waitlist_place(&alice), None);
    assert_eq!(sale.waiting_count(), 2);
    assert_eq!(ledger(&sale), [1, 1, 0]);
}

#[test]
fn joining_the_waitlist_outside_the_window_is_not_live() {
    let mut sale = Sale::new(SaleConfig { starts_at: secs(10), ends_at: Some(secs(20)), ..config(1, 1) });
    buy(&mut sale, &user("x"), 1, secs(10)).unwrap();

    assert_eq!(join(&mut sale, &user("a"), 1, secs(9)).0, Err(SaleError::NotLive));
    assert_eq!(join(&mut sale, &user("a"), 1, secs(10)).0, Ok(1));
    assert_eq!(join(&mut sale, &user("b"), 1, secs(20)).0, Err(SaleError::NotLive));
}

#[test]
fn waiting_is_refused_or_dropped_once_the_quantity_can_never_come_back() {
    let mut sale = new_sale(3, 2);
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let alices = buy(&mut sale, &alice, 2, T0).unwrap();
    let bobs = buy(&mut sale, &bob, 1, T0).unwrap();
    pay(&mut sale, bobs, &bob, T0).0.unwrap();
    assert_eq!(join(&mut sale, &carol, 2, T0), (Ok(1), touched(&[], &[0])));

    assert_eq!(pay(&mut sale, alices, &alice, secs(1)), (Ok(()), touched(&[alices], &[0])));
    assert_eq!(entry_status(&sale, 0), WaitlistStatus::Dropped);
    assert_eq!(join(&mut sale, &carol, 1, secs(2)).0, Err(SaleError::SoldOut));
    assert_eq!(sale.waiting_count(), 0);
}

#[test]
fn released_units_go_fifo_to_the_waitlist_as_fresh_holds() {
    let mut sale = new_sale(1, 1);
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let first = buy(&mut sale, &alice, 1, T0).unwrap();
    join(&mut sale, &bob, 1, secs(1)).0.unwrap();
    join(&mut sale, &carol, 1, secs(2)).0.unwrap();

    assert_eq!(cancel(&mut sale, first, &alice, secs(10)), (Ok(()), touched(&[0, 1], &[0])));
    let granted = sale.order(1).unwrap();
    assert_eq!(granted.user, bob);
    assert_eq!(granted.status, OrderStatus::Held);
    assert_eq!(granted.expires_at, secs(10 + HOLD));
    assert_eq!(granted.idempotency_key, None);
    assert_eq!(entry_status(&sale, 0), WaitlistStatus::Granted(1));
    assert_eq!(entry_status(&sale, 1), WaitlistStatus::Waiting);
    assert_eq!(sale.waitlist_place(&carol), Some(1));
    assert_eq!(ledger(&sale), [0, 1, 0]);

    assert_eq!(expire(&mut sale, secs(10 + HOLD)), touched(&[1, 2], &[1]));
    assert_eq!(sale.order(2).unwrap().user, carol);
    assert_eq!(entry_status(&sale, 1), WaitlistStatus::Granted(2));
    assert_eq!(sale.waiting_count(), 0);

    assert_eq!(cancel(&mut sale, 2, &carol, secs(100)), (Ok(()), touched(&[2], &[])));
    assert_eq!(ledger(&sale), [1, 0, 0]);
}

#[test]
fn nobody_overtakes_the_waitlist() {
    let mut sale = new_sale(3, 2);
    let (alice, xavier, bob, carol, dave) = (user("alice"), user("xavier"), user("bob"), user("carol"), user("dave"));
    let alices = buy(&mut sale, &alice, 2, T0).unwrap();
    let xaviers = buy(&mut sale, &xavier, 1, T0).unwrap();
    join(&mut sale, &bob, 2, T0).0.unwrap();
    join(&mut sale, &carol, 1, T0).0.unwrap();

    assert_eq!(cancel(&mut sale, xaviers, &xavier, secs(1)), (Ok(()), touched(&[xaviers], &[])));
    assert_eq!(ledger(&sale), [1, 2, 0]);
    assert_eq!(sale.buyable(), 0);
    assert_eq!(sale.status(secs(2)), SaleStatus::SoldOut);
    assert_eq!(buy(&mut sale, &dave, 1, secs(2)), Err(SaleError::SoldOut));
    assert_eq!(buy(&mut sale, &bob, 1, secs(2)), Err(SaleError::SoldOut));
    assert_eq!(join(&mut sale, &dave, 1, secs(2)).0, Ok(3));

    assert_eq!(cancel(&mut sale, alices, &alice, secs(3)), (Ok(()), touched(&[alices, 2, 3], &[0, 1])));
    assert_eq!(sale.order(2).unwrap().user, bob);
    assert_eq!(sale.order(3).unwrap().user, carol);
    assert_eq!(entry_status(&sale, 2), WaitlistStatus::Waiting);
    assert_eq!(ledger(&sale), [0, 3, 0]);
}

#[test]
fn a_waiting_user_over_the_limit_at_grant_time_is_dropped_and_skipped() {
    let mut sale = new_sale(3, 2);
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let waitlist = vec![
        WaitlistEntry { position: 0, user: bob.clone(), quantity: 2, joined_at: T0, status: WaitlistStatus::Waiting },
        WaitlistEntry { position: 1, user: carol.clone(), quantity: 1, joined_at: T0, status: WaitlistStatus::Waiting },
    ];
    let orders = vec![order(0, "alice", 2, OrderStatus::Held), order(1, "bob", 1, OrderStatus::Held)];
    sale = Sale::restore(sale.config().clone(), orders, waitlist).unwrap();

    assert_eq!(cancel(&mut sale, 0, &alice, secs(1)), (Ok(()), touched(&[0, 2], &[0, 1])));
    assert_eq!(entry_status(&sale, 0), WaitlistStatus::Dropped);
    assert_eq!(entry_status(&sale, 1), WaitlistStatus::Granted(2));
    assert_eq!(sale.order(2).unwrap().user, carol);
    assert_eq!(sale.units_of(&bob), 1);
    assert_eq!(sale.waitlist_place(&bob), None);
    assert_eq!(ledger(&sale), [1, 2, 0]);
}

#[test]
fn head_of_line_entry_blocks_until_enough_units_are_free() {
    let mut sale = new_sale(3, 2);
    let (alice, xavier, bob, carol) = (user("alice"), user("xavier"), user("bob"), user("carol"));
    let alices = buy(&mut sale, &alice, 1, T0).unwrap();
    let xaviers = buy(&mut sale, &xavier, 2, T0).unwrap();
    join(&mut sale, &bob, 2, T0).0.unwrap();
    join(&mut sale, &carol, 1, T0).0.unwrap();

    assert_eq!(cancel(&mut sale, alices, &alice, secs(1)), (Ok(()), touched(&[alices], &[])));
    assert_eq!(entry_status(&sale, 0), WaitlistStatus::Waiting);
    assert_eq!(entry_status(&sale, 1), WaitlistStatus::Waiting);
    assert_eq!(ledger(&sale), [1, 2, 0]);

    assert_eq!(cancel(&mut sale, xaviers, &xavier, secs(2)), (Ok(()), touched(&[xaviers, 2, 3], &[0, 1])));
    assert_eq!(sale.order(2).unwrap().user, bob);
    assert_eq!(sale.order(2).unwrap().quantity, 2);
    assert_eq!(sale.order(3).unwrap().user, carol);
    assert_eq!(ledger(&sale), [0, 3, 0]);
}

fn busy_sale() -> Sale {
    let mut sale = new_sale(6, 2);
    let (a, b, c, d, e) = (user("a"), user("b"), user("c"), user("d"), user("e"));
    buy_keyed(&mut sale, &a, 2, "ka", T0).unwrap();
    buy(&mut sale, &c, 1, secs(1)).unwrap();
    buy(&mut sale, &d, 2, secs(2)).unwrap();
    pay(&mut sale, 0, &a, secs(3)).0.unwrap();
    cancel(&mut sale, 1, &c, secs(4)).0.unwrap();
    buy_keyed(&mut sale, &b, 1, "kb", secs(10)).unwrap();
    expire(&mut sale, secs(2 + HOLD));
    buy(&mut sale, &e, 2, secs(2 + HOLD)).unwrap();
    buy(&mut sale, &c, 1, secs(3 + HOLD)).unwrap();
    join(&mut sale, &d, 2, secs(3 + HOLD)).0.unwrap();
    join(&mut sale, &c, 1, secs(3 + HOLD)).0.unwrap();
    sale
}

fn restart(sale: &Sale) -> Sale {
    Sale::restore(sale.config().clone(), sale.orders().to_vec(), waitlist_of(sale)).unwrap()
}

#[test]
fn restore_reproduces_the_counters() {
    let sale = busy_sale();
    let statuses: Vec<_> = sale.orders().iter().map(|order| order.status).collect();
    assert_eq!(
        statuses,
        [
            OrderStatus::Paid,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::Held,
            OrderStatus::Held,
            OrderStatus::Held
        ]
    );

    let restored = restart(&sale);

    assert_eq!(ledger(&restored), ledger(&sale));
    assert_eq!(ledger(&restored), [0, 4, 2]);
    for name in ["a", "b", "c", "d", "e", "nobody"] {
        assert_eq!(restored.units_of(&user(name)), sale.units_of(&user(name)), "units of {name}");
    }
    assert_eq!(restored.waiting_count(), 2);
    assert_eq!(restored.waitlist_place(&user("c")), Some(2));
    assert_eq!(restored.next_deadline(), Some(secs(10 + HOLD)));
}

#[test]
fn restored_sale_keeps_expiry_idempotency_and_the_waitlist_working() {
    let sale = busy_sale();
    let mut restored = restart(&sale);
    let (c, d) = (user("c"), user("d"));

    assert_eq!(buy_keyed(&mut restored, &user("b"), 1, "kb", secs(HOLD + 4)), Ok(PurchaseOutcome::Existing(3)));
    assert_eq!(buy_keyed(&mut restored, &user("a"), 2, "ka", secs(HOLD + 4)), Ok(PurchaseOutcome::Existing(0)));
    assert!(expire(&mut restored, secs(10 + HOLD).plus_millis(-1)).is_empty());

    assert_eq!(expire(&mut restored, secs(10 + HOLD)), touched(&[3], &[]));
    assert_eq!(entry_status(&restored, 0), WaitlistStatus::Waiting);
    assert_eq!(ledger(&restored), [1, 3, 2]);
    assert_eq!(buy(&mut restored, &c, 1, secs(10 + HOLD)), Err(SaleError::SoldOut));

    assert_eq!(expire(&mut restored, secs(2 + 2 * HOLD)), touched(&[4, 6, 7], &[0, 1]));
    assert_eq!(restored.order(6).unwrap().user, d);
    assert_eq!(restored.order(7).unwrap().user, c);
    assert_eq!(entry_status(&restored, 0), WaitlistStatus::Granted(6));
    assert_eq!(entry_status(&restored, 1), WaitlistStatus::Granted(7));
    assert_eq!(restored.waiting_count(), 0);
    assert_eq!(restored.units_of(&c), 2);
    assert_eq!(ledger(&restored), [0, 4, 2]);
}

fn order(seq: OrderSeq, who: &str, quantity: u32, status: OrderStatus) -> Order {
    Order {
        seq,
        user: user(who),
        quantity,
        status,
        created_at: T0,
        expires_at: secs(HOLD),
        updated_at: T0,
        idempotency_key: None,
        payment_ref: None,
    }
}

#[test]
fn restore_rejects_orders_beyond_stock_or_out_of_sequence() {
    let over_stock = vec![order(0, "a", 2, OrderStatus::Held), order(1, "b", 1, OrderStatus::Paid)];
    assert!(Sale::restore(config(2, 2), over_stock, Vec::new()).is_none());

    let ended_units_do_not_count = vec![
        order(0, "a", 2, OrderStatus::Cancelled),
        order(1, "b", 2, OrderStatus::Expired),
        order(2, "c", 2, OrderStatus::Paid),
    ];
    let restored = Sale::restore(config(2, 2), ended_units_do_not_count, Vec::new()).unwrap();
    assert_eq!(ledger(&restored), [0, 0, 2]);

    let gap = vec![order(0, "a", 1, OrderStatus::Held), order(2, "b", 1, OrderStatus::Held)];
    assert!(Sale::restore(config(5, 2), gap, Vec::new()).is_none());
}

#[derive(Debug, Clone)]
struct Scenario {
    stock: u32,
    per_user_limit: u32,
    hold_seconds: u32,
    starts_in_ms: i64,
    ends_in_ms: Option<i64>,
    users: usize,
    keys: usize,
}

impl Scenario {
    fn config(&self) -> SaleConfig {
        SaleConfig {
            name: "model".to_string(),
            stock: self.stock,
            price_cents: 100,
            starts_at: T0.plus_millis(self.starts_in_ms),
            ends_at: self.ends_in_ms.map(|ms| T0.plus_millis(ms)),
            per_user_limit: self.per_user_limit,
            hold_seconds: self.hold_seconds,
            created_at: T0,
            room: None,
            proof_of_work: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Purchase { user: usize, units: u32, key: Option<usize> },
    Pay { order: usize, by_owner: bool },
    Cancel { order: usize, by_owner: bool },
    JoinWaitlist { user: usize, units: u32 },
    AdvanceTime { millis: i64 },
    ExpireDue,
    Restart,
}

/// Whole quarters of a second, so that times often land exactly on deadlines and window ends.
fn quarter_seconds(quarters: std::ops::Range<i64>) -> impl Strategy<Value = i64> {
    quarters.prop_map(|n| n * 250)
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![0u32..6, 0u32..20],
        1u32..=4,
        1u32..=5,
        prop_oneof![Just(0), quarter_seconds(1..8)],
        proptest::option::of(quarter_seconds(20..120)),
        2usize..=3,
        1usize..=3,
    )
        .prop_map(|(stock, per_user_limit, hold_seconds, starts_in_ms, ends_in_ms, users, keys)| Scenario {
            stock,
            per_user_limit,
            hold_seconds,
            starts_in_ms,
            ends_in_ms,
            users,
            keys,
        })
}

fn quantity() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 1u32..=2, 1 => 3u32..=5]
}

fn op() -> impl Strategy<Value = Op> {
    let by_owner = || proptest::bool::weighted(0.9);
    prop_oneof![
        4 => (0usize..4, quantity(), proptest::option::of(0usize..3))
            .prop_map(|(user, units, key)| Op::Purchase { user, units, key }),
        2 => (0usize..64, by_owner()).prop_map(|(order, by_owner)| Op::Pay { order, by_owner }),
        2 => (0usize..64, by_owner()).prop_map(|(order, by_owner)| Op::Cancel { order, by_owner }),
        2 => (0usize..4, quantity()).prop_map(|(user, units)| Op::JoinWaitlist { user, units }),
        2 => quarter_seconds(0..13).prop_map(|millis| Op::AdvanceTime { millis }),
        1 => Just(Op::ExpireDue),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelOrder {
    user: usize,
    units: u32,
    key: Option<usize>,
    status: OrderStatus,
    expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelEntry {
    user: usize,
    units: u32,
    status: WaitlistStatus,
}

/// The sale as plain lists: every counter is a sum, the waitlist a FIFO scan from the front.
struct Model {
    config: SaleConfig,
    orders: Vec<ModelOrder>,
    waitlist: Vec<ModelEntry>,
}

impl Model {
    fn units_in(&self, status: OrderStatus) -> u32 {
        self.orders.iter().filter(|o| o.status == status).map(|o| o.units).sum()
    }

    fn available(&self) -> u32 {
        self.config.stock - self.units_in(OrderStatus::Held) - self.units_in(OrderStatus::Paid)
    }

    fn buyable(&self) -> u32 {
        let someone_waits = self.waitlist.iter().any(|e| e.status == WaitlistStatus::Waiting);
        if someone_waits {
            0
        } else {
            self.available()
        }
    }

    fn units_of(&self, user: usize) -> u32 {
        let live = |o: &&ModelOrder| matches!(o.status, OrderStatus::Held | OrderStatus::Paid);
        self.orders.iter().filter(|o| o.user == user).filter(live).map(|o| o.units).sum()
    }

    fn live(&self, now: Timestamp) -> bool {
        now >= self.config.starts_at && self.config.ends_at.is_none_or(|end| now < end)
    }

    fn hold(&mut self, user: usize, units: u32, key: Option<usize>, now: Timestamp) -> OrderSeq {
        let expires_at = now.plus_seconds(self.config.hold_seconds);
        self.orders.push(ModelOrder { user, units, key, status: OrderStatus::Held, expires_at });
        (self.orders.len() - 1) as OrderSeq
    }

    fn purchase(
        &mut self,
        user: usize,
        units: u32,
        key: Option<usize>,
        now: Timestamp,
    ) -> Result<PurchaseOutcome, SaleError> {
        let earlier = self.orders.iter().position(|o| key.is_some() && o.user == user && o.key == key);
        if let Some(seq) = earlier {
            return Ok(PurchaseOutcome::Existing(seq as OrderSeq));
        }
        if units > self.config.per_user_limit {
            return Err(SaleError::InvalidQuantity);
        }
        if !self.live(now) {
            return Err(SaleError::NotLive);
        }
        if self.units_of(user) + units > self.config.per_user_limit {
            return Err(SaleError::LimitReached);
        }
        if self.buyable() < units {
            return Err(SaleError::SoldOut);
        }
        Ok(PurchaseOutcome::Created(self.hold(user, units, key, now)))
    }

    /// For the owner's order still held: whether it is before its deadline.
    fn open_hold(&self, seq: usize, user: usize, now: Timestamp) -> Result<bool, SaleError> {
        let order = self.orders.get(seq).filter(|o| o.user == user).ok_or(SaleError::OrderNotFound)?;
        match order.status {
            OrderStatus::Held => Ok(now < order.expires_at),
            OrderStatus::Paid => Err(SaleError::OrderPaid),
            OrderStatus::Cancelled => Err(SaleError::OrderCancelled),
            OrderStatus::Expired => Err(SaleError::HoldExpired),
        }
    }

    fn pay(&mut self, seq: usize, user: usize, now: Timestamp) -> Result<(), SaleError> {
        match self.open_hold(seq, user, now) {
            Err(SaleError::OrderPaid) => Ok(()),
            Err(error) => Err(error),
            Ok(false) => {
                self.end(seq, OrderStatus::Expired, now);
                Err(SaleError::HoldExpired)
            }
            Ok(true) => {
                self.orders[seq].status = OrderStatus::Paid;
                self.serve_waitlist(now);
                Ok(())
            }
        }
    }

    fn cancel(&mut self, seq: usize, user: usize, now: Timestamp) -> Result<(), SaleError> {
        match self.open_hold(seq, user, now) {
            Err(SaleError::OrderCancelled) => Ok(()),
            Err(error) => Err(error),
            Ok(false) => {
                self.end(seq, OrderStatus::Expired, now);
                Err(SaleError::HoldExpired)
            }
            Ok(true) => {
                self.end(seq, OrderStatus::Cancelled, now);
                Ok(())
            }
        }
    }

    fn expire_due(&mut self, now: Timestamp) {
        let mut due: Vec<usize> = (0..self.orders.len())
            .filter(|&seq| self.orders[seq].status == OrderStatus::Held && self.orders[seq].expires_at <= now)
            .collect();
        due.sort_by_key(|&seq| (self.orders[seq].expires_at, seq));
        for seq in due {
            self.end(seq, OrderStatus::Expired, now);
        }
    }

    fn end(&mut self, seq: usize, status: OrderStatus, now: Timestamp) {
        self.orders[seq].status = status;
        self.serve_waitlist(now);
    }

    fn serve_waitlist(&mut self, now: Timestamp) {
        while let Some(index) = self.waitlist.iter().position(|e| e.status == WaitlistStatus::Waiting) {
            let ModelEntry { user, units, .. } = self.waitlist[index];
            let returnable = self.available() + self.units_in(OrderStatus::Held);
            if self.units_of(user) + units > self.config.per_user_limit || returnable < units {
                self.waitlist[index].status = WaitlistStatus::Dropped;
                continue;
            }
            if self.available() < units {
                return;
            }
            let seq = self.hold(user, units, None, now);
            self.waitlist[index].status = WaitlistStatus::Granted(seq);
        }
    }

    fn join(&mut self, user: usize, units: u32, now: Timestamp) -> Result<u32, SaleError> {
        if units > self.config.per_user_limit {
            return Err(SaleError::InvalidQuantity);
        }
        if !self.live(now) {
            return Err(SaleError::NotLive);
        }
        let waiting = |e: &&ModelEntry| e.status == WaitlistStatus::Waiting;
        if self.waitlist.iter().filter(waiting).any(|e| e.user == user) {
            return Err(SaleError::AlreadyWaitlisted);
        }
        if self.units_of(user) + units > self.config.per_user_limit {
            return Err(SaleError::LimitReached);
        }
        if self.buyable() >= units {
            return Err(SaleError::StockAvailable);
        }
        if self.available() + self.units_in(OrderStatus::Held) < units {
            return Err(SaleError::SoldOut);
        }
        self.waitlist.push(ModelEntry { user, units, status: WaitlistStatus::Waiting });
        Ok(self.waitlist.iter().filter(waiting).count() as u32)
    }
}

struct Harness {
    sale: Sale,
    model: Model,
    users: Vec<UserId>,
    keys: Vec<IdempotencyKey>,
    now: Timestamp,
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        Self {
            sale: Sale::new(scenario.config()),
            model: Model { config: scenario.config(), orders: Vec::new(), waitlist: Vec::new() },
            users: (0..scenario.users).map(|i| user(&format!("user-{i}"))).collect(),
            keys: (0..scenario.keys).map(|i| key(&format!("key-{i}"))).collect(),
            now: T0,
        }
    }

    /// Picks an order (seq 0 when there is none yet) and who acts on it.
    fn target(&self, order: usize, by_owner: bool) -> (usize, usize) {
        let seq = order % self.model.orders.len().max(1);
        let owner = self.model.orders.get(seq).map_or(0, |o| o.user);
        if by_owner {
            return (seq, owner);
        }
        (seq, (owner + 1) % self.users.len())
    }

    fn step(&mut self, op: &Op) {
        let before_orders = self.sale.orders().to_vec();
        let before_waitlist = waitlist_of(&self.sale);
        let mut changes = Touched::default();
        let now = self.now;
        match *op {
            Op::Purchase { user, units: n, key } => {
                let user = user % self.users.len();
                let key = key.map(|k| k % self.keys.len());
                let got = self.sale.purchase(
                    &self.users[user],
                    units(n),
                    key.map(|k| self.keys[k].clone()),
                    now,
                    &mut changes,
                );
                assert_eq!(got, self.model.purchase(user, n, key, now), "{op:?}");
            }
            Op::Pay { order, by_owner } => {
                let (seq, user) = self.target(order, by_owner);
                let got = self.sale.pay(seq as OrderSeq, &self.users[user], None, now, &mut changes);
                assert_eq!(got, self.model.pay(seq, user, now), "{op:?}");
            }
            Op::Cancel { order, by_owner } => {
                let (seq, user) = self.target(order, by_owner);
                let got = self.sale.cancel(seq as OrderSeq, &self.users[user], now, &mut changes);
                assert_eq!(got, self.model.cancel(seq, user, now), "{op:?}");
            }
            Op::JoinWaitlist { user, units: n } => {
                let user = user % self.users.len();
                let got = self.sale.join_waitlist(&self.users[user], units(n), now, &mut changes);
                assert_eq!(got, self.model.join(user, n, now), "{op:?}");
            }
            Op::AdvanceTime { millis } => self.now = now.plus_millis(millis),
            Op::ExpireDue => {
                self.sale.expire_due(now, &mut changes);
                self.model.expire_due(now);
            }
            Op::Restart => self.sale = restart(&self.sale),
        }
        self.check_state_matches_model();
        self.check_invariants();
        check_transitions(&before_orders, self.sale.orders());
        check_touched(&changes, &before_orders, self.sale.orders(), &before_waitlist, &waitlist_of(&self.sale));
    }

    fn check_state_matches_model(&self) {
        let orders: Vec<ModelOrder> = self
            .sale
            .orders()
            .iter()
            .map(|o| ModelOrder {
                user: self.users.iter().position(|u| u == &o.user).unwrap(),
                units: o.quantity,
                key: o.idempotency_key.as_ref().map(|k| self.keys.iter().position(|x| x == k).unwrap()),
                status: o.status,
                expires_at: o.expires_at,
            })
            .collect();
        assert_eq!(orders, self.model.orders, "orders");
        let waitlist: Vec<ModelEntry> = waitlist_of(&self.sale)
            .iter()
            .map(|e| ModelEntry {
                user: self.users.iter().position(|u| u == &e.user).unwrap(),
                units: e.quantity,
                status: e.status,
            })
            .collect();
        assert_eq!(waitlist, self.model.waitlist, "waitlist");
        let waiting = self.model.waitlist.iter().filter(|e| e.status == WaitlistStatus::Waiting);
        assert_eq!(self.sale.waiting_count() as usize, waiting.count(), "waiting");
        let model = &self.model;
        let expected = [model.available(), model.units_in(OrderStatus::Held), model.units_in(OrderStatus::Paid)];
        assert_eq!(ledger(&self.sale), expected, "available, held, sold");
    }

    fn check_invariants(&self) {
        let [available, held, sold] = ledger(&self.sale);
        assert_eq!(available + held + sold, self.sale.config().stock, "ledger");
        for (index, user) in self.users.iter().enumerate() {
            assert_eq!(self.sale.units_of(user), self.model.units_of(index), "units of {user}");
            assert!(self.sale.units_of(user) <= self.sale.config().per_user_limit, "limit of {user}");
        }
        let mut keys = HashSet::new();
        for order in self.sale.orders() {
            let Some(key) = &order.idempotency_key else {
                continue;
            };
            assert!(keys.insert((order.user.clone(), key.clone())), "key reused: {order:?}");
        }
    }
}

fn check_transitions(before: &[Order], after: &[Order]) {
    assert!(after.len() >= before.len(), "orders vanished");
    for (old, new) in before.iter().zip(after) {
        if old.status == new.status {
            continue;
        }
        assert_eq!(old.status, OrderStatus::Held, "left a final state: {old:?} -> {new:?}");
    }
    for new in &after[before.len()..] {
        assert_eq!(new.status, OrderStatus::Held, "new order not held: {new:?}");
    }
}

fn changed<T: PartialEq>(before: &[T], after: &[T]) -> Vec<u32> {
    (0..after.len()).filter(|&i| before.get(i) != Some(&after[i])).map(|i| i as u32).collect()
}

fn check_touched(
    changes: &Touched,
    orders_before: &[Order],
    orders_after: &[Order],
    waitlist_before: &[WaitlistEntry],
    waitlist_after: &[WaitlistEntry],
) {
    let mut orders = changes.orders.clone();
    orders.sort_unstable();
    assert_eq!(orders, changed(orders_before, orders_after), "touched orders");
    let mut waitlist = changes.waitlist.clone();
    waitlist.sort_unstable();
    assert_eq!(waitlist, changed(waitlist_before, waitlist_after), "touched waitlist");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn sale_agrees_with_the_model(scenario in scenario(), ops in proptest::collection::vec(op(), 0..60)) {
        let mut harness = Harness::new(&scenario);
        for op in &ops {
            harness.step(op);
        }
    }
}
