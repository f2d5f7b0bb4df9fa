//! Redis key names. Every key of one sale carries the sale id as its hash tag, so a sale lives
//! in one cluster slot and each of its scripts runs on one node.

/// The keys of one sale in the order the sale scripts take them (see `lua/sale.lua`).
pub const SALE_KEY_NAMES: [&str; 10] = ["cfg", "ctr", "orders", "units", "useq", "keys", "due", "wl", "wlu", "events"];

pub const CFG: usize = 0;
pub const CTR: usize = 1;
pub const ORDERS: usize = 2;
pub const USEQ: usize = 4;
pub const EVENTS: usize = 9;

#[derive(Debug, Clone)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_owned() }
    }

    pub fn sale(&self, sale_id: &str) -> [String; 10] {
        SALE_KEY_NAMES.map(|name| format!("{}:{{{sale_id}}}:{name}", self.namespace))
    }

    pub fn sale_key(&self, sale_id: &str, which: usize) -> String {
        format!("{}:{{{sale_id}}}:{}", self.namespace, SALE_KEY_NAMES[which])
    }

    /// Every sale id, for the jobs that visit all sales (expiry, order sink).
    pub fn sales(&self) -> String {
        format!("{}:sales", self.namespace)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_sale_share_its_hash_tag() {
        let keys = Keys::new("st").sale("s_abc");
        assert!(keys.iter().all(|key| key.starts_with("st:{s_abc}:")), "{keys:?}");
        for (which, name) in [(CFG, "cfg"), (CTR, "ctr"), (ORDERS, "orders"), (USEQ, "useq"), (EVENTS, "events")] {
            assert_eq!(Keys::new("st").sale_key("s_abc", which), format!("st:{{s_abc}}:{name}"));
        }
    }
}
