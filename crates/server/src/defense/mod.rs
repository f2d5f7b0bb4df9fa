//! Traffic defense at the edge: who the client is, bans and rate limits, proof of work, and
//! load shedding.

pub mod client_ip;
pub mod endpoints;
pub mod guard;
pub mod pass;
pub mod pow;
pub mod shedding;
