//! Traffic defense at the edge: who the client is, proof of work, and load shedding.

pub mod client_ip;
pub mod pow;
pub mod shedding;
