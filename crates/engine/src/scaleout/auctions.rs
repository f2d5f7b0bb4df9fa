//! Auctions in scale-out mode. Each step is one Lua script over the auction's keys (see
//! `lua/auction.lua`), which share the hash tag of the sale its lot becomes: the step that ends
//! an auction with a winner also creates that sale and the winner's hold, atomically, on a
//! single node and on a cluster alike. Bids and the auction's rows go to Postgres through the
//! lot sale's stream and the order sink, like orders.
//!
//! Two lists outside the auction's slot are kept beside it, each written before the step that
//! needs it and repaired by the close sweep: every auction (for the sink) and auctions by the
//! time they next need a look (for the sweep). A won lot joins the sales list (expiry sweep,
//! reconciliation) right after the step that created it; should the replica stop in between,
//! the sweep lists it, since an auction leaves the due list only once its lot is listed.

use futures_util::future::join_all;
use redis::{AsyncCommands, RedisResult};
use stampede_core::{Auction, AuctionError, AuctionStatus, BidStatus, EndReason, Ladder, Outcome, Timestamp, UserId};

use super::records::{AuctionConfigRecord, BidRecord};
use super::ScaleOut;
use crate::backend::{newest_first, unavailable, AuctionView, BidCommand, BidResult, EngineError, NewAuction};
use crate::ids;

/// What a view needs from the auction hash, in this order (see `lua/auction.lua`).
const STATE_FIELDS: [&str; 12] =
    ["cfg", "ends", "ext", "price", "leader", "lmax", "nbids", "version", "o_at", "o_reason", "o_winner", "o_price"];
/// Auctions one sweep round looks at; a sweep makes a few rounds at most.
const CLOSE_BATCH: usize = 200;
const CLOSE_ROUNDS: usize = 10;
/// An auction listed as due but not found is forgotten only once its end is this far past, so
/// a creation under way (listed first, written next) is never dropped.
const CREATION_GRACE_MS: i64 = 10_000;

pub(super) async fn create(so: &ScaleOut, new: NewAuction, now: Timestamp) -> Result<AuctionView, EngineError> {
    let id = ids::new_auction_id();
    let (config, payment_seconds) = new.into_config(now);
    let record = AuctionConfigRecord::of(&id, &config, payment_seconds);
    let json = serde_json::to_string(&record).map_err(unavailable)?;
    // Listed first, so the order sink and the close sweep never miss it.
    let (mut listing, mut schedule) = (so.conn(), so.conn());
    let (listed, scheduled) = tokio::join!(
        listing.sadd::<_, _, i64>(so.keys.auctions(), &id),
        schedule.zadd::<_, _, _, i64>(so.keys.auctions_due(), &id, record.ends),
    );
    listed.map_err(unavailable)?;
    scheduled.map_err(unavailable)?;
    let optional = |value: Option<i64>| value.unwrap_or(-1).to_string();
    let ladder: Vec<String> = record.ladder.iter().map(|(from, step)| format!("{from}:{step}")).collect();
    let args = [
        id.clone(),
        json,
        record.title.clone(),
        record.seller.clone(),
        record.start.to_string(),
        optional(record.reserve),
        optional(record.buy_now),
        record.starts.to_string(),
        record.ends.to_string(),
        record.soft.to_string(),
        record.extend.to_string(),
        optional(record.max_ext.map(i64::from)),
        ladder.join(","),
        record.payment.to_string(),
    ];
    let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
    answer(so.run_noted(&so.scripts.create_auction, &so.keys.auction(&id), &args, None).await)?;
    Ok(AuctionView::of(&id, &Auction::new(config), now))
}

pub(super) async fn get(so: &ScaleOut, auction_id: &str, now: Timestamp) -> Result<AuctionView, EngineError> {
    check_id(auction_id)?;
    Ok(state(so, auction_id).await?.view(auction_id, now))
}

/// Every auction, newest first. One listed but not yet created (the list is written first) is
/// left out.
pub(super) async fn list(so: &ScaleOut, now: Timestamp) -> Result<Vec<AuctionView>, EngineError> {
    let mut auction_ids: Vec<String> = so.conn().smembers(so.keys.auctions()).await.map_err(unavailable)?;
    auction_ids.retain(|auction_id| ids::is_auction_id(auction_id));
    let found = join_all(auction_ids.iter().map(|auction_id| state(so, auction_id))).await;
    let mut listed = Vec::with_capacity(found.len());
    for (auction_id, state) in auction_ids.iter().zip(found) {
        match state {
            Ok(state) => listed.push((Timestamp(state.cfg.created), state.view(auction_id, now))),
            Err(EngineError::AuctionNotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(newest_first(listed, |auction| &auction.id))
}

async fn state(so: &ScaleOut, auction_id: &str) -> Result<State, EngineError> {
    let key = so.keys.auction_hash(auction_id);
    let values: Vec<Option<String>> =
        redis::cmd("HMGET").arg(&key).arg(&STATE_FIELDS).query_async(&mut so.conn()).await.map_err(unavailable)?;
    State::parse(values)
}

pub(super) async fn bid(so: &ScaleOut, command: BidCommand, now: Timestamp) -> Result<BidResult, EngineError> {
    let auction_id = command.auction_id.as_str();
    check_id(auction_id)?;
    let lot = ids::lot_sale_id(auction_id);
    let (max, now_text) = (command.max_amount_cents.to_string(), now.0.to_string());
    let key = command.idempotency_key.as_ref().map_or("", |key| key.as_str());
    let args: [&[u8]; 5] =
        [auction_id.as_bytes(), command.user.as_str().as_bytes(), max.as_bytes(), key.as_bytes(), now_text.as_bytes()];
    // Every bidder is noted as taking part in the lot's sale, so the winner's order is listed.
    let reply = so.run_noted(&so.scripts.bid, &so.keys.auction(auction_id), &args, Some((&command.user, &lot))).await;
    let (outcome, json) = answer(reply)?;
    let bid = BidRecord::parse(&json).ok_or_else(|| unavailable(format!("malformed bid in auction {auction_id}")))?;
    let status =
        BidStatus::parse(&bid.s).ok_or_else(|| unavailable(format!("malformed bid in auction {auction_id}")))?;
    Ok(BidResult {
        id: ids::bid_id(auction_id, bid.seq),
        status,
        current_price_cents: bid.p,
        leader_id: bid.l,
        created: outcome == "created",
    })
}

pub(super) async fn buy_now(
    so: &ScaleOut,
    auction_id: &str,
    user: &UserId,
    now: Timestamp,
) -> Result<AuctionView, EngineError> {
    check_id(auction_id)?;
    // Due at once: should this replica stop between the win and listing the lot, the next
    // sweep lists it (and a refused attempt only costs the sweep one look).
    let _: i64 = so.conn().zadd(so.keys.auctions_due(), auction_id, now.0).await.map_err(unavailable)?;
    let lot = ids::lot_sale_id(auction_id);
    let now_text = now.0.to_string();
    let args: [&[u8]; 3] = [auction_id.as_bytes(), user.as_str().as_bytes(), now_text.as_bytes()];
    let keys = so.keys.auction(auction_id);
    answer(so.run_noted(&so.scripts.buy_now, &keys, &args, Some((user, &lot))).await)?;
    list_lot(so, auction_id).await?;
    get(so, auction_id, now).await
}

/// Ends every auction whose end has come, each exactly once whichever replica's sweep gets
/// there first. Returns how many this call ended.
pub(super) async fn close_due(so: &ScaleOut, now: Timestamp) -> Result<usize, EngineError> {
    let mut closed = 0;
    for _ in 0..CLOSE_ROUNDS {
        let due: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(so.keys.auctions_due())
            .arg("-inf")
            .arg(now.0)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(CLOSE_BATCH)
            .query_async(&mut so.conn())
            .await
            .map_err(unavailable)?;
        let results = join_all(due.iter().map(|(auction_id, due_at)| close_one(so, auction_id, *due_at, now))).await;
        for result in results {
            closed += usize::from(result?);
        }
        if due.len() < CLOSE_BATCH {
            break;
        }
    }
    Ok(closed)
}

/// Writes what is still in every auction's stream to Postgres (see `Sink::drain_bucket`).
pub(super) async fn drain_all(so: &ScaleOut) -> Result<(), EngineError> {
    let auction_ids: Vec<String> = so.conn().smembers(so.keys.auctions()).await.map_err(unavailable)?;
    let lots: Vec<String> = auction_ids.iter().map(|auction_id| ids::lot_sale_id(auction_id)).collect();
    for drained in join_all(lots.iter().map(|lot| so.sink.drain_bucket(lot))).await {
        drained.map_err(unavailable)?;
    }
    Ok(())
}

/// One due auction: closed (true when by this call), or due again at its current end.
async fn close_one(so: &ScaleOut, auction_id: &str, due_at: i64, now: Timestamp) -> Result<bool, EngineError> {
    let due = so.keys.auctions_due();
    if !ids::is_auction_id(auction_id) {
        let _: i64 = so.conn().zrem(&due, auction_id).await.map_err(unavailable)?;
        return Ok(false);
    }
    let now_text = now.0.to_string();
    let args: [&[u8]; 2] = [auction_id.as_bytes(), now_text.as_bytes()];
    let reply = so.run_noted(&so.scripts.close_auction, &so.keys.auction(auction_id), &args, None).await;
    let (outcome, detail) = match answer(reply) {
        Err(EngineError::AuctionNotFound) if now.0 - due_at < CREATION_GRACE_MS => return Ok(false),
        Err(EngineError::AuctionNotFound) => ("gone".to_owned(), String::new()),
        other => other?,
    };
    let closed = match outcome.as_str() {
        "open" => {
            let ends: i64 = detail.parse().map_err(unavailable)?;
            let _: i64 = so.conn().zadd(&due, auction_id, ends).await.map_err(unavailable)?;
            return Ok(false);
        }
        "closed" | "ended" if detail == "1" => {
            list_lot(so, auction_id).await?;
            outcome == "closed"
        }
        "closed" | "ended" | "gone" => outcome == "closed",
        other => return Err(unavailable(format!("unexpected close answer {other:?}"))),
    };
    let _: i64 = so.conn().zrem(&due, auction_id).await.map_err(unavailable)?;
    Ok(closed)
}

/// Lists a won lot's sale with the others, for the expiry sweep and reconciliation.
async fn list_lot(so: &ScaleOut, auction_id: &str) -> Result<(), EngineError> {
    let _: i64 = so.conn().sadd(so.keys.sales(), ids::lot_sale_id(auction_id)).await.map_err(unavailable)?;
    Ok(())
}

/// Auction ids become parts of Redis keys: anything not shaped like one is not an auction.
fn check_id(auction_id: &str) -> Result<(), EngineError> {
    if ids::is_auction_id(auction_id) {
        Ok(())
    } else {
        Err(EngineError::AuctionNotFound)
    }
}

/// An auction script's answer: `[outcome, payload]`, or the error it names.
fn answer(reply: RedisResult<Vec<String>>) -> Result<(String, String), EngineError> {
    let mut reply = reply.map_err(unavailable)?.into_iter();
    let (outcome, payload) = (reply.next().unwrap_or_default(), reply.next().unwrap_or_default());
    if outcome != "err" {
        return Ok((outcome, payload));
    }
    let error = match payload.as_str() {
        "auction_not_found" => return Err(EngineError::AuctionNotFound),
        "not_live" => AuctionError::NotLive,
        "seller_may_not_bid" => AuctionError::SellerMayNotBid,
        "buy_now_unavailable" => AuctionError::BuyNowUnavailable,
        "key_reused" => AuctionError::KeyReused,
        other => match other.strip_prefix("bid_too_low:").and_then(|minimum| minimum.parse().ok()) {
            Some(minimum_cents) => AuctionError::BidTooLow { minimum_cents },
            None => return Err(unavailable(format!("unexpected script answer {other:?}"))),
        },
    };
    Err(EngineError::Auction(error))
}

/// An auction as its hash has it: the configuration and what a view needs of the state.
struct State {
    cfg: AuctionConfigRecord,
    ladder: Ladder,
    ends: i64,
    extensions: u32,
    price: i64,
    leader: Option<UserId>,
    leader_max: i64,
    bids: u32,
    version: u64,
    outcome: Option<Outcome>,
}

impl State {
    /// The values of [`STATE_FIELDS`]; no configuration means no such auction.
    fn parse(values: Vec<Option<String>>) -> Result<Self, EngineError> {
        let malformed = || unavailable("malformed auction state");
        let [cfg, ends, ext, price, leader, lmax, nbids, version, o_at, o_reason, o_winner, o_price]: [Option<String>;
            12] = values.try_into().map_err(|_| malformed())?;
        let cfg: AuctionConfigRecord =
            serde_json::from_str(&cfg.ok_or(EngineError::AuctionNotFound)?).map_err(|_| malformed())?;
        let user = |text: Option<String>| text.map(|text| UserId::new(&text).map_err(|_| malformed())).transpose();
        let outcome = match o_reason {
            None => None,
            Some(reason) => Some(Outcome {
                ended_at: Timestamp(number(o_at).ok_or_else(malformed)?),
                reason: EndReason::parse(&reason).ok_or_else(malformed)?,
                winner: user(o_winner)?,
                price_cents: number(o_price).ok_or_else(malformed)?,
            }),
        };
        Ok(Self {
            ladder: Ladder::new(cfg.ladder.clone()).map_err(|_| malformed())?,
            cfg,
            ends: number(ends).ok_or_else(malformed)?,
            extensions: number(ext).and_then(|n| u32::try_from(n).ok()).ok_or_else(malformed)?,
            price: number(price).ok_or_else(malformed)?,
            leader: user(leader)?,
            leader_max: number(lmax).unwrap_or(0),
            bids: number(nbids).and_then(|n| u32::try_from(n).ok()).ok_or_else(malformed)?,
            version: number(version).and_then(|n| u64::try_from(n).ok()).ok_or_else(malformed)?,
            outcome,
        })
    }

    /// The same view `AuctionView::of` gives of the core auction these bids make (the
    /// conformance suite and `tests/scaleout.rs` hold the two to it).
    fn view(self, id: &str, now: Timestamp) -> AuctionView {
        let cfg = &self.cfg;
        let status = if self.outcome.is_some() || now.0 >= self.ends {
            AuctionStatus::Ended
        } else if now.0 < cfg.starts {
            AuctionStatus::Scheduled
        } else {
            AuctionStatus::Live
        };
        let reserve_met = cfg.reserve.is_none_or(|reserve| self.leader.is_some() && self.leader_max >= reserve);
        let min_next_bid_cents = match self.leader {
            None => cfg.start,
            Some(_) => self.price.saturating_add(self.ladder.increment_at(self.price)),
        };
        let bidding_open = self.leader.is_none() || (cfg.reserve.is_some() && !reserve_met);
        let buy_now_offered = matches!(status, AuctionStatus::Live) && bidding_open;
        let winner = self.outcome.as_ref().and_then(|outcome| outcome.winner.as_ref());
        AuctionView {
            id: id.to_owned(),
            title: cfg.title.clone(),
            seller_id: cfg.seller.clone(),
            status,
            starting_price_cents: cfg.start,
            current_price_cents: self.outcome.as_ref().map_or(self.price, |outcome| outcome.price_cents),
            leader_id: self.leader.as_ref().map(|user| user.as_str().to_owned()),
            bid_count: self.bids,
            starts_at: Timestamp(cfg.starts),
            ends_at: self.outcome.as_ref().map_or(Timestamp(self.ends), |outcome| outcome.ended_at),
            extensions: self.extensions,
            reserve_met,
            has_reserve: cfg.reserve.is_some(),
            min_next_bid_cents,
            buy_now_price_cents: cfg.buy_now.filter(|_| buy_now_offered),
            soft_close_seconds: cfg.soft,
            extend_seconds: cfg.extend,
            max_extensions: cfg.max_ext,
            winner_id: winner.map(|user| user.as_str().to_owned()),
            order_id: winner.map(|_| ids::lot_order_id(id)),
            version: self.version,
        }
    }
}

fn number(text: Option<String>) -> Option<i64> {
    text?.parse().ok()
}
