//! The lines a test peer writes (its log or its events), collected as they
//! come, and waited for.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct OutputLines(Arc<Mutex<Vec<String>>>);

impl OutputLines {
    /// Collects `source`'s lines on a thread of its own until it ends.
    pub fn follow(&self, source: impl Read + Send + 'static) {
        let sink = Arc::clone(&self.0);
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Puts `earlier` lines (another run's) before these.
    pub fn prepend(&self, earlier: Vec<String>) {
        self.0.lock().unwrap().splice(0..0, earlier);
    }

    /// How many lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.all().iter().filter(|l| l.contains(text)).count()
    }

    /// What `pick` takes from each line it matches, in order.
    pub fn picked(&self, pick: impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.all().iter().filter_map(|line| pick(line)).collect()
    }

    /// Waits until `pick` has matched `n` lines; what it took from the
    /// `n`th. `what` names the wait in the failure.
    pub fn wait_for_nth(
        &self,
        what: &str,
        n: usize,
        limit: Duration,
        pick: impl Fn(&str) -> Option<String>,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = self.picked(&pick).into_iter().nth(n - 1) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {n}th {what} within {limit:?}: {:#?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
