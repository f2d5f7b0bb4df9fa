//! Signed things only this server (and its replicas, which share the secret) can make: waiting
//! room passes, bound to a user and a sale and valid until a time, and each room's shuffle seed
//! with the commitment published before the seed is.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stampede_core::{Timestamp, UserId};

type HmacSha256 = Hmac<Sha256>;

pub struct Signer {
    passes: Vec<u8>,
    seeds: Vec<u8>,
}

impl Signer {
    pub fn new(secret: &str) -> Self {
        let derive = |purpose: &[u8]| Sha256::new().chain_update(purpose).chain_update(secret).finalize().to_vec();
        Self { passes: derive(b"stampede waiting room pass\0"), seeds: derive(b"stampede waiting room seed\0") }
    }

    /// `<expires ms>.<mac hex>`: the mac covers the sale, the user and the expiry.
    pub fn pass(&self, sale_id: &str, user: &UserId, expires_at: Timestamp) -> String {
        format!("{}.{}", expires_at.0, hex::encode(self.mac(&self.passes, sale_id, user, expires_at)))
    }

    /// Whether `pass` lets `user` buy in `sale_id` at `now`.
    pub fn check_pass(&self, pass: &str, sale_id: &str, user: &UserId, now: Timestamp) -> bool {
        let Some((expires, mac)) = pass.split_once('.') else { return false };
        let (Ok(expires), Ok(mac)) = (expires.parse::<i64>(), hex::decode(mac)) else { return false };
        let expires_at = Timestamp(expires);
        let mut verifier = HmacSha256::new_from_slice(&self.passes).expect("HMAC takes keys of any length");
        verifier.update(payload(sale_id, user, expires_at).as_bytes());
        now < expires_at && verifier.verify_slice(&mac).is_ok()
    }

    /// The room's shuffle seed: secret until the start, the same on every replica.
    pub fn seed(&self, sale_id: &str) -> u64 {
        let mut mac = HmacSha256::new_from_slice(&self.seeds).expect("HMAC takes keys of any length");
        mac.update(sale_id.as_bytes());
        let bytes = mac.finalize().into_bytes();
        u64::from_be_bytes(bytes[..8].try_into().expect("a SHA-256 MAC has 32 bytes"))
    }

    fn mac(&self, key: &[u8], sale_id: &str, user: &UserId, expires_at: Timestamp) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(payload(sale_id, user, expires_at).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// What the published commitment is: SHA-256 of the seed written in decimal, in hex.
pub fn commitment(seed: u64) -> String {
    hex::encode(Sha256::digest(seed.to_string().as_bytes()))
}

fn payload(sale_id: &str, user: &UserId, expires_at: Timestamp) -> String {
    // Lengths first, so no two different (sale, user) pairs give the same text.
    format!("{}:{}:{}:{}:{}", sale_id.len(), sale_id, user.as_str().len(), user, expires_at.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    #[test]
    fn a_pass_is_good_for_its_user_and_sale_until_it_expires() {
        let signer = Signer::new("secret");
        let alice = UserId::new("alice").unwrap();
        let pass = signer.pass("s_1", &alice, NOW.plus_seconds(60));
        assert!(signer.check_pass(&pass, "s_1", &alice, NOW));
        assert!(!signer.check_pass(&pass, "s_1", &alice, NOW.plus_seconds(60)), "expired");
        assert!(!signer.check_pass(&pass, "s_2", &alice, NOW), "another sale");
        assert!(!signer.check_pass(&pass, "s_1", &UserId::new("bob").unwrap(), NOW), "another user");
        assert!(!Signer::new("other").check_pass(&pass, "s_1", &alice, NOW), "another server");
        let stretched = pass.replacen(&NOW.plus_seconds(60).0.to_string(), &NOW.plus_seconds(600).0.to_string(), 1);
        assert!(!signer.check_pass(&stretched, "s_1", &alice, NOW), "the expiry is signed");
        for garbage in ["", ".", "x.y", "1.zz"] {
            assert!(!signer.check_pass(garbage, "s_1", &alice, NOW));
        }
    }

    #[test]
    fn seeds_are_stable_per_sale_and_committed() {
        let signer = Signer::new("secret");
        assert_eq!(signer.seed("s_1"), Signer::new("secret").seed("s_1"));
        assert_ne!(signer.seed("s_1"), signer.seed("s_2"));
        assert_eq!(commitment(42), hex::encode(Sha256::digest(b"42")));
    }
}
