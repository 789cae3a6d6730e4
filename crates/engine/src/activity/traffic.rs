//! Traffic over time: bytes each way and connections opened, per second,
//! over the last [`SECONDS`] seconds. A ring of samples that a once-a-second
//! tick fills from the engine's running totals, so counting a byte costs no
//! more than it did.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::stats::Totals;

/// How many seconds are kept: five minutes.
pub(crate) const SECONDS: usize = 300;

/// One second of traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct TrafficSecond {
    /// The second it ended at, in seconds since the Unix epoch.
    pub at: u64,
    /// Bytes from clients to the cluster.
    pub bytes_up: u64,
    /// Bytes from the cluster to clients.
    pub bytes_down: u64,
    /// Client connections opened.
    pub opened: u32,
}

/// The ring of seconds, and the totals it last saw.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    seconds: VecDeque<TrafficSecond>,
    last: Option<Totals>,
}

impl Ring {
    /// Records the second that ends at `at` from the totals then. The first
    /// tick only sets the baseline.
    pub(crate) fn tick(&mut self, at: u64, now: Totals) {
        if let Some(last) = self.last {
            if self.seconds.len() == SECONDS {
                self.seconds.pop_front();
            }
            self.seconds.push_back(TrafficSecond {
                at,
                bytes_up: now.bytes_up.saturating_sub(last.bytes_up),
                bytes_down: now.bytes_down.saturating_sub(last.bytes_down),
                opened: u32::try_from(now.opened.saturating_sub(last.opened)).unwrap_or(u32::MAX),
            });
        }
        self.last = Some(now);
    }

    /// The seconds kept, oldest first.
    pub(crate) fn seconds(&self) -> Vec<TrafficSecond> {
        self.seconds.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(up: u64, down: u64, opened: u64) -> Totals {
        Totals { bytes_up: up, bytes_down: down, opened }
    }

    #[test]
    fn each_second_holds_what_moved_in_it() {
        let mut ring = Ring::default();
        ring.tick(100, totals(10, 20, 1));
        assert!(ring.seconds().is_empty(), "the first tick is the baseline");
        ring.tick(101, totals(15, 120, 3));
        ring.tick(102, totals(15, 120, 3));
        assert_eq!(
            ring.seconds(),
            vec![
                TrafficSecond { at: 101, bytes_up: 5, bytes_down: 100, opened: 2 },
                TrafficSecond { at: 102, bytes_up: 0, bytes_down: 0, opened: 0 },
            ]
        );
    }

    #[test]
    fn only_the_last_five_minutes_are_kept() {
        let mut ring = Ring::default();
        for s in 0..=(SECONDS as u64 + 50) {
            ring.tick(s, totals(s, 0, 0));
        }
        let seconds = ring.seconds();
        assert_eq!(seconds.len(), SECONDS);
        assert_eq!(seconds.first().unwrap().at, 51);
        assert_eq!(seconds.last().unwrap().at, SECONDS as u64 + 50);
    }
}
