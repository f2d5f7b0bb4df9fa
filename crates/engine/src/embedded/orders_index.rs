//! Which orders each user has, across sales, for `GET /v1/orders`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use stampede_core::UserId;

use super::{lock, SaleSlot};

const SHARDS: usize = 64;

/// Sharded by user so concurrent buyers rarely share a lock.
pub(crate) struct OrdersIndex {
    shards: Vec<Mutex<HashMap<UserId, Vec<(Arc<SaleSlot>, u32)>>>>,
}

impl Default for OrdersIndex {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl OrdersIndex {
    fn shard(&self, user: &UserId) -> &Mutex<HashMap<UserId, Vec<(Arc<SaleSlot>, u32)>>> {
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    pub(crate) fn add(&self, user: &UserId, slot: &Arc<SaleSlot>, seq: u32) {
        // Most users have one order: start at capacity 1, not the default 4.
        let mut shard = lock(self.shard(user));
        shard.entry(user.clone()).or_insert_with(|| Vec::with_capacity(1)).push((slot.clone(), seq));
    }

    /// The user's orders in the order they were indexed.
    pub(crate) fn of(&self, user: &UserId) -> Vec<(Arc<SaleSlot>, u32)> {
        lock(self.shard(user)).get(user).cloned().unwrap_or_default()
    }
}
