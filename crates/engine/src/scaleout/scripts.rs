//! The sale scripts: the shared library of `lua/sale.lua` followed by each step's body. Redis
//! runs each atomically; they are called by hash (EVALSHA) and loaded again when a node answers
//! NOSCRIPT (after a restart or a failover).

use redis::Script;

const LIBRARY: &str = include_str!("lua/sale.lua");

pub struct Scripts {
    pub create_sale: Script,
    pub purchase: Script,
    pub pay: Script,
    pub cancel: Script,
    pub join_waitlist: Script,
    pub expire: Script,
}

fn with_library(body: &str) -> Script {
    Script::new(&format!("{LIBRARY}\n{body}"))
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            create_sale: with_library(include_str!("lua/create_sale.lua")),
            purchase: with_library(include_str!("lua/purchase.lua")),
            pay: with_library(include_str!("lua/pay.lua")),
            cancel: with_library(include_str!("lua/cancel.lua")),
            join_waitlist: with_library(include_str!("lua/join_waitlist.lua")),
            expire: with_library(include_str!("lua/expire.lua")),
        }
    }
}
