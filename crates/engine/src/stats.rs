//! Live figures of one engine: what `status` and the tray show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cluster::health::HealthState;
use crate::portforward::Protocol;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    active: AtomicU64,
    total: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    last_error: Mutex<Option<ErrorReport>>,
}

/// The last thing that went wrong, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ErrorReport {
    /// One line: the target and the reason (see [`crate::error_chain`]).
    pub message: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// A copy of an engine's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct StatsSnapshot {
    /// Client connections open now.
    pub active_connections: u64,
    /// Client connections since the engine started.
    pub total_connections: u64,
    /// Bytes from clients to the cluster.
    pub bytes_up: u64,
    /// Bytes from the cluster to clients.
    pub bytes_down: u64,
    /// The latest connection that could not be made, or that failed.
    pub last_error: Option<ErrorReport>,
    /// The port-forward protocol connections use, once one has worked.
    #[serde(default)]
    pub portforward_protocol: Option<Protocol>,
    /// Whether the watch caches are fed: connected, reconnecting or degraded.
    #[serde(default)]
    pub health: HealthState,
}

impl Stats {
    /// Counts a connection as active until the guard is dropped.
    pub(crate) fn connection(self: &Arc<Self>) -> ActiveGuard {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }

    pub(crate) fn add_up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_error(&self, message: String) {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        *self.last_error.lock().unwrap() = Some(ErrorReport { message, at });
    }

    /// The running totals (the activity's traffic ring is filled from them).
    pub(crate) fn totals(&self) -> Totals {
        Totals {
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            opened: self.total.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active_connections: self.active.load(Ordering::Relaxed),
            total_connections: self.total.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap().clone(),
            portforward_protocol: None,
            health: HealthState::Connected,
        }
    }
}

/// An engine's running totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Client connections opened.
    pub opened: u64,
}

/// One active connection; dropping it ends the count.
pub(crate) struct ActiveGuard(Arc<Stats>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
