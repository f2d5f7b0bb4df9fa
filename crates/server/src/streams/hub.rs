//! The hub: one place per process that follows the backend's change feed and fans the latest
//! state out to every subscriber.
//!
//! Topic streams (a sale, an auction) carry snapshots on a `watch` channel: a subscriber always
//! gets the newest state and never a backlog, so a slow client costs no memory and simply skips
//! states. Snapshots are taken at most once per tick per topic however many changes arrive, and
//! only for topics someone follows. Personal events (a user's holds, outbids, wins) are facts,
//! not states: they go on a small per-user broadcast ring, and a client that falls behind skips
//! the oldest (it gets the current state of its orders on reconnect).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde::Serialize;
use stampede_core::{Timestamp, UserId};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::lock;

/// Snapshots of one topic are sent at most this often.
pub const COALESCE: Duration = Duration::from_millis(100);
/// Every followed topic is re-read this often even without a change, so time-driven changes
/// (a sale that opens, an auction that ends) and changes missed by a lagging feed still arrive.
pub const RESYNC: Duration = Duration::from_secs(1);
/// A comment (SSE) or ping (WebSocket) this often keeps idle connections and proxies alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Personal events a slow client may fall behind by before it skips the oldest.
const PERSONAL_RING: usize = 32;

/// One message, encoded once for every subscriber: the JSON (as a WebSocket text message), and
/// the same as an SSE event.
#[derive(Debug)]
pub struct Frame {
    /// Identifies the content (a hash of the JSON for snapshots), for `Last-Event-ID`.
    pub id: String,
    pub text: Utf8Bytes,
    pub sse: Bytes,
    /// The SSE event as one HTTP/1.1 chunk, for streams written straight to the socket.
    pub chunk: Bytes,
}

impl Frame {
    /// A snapshot, identified by its content so a resuming client that has it is not sent it again.
    pub fn snapshot(event: &str, body: &impl Serialize) -> Self {
        let json = serde_json::to_vec(body).unwrap_or_default();
        let id = format!("{:016x}", fnv1a(&json));
        Self::encode(id, event, json)
    }

    fn encode(id: String, event: &str, json: Vec<u8>) -> Self {
        let mut sse = Vec::with_capacity(json.len() + id.len() + event.len() + 24);
        sse.extend_from_slice(format!("id: {id}\nevent: {event}\ndata: ").as_bytes());
        sse.extend_from_slice(&json);
        sse.extend_from_slice(b"\n\n");
        let text = Utf8Bytes::from(String::from_utf8(json).unwrap_or_default());
        let mut chunk = format!("{:x}\r\n", sse.len()).into_bytes();
        chunk.extend_from_slice(&sse);
        chunk.extend_from_slice(b"\r\n");
        Self { id, text, sse: sse.into(), chunk: chunk.into() }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    Sale(Arc<str>),
    Auction(Arc<str>),
}

pub struct Hub {
    // std Mutex: a map lookup or insert per subscribe and per publish; never held across await.
    topics: Mutex<HashMap<Topic, watch::Sender<Arc<Frame>>>>,
    people: Mutex<HashMap<UserId, broadcast::Sender<Arc<Frame>>>>,
    /// Holds created for followed users, by the time their "expiring" warning is due.
    warnings: Mutex<BTreeMap<Timestamp, Vec<(UserId, String)>>>,
    slots: Arc<Semaphore>,
    max_streams: usize,
    next_event: AtomicU64,
    heartbeat: watch::Sender<()>,
    closing: watch::Sender<bool>,
}

impl Hub {
    pub fn new(max_streams: usize) -> Self {
        Self {
            topics: Mutex::default(),
            people: Mutex::default(),
            warnings: Mutex::default(),
            slots: Arc::new(Semaphore::new(max_streams.max(1))),
            max_streams: max_streams.max(1),
            next_event: AtomicU64::new(1),
            heartbeat: watch::channel(()).0,
            closing: watch::channel(false).0,
        }
    }

    /// A place for one more open stream, or 503 when the process holds as many as it may.
    pub fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots.clone().try_acquire_owned().map_err(|_| ApiError::overloaded("too many open streams, retry shortly"))
    }

    /// Streams open now (each holds a slot).
    pub fn open_streams(&self) -> usize {
        self.max_streams.saturating_sub(self.slots.available_permits())
    }

    /// Follows `topic` from `current`, the state just read (newer than or equal to what the
    /// topic's other subscribers have, which get it too).
    pub fn subscribe(&self, topic: Topic, current: Frame) -> watch::Receiver<Arc<Frame>> {
        let mut topics = lock(&self.topics);
        if let Some(sender) = topics.get(&topic) {
            let receiver = sender.subscribe();
            replace_if_new(sender, current);
            return receiver;
        }
        let (sender, receiver) = watch::channel(Arc::new(current));
        topics.insert(topic, sender);
        receiver
    }

    /// Follows the personal events of `user`.
    pub fn personal(&self, user: &UserId) -> broadcast::Receiver<Arc<Frame>> {
        let mut people = lock(&self.people);
        people.entry(user.clone()).or_insert_with(|| broadcast::channel(PERSONAL_RING).0).subscribe()
    }

    pub fn heartbeat(&self) -> watch::Receiver<()> {
        self.heartbeat.subscribe()
    }

    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every open stream (at shutdown: they would otherwise never finish).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub(super) fn beat(&self) {
        self.heartbeat.send_replace(());
    }

    /// Topics someone follows; forgets the others.
    pub(super) fn followed(&self) -> Vec<Topic> {
        let mut topics = lock(&self.topics);
        topics.retain(|_, sender| sender.receiver_count() > 0);
        topics.keys().cloned().collect()
    }

    pub(super) fn is_followed(&self, topic: &Topic) -> bool {
        lock(&self.topics).get(topic).is_some_and(|sender| sender.receiver_count() > 0)
    }

    /// Sends `frame` to the topic's subscribers unless they already have that content.
    pub(super) fn publish(&self, topic: &Topic, frame: Frame) {
        if let Some(sender) = lock(&self.topics).get(topic) {
            replace_if_new(sender, frame);
        }
    }

    /// Users with an open personal stream here.
    pub(crate) fn followers(&self) -> Vec<UserId> {
        let people = lock(&self.people);
        people.iter().filter(|(_, sender)| sender.receiver_count() > 0).map(|(user, _)| user.clone()).collect()
    }

    pub(crate) fn follows_personal(&self, user: &UserId) -> bool {
        let mut people = lock(&self.people);
        match people.get(user) {
            Some(sender) if sender.receiver_count() > 0 => true,
            Some(_) => {
                people.remove(user);
                false
            }
            None => false,
        }
    }

    /// Sends a personal event, numbered in the order this process saw it.
    pub(crate) fn publish_personal(&self, user: &UserId, event: &str, body: &impl Serialize) {
        let people = lock(&self.people);
        let Some(sender) = people.get(user) else { return };
        let id = self.next_event.fetch_add(1, Ordering::Relaxed).to_string();
        let json = serde_json::to_vec(body).unwrap_or_default();
        let _ = sender.send(Arc::new(Frame::encode(id, event, json)));
    }

    pub(super) fn warn_at(&self, due: Timestamp, user: UserId, order_id: String) {
        lock(&self.warnings).entry(due).or_default().push((user, order_id));
    }

    pub(super) fn due_warnings(&self, now: Timestamp) -> Vec<(UserId, String)> {
        let mut warnings = lock(&self.warnings);
        let later = warnings.split_off(&Timestamp(now.0 + 1));
        let due = std::mem::replace(&mut *warnings, later);
        let mut seen = HashSet::new();
        due.into_values().flatten().filter(|entry| seen.insert(entry.clone())).collect()
    }
}

fn replace_if_new(sender: &watch::Sender<Arc<Frame>>, frame: Frame) {
    sender.send_if_modified(|latest| {
        let changed = latest.id != frame.id;
        if changed {
            *latest = Arc::new(frame);
        }
        changed
    });
}
