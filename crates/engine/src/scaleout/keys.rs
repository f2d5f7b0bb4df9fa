//! Redis key names. Every key of one sale carries the sale id as its hash tag, so a sale lives
//! in one cluster slot and each of its scripts runs on one node; an auction's keys carry the id
//! of the sale its lot becomes.

use crate::ids;

/// The keys of one sale (or one bucket of a sale) in the order the sale scripts take them (see
/// `lua/sale.lua`).
pub const SALE_KEY_NAMES: [&str; 12] =
    ["cfg", "ctr", "orders", "units", "useq", "keys", "due", "wl", "wlu", "events", "outbox", "inbox"];

pub const CFG: usize = 0;
pub const CTR: usize = 1;
pub const ORDERS: usize = 2;
pub const USEQ: usize = 4;
pub const EVENTS: usize = 9;
pub const OUTBOX: usize = 10;

/// An auction's own keys, after its lot sale's 12 (see `lua/auction.lua`).
pub const AUCTION_KEY_NAMES: [&str; 3] = ["auction", "bids", "bidkeys"];

#[derive(Debug, Clone)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned() }
    }

    /// The keys of one bucket (see [`bucket_id`]); a sale without buckets is its bucket 0.
    pub fn sale(&self, bucket_id: &str) -> [String; 12] {
        SALE_KEY_NAMES.map(|name| format!("{}:{{{bucket_id}}}:{name}", self.namespace))
    }

    pub fn sale_key(&self, bucket_id: &str, which: usize) -> String {
        format!("{}:{{{bucket_id}}}:{}", self.namespace, SALE_KEY_NAMES[which])
    }

    /// Every bucket of every sale (a sale's id is its bucket 0), for the jobs that visit them
    /// all (expiry, order sink).
    pub fn sales(&self) -> String {
        format!("{}:sales", self.namespace)
    }

    /// The keys of an auction: its lot sale's keys (the sale a win creates, see
    /// [`ids::lot_sale_id`]), then the auction's own under the same hash tag, so the step that
    /// ends the auction can create the winner's order atomically (see `lua/auction.lua`).
    pub fn auction(&self, auction_id: &str) -> Vec<String> {
        let lot = ids::lot_sale_id(auction_id);
        let mut keys = self.sale(&lot).to_vec();
        keys.extend(AUCTION_KEY_NAMES.map(|name| format!("{}:{{{lot}}}:{name}", self.namespace)));
        keys
    }

    /// The hash holding an auction's configuration and state.
    pub fn auction_hash(&self, auction_id: &str) -> String {
        format!("{}:{{{}}}:{}", self.namespace, ids::lot_sale_id(auction_id), AUCTION_KEY_NAMES[0])
    }

    /// Every auction ever created, for the jobs that read every stream (order sink).
    pub fn auctions(&self) -> String {
        format!("{}:auctions", self.namespace)
    }

    /// Auctions by the time they next need a look from the close sweep (their end, or earlier
    /// when it has since moved out): removed once closed and their lot listed.
    pub fn auctions_due(&self) -> String {
        format!("{}:auctions:due", self.namespace)
    }

    /// The channel every step publishes its changes on (see `lua/sale.lua`).
    pub fn changes(&self) -> String {
        format!("{}:changes", self.namespace)
    }

    /// The sales a user has orders or waitlist entries in, written before the step that makes
    /// them, so listing a user's orders never misses one.
    pub fn user_sales(&self, user: &str) -> Vec<u8> {
        let mut key = format!("{}:user:", self.namespace).into_bytes();
        key.extend_from_slice(user.as_bytes());
        key.extend_from_slice(b":sales");
        key
    }
}

/// Bucket `index` of a sale: the sale id itself for bucket 0, `<sale id>.<index>` for the rest,
/// each its own hash tag and so (most likely) its own cluster slot.
pub fn bucket_id(sale_id: &str, index: u32) -> String {
    if index == 0 {
        sale_id.to_owned()
    } else {
        format!("{sale_id}.{index}")
    }
}

/// The sale a bucket id belongs to.
pub fn sale_of_bucket(bucket_id: &str) -> &str {
    bucket_id.split_once('.').map_or(bucket_id, |(sale_id, _)| sale_id)
}

/// The bucket a user buys from: always the same one, so their limit, their idempotency keys
/// and their waitlist entry live in one place (FNV-1a of the user id).
pub fn home_bucket(user: &str, buckets: u32) -> u32 {
    let hash = user
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    (hash % u64::from(buckets.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_name_their_sale_and_users_spread_over_them() {
        assert_eq!(bucket_id("s_abc", 0), "s_abc");
        assert_eq!(bucket_id("s_abc", 3), "s_abc.3");
        assert_eq!(sale_of_bucket("s_abc.3"), "s_abc");
        assert_eq!(sale_of_bucket("s_abc"), "s_abc");
        let mut seen = [0u32; 4];
        for n in 0..4000 {
            seen[home_bucket(&format!("user-{n}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
        assert_eq!(home_bucket("anyone", 1), 0);
    }

    #[test]
    fn keys_of_a_sale_share_its_hash_tag() {
        let keys = Keys::new("st").sale("s_abc");
        assert!(keys.iter().all(|key| key.starts_with("st:{s_abc}:")), "{keys:?}");
        for (which, name) in [(CFG, "cfg"), (CTR, "ctr"), (ORDERS, "orders"), (USEQ, "useq"), (EVENTS, "events")] {
            assert_eq!(Keys::new("st").sale_key("s_abc", which), format!("st:{{s_abc}}:{name}"));
        }
    }
}
