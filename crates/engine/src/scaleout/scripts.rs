//! The sale scripts: the shared library of `lua/sale.lua` followed by each step's body. Redis
//! runs each atomically; they are called by hash (EVALSHA) and loaded again when a node answers
//! NOSCRIPT (after a restart, a failover or a SCRIPT FLUSH); should the node forget them again
//! right away, the call falls back to sending the whole script (EVAL).

use redis::Script;

const LIBRARY: &str = include_str!("lua/sale.lua");

pub struct SaleScript {
    pub script: Script,
    pub code: String,
}

pub struct Scripts {
    pub create_sale: SaleScript,
    pub purchase: SaleScript,
    pub pay: SaleScript,
    pub cancel: SaleScript,
    pub join_waitlist: SaleScript,
    pub expire: SaleScript,
    pub transfer_out: SaleScript,
    pub transfer_in: SaleScript,
    pub transfer_done: SaleScript,
}

fn with_library(body: &str) -> SaleScript {
    let code = format!("{LIBRARY}\n{body}");
    SaleScript { script: Script::new(&code), code }
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
            transfer_out: with_library(include_str!("lua/transfer_out.lua")),
            transfer_in: with_library(include_str!("lua/transfer_in.lua")),
            transfer_done: with_library(include_str!("lua/transfer_done.lua")),
        }
    }
}
