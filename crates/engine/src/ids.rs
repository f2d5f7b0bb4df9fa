//! Opaque identifiers. Clients must not parse them; the engine does, to route an order id to
//! its sale without a global index.

use rand::distr::{Alphanumeric, SampleString};

const SALE_PREFIX: &str = "s_";
const ORDER_PREFIX: &str = "o_";
const AUCTION_PREFIX: &str = "a_";
/// The sale an auction's lot becomes when it is won: `s_a<auction suffix>`, one letter longer
/// than any generated sale id, so it never meets one.
const LOT_SALE_PREFIX: &str = "s_a";
/// Random characters in a generated sale or auction id.
const ID_TOKEN_LEN: usize = 16;

pub fn new_sale_id() -> String {
    format!("{SALE_PREFIX}{}", random_token(ID_TOKEN_LEN))
}

pub fn new_auction_id() -> String {
    format!("{AUCTION_PREFIX}{}", random_token(ID_TOKEN_LEN))
}

/// Whether `sale_id` is the sale of an auction's lot rather than one made by `create_sale`.
pub fn is_lot_sale_id(sale_id: &str) -> bool {
    sale_id.starts_with(LOT_SALE_PREFIX) && sale_id.len() == LOT_SALE_PREFIX.len() + ID_TOKEN_LEN
}

/// Whether `id` has the shape of an auction id this engine hands out.
pub fn is_auction_id(id: &str) -> bool {
    id.strip_prefix(AUCTION_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The sale that holds an auction's lot once it is won.
pub fn lot_sale_id(auction_id: &str) -> String {
    format!("{LOT_SALE_PREFIX}{}", auction_id.strip_prefix(AUCTION_PREFIX).unwrap_or(auction_id))
}

/// The winner's order: the first and only order of the lot sale.
pub fn lot_order_id(auction_id: &str) -> String {
    order_id(&lot_sale_id(auction_id), 0)
}

/// `b_<auction suffix>_<seq in hex>`.
pub fn bid_id(auction_id: &str, seq: u32) -> String {
    format!("b_{}_{seq:x}", auction_id.strip_prefix(AUCTION_PREFIX).unwrap_or(auction_id))
}

pub fn new_user_id() -> String {
    format!("u_{}", random_token(16))
}

pub fn random_token(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len).to_ascii_lowercase()
}

/// Whether `id` has the shape of a sale id this engine hands out (`s_` and letters or digits).
pub fn is_sale_id(id: &str) -> bool {
    id.strip_prefix(SALE_PREFIX).is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `o_<sale suffix>_<seq in hex>`.
pub fn order_id(sale_id: &str, seq: u32) -> String {
    let suffix = sale_id.strip_prefix(SALE_PREFIX).unwrap_or(sale_id);
    format!("{ORDER_PREFIX}{suffix}_{seq:x}")
}

/// The sale id and seq an order id names, if it is well formed.
pub fn parse_order_id(order_id: &str) -> Option<(String, u32)> {
    let rest = order_id.strip_prefix(ORDER_PREFIX)?;
    let (suffix, seq) = rest.rsplit_once('_')?;
    let seq = u32::from_str_radix(seq, 16).ok()?;
    let well_formed = !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| (format!("{SALE_PREFIX}{suffix}"), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_round_trip() {
        let sale = new_sale_id();
        let id = order_id(&sale, 300);
        assert_eq!(parse_order_id(&id), Some((sale, 300)));
    }

    #[test]
    fn sale_ids_have_one_shape() {
        assert!(is_sale_id(&new_sale_id()));
        for bad in ["", "s_", "x_abc", "s_a}b", "s_{x}", "s_🦀"] {
            assert!(!is_sale_id(bad), "{bad}");
        }
    }

    #[test]
    fn lot_sales_are_told_from_created_sales() {
        assert!(is_lot_sale_id(&lot_sale_id(&new_auction_id())));
        for _ in 0..100 {
            assert!(!is_lot_sale_id(&new_sale_id()));
        }
    }

    #[test]
    fn malformed_order_ids_are_rejected() {
        for bad in ["", "o_", "o__1", "o_abc_zz", "x_abc_1", "o_a-b_1", "o_abc_123456789"] {
            assert_eq!(parse_order_id(bad), None, "{bad}");
        }
    }
}
