//! The rooms conformance suite: one set of cases every [`Rooms`] implementation must pass,
//! instantiated per implementation with [`rooms_conformance!`](crate::rooms_conformance).
//!
//! Cases pass `now` explicitly (from `T0`, the sale's start), so pacing and pass expiry are
//! driven without sleeping. Each case opens a fresh, empty instance.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::join_all;
use stampede_core::room::shuffle;
use stampede_core::{RoomConfig, RoomError, RoomMode, RoomState, Timestamp, UserId};

use super::{ticket_id, Joined, Rooms, Standing};
use crate::backend::EngineError;

/// What an implementation provides to run the suite.
pub trait Harness: Sized {
    /// A fresh instance with no rooms.
    fn open() -> impl Future<Output = Self>;
    fn rooms(&self) -> Arc<dyn Rooms>;
    /// A second instance on the same shared state, as another replica would open it (the same
    /// instance for an implementation that cannot share state).
    fn replica(&self) -> impl Future<Output = Arc<dyn Rooms>>;
}

/// Instantiates every case as a `#[tokio::test]` for one implementation, e.g.
/// `rooms_conformance!(MemoryHarness);`. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! rooms_conformance {
    ($harness:ty) => {
        $crate::rooms_conformance!(@cases $harness;
            join_is_once_per_user,
            joining_before_the_room_opens_is_refused,
            a_closed_room_refuses_joins_and_admits_nobody,
            fifo_admits_in_join_order_at_the_pace,
            unused_pace_is_capped_at_one_second,
            max_active_counts_until_finish_or_pass_expiry,
            no_stock_admits_nobody,
            paused_keeps_places_and_admit_all_lets_everyone_in,
            a_shuffled_pre_queue_is_admitted_in_seed_order,
            places_after_the_start_follow_the_shuffle,
            another_users_ticket_is_unknown,
            summary_counts_the_room,
            ticket_of_finds_the_users_ticket,
            sales_lists_rooms,
            replicas_share_one_room,
            concurrent_joins_get_distinct_tickets,
            replicas_agree_on_the_shuffle,
        );
    };
    (@cases $harness:ty; $($case:ident),* $(,)?) => {
        $(
            // Multi-threaded so the concurrent cases race for real.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::rooms::conformance::$case::<$harness>().await;
            }
        )*
    };
}

const T0: Timestamp = Timestamp(1_800_000_000_000);
const SALE: &str = "s_room";

fn at(millis: i64) -> Timestamp {
    T0.plus_millis(millis)
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid user id")
}

fn users(count: usize) -> Vec<UserId> {
    (0..count).map(|i| user(&format!("user{i}"))).collect()
}

/// A first-come room opening at the start, `T0`.
fn fifo(admit_per_minute: u32, max_active: u32, pass_seconds: u32) -> RoomConfig {
    RoomConfig {
        mode: RoomMode::Fifo,
        opens_at: T0,
        starts_at: T0,
        admit_per_minute,
        max_active,
        pass_seconds,
        seed: 7,
    }
}

async fn join(rooms: &dyn Rooms, config: &RoomConfig, who: &UserId, now: Timestamp) -> Joined {
    rooms.join(SALE, config, who, now).await.expect("join")
}

async fn join_all_of(rooms: &dyn Rooms, config: &RoomConfig, who: &[UserId], now: Timestamp) -> Vec<Joined> {
    let mut joined = Vec::with_capacity(who.len());
    for one in who {
        joined.push(join(rooms, config, one, now).await);
    }
    joined
}

async fn standing(rooms: &dyn Rooms, config: &RoomConfig, joined: &Joined, who: &UserId, now: Timestamp) -> Standing {
    rooms.standing(SALE, config, &joined.ticket, who, now).await.expect("standing")
}

/// Who `admit_due` let in, in order.
async fn admit(rooms: &dyn Rooms, config: &RoomConfig, buyable: u32, now: Timestamp) -> Vec<UserId> {
    let admitted = rooms.admit_due(SALE, config, buyable, now).await.expect("admit_due");
    let pass_ends = now.plus_seconds(config.pass_seconds);
    assert!(admitted.iter().all(|(_, ends)| *ends == pass_ends), "every pass ends pass_seconds after now");
    admitted.into_iter().map(|(who, _)| who).collect()
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, EngineError>, expected: RoomError) {
    match result {
        Err(EngineError::Room(error)) if error == expected => {}
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

fn waiting(ahead: u32, eta_seconds: u64) -> Standing {
    Standing::Waiting { ahead, order_known: true, eta_seconds }
}

fn admitted_at(millis: i64, config: &RoomConfig) -> Standing {
    Standing::Admitted { admitted_at: at(millis), pass_expires_at: at(millis).plus_seconds(config.pass_seconds) }
}

pub async fn join_is_once_per_user<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, alice, bob) = (h.rooms(), fifo(60, 10, 60), user("alice"), user("bob"));
    let first = join(&*rooms, &config, &alice, T0).await;
    assert!(first.new);
    assert_eq!(first.standing, waiting(0, 0));
    let again = join(&*rooms, &config, &alice, at(500)).await;
    assert_eq!((again.ticket.as_str(), again.new), (first.ticket.as_str(), false), "one ticket per user");
    let other = join(&*rooms, &config, &bob, at(500)).await;
    assert!(other.new);
    assert_ne!(other.ticket, first.ticket);
    assert_eq!(other.standing, waiting(1, 1));
}

pub async fn joining_before_the_room_opens_is_refused<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, alice) = (h.rooms(), fifo(60, 10, 60), user("alice"));
    assert_refused(rooms.join(SALE, &config, &alice, at(-1)).await, RoomError::NotOpen);
    assert!(join(&*rooms, &config, &alice, T0).await.new, "open at opens_at");
}

pub async fn a_closed_room_refuses_joins_and_admits_nobody<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(600, 10, 60), users(2));
    let first = join(&*rooms, &config, &who[0], T0).await;
    rooms.set_state(SALE, &config, RoomState::Closed).await.expect("close");
    assert_refused(rooms.join(SALE, &config, &who[1], at(10)).await, RoomError::Closed);
    let again = join(&*rooms, &config, &who[0], at(10)).await;
    assert_eq!((again.ticket, again.new), (first.ticket, false), "a ticket already held is kept");
    assert!(admit(&*rooms, &config, 5, at(1_000)).await.is_empty());
    rooms.set_state(SALE, &config, RoomState::Open).await.expect("reopen");
    assert_eq!(admit(&*rooms, &config, 5, at(2_000)).await, vec![who[0].clone()]);
}

pub async fn fifo_admits_in_join_order_at_the_pace<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(60, 100, 60), users(3));
    let joined = join_all_of(&*rooms, &config, &who, T0).await;
    assert_eq!(standing(&*rooms, &config, &joined[2], &who[2], T0).await, waiting(2, 2));
    assert!(admit(&*rooms, &config, 100, T0).await.is_empty(), "no pace has accrued at the start");
    assert_eq!(admit(&*rooms, &config, 100, at(1_000)).await, vec![who[0].clone()]);
    assert_eq!(standing(&*rooms, &config, &joined[1], &who[1], at(1_000)).await, waiting(0, 0));
    assert_eq!(standing(&*rooms, &config, &joined[2], &who[2], at(1_000)).await, waiting(1, 1));
    assert!(admit(&*rooms, &config, 100, at(1_500)).await.is_empty(), "half an admission is not one");
    assert_eq!(admit(&*rooms, &config, 100, at(2_000)).await, vec![who[1].clone()]);
    assert_eq!(standing(&*rooms, &config, &joined[0], &who[0], at(2_000)).await, admitted_at(1_000, &config));
    assert_eq!(standing(&*rooms, &config, &joined[1], &who[1], at(2_000)).await, admitted_at(2_000, &config));
}

pub async fn unused_pace_is_capped_at_one_second<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(600, 1_000, 600), users(30));
    join_all_of(&*rooms, &config, &who, T0).await;
    assert_eq!(admit(&*rooms, &config, 100, at(60_000)).await, who[..10].to_vec(), "a quiet minute is no burst");
    assert!(admit(&*rooms, &config, 100, at(60_000)).await.is_empty());
    assert_eq!(admit(&*rooms, &config, 100, at(61_000)).await, who[10..20].to_vec());
}

pub async fn max_active_counts_until_finish_or_pass_expiry<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(6_000, 2, 10), users(5));
    let joined = join_all_of(&*rooms, &config, &who, T0).await;
    assert_eq!(admit(&*rooms, &config, 100, at(1_000)).await, who[..2].to_vec());
    assert!(admit(&*rooms, &config, 100, at(1_100)).await.is_empty(), "two are shopping");
    rooms.finish(SALE, &who[0]).await.expect("finish");
    assert_eq!(standing(&*rooms, &config, &joined[0], &who[0], at(1_100)).await, Standing::Finished);
    assert_eq!(admit(&*rooms, &config, 100, at(1_200)).await, vec![who[2].clone()]);
    assert!(admit(&*rooms, &config, 100, at(10_999)).await.is_empty());
    // who[1]'s pass (from 1 000) ends at 11 000; who[2]'s (from 1 200) still runs.
    assert_eq!(admit(&*rooms, &config, 100, at(11_000)).await, vec![who[3].clone()]);
    let summary = rooms.summary(SALE, &config, at(11_000)).await.expect("summary");
    assert_eq!((summary.waiting, summary.active, summary.admitted), (1, 2, 4));
    assert_eq!(standing(&*rooms, &config, &joined[1], &who[1], at(11_000)).await, admitted_at(1_000, &config));
}

pub async fn no_stock_admits_nobody<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(600, 10, 60), users(3));
    join_all_of(&*rooms, &config, &who, T0).await;
    assert!(admit(&*rooms, &config, 0, at(5_000)).await.is_empty(), "sold out: nobody is let in");
    assert_eq!(admit(&*rooms, &config, 1, at(5_000)).await, who, "units came back");
}

pub async fn paused_keeps_places_and_admit_all_lets_everyone_in<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(60, 1, 60), users(5));
    join_all_of(&*rooms, &config, &who[..3], T0).await;
    rooms.set_state(SALE, &config, RoomState::Paused).await.expect("pause");
    assert!(admit(&*rooms, &config, 100, at(5_000)).await.is_empty());
    assert!(join(&*rooms, &config, &who[3], at(5_000)).await.new, "joining a paused room");
    rooms.set_state(SALE, &config, RoomState::AdmitAll).await.expect("admit all");
    assert_eq!(admit(&*rooms, &config, 100, at(5_001)).await, who[..4].to_vec(), "beyond pace and max_active");
    join(&*rooms, &config, &who[4], at(5_002)).await;
    assert_eq!(admit(&*rooms, &config, 100, at(5_002)).await, vec![who[4].clone()]);
    let summary = rooms.summary(SALE, &config, at(5_002)).await.expect("summary");
    assert_eq!((summary.state, summary.waiting, summary.admitted), (RoomState::AdmitAll, 0, 5));
}

pub async fn a_shuffled_pre_queue_is_admitted_in_seed_order<H: Harness>() {
    let h = H::open().await;
    let config = RoomConfig { mode: RoomMode::Shuffled, opens_at: at(-60_000), seed: 0xDEAD_BEEF, ..fifo(60, 100, 60) };
    let (rooms, who, late) = (h.rooms(), users(10), user("late"));
    let mut joined = Vec::new();
    for (i, one) in who.iter().enumerate() {
        joined.push(join(&*rooms, &config, one, at(-50_000 + i as i64)).await);
    }
    let before = Standing::Waiting { ahead: 9, order_known: false, eta_seconds: 10 };
    assert_eq!(standing(&*rooms, &config, &joined[0], &who[0], at(-1_000)).await, before);
    assert!(admit(&*rooms, &config, 100, at(-1_000)).await.is_empty(), "nobody before the start");
    let mut order = who.clone();
    shuffle(&mut order, config.seed);
    assert_ne!(order, who, "this seed moves someone");
    let first = who.iter().position(|one| *one == order[0]).expect("in the pre-queue");
    assert!(admit(&*rooms, &config, 100, T0).await.is_empty(), "no pace has accrued at the start");
    assert_eq!(standing(&*rooms, &config, &joined[first], &who[first], T0).await, waiting(0, 0));
    assert_eq!(join(&*rooms, &config, &late, at(10)).await.standing, waiting(10, 10), "after the pre-queue");
    rooms.set_state(SALE, &config, RoomState::AdmitAll).await.expect("admit all");
    order.push(late);
    assert_eq!(admit(&*rooms, &config, 100, at(20)).await, order);
}

/// A place read after the start shows the shuffled order, even before anyone was let in.
pub async fn places_after_the_start_follow_the_shuffle<H: Harness>() {
    let h = H::open().await;
    let config = RoomConfig { mode: RoomMode::Shuffled, opens_at: at(-60_000), seed: 0xDEAD_BEEF, ..fifo(60, 100, 60) };
    let (rooms, who) = (h.rooms(), users(10));
    let mut joined = Vec::new();
    for (i, one) in who.iter().enumerate() {
        joined.push(join(&*rooms, &config, one, at(-50_000 + i as i64)).await);
    }
    let mut order = who.clone();
    shuffle(&mut order, config.seed);
    for (place, one) in order.iter().enumerate() {
        let index = who.iter().position(|candidate| candidate == one).expect("in the pre-queue");
        let Standing::Waiting { ahead, order_known, .. } = standing(&*rooms, &config, &joined[index], one, T0).await
        else {
            panic!("{one} should still wait");
        };
        assert_eq!((ahead as usize, order_known), (place, true), "{one}");
    }
}

pub async fn another_users_ticket_is_unknown<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, alice, bob) = (h.rooms(), fifo(60, 10, 60), user("alice"), user("bob"));
    join(&*rooms, &config, &alice, T0).await;
    let bobs = join(&*rooms, &config, &bob, T0).await;
    assert_refused(rooms.standing(SALE, &config, &bobs.ticket, &alice, T0).await, RoomError::UnknownTicket);
    for ticket in [ticket_id("s_other", 0), ticket_id(SALE, 255), "garbage".to_owned()] {
        assert_refused(rooms.standing(SALE, &config, &ticket, &alice, T0).await, RoomError::UnknownTicket);
    }
}

pub async fn summary_counts_the_room<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, who) = (h.rooms(), fifo(120, 10, 60), users(3));
    let empty = rooms.summary(SALE, &config, T0).await.expect("summary");
    assert_eq!((empty.state, empty.waiting, empty.active, empty.admitted), (RoomState::Open, 0, 0, 0));
    assert_eq!(empty.rate_per_second, 2.0, "the configured pace before any admission");
    join_all_of(&*rooms, &config, &who, T0).await;
    assert_eq!(admit(&*rooms, &config, 100, at(1_000)).await, who[..2].to_vec());
    let summary = rooms.summary(SALE, &config, at(1_000)).await.expect("summary");
    assert_eq!((summary.waiting, summary.active, summary.admitted), (1, 2, 2));
    assert_eq!(summary.rate_per_second, 2.0);
    let later = rooms.summary(SALE, &config, at(30_000)).await.expect("summary");
    assert_eq!(later.rate_per_second, 2.0 * 1000.0 / 29_000.0, "two admissions over the 29 s since");
}

pub async fn ticket_of_finds_the_users_ticket<H: Harness>() {
    let h = H::open().await;
    let (rooms, config, alice) = (h.rooms(), fifo(60, 10, 60), user("alice"));
    assert_eq!(rooms.ticket_of(SALE, &alice).await.expect("ticket_of"), None);
    let joined = join(&*rooms, &config, &alice, T0).await;
    assert_eq!(rooms.ticket_of(SALE, &alice).await.expect("ticket_of"), Some(joined.ticket));
    assert_eq!(rooms.ticket_of(SALE, &user("bob")).await.expect("ticket_of"), None);
    assert_eq!(rooms.ticket_of("s_other", &alice).await.expect("ticket_of"), None);
}

pub async fn sales_lists_rooms<H: Harness>() {
    let h = H::open().await;
    let (rooms, config) = (h.rooms(), fifo(60, 10, 60));
    assert!(rooms.sales().await.expect("sales").is_empty());
    rooms.join("s_a", &config, &user("alice"), T0).await.expect("join");
    rooms.set_state("s_b", &config, RoomState::Paused).await.expect("set state");
    let mut sales = rooms.sales().await.expect("sales");
    sales.sort();
    assert_eq!(sales, ["s_a", "s_b"]);
}

pub async fn replicas_share_one_room<H: Harness>() {
    let h = H::open().await;
    let (a, b, config, who) = (h.rooms(), h.replica().await, fifo(600, 10, 60), users(2));
    let first = join(&*a, &config, &who[0], T0).await;
    let second = join(&*b, &config, &who[1], T0).await;
    assert_eq!(second.standing, waiting(1, 1), "behind the join on the other replica");
    assert_eq!(admit(&*b, &config, 100, at(1_000)).await, who);
    assert_eq!(standing(&*a, &config, &first, &who[0], at(1_000)).await, admitted_at(1_000, &config));
    a.finish(SALE, &who[1]).await.expect("finish");
    assert_eq!(standing(&*b, &config, &second, &who[1], at(1_000)).await, Standing::Finished);
    assert_eq!(b.ticket_of(SALE, &who[0]).await.expect("ticket_of"), Some(first.ticket));
}

pub async fn concurrent_joins_get_distinct_tickets<H: Harness>() {
    let h = H::open().await;
    let (a, b, config, who) = (h.rooms(), h.replica().await, fifo(60, 10, 60), users(40));
    let joins = who.iter().enumerate().map(|(i, one)| {
        let rooms = if i % 2 == 0 { a.clone() } else { b.clone() };
        let config = &config;
        async move { rooms.join(SALE, config, one, T0).await.expect("join") }
    });
    let mut tickets: Vec<String> = join_all(joins).await.into_iter().map(|joined| joined.ticket).collect();
    tickets.sort();
    tickets.dedup();
    assert_eq!(tickets.len(), who.len(), "one ticket each");
    assert_eq!(a.summary(SALE, &config, T0).await.expect("summary").waiting, 40);
}

pub async fn replicas_agree_on_the_shuffle<H: Harness>() {
    let h = H::open().await;
    let config = RoomConfig { mode: RoomMode::Shuffled, opens_at: at(-60_000), seed: 42, ..fifo(60, 100, 60) };
    let (a, b, who) = (h.rooms(), h.replica().await, users(20));
    let joined = join_all_of(&*a, &config, &who, at(-30_000)).await;
    // Both replicas reach the start at once: each finds the room due for its shuffle.
    let steps = (0..8).map(|i| {
        let rooms = if i % 2 == 0 { a.clone() } else { b.clone() };
        let config = &config;
        async move { rooms.admit_due(SALE, config, 100, T0).await.expect("admit_due") }
    });
    assert!(join_all(steps).await.iter().all(Vec::is_empty), "no pace has accrued at the start");
    let mut order = who.clone();
    shuffle(&mut order, config.seed);
    for (i, one) in who.iter().enumerate() {
        let expected = order.iter().position(|other| other == one).expect("in the pre-queue");
        let found = standing(&*b, &config, &joined[i], one, T0).await;
        let Standing::Waiting { ahead, order_known: true, .. } = found else { panic!("{one} stands {found:?}") };
        assert_eq!(ahead as usize, expected, "{one}'s place in the seed's order");
    }
}
