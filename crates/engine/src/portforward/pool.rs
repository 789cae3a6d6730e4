//! The SPDY sessions of one engine, per pod: opened on first use, shared by
//! every later connection to that pod, a second one opened once a session
//! carries many streams (Kubernetes' side serialises a session's frames on
//! a few workers) or is paused behind a slow reader (its frames wait until
//! that client reads, so a new connection there would too), replaced when
//! one fails, and closed after a few idle minutes. Keepalive PINGs (the session's own) keep idle ones alive
//! through NATs and load balancers and measure their round trip. When the
//! paths may have died at once (the machine woke or the network changed,
//! see [`crate::wake`], or another session broke), every session is made
//! to prove its path at once, so that a dead one is dropped before a
//! connection waits on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use kube::Client;
use kubesocks_spdy::{Config, Session, SessionError};
use tokio::task::AbortHandle;
use tracing::Instrument as _;

use super::spdy::Tunnel;
use super::upgrade::{self, UpgradeError};
use super::{DataPath, Protocol};
use crate::route::Endpoint;
use crate::wake::{self, Wake};

/// Streams (two per connection) a session carries before another is opened.
const MAX_STREAMS: usize = 200;
/// Sessions per pod at most; past that, new connections share the least
/// busy one even if it is paused.
const MAX_SESSIONS: usize = 8;
/// How many of a Service's other pods get a session ahead of use.
const PREWARM: usize = 8;

type PodKey = (String, String);
/// One pod's sessions, behind the lock that opening one holds.
type PodSessions = Arc<tokio::sync::Mutex<Vec<Arc<Tunnel>>>>;

pub(crate) struct Pool {
    client: Client,
    data_path: DataPath,
    /// Per pod; the pod's lock is held while a session is opened, so
    /// concurrent first connections share the one they wait for.
    pods: Mutex<HashMap<PodKey, PodSessions>>,
    me: Weak<Pool>,
    /// The task that checks every session on a [`Wake`].
    checker: AbortHandle,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.checker.abort();
    }
}

impl Pool {
    pub(crate) fn new(client: Client, data_path: DataPath) -> Arc<Pool> {
        let pool = Arc::new_cyclic(|me: &Weak<Pool>| {
            let checker = tokio::spawn(check_on_wake(me.clone(), wake::watch()).in_current_span()).abort_handle();
            Pool { client, data_path, pods: Mutex::default(), me: me.clone(), checker }
        });
        tokio::spawn(reap(Arc::downgrade(&pool), data_path.idle_timeout).in_current_span());
        pool
    }

    /// Has every session prove its path now (`Session::check`): a dead one
    /// ends within its PING timeout, and its connections are reset.
    fn check_all(&self, why: &str) {
        let pods: Vec<PodSessions> = self.pods.lock().unwrap().values().cloned().collect();
        let mut checked = 0;
        for sessions in pods {
            // A pod whose lock is held is opening a session: a fresh path.
            let Ok(sessions) = sessions.try_lock() else { continue };
            for tunnel in sessions.iter().filter(|t| !t.session.is_closed()) {
                tunnel.session.check();
                checked += 1;
            }
        }
        if checked > 0 {
            tracing::info!(sessions = checked, "{why}: checking every port-forward session");
        }
    }

    /// A live session to `endpoint`'s pod with room for a connection,
    /// opening one with `protocol` if there is none.
    pub(crate) async fn session(&self, endpoint: &Endpoint, protocol: Protocol) -> Result<Arc<Tunnel>, UpgradeError> {
        let pod = {
            let key = (endpoint.namespace.clone(), endpoint.pod.clone());
            self.pods.lock().unwrap().entry(key).or_default().clone()
        };
        let mut sessions = pod.lock().await;
        sessions.retain(|t| !t.session.is_closed());
        // A paused session only once no more may be opened, and then the
        // ones not paused first.
        let paused_too = sessions.len() >= MAX_SESSIONS;
        if let Some(t) = sessions
            .iter()
            .filter(|t| t.session.active_streams() < MAX_STREAMS && (paused_too || !t.session.is_paused()))
            .min_by_key(|t| (t.session.is_paused(), t.session.active_streams()))
        {
            return Ok(t.clone());
        }
        let started = Instant::now();
        let transport = upgrade::open(&self.client, protocol, &endpoint.namespace, &endpoint.pod).await?;
        let config = Config {
            keepalive: Some(self.data_path.keepalive),
            ping_timeout: (self.data_path.keepalive * 2).max(Duration::from_secs(5)),
            ..Config::default()
        };
        let tunnel = Arc::new(Tunnel::new(Session::client(transport, config)));
        tracing::debug!(namespace = endpoint.namespace, pod = endpoint.pod, %protocol, took = ?started.elapsed(), sessions = sessions.len() + 1, "port-forward session opened");
        watch_session(&tunnel, endpoint, self.me.clone());
        // A first round-trip figure at once, for the first connections' wait.
        let session = tunnel.session.clone();
        tokio::spawn(async move { session.ping().await });
        sessions.push(tunnel.clone());
        Ok(tunnel)
    }

    /// Opens a session in the background to each of these pods that has none.
    pub(crate) fn prewarm(self: &Arc<Self>, endpoints: &[Endpoint], protocol: Protocol) {
        for endpoint in endpoints.iter().take(PREWARM) {
            let key = (endpoint.namespace.clone(), endpoint.pod.clone());
            if self.pods.lock().unwrap().contains_key(&key) {
                continue;
            }
            let (pool, endpoint) = (self.clone(), endpoint.clone());
            tokio::spawn(
                async move {
                    if let Err(e) = pool.session(&endpoint, protocol).await {
                        tracing::debug!(%endpoint, error = %e, "opening a session ahead of use failed");
                    }
                }
                .in_current_span(),
            );
        }
    }
}

/// Logs why a session ended, once it does; without keeping it open, so a
/// session ends when the pool that holds it (its engine) is gone. One whose
/// path died is a hint that the others' may have too: they are checked.
fn watch_session(tunnel: &Arc<Tunnel>, endpoint: &Endpoint, pool: Weak<Pool>) {
    let ended = tunnel.session.ended();
    let endpoint = endpoint.to_string();
    tokio::spawn(
        async move {
            let reason = ended.await;
            match reason {
                SessionError::Closed => tracing::debug!(pod = endpoint, "port-forward session closed"),
                reason => {
                    tracing::warn!(pod = endpoint, %reason, "port-forward session broke; its connections were reset");
                    if matches!(reason, SessionError::KeepaliveTimeout(_) | SessionError::Io(_))
                        && let Some(pool) = pool.upgrade()
                    {
                        pool.check_all("a session's path died");
                    }
                }
            }
        }
        .in_current_span(),
    );
}

/// Checks every session of the pool on each [`Wake`], until the pool goes.
async fn check_on_wake(pool: Weak<Pool>, mut wakes: tokio::sync::mpsc::Receiver<Wake>) {
    while let Some(wake) = wakes.recv().await {
        let Some(pool) = pool.upgrade() else { return };
        pool.check_all(&wake.to_string());
    }
}

/// Closes sessions that carried no connection for `idle`, until the pool goes.
async fn reap(pool: Weak<Pool>, idle: Duration) {
    let every = (idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let pods: Vec<_> = pool.pods.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, sessions) in pods {
            // A pod whose lock is held is opening a session: not idle.
            let Ok(mut sessions) = sessions.try_lock() else { continue };
            sessions.retain(|t| {
                let idle_for = t.session.idle_since().map(|since| since.elapsed());
                let keep = !t.session.is_closed() && idle_for.is_none_or(|d| d < idle);
                if !keep {
                    t.session.close();
                }
                keep
            });
            if sessions.is_empty() {
                pool.pods.lock().unwrap().remove(&key);
            }
        }
    }
}
