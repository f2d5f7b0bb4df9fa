//! Traffic defense at the edge: who the client is, and load shedding.

pub mod client_ip;
pub mod shedding;
