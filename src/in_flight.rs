//! How many requests the agent is answering at this moment, for what is
//! worth doing only while a core is spare (`signature::overlap`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    cores: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            count: Arc::default(),
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        }
    }
}

impl InFlight {
    /// Counts a request until the returned guard is dropped.
    pub fn enter(&self) -> Entered {
        self.count.fetch_add(1, Ordering::Relaxed);
        Entered(Arc::clone(&self.count))
    }

    pub fn now(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn cores(&self) -> usize {
        self.cores
    }
}

/// A request being answered; uncounted when dropped.
pub struct Entered(Arc<AtomicUsize>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
