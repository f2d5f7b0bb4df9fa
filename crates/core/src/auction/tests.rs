use super::*;
use crate::types::*;

mod properties;

const T0: Timestamp = Timestamp(1_800_000_000_000);
/// One hour after `T0`: the scheduled end in `config()`.
const END: Timestamp = Timestamp(T0.0 + 3_600_000);

fn config() -> AuctionConfig {
    AuctionConfig {
        title: "camera".to_string(),
        seller_id: "seller".to_string(),
        starting_price_cents: 1_000,
        reserve_price_cents: None,
        buy_now_price_cents: None,
        starts_at: T0,
        ends_at: END,
        soft_close_seconds: 60,
        extend_seconds: 120,
        max_extensions: None,
        ladder: Ladder::standard(),
        created_at: T0.plus_millis(-3_600_000),
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(text).unwrap()
}

fn secs(n: u32) -> Timestamp {
    T0.plus_seconds(n)
}

fn bid(auction: &mut Auction, who: &str, cents: i64, now: Timestamp) -> Result<BidSeq, AuctionError> {
    Ok(auction.place_bid(&user(who), cents, None, now)?.seq())
}

fn keyed(auction: &mut Auction, who: &str, cents: i64, k: &str, now: Timestamp) -> Result<BidOutcome, AuctionError> {
    auction.place_bid(&user(who), cents, Some(key(k)), now)
}

fn too_low(minimum_cents: i64) -> Result<BidSeq, AuctionError> {
    Err(AuctionError::BidTooLow { minimum_cents })
}

fn status_of(auction: &Auction, seq: BidSeq) -> BidStatus {
    auction.bid(seq).unwrap().status
}

fn leader(auction: &Auction) -> Option<&str> {
    auction.leader().map(UserId::as_str)
}

fn with_reserve(reserve_cents: i64) -> Auction {
    Auction::new(AuctionConfig { reserve_price_cents: Some(reserve_cents), ..config() })
}

#[test]
fn standard_ladder_steps_and_boundaries() {
    let ladder = Ladder::standard();
    assert_eq!(ladder.steps().len(), 10);
    assert_eq!(ladder.steps()[0], (0, 5));
    assert_eq!(ladder.steps()[9], (500_000, 10_000));
    let cases = [
        (-7, 5),
        (0, 5),
        (99, 5),
        (100, 25),
        (499, 25),
        (500, 50),
        (2_499, 50),
        (2_500, 100),
        (9_999, 100),
        (10_000, 250),
        (24_999, 250),
        (25_000, 500),
        (50_000, 1_000),
        (100_000, 2_500),
        (250_000, 5_000),
        (499_999, 5_000),
        (500_000, 10_000),
        (i64::MAX, 10_000),
    ];
    for (price, increment) in cases {
        assert_eq!(ladder.increment_at(price), increment, "at {price}");
    }
}

#[test]
fn custom_ladder_is_validated() {
    let error = |steps: Vec<(i64, i64)>| Ladder::new(steps).unwrap_err();
    assert_eq!(error(vec![]).field, "increments");
    assert_eq!(error(vec![(1, 5)]).field, "increments");
    assert_eq!(error(vec![(0, 5), (100, 10), (100, 20)]).field, "increments");
    assert_eq!(error(vec![(0, 5), (200, 10), (100, 20)]).field, "increments");
    assert_eq!(error(vec![(0, 5), (100, 0)]).field, "increments");
    assert_eq!(error(vec![(0, -1)]).field, "increments");

    let ladder = Ladder::new(vec![(0, 1), (10, 7)]).unwrap();
    assert_eq!(ladder.steps(), &[(0, 1), (10, 7)]);
    assert_eq!(ladder.increment_at(9), 1);
    assert_eq!(ladder.increment_at(10), 7);
    assert_eq!(Ladder::new(Ladder::standard().steps().to_vec()), Ok(Ladder::standard()));
}

#[test]
fn a_new_auction_shows_the_starting_price_and_no_leader() {
    let auction = Auction::new(config());

    assert_eq!(auction.current_price_cents(), 1_000);
    assert_eq!(auction.min_next_bid_cents(), 1_000);
    assert_eq!(auction.leader(), None);
    assert_eq!(auction.bid_count(), 0);
    assert_eq!(auction.ends_at(), END);
    assert_eq!(auction.extensions(), 0);
    assert_eq!(auction.version(), 1);
    assert!(auction.reserve_met());
    assert_eq!(auction.outcome(), None);
    assert_eq!(auction.status(T0.plus_millis(-1)), AuctionStatus::Scheduled);
    assert_eq!(auction.status(T0), AuctionStatus::Live);
    assert_eq!(auction.status(END.plus_millis(-1)), AuctionStatus::Live);
    assert_eq!(auction.status(END), AuctionStatus::Ended);
    assert!(!with_reserve(5_000).reserve_met());
}

#[test]
fn the_leader_pays_one_increment_over_the_runner_up() {
    let mut auction = Auction::new(config());

    assert_eq!(bid(&mut auction, "alice", 5_000, secs(1)), Ok(0));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (1_000, Some("alice")));
    assert_eq!(auction.min_next_bid_cents(), 1_050);

    assert_eq!(bid(&mut auction, "bob", 2_000, secs(2)), Ok(1));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (2_050, Some("alice")));
    let recorded = auction.bid(1).unwrap();
    assert_eq!(recorded.status, BidStatus::Outbid);
    assert_eq!(recorded.price_after_cents, 2_050);
    assert_eq!(recorded.leader_after, user("alice"));
    assert_eq!(recorded.placed_at, secs(2));
    assert_eq!(status_of(&auction, 0), BidStatus::Leading);

    assert_eq!(bid(&mut auction, "carol", 6_000, secs(3)), Ok(2));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (5_100, Some("carol")));
    assert_eq!(status_of(&auction, 2), BidStatus::Leading);

    // Capped at the leader's maximum although the runner-up plus an increment is above it.
    assert_eq!(bid(&mut auction, "dave", 5_990, secs(4)), Ok(3));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (6_000, Some("carol")));
    assert_eq!(status_of(&auction, 3), BidStatus::Outbid);
    assert_eq!(auction.bid_count(), 4);
    assert_eq!(auction.version(), 5);
}

#[test]
fn equal_maxima_go_to_the_earlier_bid() {
    let mut auction = Auction::new(config());
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();

    assert_eq!(bid(&mut auction, "bob", 3_000, secs(2)), Ok(1));

    assert_eq!(status_of(&auction, 1), BidStatus::Outbid);
    assert_eq!((auction.current_price_cents(), leader(&auction)), (3_000, Some("alice")));
    assert_eq!(auction.min_next_bid_cents(), 3_100);
    assert_eq!(bid(&mut auction, "bob", 3_100, secs(3)), Ok(2));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (3_100, Some("bob")));
}

#[test]
fn a_leader_raising_their_maximum_does_not_raise_the_price() {
    let mut auction = Auction::new(config());
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();
    bid(&mut auction, "bob", 2_000, secs(2)).unwrap();

    assert_eq!(bid(&mut auction, "alice", 3_000, secs(3)), too_low(3_001));
    assert_eq!(bid(&mut auction, "alice", 8_000, secs(3)), Ok(2));

    assert_eq!((auction.current_price_cents(), leader(&auction)), (2_050, Some("alice")));
    assert_eq!(status_of(&auction, 2), BidStatus::Leading);
    assert_eq!(auction.min_next_bid_cents(), 2_100);
    assert_eq!(bid(&mut auction, "alice", 8_000, secs(4)), too_low(8_001));
    // The raise counts once bob comes back: he needs more than 8_000 to lead.
    assert_eq!(bid(&mut auction, "bob", 7_000, secs(5)), Ok(3));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (7_100, Some("alice")));
}

#[test]
fn a_leader_tied_at_the_price_must_also_reach_the_general_minimum() {
    let mut auction = Auction::new(config());
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();
    bid(&mut auction, "bob", 3_000, secs(2)).unwrap();

    assert_eq!(bid(&mut auction, "alice", 3_000, secs(3)), too_low(3_100));
    assert_eq!(bid(&mut auction, "alice", 3_050, secs(3)), too_low(3_100));
    assert_eq!(bid(&mut auction, "alice", 3_100, secs(3)), Ok(2));
    assert_eq!(auction.current_price_cents(), 3_000);
}

#[test]
fn bids_below_the_minimum_are_refused_with_the_exact_minimum() {
    let mut auction = Auction::new(config());

    assert_eq!(bid(&mut auction, "alice", 999, secs(1)), too_low(1_000));
    assert_eq!(bid(&mut auction, "alice", 1_000, secs(1)), Ok(0));
    assert_eq!(bid(&mut auction, "bob", 1_049, secs(2)), too_low(1_050));
    assert_eq!(bid(&mut auction, "bob", 1_050, secs(2)), Ok(1));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (1_050, Some("bob")));
    assert_eq!(auction.bid_count(), 2);
    assert_eq!(auction.version(), 3);
}

#[test]
fn the_minimum_uses_the_increment_at_the_current_price_across_a_step() {
    let mut auction = Auction::new(AuctionConfig { starting_price_cents: 2_450, ..config() });
    bid(&mut auction, "alice", 5_000, secs(1)).unwrap();
    assert_eq!(auction.min_next_bid_cents(), 2_500);

    bid(&mut auction, "bob", 2_500, secs(2)).unwrap();

    assert_eq!(auction.current_price_cents(), 2_600);
    assert_eq!(auction.min_next_bid_cents(), 2_700);
    assert_eq!(bid(&mut auction, "bob", 2_699, secs(3)), too_low(2_700));
}

#[test]
fn the_reserve_stays_hidden_until_a_maximum_meets_it() {
    let mut auction = with_reserve(5_000);
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();
    assert_eq!(auction.current_price_cents(), 1_000);
    assert!(!auction.reserve_met());

    bid(&mut auction, "bob", 4_000, secs(2)).unwrap();
    assert_eq!((auction.current_price_cents(), leader(&auction)), (3_100, Some("bob")));
    assert!(!auction.reserve_met());

    // Met by the leader raising: the price jumps to the reserve, not to the new maximum.
    bid(&mut auction, "bob", 9_000, secs(3)).unwrap();
    assert_eq!(auction.current_price_cents(), 5_000);
    assert!(auction.reserve_met());
    assert_eq!(auction.bid(2).unwrap().price_after_cents, 5_000);
}

#[test]
fn a_challenger_meeting_the_reserve_pays_at_least_the_reserve() {
    let mut auction = with_reserve(5_000);
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();

    bid(&mut auction, "bob", 7_000, secs(2)).unwrap();

    assert_eq!((auction.current_price_cents(), leader(&auction)), (5_000, Some("bob")));
    bid(&mut auction, "carol", 6_000, secs(3)).unwrap();
    assert_eq!(auction.current_price_cents(), 6_100);
}

#[test]
fn a_first_bid_at_the_reserve_pays_the_reserve_not_the_starting_price() {
    let mut auction = with_reserve(5_000);

    bid(&mut auction, "alice", 5_000, secs(1)).unwrap();

    assert_eq!(auction.current_price_cents(), 5_000);
    assert!(auction.reserve_met());
    assert_eq!(auction.min_next_bid_cents(), 5_100);
}

#[test]
fn the_seller_may_not_bid_or_buy() {
    let mut auction = Auction::new(AuctionConfig { buy_now_price_cents: Some(50_000), ..config() });

    assert_eq!(bid(&mut auction, "seller", 5_000, secs(1)), Err(AuctionError::SellerMayNotBid));
    assert_eq!(auction.buy_now(&user("seller"), secs(1)), Err(AuctionError::SellerMayNotBid));
    assert_eq!(auction.bid_count(), 0);
    assert_eq!(auction.outcome(), None);
    assert_eq!(auction.version(), 1);
}

#[test]
fn buy_now_is_offered_until_the_first_bid() {
    let mut auction = Auction::new(AuctionConfig { buy_now_price_cents: Some(50_000), ..config() });
    assert!(!auction.buy_now_offered(T0.plus_millis(-1)));
    assert_eq!(auction.buy_now(&user("bob"), T0.plus_millis(-1)), Err(AuctionError::NotLive));
    assert!(auction.buy_now_offered(T0));

    bid(&mut auction, "alice", 2_000, secs(1)).unwrap();

    assert!(!auction.buy_now_offered(secs(2)));
    assert_eq!(auction.buy_now(&user("bob"), secs(2)), Err(AuctionError::BuyNowUnavailable));
    assert_eq!(auction.outcome(), None);
}

#[test]
fn buy_now_without_a_price_is_unavailable() {
    let mut auction = Auction::new(config());

    assert!(!auction.buy_now_offered(secs(1)));
    assert_eq!(auction.buy_now(&user("bob"), secs(1)), Err(AuctionError::BuyNowUnavailable));
}

#[test]
fn with_a_reserve_buy_now_stays_until_the_reserve_is_met() {
    let config = AuctionConfig { reserve_price_cents: Some(5_000), buy_now_price_cents: Some(50_000), ..config() };
    let mut auction = Auction::new(config);
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();
    assert!(auction.buy_now_offered(secs(2)));

    bid(&mut auction, "alice", 6_000, secs(2)).unwrap();

    assert!(!auction.buy_now_offered(secs(3)));
    assert_eq!(auction.buy_now(&user("bob"), secs(3)), Err(AuctionError::BuyNowUnavailable));
}

#[test]
fn buy_now_ends_the_auction_with_the_buyer_as_winner() {
    let config = AuctionConfig { reserve_price_cents: Some(5_000), buy_now_price_cents: Some(50_000), ..config() };
    let mut auction = Auction::new(config);
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();

    assert_eq!(auction.buy_now(&user("bob"), secs(10)), Ok(()));

    let expected =
        Outcome { ended_at: secs(10), reason: EndReason::BoughtNow, winner: Some(user("bob")), price_cents: 50_000 };
    assert_eq!(auction.outcome(), Some(&expected));
    assert_eq!(auction.status(secs(10)), AuctionStatus::Ended);
    assert_eq!(auction.version(), 3);
    assert_eq!(bid(&mut auction, "alice", 9_000, secs(11)), Err(AuctionError::NotLive));
    assert_eq!(auction.buy_now(&user("carol"), secs(11)), Err(AuctionError::NotLive));
    assert_eq!(auction.close_if_due(END), None);
    assert_eq!(auction.outcome(), Some(&expected));
    assert_eq!(auction.version(), 3);
}

#[test]
fn a_bid_in_the_soft_close_window_extends_the_end() {
    let mut auction = Auction::new(config());
    let window_start = END.plus_millis(-60_000);

    bid(&mut auction, "alice", 2_000, window_start.plus_millis(-1)).unwrap();
    assert_eq!((auction.ends_at(), auction.extensions()), (END, 0));

    bid(&mut auction, "bob", 3_000, window_start).unwrap();
    assert_eq!((auction.ends_at(), auction.extensions()), (window_start.plus_seconds(120), 1));
    assert_eq!(auction.version(), 3);

    let new_end = auction.ends_at();
    bid(&mut auction, "alice", 4_000, new_end.plus_millis(-1)).unwrap();
    assert_eq!((auction.ends_at(), auction.extensions()), (new_end.plus_millis(-1).plus_seconds(120), 2));
    assert_eq!(auction.status(new_end), AuctionStatus::Live);
}

#[test]
fn an_extension_counts_only_when_the_end_moves() {
    let mut auction = Auction::new(AuctionConfig { extend_seconds: 30, ..config() });

    bid(&mut auction, "alice", 2_000, END.plus_millis(-60_000)).unwrap();
    assert_eq!((auction.ends_at(), auction.extensions()), (END, 0));

    bid(&mut auction, "bob", 3_000, END.plus_millis(-10_000)).unwrap();
    assert_eq!((auction.ends_at(), auction.extensions()), (END.plus_millis(20_000), 1));
}

#[test]
fn extensions_stop_at_the_cap() {
    let mut auction = Auction::new(AuctionConfig { max_extensions: Some(2), ..config() });

    for (i, cents) in [2_000, 3_000, 4_000].into_iter().enumerate() {
        let now = auction.ends_at().plus_millis(-1_000);
        bid(&mut auction, if i % 2 == 0 { "alice" } else { "bob" }, cents, now).unwrap();
    }

    assert_eq!(auction.extensions(), 2);
    assert_eq!(auction.ends_at(), END.plus_millis(-1_000).plus_seconds(120).plus_millis(-1_000).plus_seconds(120));
    assert_eq!(auction.version(), 4);
}

#[test]
fn zero_soft_close_seconds_is_a_hard_close() {
    let mut auction = Auction::new(AuctionConfig { soft_close_seconds: 0, ..config() });

    assert_eq!(bid(&mut auction, "alice", 2_000, END.plus_millis(-1)), Ok(0));

    assert_eq!((auction.ends_at(), auction.extensions()), (END, 0));
    assert_eq!(bid(&mut auction, "bob", 3_000, END), Err(AuctionError::NotLive));
}

#[test]
fn the_last_millisecond_is_in_and_the_end_is_out() {
    let mut auction = Auction::new(config());

    assert_eq!(bid(&mut auction, "bob", 3_000, END), Err(AuctionError::NotLive));
    assert_eq!(bid(&mut auction, "alice", 2_000, END.plus_millis(-1)), Ok(0));
    assert_eq!(auction.ends_at(), END.plus_millis(-1).plus_seconds(120));
    assert_eq!(bid(&mut auction, "bob", 3_000, END), Ok(1));

    let end = auction.ends_at();
    assert_eq!(bid(&mut auction, "carol", 9_000, end), Err(AuctionError::NotLive));
    assert_eq!(auction.bid_count(), 2);
}

#[test]
fn pre_bids_are_resolved_on_arrival_and_never_extend() {
    // The auction is shorter than the soft-close window, so a pre-bid is "near the end".
    let config = AuctionConfig { starts_at: END.plus_millis(-30_000), ..config() };
    let start = config.starts_at;
    let mut auction = Auction::new(config);
    assert_eq!(auction.status(start.plus_millis(-1)), AuctionStatus::Scheduled);

    assert_eq!(bid(&mut auction, "alice", 3_000, start.plus_millis(-1)), Ok(0));
    assert_eq!(bid(&mut auction, "bob", 2_000, start.plus_millis(-500)), Ok(1));

    assert_eq!((auction.ends_at(), auction.extensions()), (END, 0));
    assert_eq!((auction.current_price_cents(), leader(&auction)), (2_050, Some("alice")));
    assert_eq!(bid(&mut auction, "carol", 4_000, start), Ok(2));
    assert_eq!((auction.ends_at(), auction.extensions()), (start.plus_seconds(120), 1));
}

#[test]
fn a_repeated_key_replays_the_original_bid() {
    let mut auction = Auction::new(config());
    assert_eq!(keyed(&mut auction, "alice", 3_000, "k1", secs(1)), Ok(BidOutcome::Accepted(0)));
    let version = auction.version();

    assert_eq!(keyed(&mut auction, "alice", 3_000, "k1", secs(2)), Ok(BidOutcome::Replayed(0)));
    assert_eq!(keyed(&mut auction, "alice", 3_500, "k1", secs(2)), Err(AuctionError::KeyReused));

    assert_eq!((auction.bid_count(), auction.version()), (1, version));
    assert_eq!(auction.bid(0).unwrap().idempotency_key, Some(key("k1")));
    assert_eq!(keyed(&mut auction, "bob", 3_000, "k1", secs(3)), Ok(BidOutcome::Accepted(1)));
    assert_eq!(keyed(&mut auction, "bob", 3_000, "k1", secs(3)), Ok(BidOutcome::Replayed(1)));
    assert_eq!(keyed(&mut auction, "alice", 4_000, "k2", secs(4)), Ok(BidOutcome::Accepted(2)));
}

#[test]
fn a_replay_wins_over_the_minimum_and_the_end() {
    let mut auction = Auction::new(config());
    keyed(&mut auction, "alice", 1_000, "k", secs(1)).unwrap();
    bid(&mut auction, "bob", 5_000, secs(2)).unwrap();

    assert_eq!(keyed(&mut auction, "alice", 1_000, "k", secs(3)), Ok(BidOutcome::Replayed(0)));
    auction.close_if_due(END).unwrap();
    assert_eq!(keyed(&mut auction, "alice", 1_000, "k", END), Ok(BidOutcome::Replayed(0)));
    assert_eq!(keyed(&mut auction, "alice", 1_000, "other", END), Err(AuctionError::NotLive));
}

#[test]
fn closing_gives_the_lot_to_the_leader_at_the_current_price() {
    let mut auction = Auction::new(config());
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();
    bid(&mut auction, "bob", 2_000, secs(2)).unwrap();

    assert_eq!(auction.close_if_due(END.plus_millis(-1)), None);
    assert_eq!(auction.version(), 3);
    let late = END.plus_millis(5_000);
    let expected =
        Outcome { ended_at: END, reason: EndReason::Closed, winner: Some(user("alice")), price_cents: 2_050 };
    assert_eq!(auction.close_if_due(late), Some(&expected));

    assert_eq!(auction.outcome(), Some(&expected));
    assert_eq!(auction.version(), 4);
    assert_eq!(auction.close_if_due(late), None);
    assert_eq!(auction.version(), 4);
    assert_eq!(auction.status(late), AuctionStatus::Ended);
}

#[test]
fn closing_below_the_reserve_or_without_bids_has_no_winner() {
    let mut below = with_reserve(5_000);
    bid(&mut below, "alice", 4_000, secs(1)).unwrap();
    let outcome = below.close_if_due(END).cloned().unwrap();
    assert_eq!(outcome, Outcome { ended_at: END, reason: EndReason::Closed, winner: None, price_cents: 1_000 });

    let mut empty = Auction::new(config());
    let outcome = empty.close_if_due(END).cloned().unwrap();
    assert_eq!(outcome, Outcome { ended_at: END, reason: EndReason::Closed, winner: None, price_cents: 1_000 });
}

#[test]
fn restore_reproduces_the_state() {
    let config = AuctionConfig { reserve_price_cents: Some(5_000), max_extensions: Some(3), ..config() };
    let mut auction = Auction::new(config.clone());
    keyed(&mut auction, "alice", 3_000, "a1", secs(1)).unwrap();
    bid(&mut auction, "bob", 2_000, T0.plus_millis(-5)).unwrap();
    bid(&mut auction, "bob", 4_000, END.plus_millis(-1_000)).unwrap();
    let now = auction.ends_at().plus_millis(-500);
    keyed(&mut auction, "bob", 6_000, "b1", now).unwrap();
    let now = auction.ends_at().plus_millis(-1);
    bid(&mut auction, "carol", 5_500, now).unwrap();
    assert_eq!(auction.extensions(), 3);

    let restored = |auction: &Auction| {
        let (bids, outcome) = (auction.bids().to_vec(), auction.outcome().cloned());
        Auction::restore(config.clone(), bids, auction.ends_at(), auction.extensions(), outcome).unwrap()
    };
    let same = |a: &Auction, b: &Auction| {
        assert_eq!(a.bids(), b.bids());
        assert_eq!((a.current_price_cents(), a.leader()), (b.current_price_cents(), b.leader()));
        assert_eq!((a.min_next_bid_cents(), a.reserve_met()), (b.min_next_bid_cents(), b.reserve_met()));
        assert_eq!((a.ends_at(), a.extensions(), a.version()), (b.ends_at(), b.extensions(), b.version()));
        assert_eq!(a.outcome(), b.outcome());
    };
    let mut copy = restored(&auction);
    same(&auction, &copy);
    assert_eq!(keyed(&mut copy, "bob", 6_000, "b1", END), Ok(BidOutcome::Replayed(3)));
    assert_eq!(keyed(&mut copy, "bob", 7_000, "b1", END), Err(AuctionError::KeyReused));

    auction.close_if_due(auction.ends_at()).unwrap();
    let closed = restored(&auction);
    same(&auction, &closed);
    assert_eq!(closed.outcome().unwrap().winner, Some(user("bob")));
}

#[test]
fn restore_rejects_bids_out_of_sequence() {
    let mut auction = Auction::new(config());
    bid(&mut auction, "alice", 3_000, secs(1)).unwrap();
    bid(&mut auction, "bob", 2_000, secs(2)).unwrap();
    let mut bids = auction.bids().to_vec();
    bids[1].seq = 2;

    assert!(Auction::restore(config(), bids, END, 0, None).is_none());
    assert!(Auction::restore(config(), auction.bids()[1..].to_vec(), END, 0, None).is_none());
    assert!(Auction::restore(config(), Vec::new(), END, 0, None).is_some());
}

#[test]
fn statuses_and_reasons_have_stable_names() {
    let statuses = [AuctionStatus::Scheduled, AuctionStatus::Live, AuctionStatus::Ended];
    assert_eq!(statuses.map(AuctionStatus::as_str), ["scheduled", "live", "ended"]);
    for status in [BidStatus::Leading, BidStatus::Outbid] {
        assert_eq!(BidStatus::parse(status.as_str()), Some(status));
    }
    assert_eq!(BidStatus::Outbid.as_str(), "outbid");
    for reason in [EndReason::Closed, EndReason::BoughtNow] {
        assert_eq!(EndReason::parse(reason.as_str()), Some(reason));
    }
    assert_eq!(EndReason::BoughtNow.as_str(), "bought_now");
    assert_eq!(BidStatus::parse("won"), None);
    assert_eq!(EndReason::parse(""), None);
}
