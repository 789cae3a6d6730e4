//! Whether the caches are being fed: each watch reports here when it fails
//! and when it gets news again, and [`Health::state`] sums that up for
//! `status`, the tray and the clients' refusals.
//!
//! A watch that fails because the API server cannot be reached (refused,
//! reset, timed out, its connection found dead by a PING) makes the context
//! `reconnecting`; one the API server itself refuses (RBAC, a server error)
//! makes it `degraded`, naming the watch. A watch that starts again sends no
//! event until something changes, so while the API server is unreachable a
//! probe asks it for its version twice a second: its first answer ends
//! `reconnecting`, and a watch still failing says so again on its next try.
//!
//! Until a watch's first list is done, the context is `syncing`: names
//! that need that watch's objects wait for it (Services and EndpointSlices
//! are listed first, so most names answer while pods are still listed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::Client;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

/// How often the probe asks while the API server is unreachable.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long one probe may wait for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A failing watch retries at least once a second (`watch_backoff`); one not
/// heard failing for this long has started again, though a watch that starts
/// again sends no event until something changes.
const FAILING_IF_WITHIN: Duration = Duration::from_secs(3);

/// A context's health, as `status` and the tray show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HealthState {
    /// Every watch is fed.
    #[default]
    Connected,
    /// A watch's first list is under way: names that need its objects
    /// (pod IPs, while pods are listed) wait for it.
    Syncing {
        /// Which watch: its kind and scope.
        watch: String,
    },
    /// The API server cannot be reached.
    Reconnecting {
        /// Seconds since the Unix epoch.
        since: u64,
        /// The latest failure, one line.
        error: String,
    },
    /// The API server answers, but a watch fails.
    Degraded {
        /// Which watch: its kind and scope.
        watch: String,
        /// Seconds since the Unix epoch.
        since: u64,
        /// Its latest failure, one line.
        error: String,
    },
}

/// One failing watch.
#[derive(Debug, Clone)]
struct Failing {
    since: u64,
    /// When it last failed.
    last: std::time::Instant,
    error: String,
    /// The API server was not reached (rather than refusing).
    unreachable: bool,
}

#[derive(Default)]
struct Inner {
    /// By watch ("Pod in the cluster", "Service in namespace shop").
    failing: BTreeMap<String, Failing>,
    /// Watches whose first list is not done.
    syncing: BTreeSet<String>,
    probe: Option<AbortHandle>,
}

/// The health of one engine's watches. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Health {
    client: Client,
    inner: Arc<Mutex<Inner>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.abort();
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Whether a watch failure means the API server was not reached; `None`
/// for what is part of a watch's normal life (its resource version expired).
fn unreachable(e: &watcher::Error) -> Option<bool> {
    let client_error = match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            e
        }
        watcher::Error::WatchError(status) if status.code == 410 => return None,
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => return Some(false),
    };
    Some(match client_error {
        kube::Error::Api(status) if status.code == 410 => return None,
        // A gateway or load balancer in front of the API server answering for it.
        kube::Error::Api(status) => matches!(status.code, 502..=504),
        // Credentials (an exec plugin failing, say): the server is not the trouble.
        kube::Error::Auth(_) => false,
        _ => true,
    })
}

impl Health {
    pub(crate) fn new(client: Client) -> Health {
        Health { client, inner: Arc::default() }
    }

    /// A watch failed.
    pub(crate) fn failed(&self, watch: &str, e: &watcher::Error) {
        let Some(unreachable) = unreachable(e) else { return };
        let mut inner = self.inner.lock().unwrap();
        let error = e.to_string();
        inner
            .failing
            .entry(watch.to_string())
            .and_modify(|f| {
                f.error.clone_from(&error);
                f.unreachable = unreachable;
                f.last = std::time::Instant::now();
            })
            .or_insert_with(|| Failing { since: unix_now(), last: std::time::Instant::now(), error, unreachable });
        if unreachable && inner.probe.as_ref().is_none_or(AbortHandle::is_finished) {
            inner.probe = Some(tokio::spawn(probe(self.client.clone(), Arc::downgrade(&self.inner))).abort_handle());
        }
    }

    /// A watch got news: it is fed again.
    pub(crate) fn fed(&self, watch: &str) {
        let mut inner = self.inner.lock().unwrap();
        if !inner.failing.is_empty() {
            inner.failing.remove(watch);
        }
    }

    /// A watch starts, and its first list is to come.
    pub(crate) fn syncing(&self, watch: &str) {
        self.inner.lock().unwrap().syncing.insert(watch.to_string());
    }

    /// A watch's first list is done (or the watch stopped).
    pub(crate) fn synced(&self, watch: &str) {
        self.inner.lock().unwrap().syncing.remove(watch);
    }

    /// The sum of it.
    pub(crate) fn state(&self) -> HealthState {
        let mut inner = self.inner.lock().unwrap();
        inner.failing.retain(|_, f| f.last.elapsed() < FAILING_IF_WITHIN);
        let unreachable = inner.failing.values().filter(|f| f.unreachable);
        if let Some(first) = unreachable.clone().min_by_key(|f| f.since) {
            let latest = unreachable.max_by_key(|f| f.since).unwrap_or(first);
            return HealthState::Reconnecting { since: first.since, error: latest.error.clone() };
        }
        if let Some((watch, f)) = inner.failing.iter().min_by_key(|(_, f)| f.since) {
            return HealthState::Degraded { watch: watch.clone(), since: f.since, error: f.error.clone() };
        }
        match inner.syncing.first() {
            Some(watch) => HealthState::Syncing { watch: watch.clone() },
            None => HealthState::Connected,
        }
    }
}

/// Asks for the API server's version until it answers, then forgets the
/// failures that said it could not be reached.
async fn probe(client: Client, inner: std::sync::Weak<Mutex<Inner>>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
            break;
        }
    }
    if let Some(inner) = inner.upgrade() {
        inner.lock().unwrap().failing.retain(|_, f| !f.unreachable);
        tracing::info!("the API server answers again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("no", "Reason").with_code(code).boxed())
    }

    fn health() -> Health {
        Health::new(crate::testing::api_client())
    }

    #[tokio::test]
    async fn a_watch_that_cannot_reach_the_api_server_makes_the_context_reconnecting_until_it_is_fed() {
        let h = health();
        assert_eq!(h.state(), HealthState::Connected);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        h.failed("Pod in the cluster", &watcher::Error::WatchFailed(kube::Error::ReadEvents(refused)));
        let HealthState::Reconnecting { error, .. } = h.state() else { panic!("{:?}", h.state()) };
        assert!(error.contains("refused"), "{error}");
        h.fed("Pod in the cluster");
        assert_eq!(h.state(), HealthState::Connected);
    }

    #[tokio::test]
    async fn a_watch_the_api_server_refuses_makes_the_context_degraded_naming_it() {
        let h = health();
        h.failed("Pod in namespace shop", &watcher::Error::WatchStartFailed(api_error(403)));
        let HealthState::Degraded { watch, .. } = h.state() else { panic!("{:?}", h.state()) };
        assert_eq!(watch, "Pod in namespace shop");
        // Unreachable outranks a refusal.
        h.failed("Service in the cluster", &watcher::Error::InitialListFailed(api_error(503)));
        assert!(matches!(h.state(), HealthState::Reconnecting { .. }), "{:?}", h.state());
    }

    #[tokio::test]
    async fn a_watch_no_longer_heard_failing_counts_as_started_again() {
        let h = health();
        h.failed("Pod in namespace shop", &watcher::Error::WatchStartFailed(api_error(500)));
        assert!(matches!(h.state(), HealthState::Degraded { .. }));
        h.inner.lock().unwrap().failing.values_mut().for_each(|f| f.last -= FAILING_IF_WITHIN);
        assert_eq!(h.state(), HealthState::Connected, "a watch that restarts sends no event while nothing changes");
    }

    #[tokio::test]
    async fn a_watch_listing_for_the_first_time_makes_the_context_syncing_unless_something_fails() {
        let h = health();
        h.syncing("Pod in the cluster");
        assert_eq!(h.state(), HealthState::Syncing { watch: "Pod in the cluster".into() });
        h.failed("Service in the cluster", &watcher::Error::WatchStartFailed(api_error(403)));
        assert!(matches!(h.state(), HealthState::Degraded { .. }), "a failure outranks syncing");
        h.fed("Service in the cluster");
        h.synced("Pod in the cluster");
        assert_eq!(h.state(), HealthState::Connected);
    }

    #[tokio::test]
    async fn an_expired_resource_version_is_a_watch_s_normal_life() {
        let h = health();
        h.failed("Pod in the cluster", &watcher::Error::WatchStartFailed(api_error(410)));
        h.failed(
            "Pod in the cluster",
            &watcher::Error::WatchError(Box::new(kube::core::Status::failure("gone", "Expired").with_code(410))),
        );
        assert_eq!(h.state(), HealthState::Connected);
    }
}
