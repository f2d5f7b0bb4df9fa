//! The allocator: mimalloc, with a longer delay before freed memory goes back to the OS.

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// The hot path allocates small, short-lived objects from many threads; mimalloc's per-thread
/// free lists cost a fraction of the system allocator's arena locking there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the bindings name the options around it, not this one).
const PURGE_DELAY: mi_option_t = 15;

/// How long memory stays free before it is returned to the OS. mimalloc's default is 1 s; a busy
/// sale frees and reuses large blocks (order tables growing by doubling, connection buffers)
/// over longer spans than that, and memory returned too early costs a page fault and a zeroed
/// (often huge) page when it is used again: 10 s cut the server's page faults during the
/// purchase benchmark from about 4,700 to 1,900 (docs/benchmarks.md). Memory still goes back to
/// the OS once it has stayed unused this long.
const PURGE_DELAY_MS: c_long = 10_000;

/// Sets the purge delay, unless the operator chose one with `MIMALLOC_PURGE_DELAY`.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option by its index in mimalloc's option table; mimalloc
        // reads its options atomically, so setting one while other threads allocate is sound.
        unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
    tracing::debug!(purge_delay_ms = purge_delay_ms(), "allocator");
}

fn purge_delay_ms() -> c_long {
    // SAFETY: reads one integer option by its index in mimalloc's option table.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // mimalloc's own default for the purge delay: the index names the right option.
        assert_eq!(purge_delay_ms(), 1_000);
        tune();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
