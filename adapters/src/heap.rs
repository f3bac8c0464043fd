//! Gives the heap's free pages back to the kernel.
//!
//! glibc's malloc keeps what a burst freed: after 32 cluster-wide lists at
//! once in a 32-node cluster berth's anonymous memory stayed at its 50 MiB
//! peak, minutes after every buffer and connection of the burst was gone,
//! and `docker stats` showed it as berth's. `malloc_trim` hands whole free
//! pages back; berth calls it now and then, not after every request,
//! because it walks every arena.

use std::time::Duration;

/// How often the free pages go back: memory comes back within this long
/// after a burst.
pub const RELEASE_EVERY: Duration = Duration::from_secs(30);

/// Returns the heap's free pages to the kernel; true if any were.
pub fn release_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointer and only rearranges the
        // allocator's own free lists under its locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Calls [`release_free_pages`] every [`RELEASE_EVERY`], for ever.
pub async fn keep_releasing_free_pages() {
    let mut every = tokio::time::interval(RELEASE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        release_free_pages();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_pages_go_back_to_the_kernel() {
        // Many small blocks, freed but for the last: the heap's top cannot
        // shrink past it, so only malloc_trim's page release gives them back.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|_| vec![1u8; 1000]).collect();
        let last = vec![1u8; 1000];
        drop(blocks);
        let released = release_free_pages();
        drop(last);
        assert_eq!(
            released,
            cfg!(all(target_os = "linux", target_env = "gnu")),
            "malloc_trim released nothing after 20 MB were freed"
        );
    }
}
