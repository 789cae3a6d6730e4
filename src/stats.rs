//! Live figures of one engine: what `status` and the tray show.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    active: AtomicU64,
    total: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: SystemTime,
    pub message: String,
}

/// A copy of the figures at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub active_connections: u64,
    pub total_connections: u64,
    /// Bytes from clients to the cluster.
    pub bytes_up: u64,
    /// Bytes from the cluster to clients.
    pub bytes_down: u64,
    pub last_error: Option<LastError>,
}

impl Stats {
    /// Counts a connection as active until the guard is dropped.
    pub fn connection(&self) -> ActiveGuard<'_> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    pub fn add_up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    pub fn record_error(&self, message: String) {
        *self.last_error.lock().unwrap() = Some(LastError { at: SystemTime::now(), message });
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            active_connections: self.active.load(Ordering::Relaxed),
            total_connections: self.total.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}

pub struct ActiveGuard<'a>(&'a Stats);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
