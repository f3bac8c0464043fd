//! A `Clock` whose time moves only when a test says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_ports::Clock;
use tokio::sync::oneshot;

#[derive(Default)]
struct State {
    now: Duration,
    sleepers: Vec<(Duration, oneshot::Sender<()>)>,
}

#[derive(Clone, Default)]
pub struct ManualClock {
    state: Arc<Mutex<State>>,
}

impl ManualClock {
    /// Moves time on, waking every sleeper whose time has come.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.lock().unwrap();
        state.now += by;
        let now = state.now;
        let (due, waiting) = std::mem::take(&mut state.sleepers)
            .into_iter()
            .partition(|(deadline, _)| *deadline <= now);
        state.sleepers = waiting;
        for (_, wake) in due {
            let _ = wake.send(());
        }
    }

    pub fn sleepers(&self) -> usize {
        self.state.lock().unwrap().sleepers.len()
    }
}

impl Clock for ManualClock {
    async fn sleep(&self, duration: Duration) {
        let woken = {
            let mut state = self.state.lock().unwrap();
            let (wake, woken) = oneshot::channel();
            let deadline = state.now + duration;
            state.sleepers.push((deadline, wake));
            woken
        };
        let _ = woken.await;
    }
}
