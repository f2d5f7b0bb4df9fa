//! Random bid sequences against a model that keeps only the list of bids and derives the
//! leader and the runner-up from it by brute force, the way the rules state them.

use proptest::prelude::*;

use super::*;

const SELLER: usize = 0;

#[derive(Debug, Clone)]
struct Scenario {
    starting_price_cents: i64,
    reserve_price_cents: Option<i64>,
    buy_now_price_cents: Option<i64>,
    duration_ms: i64,
    soft_close_seconds: u32,
    extend_seconds: u32,
    max_extensions: Option<u32>,
    ladder: Ladder,
    bidders: usize,
}

impl Scenario {
    fn config(&self) -> AuctionConfig {
        AuctionConfig {
            title: "model".to_string(),
            seller_id: format!("user-{SELLER}"),
            starting_price_cents: self.starting_price_cents,
            reserve_price_cents: self.reserve_price_cents,
            buy_now_price_cents: self.buy_now_price_cents,
            starts_at: T0,
            ends_at: T0.plus_millis(self.duration_ms),
            soft_close_seconds: self.soft_close_seconds,
            extend_seconds: self.extend_seconds,
            max_extensions: self.max_extensions,
            ladder: self.ladder.clone(),
            created_at: T0,
        }
    }
}

#[derive(Debug, Clone)]
enum Amount {
    /// Cents over (or under) the minimum the auction announces, so most bids are near it.
    OverMinimum(i64),
    Absolute(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Bid {
        user: usize,
        amount: Amount,
        key: Option<usize>,
    },
    BuyNow {
        user: usize,
    },
    AdvanceTime {
        millis: i64,
    },
    /// Jumps to this many milliseconds before the current end (never back in time).
    ToEnd {
        before_ms: i64,
    },
    Close,
    Restart,
}

/// Whole quarters of a second, so that times often land exactly on ends and window edges.
fn quarter_seconds(quarters: std::ops::Range<i64>) -> impl Strategy<Value = i64> {
    quarters.prop_map(|n| n * 250)
}

fn ladder() -> impl Strategy<Value = Ladder> {
    let custom = (1i64..300, proptest::collection::vec((1i64..3_000, 1i64..500), 0..5)).prop_map(|(first, rest)| {
        let mut steps = vec![(0, first)];
        let mut from = 0;
        for (gap, increment) in rest {
            from += gap;
            steps.push((from, increment));
        }
        Ladder::new(steps).unwrap()
    });
    prop_oneof![2 => Just(Ladder::standard()), 1 => custom]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![1i64..100, 1i64..5_000],
        proptest::option::of(1i64..20_000),
        proptest::option::of(1i64..100_000),
        quarter_seconds(4..400),
        prop_oneof![Just(0u32), 1u32..90],
        0u32..120,
        proptest::option::of(0u32..4),
        ladder(),
        2usize..=4,
    )
        .prop_map(
            |(
                starting_price_cents,
                reserve_price_cents,
                buy_now_price_cents,
                duration_ms,
                soft_close_seconds,
                extend_seconds,
                max_extensions,
                ladder,
                bidders,
            )| Scenario {
                starting_price_cents,
                reserve_price_cents,
                buy_now_price_cents,
                duration_ms,
                soft_close_seconds,
                extend_seconds,
                max_extensions,
                ladder,
                bidders,
            },
        )
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![
        1 => (-30i64..0).prop_map(Amount::OverMinimum),
        1 => Just(Amount::OverMinimum(0)),
        4 => (1i64..3_000).prop_map(Amount::OverMinimum),
        1 => (1i64..40_000).prop_map(Amount::Absolute),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..8, amount(), proptest::option::of(0usize..3))
            .prop_map(|(user, amount, key)| Op::Bid { user, amount, key }),
        1 => (0usize..8).prop_map(|user| Op::BuyNow { user }),
        4 => quarter_seconds(0..40).prop_map(|millis| Op::AdvanceTime { millis }),
        1 => prop_oneof![Just(0i64), Just(1), quarter_seconds(0..240)].prop_map(|before_ms| Op::ToEnd { before_ms }),
        1 => Just(Op::Close),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelBid {
    user: usize,
    max: i64,
    key: Option<usize>,
    placed_at: Timestamp,
    status: BidStatus,
    price_after: i64,
    leader_after: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelOutcome {
    ended_at: Timestamp,
    reason: EndReason,
    winner: Option<usize>,
    price: i64,
}

/// The auction as the rules read: the leader is the highest maximum (earliest among equals),
/// the runner-up the highest maximum of anyone else, both found by scanning every bid.
struct Model {
    config: AuctionConfig,
    bids: Vec<ModelBid>,
    price: i64,
    ends_at: Timestamp,
    extensions: u32,
    outcome: Option<ModelOutcome>,
}

impl Model {
    fn new(config: AuctionConfig) -> Self {
        Self {
            price: config.starting_price_cents,
            ends_at: config.ends_at,
            bids: Vec::new(),
            extensions: 0,
            outcome: None,
            config,
        }
    }

    /// The leader and their maximum.
    fn leader(&self) -> Option<(usize, i64)> {
        let mut best: Option<&ModelBid> = None;
        for bid in &self.bids {
            if best.is_none_or(|b| bid.max > b.max) {
                best = Some(bid);
            }
        }
        best.map(|b| (b.user, b.max))
    }

    fn second_max(&self) -> Option<i64> {
        let (leader, _) = self.leader()?;
        self.bids.iter().filter(|b| b.user != leader).map(|b| b.max).max()
    }

    fn increment(&self, price: i64) -> i64 {
        self.config.ladder.increment_at(price)
    }

    fn min_next(&self) -> i64 {
        if self.bids.is_empty() {
            self.config.starting_price_cents
        } else {
            self.price + self.increment(self.price)
        }
    }

    fn reserve_met(&self) -> bool {
        let leader_max = self.leader().map(|(_, max)| max);
        self.config.reserve_price_cents.is_none_or(|reserve| leader_max.is_some_and(|max| max >= reserve))
    }

    fn live(&self, now: Timestamp) -> bool {
        self.outcome.is_none() && now >= self.config.starts_at && now < self.ends_at
    }

    fn buy_now_offered(&self, now: Timestamp) -> bool {
        let open = self.bids.is_empty() || (self.config.reserve_price_cents.is_some() && !self.reserve_met());
        self.live(now) && self.config.buy_now_price_cents.is_some() && open
    }

    fn bid(&mut self, user: usize, max: i64, key: Option<usize>, now: Timestamp) -> Result<BidOutcome, AuctionError> {
        let earlier = self.bids.iter().position(|b| key.is_some() && b.user == user && b.key == key);
        if let Some(seq) = earlier {
            if self.bids[seq].max == max {
                return Ok(BidOutcome::Replayed(seq as BidSeq));
            }
            return Err(AuctionError::KeyReused);
        }
        if self.outcome.is_some() || now >= self.ends_at {
            return Err(AuctionError::NotLive);
        }
        if user == SELLER {
            return Err(AuctionError::SellerMayNotBid);
        }
        let leader_before = self.leader();
        let minimum = match leader_before {
            Some((leader, leader_max)) if leader == user => self.min_next().max(leader_max + 1),
            _ => self.min_next(),
        };
        if max < minimum {
            return Err(AuctionError::BidTooLow { minimum_cents: minimum });
        }
        let placeholder =
            ModelBid { user, max, key, placed_at: now, status: BidStatus::Outbid, price_after: 0, leader_after: user };
        self.bids.push(placeholder);
        self.price = self.price_after_bid(leader_before.is_some_and(|(leader, _)| leader == user));
        let (leader, _) = self.leader().unwrap();
        let bid = self.bids.last_mut().unwrap();
        bid.status = if leader == user { BidStatus::Leading } else { BidStatus::Outbid };
        bid.price_after = self.price;
        bid.leader_after = leader;
        self.soft_close(now);
        Ok(BidOutcome::Accepted((self.bids.len() - 1) as BidSeq))
    }

    fn price_after_bid(&self, leader_raised: bool) -> i64 {
        let starting = self.config.starting_price_cents;
        let (_, leader_max) = self.leader().unwrap();
        let proxy = match (leader_raised, self.second_max()) {
            (true, _) => self.price,
            (false, None) => starting,
            (false, Some(second)) => (second + self.increment(second)).min(leader_max).max(starting),
        };
        match self.config.reserve_price_cents {
            Some(reserve) if leader_max >= reserve => proxy.max(reserve).min(leader_max),
            _ => proxy,
        }
    }

    fn soft_close(&mut self, now: Timestamp) {
        let window = i64::from(self.config.soft_close_seconds) * 1000;
        let capped = self.config.max_extensions.is_some_and(|cap| self.extensions >= cap);
        if window == 0 || now < self.config.starts_at || self.ends_at.0 - now.0 > window || capped {
            return;
        }
        let extended = now.plus_seconds(self.config.extend_seconds);
        if extended > self.ends_at {
            self.ends_at = extended;
            self.extensions += 1;
        }
    }

    fn buy_now(&mut self, user: usize, now: Timestamp) -> Result<(), AuctionError> {
        if !self.live(now) {
            return Err(AuctionError::NotLive);
        }
        if user == SELLER {
            return Err(AuctionError::SellerMayNotBid);
        }
        if !self.buy_now_offered(now) {
            return Err(AuctionError::BuyNowUnavailable);
        }
        let price = self.config.buy_now_price_cents.unwrap();
        self.outcome = Some(ModelOutcome { ended_at: now, reason: EndReason::BoughtNow, winner: Some(user), price });
        Ok(())
    }

    fn close(&mut self, now: Timestamp) -> Option<ModelOutcome> {
        if self.outcome.is_some() || now < self.ends_at {
            return None;
        }
        let winner = self.leader().map(|(leader, _)| leader).filter(|_| self.reserve_met());
        let outcome = ModelOutcome { ended_at: self.ends_at, reason: EndReason::Closed, winner, price: self.price };
        self.outcome = Some(outcome.clone());
        Some(outcome)
    }
}

struct Harness {
    config: AuctionConfig,
    auction: Auction,
    model: Model,
    users: Vec<UserId>,
    keys: Vec<IdempotencyKey>,
    now: Timestamp,
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        let config = scenario.config();
        Self {
            auction: Auction::new(config.clone()),
            model: Model::new(config.clone()),
            config,
            users: (0..=scenario.bidders).map(|i| user(&format!("user-{i}"))).collect(),
            keys: (0..3).map(|i| key(&format!("key-{i}"))).collect(),
            // Start before the auction, so that pre-bids happen.
            now: T0.plus_millis(-10_000),
        }
    }

    fn index_of(&self, user: &UserId) -> usize {
        self.users.iter().position(|u| u == user).unwrap()
    }

    fn step(&mut self, op: &Op) {
        let (ends_before, now) = (self.auction.ends_at(), self.now);
        match op {
            Op::Bid { user, amount, key } => {
                let user = user % self.users.len();
                let cents = match amount {
                    Amount::OverMinimum(over) => self.auction.min_next_bid_cents() + over,
                    Amount::Absolute(cents) => *cents,
                };
                let got = self.auction.place_bid(&self.users[user], cents, key.map(|k| self.keys[k].clone()), now);
                assert_eq!(got, self.model.bid(user, cents, *key, now), "{op:?}");
            }
            Op::BuyNow { user } => {
                let user = user % self.users.len();
                let got = self.auction.buy_now(&self.users[user], now);
                assert_eq!(got, self.model.buy_now(user, now), "{op:?}");
            }
            Op::AdvanceTime { millis } => self.now = now.plus_millis(*millis),
            Op::ToEnd { before_ms } => self.now = now.max(self.auction.ends_at().plus_millis(-before_ms)),
            Op::Close => {
                let got = self.auction.close_if_due(now).cloned();
                assert_eq!(got, self.model.close(now).map(|o| self.outcome_of(&o)), "{op:?}");
            }
            Op::Restart => self.auction = restored(&self.config, &self.auction),
        }
        self.check_state_matches_model();
        self.check_invariants(ends_before);
    }

    fn outcome_of(&self, outcome: &ModelOutcome) -> Outcome {
        Outcome {
            ended_at: outcome.ended_at,
            reason: outcome.reason.clone(),
            winner: outcome.winner.map(|w| self.users[w].clone()),
            price_cents: outcome.price,
        }
    }

    fn check_state_matches_model(&self) {
        let (auction, model) = (&self.auction, &self.model);
        let bids: Vec<ModelBid> = auction
            .bids()
            .iter()
            .enumerate()
            .map(|(seq, b)| {
                assert_eq!(b.seq as usize, seq, "seq");
                ModelBid {
                    user: self.index_of(&b.user),
                    max: b.max_amount_cents,
                    key: b.idempotency_key.as_ref().map(|k| self.keys.iter().position(|x| x == k).unwrap()),
                    placed_at: b.placed_at,
                    status: b.status,
                    price_after: b.price_after_cents,
                    leader_after: self.index_of(&b.leader_after),
                }
            })
            .collect();
        assert_eq!(bids, model.bids, "bids");
        let leader = auction.leader().map(|u| self.index_of(u));
        assert_eq!(leader, model.leader().map(|(user, _)| user), "leader");
        assert_eq!(auction.current_price_cents(), model.price, "price");
        assert_eq!(auction.min_next_bid_cents(), model.min_next(), "min next");
        assert_eq!(auction.reserve_met(), model.reserve_met(), "reserve met");
        assert_eq!(auction.buy_now_offered(self.now), model.buy_now_offered(self.now), "buy-now offered");
        assert_eq!((auction.ends_at(), auction.extensions()), (model.ends_at, model.extensions), "end");
        assert_eq!(auction.outcome().cloned(), model.outcome.as_ref().map(|o| self.outcome_of(o)), "outcome");
        assert_eq!(auction.bid_count() as usize, model.bids.len(), "bid count");
        let version = 1 + model.bids.len() as u64 + u64::from(model.outcome.is_some());
        assert_eq!(auction.version(), version, "version");
    }

    /// The properties (a)–(e) stated directly, without the model's bookkeeping.
    fn check_invariants(&self, ends_before: Timestamp) {
        let auction = &self.auction;
        let config = auction.config();
        let price = auction.current_price_cents();
        assert!(price >= config.starting_price_cents, "price below the start");
        if let Some((leader, leader_max)) = self.model.leader() {
            // (a) The leader holds the highest maximum, the earliest among equals.
            let maxima = auction.bids().iter().map(|b| b.max_amount_cents);
            assert_eq!(maxima.clone().max(), Some(leader_max), "leader max");
            let first_at_top = auction.bids().iter().find(|b| b.max_amount_cents == leader_max).unwrap();
            assert_eq!(auction.leader(), Some(&first_at_top.user), "earliest among equals leads");
            assert_eq!(self.index_of(&first_at_top.user), leader);
            // (b) Within the leader's maximum and one increment over the runner-up, unless
            // lifted to the reserve.
            assert!(price <= leader_max, "price above the leader's maximum");
            let ceiling = match self.model.second_max() {
                Some(second) => (second + config.ladder.increment_at(second)).max(config.starting_price_cents),
                None => config.starting_price_cents,
            };
            let reserve = config.reserve_price_cents.filter(|&reserve| leader_max >= reserve);
            assert!(price <= ceiling.max(reserve.unwrap_or(ceiling)), "price above the runner-up plus one increment");
            // (c) A new bid always has to beat the current price.
            assert!(auction.min_next_bid_cents() > price, "minimum not above the price");
        }
        // (e) The end only moves out, and within the cap.
        assert!(auction.ends_at() >= ends_before, "end moved back");
        assert!(config.max_extensions.is_none_or(|cap| auction.extensions() <= cap), "too many extensions");
    }

    /// (d) The accepted bids, placed again in order at their times on a fresh auction, and
    /// restored from storage, give the same auction.
    fn check_replay(&self) {
        let mut fresh = Auction::new(self.config.clone());
        for bid in self.auction.bids() {
            let replayed = fresh.place_bid(&bid.user, bid.max_amount_cents, bid.idempotency_key.clone(), bid.placed_at);
            assert_eq!(replayed, Ok(BidOutcome::Accepted(bid.seq)), "replay of {bid:?}");
        }
        assert_eq!(fresh.bids(), self.auction.bids(), "replayed bids");
        assert_eq!(fresh.current_price_cents(), self.auction.current_price_cents(), "replayed price");
        assert_eq!(fresh.leader(), self.auction.leader(), "replayed leader");
        assert_eq!((fresh.ends_at(), fresh.extensions()), (self.auction.ends_at(), self.auction.extensions()));

        let restored = restored(&self.config, &self.auction);
        assert_eq!(restored.bids(), self.auction.bids(), "restored bids");
        assert_eq!(restored.current_price_cents(), self.auction.current_price_cents(), "restored price");
        assert_eq!(restored.leader(), self.auction.leader(), "restored leader");
        assert_eq!(restored.min_next_bid_cents(), self.auction.min_next_bid_cents(), "restored minimum");
        assert_eq!(restored.version(), self.auction.version(), "restored version");
        assert_eq!(restored.outcome(), self.auction.outcome(), "restored outcome");
    }
}

fn restored(config: &AuctionConfig, auction: &Auction) -> Auction {
    let (bids, outcome) = (auction.bids().to_vec(), auction.outcome().cloned());
    Auction::restore(config.clone(), bids, auction.ends_at(), auction.extensions(), outcome).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn auction_agrees_with_the_model(scenario in scenario(), ops in proptest::collection::vec(op(), 0..60)) {
        let mut harness = Harness::new(&scenario);
        for op in &ops {
            harness.step(op);
        }
        harness.check_replay();
    }
}
