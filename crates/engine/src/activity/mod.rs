//! What an engine's clients are doing: every client connection open now
//! (which program opened it, what it asked for, where it went, its bytes
//! and its state), the latest connections that were refused or failed and
//! why, and the traffic of the last minutes. `kubesocks connections`,
//! `kubesocks failures` and the tray's Connections view show it.
//!
//! The bookkeeping stays off a connection's path: registering and
//! unregistering take one short lock each, bytes are counted with relaxed
//! atomics beside the engine's totals, the program is looked up on a
//! thread of its own ([`programs`]), and the traffic ring is filled by a
//! once-a-second tick ([`traffic`]) from the running totals.
//!
//! ```text
//! accept ──▶ Client (address, ProgramSlot ◀── programs worker)
//! dial   ──▶ Tracked in Activity::open: resolving → opening → open → half-closed → closing
//! failed ──▶ Activity::failures (the newest FAILURES kept)
//! drop   ──▶ removed from Activity::open
//! ```

pub(crate) mod programs;
pub(crate) mod traffic;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::portforward::Protocol;
use crate::stats::Stats;
pub use programs::Program;
use programs::ProgramSlot;
pub use traffic::TrafficSecond;

/// How many failures are kept, newest first.
pub(crate) const FAILURES: usize = 200;
/// How many open connections a snapshot lists (the newest): a browser can
/// hold thousands; the count says how many there are.
pub(crate) const LISTED: usize = 500;

/// One client connection to a listener, as accepted: who it is. A plain
/// HTTP client may send many requests on it, each dialled (and listed) on
/// its own; the program is looked up once for all of them.
#[derive(Debug)]
pub(crate) struct Client {
    /// The client's address.
    pub addr: SocketAddr,
    /// The program behind it, once found.
    pub program: Arc<ProgramSlot>,
}

impl Client {
    /// A client accepted on a listener at `listener`: its program is looked
    /// up when someone asks (see [`programs`]).
    pub(crate) fn accepted(addr: SocketAddr, listener: Option<SocketAddr>) -> Client {
        let program = match listener {
            Some(listener) => Arc::new(ProgramSlot::of(programs::Socket { client: addr, listener })),
            None => Arc::default(),
        };
        Client { addr, program }
    }
}

/// How long a listing waits for the programs it asked for: lookups take a
/// millisecond or so each, in batches; a first one, reading every process,
/// some more.
const LISTING_WAITS: Duration = Duration::from_millis(200);

/// How a client asked for its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A SOCKS5 CONNECT.
    Socks5,
    /// An HTTP CONNECT tunnel.
    HttpConnect,
    /// A plain HTTP request (`GET http://…`), forwarded on its own.
    Http,
}

impl Via {
    /// As the log says it.
    pub(crate) fn log_name(self) -> &'static str {
        match self {
            Via::Socks5 => "SOCKS CONNECT",
            Via::HttpConnect => "HTTP CONNECT",
            Via::Http => "HTTP request",
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Its name is being looked up.
    Resolving,
    /// Its port-forward (or direct connection) is being opened.
    Opening,
    /// Bytes flow both ways.
    Open,
    /// One side has finished sending; the other goes on.
    HalfClosed,
    /// Both have finished, or it was cut: what is left is being flushed.
    Closing,
}

impl ConnState {
    const ALL: [ConnState; 5] =
        [ConnState::Resolving, ConnState::Opening, ConnState::Open, ConnState::HalfClosed, ConnState::Closing];
}

/// One open client connection, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct OpenConnection {
    /// Its ID, as its log lines say (`conn=7`).
    pub id: u64,
    /// The local program that opened it; none when unknown (another
    /// user's, another machine's, or not found yet).
    pub program: Option<Program>,
    /// The client's address.
    pub client: String,
    /// How it asked.
    pub via: Via,
    /// Whether it came through the port shared by every context.
    pub shared_port: bool,
    /// The name or address and port asked for.
    pub asked: String,
    /// What that turned out to be (`service shop/web:80`), once resolved.
    pub reached: Option<String>,
    /// The pod port it is forwarded to (`shop/web-5d8f:8080`), once open.
    pub pod: Option<String>,
    /// The node that pod runs on, when the caches know it.
    pub node: Option<String>,
    /// The port-forward protocol it uses, once open.
    pub protocol: Option<Protocol>,
    /// Bytes from the client to the cluster.
    pub bytes_up: u64,
    /// Bytes from the cluster to the client.
    pub bytes_down: u64,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub opened_at_ms: u64,
    /// How long it has been open, in milliseconds.
    pub age_ms: u64,
    /// Where it is in its life.
    pub state: ConnState,
}

/// A connection that was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct FailedConnection {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Its ID, as its log lines say.
    pub id: u64,
    /// The local program that asked; none when unknown.
    pub program: Option<Program>,
    /// The client's address.
    pub client: String,
    /// How it asked.
    pub via: Via,
    /// Whether it came through the port shared by every context.
    pub shared_port: bool,
    /// The name or address and port asked for.
    pub asked: String,
    /// Why, as the log says it and the client was told.
    pub reason: String,
}

/// How many of the failures kept share one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ReasonCount {
    /// The reason.
    pub reason: String,
    /// How many failures kept gave it.
    pub count: u32,
}

/// What an engine's clients are doing, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct ActivitySnapshot {
    /// The open connections, newest first (at most 500).
    pub open: Vec<OpenConnection>,
    /// How many are open, listed or not.
    pub open_count: u64,
    /// The latest refused or failed connections, newest first (at most 200).
    pub failures: Vec<FailedConnection>,
    /// The failures kept, counted by reason, the most common first.
    pub reasons: Vec<ReasonCount>,
    /// Traffic per second over the last five minutes, oldest first.
    pub traffic: Vec<TrafficSecond>,
}

/// The activity of one engine.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    open: Mutex<BTreeMap<u64, Arc<Tracked>>>,
    failures: Mutex<VecDeque<Failed>>,
    traffic: Mutex<traffic::Ring>,
}

/// A failure as kept: the connection itself (its program is read when
/// listed: the lookup may end later), when and why.
#[derive(Debug)]
struct Failed {
    at_ms: u64,
    conn: Arc<Tracked>,
    reason: String,
}

/// One open connection, as the engine keeps it while it lives.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) id: u64,
    client: SocketAddr,
    program: Arc<ProgramSlot>,
    via: Via,
    shared_port: bool,
    /// The name or address and port asked for, as the log writes it.
    pub(crate) asked: String,
    opened_at_ms: u64,
    started: Instant,
    state: AtomicU8,
    reached: Mutex<Reached>,
    up: AtomicU64,
    down: AtomicU64,
    /// The engine's totals, which every byte counts in too.
    pub(crate) stats: Arc<Stats>,
    /// Cancelled to close the connection from the list: both sides are reset.
    close: CancellationToken,
}

#[derive(Debug, Default)]
struct Reached {
    what: Option<String>,
    pod: Option<String>,
    node: Option<Arc<str>>,
    protocol: Option<Protocol>,
}

impl Tracked {
    /// Moves it on in its life.
    pub(crate) fn set_state(&self, state: ConnState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn state(&self) -> ConnState {
        ConnState::ALL[usize::from(self.state.load(Ordering::Relaxed)).min(ConnState::ALL.len() - 1)]
    }

    /// Its name resolved to `what`; now opening.
    pub(crate) fn resolved(&self, what: &str) {
        self.reached.lock().unwrap().what = Some(what.to_string());
        self.set_state(ConnState::Opening);
    }

    /// Its upstream is open: to `pod` (on `node`) over `protocol`; none of
    /// them for a direct connection.
    pub(crate) fn opened(&self, pod: Option<String>, node: Option<Arc<str>>, protocol: Option<Protocol>) {
        let mut reached = self.reached.lock().unwrap();
        reached.pod = pod;
        reached.node = node;
        reached.protocol = protocol;
    }

    pub(crate) fn add_up(&self, n: u64) {
        self.up.fetch_add(n, Ordering::Relaxed);
        self.stats.add_up(n);
    }

    pub(crate) fn add_down(&self, n: u64) {
        self.down.fetch_add(n, Ordering::Relaxed);
        self.stats.add_down(n);
    }

    /// The program behind it, once found.
    pub(crate) fn program(&self) -> &Arc<ProgramSlot> {
        &self.program
    }

    /// Whether it was closed from the list.
    pub(crate) fn was_closed(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Resolves when the connection is closed from the list.
    pub(crate) async fn closed(&self) {
        self.close.cancelled().await
    }

    fn listed(&self) -> OpenConnection {
        let reached = self.reached.lock().unwrap();
        OpenConnection {
            id: self.id,
            program: self.program.get(),
            client: self.client.to_string(),
            via: self.via,
            shared_port: self.shared_port,
            asked: self.asked.clone(),
            reached: reached.what.clone(),
            pod: reached.pod.clone(),
            node: reached.node.as_deref().map(str::to_string),
            protocol: reached.protocol,
            bytes_up: self.up.load(Ordering::Relaxed),
            bytes_down: self.down.load(Ordering::Relaxed),
            opened_at_ms: self.opened_at_ms,
            age_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            state: self.state(),
        }
    }

    /// About how many bytes it holds (itself and its strings), for the figure
    /// of memory per open connection.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        let reached = self.reached.lock().unwrap();
        std::mem::size_of::<Tracked>()
            + self.asked.capacity()
            + reached.what.as_ref().map_or(0, String::capacity)
            + reached.pod.as_ref().map_or(0, String::capacity)
            // Its place in the table: a key, a pointer and B-tree overhead.
            + 3 * std::mem::size_of::<usize>()
    }
}

/// Who asks for a new connection, and how.
#[derive(Clone, Copy)]
pub(crate) struct Asked<'a> {
    pub client: &'a Client,
    pub via: Via,
    /// Through the port shared by every context.
    pub shared_port: bool,
}

impl Activity {
    /// Starts the once-a-second tick that fills the traffic ring from
    /// `stats`; it ends when the activity is dropped.
    pub(crate) fn start(stats: &Arc<Stats>) -> Arc<Activity> {
        let activity = Arc::new(Activity::default());
        let (weak_activity, weak_stats): (Weak<Activity>, Weak<Stats>) =
            (Arc::downgrade(&activity), Arc::downgrade(stats));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let (Some(activity), Some(stats)) = (weak_activity.upgrade(), weak_stats.upgrade()) else { return };
                let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                activity.traffic.lock().unwrap().tick(at, stats.totals());
            }
        });
        activity
    }

    /// Registers a new connection; it is listed until [`Activity::remove`].
    pub(crate) fn add(&self, id: u64, asked: Asked<'_>, target: String, stats: Arc<Stats>) -> Arc<Tracked> {
        let tracked = Arc::new(Tracked {
            id,
            client: asked.client.addr,
            program: asked.client.program.clone(),
            via: asked.via,
            shared_port: asked.shared_port,
            asked: target,
            opened_at_ms: now_ms(),
            started: Instant::now(),
            state: AtomicU8::new(ConnState::Resolving as u8),
            reached: Mutex::default(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            stats,
            close: CancellationToken::new(),
        });
        self.open.lock().unwrap().insert(id, tracked.clone());
        tracked
    }

    pub(crate) fn remove(&self, id: u64) {
        self.open.lock().unwrap().remove(&id);
    }

    /// Keeps a refused or failed connection among the newest [`FAILURES`].
    pub(crate) fn failed(&self, tracked: &Arc<Tracked>, reason: String) {
        let failed = Failed { at_ms: now_ms(), conn: tracked.clone(), reason };
        let mut failures = self.failures.lock().unwrap();
        if failures.len() == FAILURES {
            failures.pop_back();
        }
        failures.push_front(failed);
    }

    /// Closes an open connection: both sides are reset. False if no
    /// connection with that ID is open.
    pub(crate) fn close(&self, id: u64) -> bool {
        match self.open.lock().unwrap().get(&id) {
            Some(tracked) => {
                tracked.close.cancel();
                true
            }
            None => false,
        }
    }

    /// What its clients are doing now. The programs of connections listed
    /// for the first time are looked up meanwhile (up to [`LISTING_WAITS`]).
    pub(crate) async fn snapshot(&self) -> ActivitySnapshot {
        let (open, open_count) = {
            let open = self.open.lock().unwrap();
            let listed: Vec<Arc<Tracked>> = open.values().rev().take(LISTED).cloned().collect();
            (listed, open.len() as u64)
        };
        let lookups = open.iter().filter(|t| !t.program.looked_up()).map(|t| t.program.find(LISTING_WAITS));
        futures::future::join_all(lookups).await;
        let failures: Vec<FailedConnection> = self
            .failures
            .lock()
            .unwrap()
            .iter()
            .map(|f| FailedConnection {
                at_ms: f.at_ms,
                id: f.conn.id,
                program: f.conn.program.get(),
                client: f.conn.client.to_string(),
                via: f.conn.via,
                shared_port: f.conn.shared_port,
                asked: f.conn.asked.clone(),
                reason: f.reason.clone(),
            })
            .collect();
        ActivitySnapshot {
            open: open.iter().map(|t| t.listed()).collect(),
            open_count,
            reasons: count_reasons(&failures),
            failures,
            traffic: self.traffic.lock().unwrap().seconds(),
        }
    }

    /// The bytes held per open connection now, on average (none open: 0).
    #[cfg(test)]
    pub(crate) fn held_bytes_per_connection(&self) -> usize {
        let open = self.open.lock().unwrap();
        open.values().map(|t| t.held_bytes()).sum::<usize>() / open.len().max(1)
    }
}

/// The failures counted by reason, the most common first (then by text).
fn count_reasons(failures: &[FailedConnection]) -> Vec<ReasonCount> {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for f in failures {
        *counts.entry(&f.reason).or_default() += 1;
    }
    let mut reasons: Vec<ReasonCount> =
        counts.into_iter().map(|(reason, count)| ReasonCount { reason: reason.to_string(), count }).collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    reasons
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client { addr: "127.0.0.1:50000".parse().unwrap(), program: Arc::default() }
    }

    fn asked(client: &Client) -> Asked<'_> {
        Asked { client, via: Via::Socks5, shared_port: false }
    }

    #[tokio::test]
    async fn an_open_connection_is_listed_with_its_bytes_and_state_until_removed() {
        let stats = Arc::new(Stats::default());
        let activity = Activity::start(&stats);
        let client = client();
        let tracked = activity.add(7, asked(&client), "web.shop:80".into(), stats.clone());
        tracked.resolved("service shop/web:80");
        tracked.opened(Some("shop/web-1:8080".into()), Some("node-a".into()), Some(Protocol::Tunnel));
        tracked.set_state(ConnState::Open);
        tracked.add_up(10);
        tracked.add_down(2000);
        let listed = activity.snapshot().await.open;
        assert_eq!(listed.len(), 1);
        let conn = &listed[0];
        assert_eq!((conn.id, conn.asked.as_str(), conn.state), (7, "web.shop:80", ConnState::Open));
        assert_eq!(conn.reached.as_deref(), Some("service shop/web:80"));
        assert_eq!(conn.pod.as_deref(), Some("shop/web-1:8080"));
        assert_eq!(conn.node.as_deref(), Some("node-a"));
        assert_eq!((conn.bytes_up, conn.bytes_down), (10, 2000));
        assert_eq!(stats.totals().bytes_down, 2000, "the engine's totals count the bytes too");
        activity.remove(7);
        assert!(activity.snapshot().await.open.is_empty());
    }

    #[tokio::test]
    async fn closing_from_the_list_wakes_the_connection_and_an_unknown_id_is_said() {
        let stats = Arc::new(Stats::default());
        let activity = Activity::start(&stats);
        let client = client();
        let tracked = activity.add(3, asked(&client), "web:80".into(), stats);
        assert!(!activity.close(4));
        assert!(activity.close(3));
        tokio::time::timeout(Duration::from_secs(1), tracked.closed()).await.expect("closed at once");
    }

    #[tokio::test]
    async fn the_newest_200_failures_are_kept_newest_first_and_counted_by_reason() {
        let stats = Arc::new(Stats::default());
        let activity = Activity::start(&stats);
        let client = client();
        for i in 0..250u64 {
            let tracked = activity.add(i, asked(&client), format!("s{i}:80"), stats.clone());
            let reason = if i % 5 == 0 { "no ready endpoint for web.shop" } else { "pods/portforward forbidden" };
            activity.failed(&tracked, reason.into());
            activity.remove(i);
        }
        let snapshot = activity.snapshot().await;
        assert_eq!(snapshot.failures.len(), FAILURES);
        assert_eq!(snapshot.failures[0].id, 249);
        assert_eq!(snapshot.failures.last().unwrap().id, 50);
        assert_eq!(
            snapshot.reasons,
            vec![
                ReasonCount { reason: "pods/portforward forbidden".into(), count: 160 },
                ReasonCount { reason: "no ready endpoint for web.shop".into(), count: 40 },
            ]
        );
    }

    #[tokio::test]
    async fn the_newest_500_connections_are_listed_and_all_counted() {
        let stats = Arc::new(Stats::default());
        let activity = Activity::start(&stats);
        let client = client();
        let held: Vec<_> =
            (0..600u64).map(|i| activity.add(i, asked(&client), "web:80".into(), stats.clone())).collect();
        let snapshot = activity.snapshot().await;
        assert_eq!(snapshot.open_count, 600);
        assert_eq!(snapshot.open.len(), LISTED);
        assert_eq!(snapshot.open[0].id, 599);
        drop(held);
    }

    #[tokio::test]
    async fn an_open_connection_holds_less_than_half_a_kilobyte() {
        let stats = Arc::new(Stats::default());
        let activity = Activity::start(&stats);
        let client = client();
        let tracked = activity.add(1, asked(&client), "productpage.default.svc.cluster.local:9080".into(), stats);
        tracked.resolved("service default/productpage:9080");
        tracked.opened(
            Some("default/productpage-v1-6b746f74dc-9stvs:9080".into()),
            Some(crate::objects::node_name("ip-10-0-12-34.eu-west-1.compute.internal")),
            Some(Protocol::Tunnel),
        );
        let bytes = activity.held_bytes_per_connection();
        println!("bytes held per open connection: {bytes}");
        assert!(bytes < 512, "{bytes} bytes per open connection");
    }
}
