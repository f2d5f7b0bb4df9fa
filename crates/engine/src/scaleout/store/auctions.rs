//! Auction rows and bids in Postgres, written by the order sink in the same transaction as the
//! orders of the same batch.

use std::collections::BTreeMap;

use super::Tx;
use crate::scaleout::records::{AuctionRow, BidRecord};

/// Upserts each auction's newest row of the batch; an older version never replaces a newer one.
pub async fn write_auctions(tx: &mut Tx<'_>, rows: BTreeMap<&str, &AuctionRow>) -> Result<(), sqlx::Error> {
    for row in rows.into_values() {
        let cfg = &row.cfg;
        let increments = serde_json::to_string(&cfg.ladder).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        let outcome = row.o.as_ref();
        sqlx::query(
            "INSERT INTO auctions (id, title, seller_id, starting_price_cents, reserve_price_cents, \
             buy_now_price_cents, starts_at, scheduled_ends_at, soft_close_seconds, extend_seconds, max_extensions, \
             increments, payment_seconds, created_at, ends_at, extensions, current_price_cents, leader_id, bid_count, \
             ended_at, end_reason, winner_id, final_price_cents, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
             $22, $23, $24) \
             ON CONFLICT (id) DO UPDATE SET ends_at = EXCLUDED.ends_at, extensions = EXCLUDED.extensions, \
             current_price_cents = EXCLUDED.current_price_cents, leader_id = EXCLUDED.leader_id, \
             bid_count = EXCLUDED.bid_count, ended_at = EXCLUDED.ended_at, end_reason = EXCLUDED.end_reason, \
             winner_id = EXCLUDED.winner_id, final_price_cents = EXCLUDED.final_price_cents, \
             version = EXCLUDED.version WHERE auctions.version < EXCLUDED.version",
        )
        .bind(&cfg.id)
        .bind(cfg.title.as_bytes())
        .bind(cfg.seller.as_bytes())
        .bind(cfg.start)
        .bind(cfg.reserve)
        .bind(cfg.buy_now)
        .bind(cfg.starts)
        .bind(cfg.ends)
        .bind(cfg.soft as i32)
        .bind(cfg.extend as i32)
        .bind(cfg.max_ext.map(|cap| cap as i32))
        .bind(increments)
        .bind(cfg.payment as i32)
        .bind(cfg.created)
        .bind(row.ends)
        .bind(row.ext as i32)
        .bind(row.price)
        .bind(row.leader.as_ref().map(|leader| leader.as_bytes()))
        .bind(row.n as i32)
        .bind(outcome.map(|o| o.at))
        .bind(outcome.map(|o| o.r.as_str()))
        .bind(outcome.and_then(|o| o.w.as_ref()).map(|winner| winner.as_bytes()))
        .bind(outcome.map(|o| o.p))
        .bind(row.v)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Inserts accepted bids; a bid written before stays as it is (it never changes).
pub async fn write_bids(tx: &mut Tx<'_>, bids: BTreeMap<(&str, u32), &BidRecord>) -> Result<(), sqlx::Error> {
    let (mut auction_ids, mut seqs, mut users, mut maxima) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut placed, mut keys, mut statuses, mut prices, mut leaders) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((auction_id, seq), bid) in bids {
        auction_ids.push(auction_id.to_owned());
        seqs.push(seq as i32);
        users.push(bid.u.as_bytes().to_vec());
        maxima.push(bid.m);
        placed.push(bid.t);
        keys.push(bid.k.as_ref().map(|key| key.as_bytes().to_vec()));
        statuses.push(bid.s.clone());
        prices.push(bid.p);
        leaders.push(bid.l.as_bytes().to_vec());
    }
    sqlx::query(
        "INSERT INTO bids (auction_id, seq, user_id, max_amount_cents, placed_at, idempotency_key, status, \
         price_after_cents, leader_after) \
         SELECT * FROM UNNEST($1::TEXT[], $2::INT4[], $3::BYTEA[], $4::INT8[], $5::INT8[], $6::BYTEA[], $7::TEXT[], \
         $8::INT8[], $9::BYTEA[]) \
         ON CONFLICT (auction_id, seq) DO NOTHING",
    )
    .bind(auction_ids)
    .bind(seqs)
    .bind(users)
    .bind(maxima)
    .bind(placed)
    .bind(keys)
    .bind(statuses)
    .bind(prices)
    .bind(leaders)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
