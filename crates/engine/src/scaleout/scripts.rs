//! The scripts: the shared library of `lua/sale.lua` (and, for auctions, `lua/auction.lua`)
//! followed by each step's body. Redis runs each atomically; they are called by hash (EVALSHA)
//! and loaded again when a node answers NOSCRIPT (after a restart, a failover or a SCRIPT
//! FLUSH); should the node forget them again right away, the call falls back to sending the
//! whole script (EVAL).
//!
//! The body runs as a function so that, whichever way it returns, the step's changes are
//! announced once at its end (see `announce` in `lua/sale.lua`); every call passes the
//! replica's feed name as its last argument for that.

use redis::{AsyncCommands, ErrorKind, RedisResult, Script, ServerErrorKind};
use stampede_core::{SaleError, UserId};

use super::{feed, keys, ScaleOut};
use crate::backend::{unavailable, EngineError};

const SALE_LIBRARY: &str = include_str!("lua/sale.lua");
const AUCTION_LIBRARY: &str = include_str!("lua/auction.lua");

pub struct StepScript {
    pub script: Script,
    pub code: String,
}

pub struct Scripts {
    pub create_sale: StepScript,
    pub purchase: StepScript,
    pub pay: StepScript,
    pub cancel: StepScript,
    pub join_waitlist: StepScript,
    pub expire: StepScript,
    pub transfer_out: StepScript,
    pub transfer_in: StepScript,
    pub transfer_done: StepScript,
    pub create_auction: StepScript,
    pub bid: StepScript,
    pub buy_now: StepScript,
    pub close_auction: StepScript,
}

fn step(libraries: &[&str], body: &str) -> StepScript {
    let code = format!("{}\nlocal function step()\n{body}\nend\nreturn announce(step())\n", libraries.join("\n"));
    StepScript { script: Script::new(&code), code }
}

fn sale_step(body: &str) -> StepScript {
    step(&[SALE_LIBRARY], body)
}

fn auction_step(body: &str) -> StepScript {
    step(&[SALE_LIBRARY, AUCTION_LIBRARY], body)
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            create_sale: sale_step(include_str!("lua/create_sale.lua")),
            purchase: sale_step(include_str!("lua/purchase.lua")),
            pay: sale_step(include_str!("lua/pay.lua")),
            cancel: sale_step(include_str!("lua/cancel.lua")),
            join_waitlist: sale_step(include_str!("lua/join_waitlist.lua")),
            expire: sale_step(include_str!("lua/expire.lua")),
            transfer_out: sale_step(include_str!("lua/transfer_out.lua")),
            transfer_in: sale_step(include_str!("lua/transfer_in.lua")),
            transfer_done: sale_step(include_str!("lua/transfer_done.lua")),
            create_auction: auction_step(include_str!("lua/create_auction.lua")),
            bid: auction_step(include_str!("lua/bid.lua")),
            buy_now: auction_step(include_str!("lua/buy_now.lua")),
            close_auction: auction_step(include_str!("lua/close_auction.lua")),
        }
    }
}

impl ScaleOut {
    pub(super) async fn run(
        &self,
        script: &StepScript,
        sale_id: &str,
        args: &[&[u8]],
    ) -> Result<(String, String), EngineError> {
        self.run_for(script, sale_id, args, None).await
    }

    /// Runs a sale script. With `participant`, also records that the user takes part in the
    /// sale (see [`ScaleOut::run_noted`]).
    pub(super) async fn run_for(
        &self,
        script: &StepScript,
        sale_id: &str,
        args: &[&[u8]],
        participant: Option<&UserId>,
    ) -> Result<(String, String), EngineError> {
        let keys = self.keys.sale(sale_id);
        let participant = participant.map(|user| (user, keys::sale_of_bucket(sale_id)));
        answer(self.run_noted(script, &keys, args, participant).await)
    }

    /// Runs a script, noting first (with `participant`) that the user takes part in the sale
    /// (so listing their orders never misses one) before the result is reported: on a single
    /// node in the same pipeline, so one write and one fsync carry both; on a cluster, where the
    /// two keys live in different slots, as a concurrent command. Either way an acknowledged
    /// order is always listed; an order whose note failed is reported as failed (its retry with
    /// the same key returns it and writes the note).
    pub(super) async fn run_noted(
        &self,
        script: &StepScript,
        keys: &[String],
        args: &[&[u8]],
        participant: Option<(&UserId, &str)>,
    ) -> RedisResult<Vec<String>> {
        let Some((user, sale_id)) = participant else { return self.eval(script, keys, args, None).await };
        let user_sales = self.keys.user_sales(user.as_str());
        if !self.redis.is_cluster() {
            return self.eval(script, keys, args, Some((&user_sales, sale_id))).await;
        }
        let mut conn = self.conn();
        let note = conn.sadd::<_, _, i64>(&user_sales, sale_id);
        let (noted, reply) = tokio::join!(note, self.eval(script, keys, args, None));
        noted?;
        reply
    }

    /// Runs a script over `keys` by hash, loading it when the node does not know it (NOSCRIPT:
    /// after a restart or failover), and sending it whole if the node forgot it again meanwhile.
    /// `note`: a participant note (user's sales key, sale id) to send in the same pipeline,
    /// before the script. The script's changes are announced on this replica's feed before its
    /// reply (without the change message) is returned.
    pub(super) async fn eval(
        &self,
        script: &StepScript,
        keys: &[String],
        args: &[&[u8]],
        note: Option<(&[u8], &str)>,
    ) -> RedisResult<Vec<String>> {
        let mut conn = self.conn();
        let call = |command: &str, script_arg: &str| {
            let mut call = redis::cmd(command);
            call.arg(script_arg).arg(keys.len()).arg(keys);
            for arg in args {
                call.arg(*arg);
            }
            call.arg(&self.origin);
            call
        };
        let mut attempt = 0;
        loop {
            let eval = match attempt {
                0 | 1 => call("EVALSHA", script.script.get_hash()),
                _ => call("EVAL", &script.code),
            };
            let reply: RedisResult<Vec<String>> = match note {
                Some((user_sales, sale_id)) => {
                    let mut pipe = redis::pipe();
                    pipe.cmd("SADD").arg(user_sales).arg(sale_id).ignore().add_command(eval);
                    pipe.query_async::<(Vec<String>,)>(&mut conn).await.map(|(reply,)| reply)
                }
                None => eval.query_async(&mut conn).await,
            };
            match reply {
                Err(error) if attempt < 2 && error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    if attempt == 0 {
                        script.script.prepare_invoke().load_async(&mut conn).await?;
                    }
                    attempt += 1;
                }
                Ok(mut reply) => {
                    if reply.len() > 2 {
                        feed::announce_own(&self.changes, &reply.swap_remove(2));
                    }
                    return Ok(reply);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

fn script_error(code: &str) -> EngineError {
    let error = match code {
        "sale_not_found" => return EngineError::SaleNotFound,
        "sold_out" => SaleError::SoldOut,
        "limit_reached" => SaleError::LimitReached,
        "not_live" => SaleError::NotLive,
        "invalid_quantity" => SaleError::InvalidQuantity,
        "order_not_found" => SaleError::OrderNotFound,
        "hold_expired" => SaleError::HoldExpired,
        "order_cancelled" => SaleError::OrderCancelled,
        "order_paid" => SaleError::OrderPaid,
        "stock_available" => SaleError::StockAvailable,
        "already_waitlisted" => SaleError::AlreadyWaitlisted,
        other => return unavailable(format!("unexpected script answer {other:?}")),
    };
    EngineError::Sale(error)
}

/// A script's answer: `[outcome, payload]`, or the error it names.
pub(super) fn answer(reply: RedisResult<Vec<String>>) -> Result<(String, String), EngineError> {
    let mut reply = reply.map_err(unavailable)?.into_iter();
    let (outcome, payload) = (reply.next().unwrap_or_default(), reply.next().unwrap_or_default());
    if outcome == "err" {
        return Err(script_error(&payload));
    }
    Ok((outcome, payload))
}
