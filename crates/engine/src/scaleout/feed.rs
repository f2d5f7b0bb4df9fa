//! The change feed across replicas. Every script that changes something publishes one message
//! on `<namespace>:changes` (see `lua/sale.lua`) and returns it to its caller as well: the
//! calling replica announces it at once, before the reply, and every replica's follower task
//! announces the messages of the others. A message names its origin so nobody announces a
//! change twice.
//!
//! Plain PUBLISH reaches the subscribers of every node of a Redis Cluster, so one subscription
//! per replica, on any node, hears every change. Messages published while a follower is
//! reconnecting are missed: the feed's followers resync their state periodically anyway.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stampede_core::UserId;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::changes::Change;
use crate::ids;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a quiet subscription is checked to be alive.
const HEALTH_CHECK: Duration = Duration::from_secs(5);

/// What one replica needs to follow the others' changes.
#[derive(Clone)]
pub struct Follower {
    /// Node URLs to subscribe on, tried in turn.
    pub urls: Vec<String>,
    pub channel: String,
    /// This replica's name in the messages; its own are announced when its steps return.
    pub origin: String,
    pub changes: broadcast::Sender<Change>,
}

impl Follower {
    /// Subscribes now (so nothing published after this returns is missed), then follows in a
    /// task until `stop` turns true, reconnecting with backoff whenever the connection drops.
    pub async fn start(self, stop: watch::Receiver<bool>) -> redis::RedisResult<JoinHandle<()>> {
        let pubsub = self.subscribe(0).await?;
        Ok(tokio::spawn(self.run(pubsub, stop)))
    }

    async fn subscribe(&self, attempt: usize) -> redis::RedisResult<redis::aio::PubSub> {
        let url = self.urls.get(attempt % self.urls.len().max(1)).map_or("redis://127.0.0.1:6379/", String::as_str);
        let client = redis::Client::open(url)?;
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub());
        let mut pubsub = connect.await.map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        pubsub.subscribe(&self.channel).await?;
        Ok(pubsub)
    }

    async fn run(self, pubsub: redis::aio::PubSub, mut stop: watch::Receiver<bool>) {
        let mut pubsub = Some(pubsub);
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0;
        loop {
            if let Some(connected) = pubsub.take() {
                let (mut sink, mut messages) = connected.split();
                let mut health = tokio::time::interval(HEALTH_CHECK);
                health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => self.announce(message.get_payload_bytes()),
                            None => break,
                        },
                        // A connection that died silently (no reset) would otherwise be
                        // followed forever without a word.
                        _ = health.tick() => {
                            let pong = tokio::time::timeout(CONNECT_TIMEOUT, sink.ping::<redis::Value>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                        _ = stopped(&mut stop) => return,
                    }
                }
                tracing::warn!(channel = %self.channel, "change feed: subscription lost; reconnecting");
                backoff = MIN_BACKOFF;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => return,
            }
            attempt += 1;
            match self.subscribe(attempt).await {
                Ok(connected) => {
                    tracing::info!(channel = %self.channel, "change feed: subscribed again");
                    pubsub = Some(connected);
                }
                Err(error) => {
                    tracing::debug!(%error, "change feed: subscribing failed");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn announce(&self, message: &[u8]) {
        let Some((origin, changes)) = decode(message) else {
            tracing::error!("change feed: malformed message skipped");
            return;
        };
        if origin == self.origin {
            return;
        }
        for change in changes {
            let _ = self.changes.send(change);
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Announces the changes of a step this replica ran (the message its script returned).
pub fn announce_own(changes: &broadcast::Sender<Change>, message: &str) {
    let Some((_, decoded)) = decode(message.as_bytes()) else {
        tracing::error!("change feed: malformed message from a script");
        return;
    };
    for change in decoded {
        let _ = changes.send(change);
    }
}

/// A message's origin and changes; `None` if it is malformed.
pub fn decode(message: &[u8]) -> Option<(&str, Vec<Change>)> {
    let mut tokens = Tokens(message);
    let origin = tokens.next()?;
    let sale_id: Arc<str> = Arc::from(tokens.next()?);
    let mut auction_id: Option<Arc<str>> = None;
    let mut changes = Vec::new();
    while let Some(tag) = tokens.next() {
        let change = match tag {
            "s" => Change::Sale { sale_id: sale_id.clone() },
            "o" => {
                let seq: u32 = tokens.next()?.parse().ok()?;
                let user = UserId::new(tokens.next()?).ok()?;
                Change::Order { user, order_id: ids::order_id(&sale_id, seq) }
            }
            "a" => {
                let id: Arc<str> = Arc::from(tokens.next()?);
                auction_id = Some(id.clone());
                Change::Auction { auction_id: id }
            }
            "x" => Change::Outbid { user: UserId::new(tokens.next()?).ok()?, auction_id: auction_id.clone()? },
            "w" => {
                let (user, auction_id) = (UserId::new(tokens.next()?).ok()?, auction_id.clone()?);
                Change::AuctionWon { user, order_id: ids::lot_order_id(&auction_id), auction_id }
            }
            _ => return None,
        };
        changes.push(change);
    }
    Some((origin, changes))
}

/// Length-prefixed tokens: `<bytes>:<text>` each.
struct Tokens<'a>(&'a [u8]);

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let colon = self.0.iter().position(|&byte| byte == b':')?;
        let len: usize = std::str::from_utf8(&self.0[..colon]).ok()?.parse().ok()?;
        let rest = &self.0[colon + 1..];
        let token = std::str::from_utf8(rest.get(..len)?).ok()?;
        self.0 = &rest[len..];
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tokens: &[&str]) -> String {
        tokens.iter().map(|token| format!("{}:{token}", token.len())).collect()
    }

    #[test]
    fn a_win_decodes_in_decision_order() {
        let text = message(&["r1", "s_aabc", "a", "a_abc", "x", "bob", "s", "o", "0", "ali:ce", "w", "ali:ce"]);
        let (origin, changes) = decode(text.as_bytes()).expect("well formed");
        assert_eq!(origin, "r1");
        let (alice, bob) = (UserId::new("ali:ce").unwrap(), UserId::new("bob").unwrap());
        let auction_id: Arc<str> = Arc::from("a_abc");
        assert_eq!(
            changes,
            vec![
                Change::Auction { auction_id: auction_id.clone() },
                Change::Outbid { user: bob, auction_id: auction_id.clone() },
                Change::Sale { sale_id: Arc::from("s_aabc") },
                Change::Order { user: alice.clone(), order_id: ids::order_id("s_aabc", 0) },
                Change::AuctionWon { user: alice, auction_id, order_id: ids::lot_order_id("a_abc") },
            ]
        );
    }

    #[test]
    fn unicode_users_keep_their_bytes_and_malformed_messages_are_refused() {
        let text = message(&["r", "s_x", "s", "o", "10", "ünï\n😀"]);
        let (_, changes) = decode(text.as_bytes()).expect("well formed");
        assert_eq!(
            changes[1],
            Change::Order { user: UserId::new("ünï\n😀").unwrap(), order_id: ids::order_id("s_x", 10) }
        );
        for bad in ["", "2:r", "1:r3:s_x1:q", "1:r3:s_x1:x3:bob", "1:r3:s_x1:o1:z1:u", "9:r"] {
            assert!(decode(bad.as_bytes()).is_none(), "{bad:?}");
        }
    }
}
