//! What the user sees, computed in one place for the window and the tray: a
//! row per context (connected or not, its connection, whether it is failing
//! and why, the URL to copy), the window's headline and the tray icon. The
//! window draws a [`View`] as it is (`ui/src/rows.ts`); the tray menu draws
//! the same rows. Pure functions of the contexts, the live status and the
//! time, so the rules are unit-tested here.

use std::collections::BTreeSet;

use kubesocks_engine::HealthState;
use kubesocks_engine::kubeconfig::Kubeconfig;
use kubesocks_managed::control::{ConnectionStatus, SharedPortStatus};
use serde::Serialize;

use crate::host::{Contexts, Live};

/// How long a connection's last error makes it "failing" (icon red, row
/// amber, counted in the headline). Refusals count as errors (a typo in a
/// URL, a browser asking for outside hosts), so a failure that never went
/// back would soon mean nothing; the row keeps showing the last error after
/// that, as past. A failed connect stays failed until it is retried or
/// switched off.
pub const FAILING_FOR_SECS: u64 = 60;

/// What a row says when its connection was made from a kubeconfig entry
/// that has changed since.
pub const OUTDATED: &str = "The kubeconfig entry changed since it was connected";

/// Everything the window shows apart from the settings, pushed on every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct View {
    /// The kubeconfig's contexts in its order, then connected contexts it lacks.
    pub rows: Vec<Row>,
    /// The one-line summary under the window's title.
    pub headline: String,
    /// What the tray icon shows.
    pub icon: Icon,
    /// The kubeconfig files the contexts come from (`~/.kube/config`).
    pub kubeconfig: Vec<String>,
    /// Why the kubeconfig could not be read, if it could not.
    pub kubeconfig_error: Option<String>,
    /// The port shared by every connected context, if open.
    pub shared_port: Option<SharedPortStatus>,
}

/// One context as the user sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Row {
    /// The context's name.
    pub name: String,
    /// Its API server.
    pub server: String,
    /// Its namespace.
    pub namespace: String,
    /// Whether it is the kubeconfig's current context.
    pub current: bool,
    /// False for a connection whose context this kubeconfig lacks (started
    /// from a terminal with another kubeconfig).
    pub in_kubeconfig: bool,
    /// Where it stands.
    pub state: RowState,
    /// Whether its switch (in the tray: its check mark) is on.
    pub switched_on: bool,
    /// Its connection, when connected.
    pub connection: Option<ConnectionStatus>,
    /// Why it is failing or failed, while it is.
    pub error: Option<String>,
    /// "The kubeconfig entry changed since it was connected", when it did;
    /// the window then offers to reconnect it. None for a context this
    /// kubeconfig lacks, which it could not reconnect.
    pub outdated: Option<String>,
    /// The socks5h:// URL to give clients; none without a SOCKS listener.
    pub url: Option<String>,
    /// The PAC file's URL to give browsers.
    pub pac_url: Option<String>,
    /// The alias its names end in on the shared port unless one is set:
    /// its name made a DNS label.
    pub default_alias: String,
}

/// Where a context stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    /// Not connected.
    Off,
    /// A connect from the app is under way.
    Connecting,
    /// Connected.
    On,
    /// Connected, with an error in the last [`FAILING_FOR_SECS`].
    Failing,
    /// Connected, but its API server cannot be reached: names it has not
    /// told kubesocks about are refused, saying so.
    Reconnecting,
    /// Connected, but a watch fails (RBAC or else).
    Degraded,
    /// A connect from the app failed.
    Failed,
}

impl RowState {
    /// Connected or on the way: a switch shows on.
    fn switched_on(self) -> bool {
        matches!(
            self,
            RowState::On | RowState::Connecting | RowState::Failing | RowState::Reconnecting | RowState::Degraded
        )
    }

    fn is_failure(self) -> bool {
        matches!(self, RowState::Failing | RowState::Reconnecting | RowState::Degraded | RowState::Failed)
    }
}

/// What the tray icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Icon {
    /// Nothing connected.
    Idle,
    /// Something connected, nothing failing.
    Connected,
    /// A row is failing or failed.
    Error,
}

/// The view of `contexts` and `live` at `now` (Unix seconds); `outdated`
/// holds the IDs of the connections whose kubeconfig entry changed since
/// they were made ([`entry_changed`]).
pub fn build(contexts: &Contexts, live: &Live, outdated: &BTreeSet<String>, now: u64) -> View {
    let rows = rows(contexts, live, outdated, now);
    View {
        headline: headline(&rows),
        icon: icon(&rows),
        rows,
        kubeconfig: contexts.kubeconfig.clone(),
        kubeconfig_error: contexts.kubeconfig_error.clone(),
        shared_port: live.shared_port.clone(),
    }
}

/// The kubeconfig's contexts in its order, then any connection whose context
/// the kubeconfig does not have, so nothing running is hidden.
fn rows(contexts: &Contexts, live: &Live, outdated: &BTreeSet<String>, now: u64) -> Vec<Row> {
    let row = |name: &str, server: &str, namespace: &str, current: bool, in_kubeconfig: bool| {
        let connection = live.connections.iter().find(|c| c.record.context == name);
        let attempt = live.attempts.iter().find(|a| a.context == name);
        let (state, error) = match (connection, attempt) {
            (Some(c), _) => match (&c.stats.health, c.stats.last_error.as_ref()) {
                (HealthState::Reconnecting { error, .. }, _) => {
                    (RowState::Reconnecting, Some(format!("The API server is unreachable: {error}")))
                }
                (HealthState::Degraded { watch, error, .. }, _) => {
                    (RowState::Degraded, Some(format!("Watching {watch} fails: {error}")))
                }
                (HealthState::Connected | HealthState::Syncing { .. }, Some(e))
                    if now.saturating_sub(e.at) < FAILING_FOR_SECS =>
                {
                    (RowState::Failing, Some(e.message.clone()))
                }
                // Pods still being listed: Service names answer already.
                (HealthState::Connected | HealthState::Syncing { .. }, _) => (RowState::On, None),
            },
            (None, Some(a)) => match &a.error {
                Some(error) => (RowState::Failed, Some(error.clone())),
                None => (RowState::Connecting, None),
            },
            (None, None) => (RowState::Off, None),
        };
        Row {
            name: name.into(),
            server: server.into(),
            namespace: namespace.into(),
            current,
            in_kubeconfig,
            state,
            switched_on: state.switched_on(),
            url: connection.and_then(|c| c.socks_url.clone()),
            pac_url: connection.and_then(|c| c.pac_url.clone()),
            connection: connection.cloned(),
            error,
            // Reconnecting reads this kubeconfig: offered only for a context it has.
            outdated: connection
                .filter(|c| in_kubeconfig && outdated.contains(&c.record.id))
                .map(|_| OUTDATED.to_string()),
            default_alias: kubesocks_engine::alias_for(name),
        }
    };
    let mut rows: Vec<Row> =
        contexts.contexts.iter().map(|c| row(&c.name, &c.server, &c.namespace, c.current, true)).collect();
    for c in &live.connections {
        if !rows.iter().any(|r| r.name == c.record.context) {
            rows.push(row(&c.record.context, &c.record.server, &c.record.namespace, false, false));
        }
    }
    rows
}

fn icon(rows: &[Row]) -> Icon {
    if rows.iter().any(|r| r.state.is_failure()) {
        Icon::Error
    } else if rows.iter().any(|r| r.connection.is_some()) {
        Icon::Connected
    } else {
        Icon::Idle
    }
}

fn headline(rows: &[Row]) -> String {
    let connected = rows.iter().filter(|r| r.connection.is_some()).count();
    let failing = rows.iter().filter(|r| r.state.is_failure()).count();
    if rows.is_empty() {
        return "No kube contexts".into();
    }
    if connected == 0 {
        return if failing > 0 { "Not connected · a connect failed" } else { "Not connected" }.into();
    }
    let base =
        if connected == 1 { "1 context connected".to_string() } else { format!("{connected} contexts connected") };
    if failing > 0 { format!("{base} · {failing} with errors") } else { base }
}

/// Whether a connection's kubeconfig entry changed since it was connected:
/// `at_connect` is the entry it was made from (its own kubeconfig, written
/// then), `now` the same context read again from its kubeconfig files, both
/// as [`kubesocks_engine::kubeconfig::standalone`] makes them (the context,
/// its cluster and its user, certificate files inlined). Everything in them
/// counts: the server, CA, TLS and proxy settings of the cluster, the
/// credentials or exec plugin of the user, the context's namespace and the
/// cluster and user it names. Other contexts' entries do not.
pub fn entry_changed(at_connect: &Kubeconfig, now: &Kubeconfig) -> bool {
    // Compared as JSON: the kubeconfig types have no equality, and their
    // secrets serialize as they are.
    let entry = |kc: &Kubeconfig| {
        serde_json::to_value((&kc.contexts, &kc.clusters, &kc.auth_infos)).expect("a kubeconfig serializes")
    };
    entry(at_connect) != entry(now)
}

/// The clock views are built with: seconds since the Unix epoch, like the
/// daemon's timestamps.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What started or stopped between two pushes, wherever it came from (the
/// window, the tray menu, a terminal), for the window to say in passing.
pub fn announcement(before: &Live, after: &Live) -> Option<String> {
    let has = |live: &Live, c: &ConnectionStatus| live.connections.iter().any(|o| o.record.id == c.record.id);
    let started: Vec<String> = after
        .connections
        .iter()
        .filter(|c| !has(before, c))
        .map(|c| {
            let at = c.socks_url.as_ref().or(c.http_url.as_ref()).unwrap_or(&c.record.id);
            format!("{} on {at}", c.record.context)
        })
        .collect();
    let stopped: Vec<&str> =
        before.connections.iter().filter(|c| !has(after, c)).map(|c| c.record.context.as_str()).collect();
    if !started.is_empty() {
        Some(format!("Connected {}", started.join(", ")))
    } else if !stopped.is_empty() {
        Some(format!("Disconnected {}", stopped.join(", ")))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Attempt, sample_connection};
    use kubesocks_engine::ErrorReport;
    use kubesocks_engine::kubeconfig::ContextInfo;

    const NOW: u64 = 1_800_000_000;

    fn ctx(name: &str, current: bool) -> ContextInfo {
        ContextInfo {
            name: name.into(),
            cluster: format!("{name}-cluster"),
            server: format!("https://{name}.example:6443"),
            namespace: "default".into(),
            current,
        }
    }

    fn contexts() -> Contexts {
        Contexts {
            contexts: vec![ctx("dev", true), ctx("prod", false), ctx("staging", false)],
            kubeconfig_error: None,
            kubeconfig: vec!["~/.kube/config".into()],
        }
    }

    fn conn(id: &str, context: &str, port: u16) -> ConnectionStatus {
        sample_connection(id, context, port)
    }

    /// `conn` with a last error `age` seconds before NOW.
    fn failing(id: &str, context: &str, port: u16, message: &str, age: u64) -> ConnectionStatus {
        let mut c = conn(id, context, port);
        c.stats.last_error = Some(ErrorReport { message: message.into(), at: NOW - age });
        c
    }

    fn attempt(context: &str, error: Option<&str>) -> Attempt {
        Attempt { context: context.into(), error: error.map(Into::into) }
    }

    fn live(connections: Vec<ConnectionStatus>, attempts: Vec<Attempt>) -> Live {
        Live { connections, attempts, ..Live::default() }
    }

    /// No connection made from an entry that changed since.
    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn states(view: &View) -> Vec<(&str, RowState)> {
        view.rows.iter().map(|r| (r.name.as_str(), r.state)).collect()
    }

    #[test]
    fn every_context_is_listed_in_kubeconfig_order_off_when_nothing_runs() {
        let view = build(&contexts(), &Live::default(), &none(), NOW);
        let rows: Vec<_> = view.rows.iter().map(|r| (r.name.as_str(), r.state, r.current, r.switched_on)).collect();
        assert_eq!(
            rows,
            [
                ("dev", RowState::Off, true, false),
                ("prod", RowState::Off, false, false),
                ("staging", RowState::Off, false, false)
            ]
        );
        assert_eq!(view.rows[0].server, "https://dev.example:6443");
        assert_eq!((view.headline.as_str(), view.icon), ("Not connected", Icon::Idle));
        assert_eq!(view.kubeconfig, ["~/.kube/config"]);
    }

    #[test]
    fn rows_are_connected_connecting_failing_or_failed() {
        let now = live(
            vec![conn("c1", "prod", 1081), failing("c2", "staging", 1082, "pods/portforward is forbidden", 5)],
            vec![attempt("dev", None), attempt("prod", None)],
        );
        let view = build(&contexts(), &now, &none(), NOW);
        assert_eq!(
            states(&view),
            [("dev", RowState::Connecting), ("prod", RowState::On), ("staging", RowState::Failing)],
            "a connection wins over an attempt still under way"
        );
        assert_eq!(view.rows[1].connection.as_ref().map(|c| c.record.id.as_str()), Some("c1"));
        assert_eq!(view.rows[2].error.as_deref(), Some("pods/portforward is forbidden"));
        assert!(view.rows.iter().all(|r| r.switched_on), "connecting, connected and failing rows are switched on");

        let failed = build(&contexts(), &live(vec![], vec![attempt("dev", Some("unreachable"))]), &none(), NOW);
        let dev = &failed.rows[0];
        assert_eq!((dev.state, dev.error.as_deref(), dev.switched_on), (RowState::Failed, Some("unreachable"), false));
    }

    #[test]
    fn the_url_to_copy_is_the_daemons_and_there_is_none_without_a_socks_listener() {
        let mut http_only = conn("c2", "staging", 1082);
        http_only.record.socks = None;
        let http_only = ConnectionStatus::new(http_only.record, http_only.stats);
        let view = build(&contexts(), &live(vec![conn("c1", "prod", 1090), http_only], vec![]), &none(), NOW);
        assert_eq!(view.rows[1].url.as_deref(), Some("socks5h://127.0.0.1:1090"));
        assert_eq!(view.rows[2].url, None);
        assert_eq!(view.rows[0].url, None, "no connection, no URL");
    }

    #[test]
    fn connections_of_contexts_the_kubeconfig_lacks_are_added_once() {
        let view = build(
            &contexts(),
            &live(vec![conn("c9", "elsewhere", 1089), conn("c10", "elsewhere", 1090)], vec![]),
            &none(),
            NOW,
        );
        assert_eq!(view.rows.len(), 4);
        let added = &view.rows[3];
        assert_eq!((added.name.as_str(), added.in_kubeconfig, added.state), ("elsewhere", false, RowState::On));
        assert_eq!(added.server, "https://k:6443", "taken from its connection");
        assert_eq!(added.connection.as_ref().map(|c| c.record.id.as_str()), Some("c9"));
    }

    #[test]
    fn an_error_is_failing_for_a_minute_in_the_rows_and_the_icon_alike() {
        let now = live(vec![failing("c1", "prod", 1081, "refused", 0)], vec![]);
        let fresh = build(&contexts(), &now, &none(), NOW);
        assert_eq!((fresh.rows[1].state, fresh.icon), (RowState::Failing, Icon::Error));
        let last_second = build(&contexts(), &now, &none(), NOW + FAILING_FOR_SECS - 1);
        assert_eq!((last_second.rows[1].state, last_second.icon), (RowState::Failing, Icon::Error));
        let later = build(&contexts(), &now, &none(), NOW + FAILING_FOR_SECS);
        assert_eq!((later.rows[1].state, later.icon), (RowState::On, Icon::Connected), "an old error is no failure");
        assert_eq!(later.rows[1].error, None);
        assert_eq!(later.headline, "1 context connected");
        let kept = later.rows[1].connection.as_ref().and_then(|c| c.stats.last_error.as_ref());
        assert_eq!(kept.map(|e| e.message.as_str()), Some("refused"), "the row still has it, to show as past");

        let failed = live(vec![], vec![attempt("dev", Some("x"))]);
        let much_later = build(&contexts(), &failed, &none(), NOW + 3600);
        assert_eq!(
            (much_later.rows[0].state, much_later.icon),
            (RowState::Failed, Icon::Error),
            "a failed connect stays"
        );
    }

    #[test]
    fn an_api_server_out_of_reach_shows_as_reconnecting_over_any_older_error_and_a_failing_watch_as_degraded() {
        let mut c = failing("c1", "prod", 1081, "refused", 0);
        c.stats.health = HealthState::Reconnecting { since: NOW - 3, error: "connection refused".into() };
        let view = build(&contexts(), &live(vec![c.clone()], vec![]), &none(), NOW);
        let row = &view.rows[1];
        assert_eq!((row.state, row.switched_on, view.icon), (RowState::Reconnecting, true, Icon::Error));
        assert_eq!(row.error.as_deref(), Some("The API server is unreachable: connection refused"));
        assert_eq!(view.headline, "1 context connected · 1 with errors");

        c.stats.health = HealthState::Degraded { watch: "Pod in the cluster".into(), since: NOW, error: "403".into() };
        let view = build(&contexts(), &live(vec![c], vec![]), &none(), NOW);
        assert_eq!((view.rows[1].state, view.icon), (RowState::Degraded, Icon::Error));
        assert_eq!(view.rows[1].error.as_deref(), Some("Watching Pod in the cluster fails: 403"));
    }

    #[test]
    fn the_icon_follows_connections_and_failures() {
        assert_eq!(build(&contexts(), &Live::default(), &none(), NOW).icon, Icon::Idle);
        assert_eq!(
            build(&contexts(), &live(vec![conn("c1", "prod", 1081)], vec![]), &none(), NOW).icon,
            Icon::Connected
        );
        assert_eq!(
            build(&contexts(), &live(vec![], vec![attempt("dev", None)]), &none(), NOW).icon,
            Icon::Idle,
            "pending"
        );
        let foreign = live(vec![failing("c9", "elsewhere", 1089, "boom", 5)], vec![]);
        assert_eq!(
            build(&contexts(), &foreign, &none(), NOW).icon,
            Icon::Error,
            "a connection outside the kubeconfig counts"
        );
    }

    #[test]
    fn the_headline_counts_connected_and_failing_rows() {
        let now = live(
            vec![conn("c1", "prod", 1081), failing("c2", "dev", 1082, "x", 0)],
            vec![attempt("staging", Some("refused"))],
        );
        assert_eq!(build(&contexts(), &now, &none(), NOW).headline, "2 contexts connected · 2 with errors");
        let one = live(vec![conn("c1", "prod", 1081)], vec![]);
        assert_eq!(build(&contexts(), &one, &none(), NOW).headline, "1 context connected");
        let failed = live(vec![], vec![attempt("staging", Some("refused"))]);
        assert_eq!(build(&contexts(), &failed, &none(), NOW).headline, "Not connected · a connect failed");
        assert_eq!(build(&Contexts::default(), &Live::default(), &none(), NOW).headline, "No kube contexts");
    }

    #[test]
    fn the_kubeconfig_error_is_shown_as_given() {
        let broken = Contexts { kubeconfig_error: Some("no kubeconfig".into()), ..Contexts::default() };
        let view = build(&broken, &Live::default(), &none(), NOW);
        assert_eq!((view.kubeconfig_error.as_deref(), view.rows.len()), (Some("no kubeconfig"), 0));
    }

    #[test]
    fn a_connection_made_from_an_entry_that_changed_says_so_while_in_this_kubeconfig() {
        let now =
            live(vec![conn("c1", "prod", 1081), conn("c2", "staging", 1082), conn("c9", "elsewhere", 1089)], vec![]);
        let outdated = BTreeSet::from(["c1".to_string(), "c9".to_string(), "gone".to_string()]);
        let view = build(&contexts(), &now, &outdated, NOW);
        let said: Vec<_> = view.rows.iter().map(|r| (r.name.as_str(), r.outdated.as_deref())).collect();
        assert_eq!(
            said,
            [("dev", None), ("prod", Some(OUTDATED)), ("staging", None), ("elsewhere", None)],
            "only a connection listed as outdated, and only where this kubeconfig can reconnect it"
        );
        assert_eq!(OUTDATED, "The kubeconfig entry changed since it was connected");
        let prod = &view.rows[1];
        assert_eq!((prod.state, prod.error.as_deref(), view.icon), (RowState::On, None, Icon::Connected), "no failure");
        assert_eq!(build(&contexts(), &now, &none(), NOW).rows[1].outdated, None);
    }

    /// A kubeconfig of two contexts, `prod` as `edit` leaves it, made standalone as the daemon does.
    fn entry_of_prod(edit: impl FnOnce(&mut serde_json::Value)) -> Kubeconfig {
        let mut doc = serde_json::json!({
            "clusters": [
                {"name": "prod-cluster", "cluster": {"server": "https://prod.example:6443", "certificate-authority-data": "Q0E="}},
                {"name": "other-cluster", "cluster": {"server": "https://other.example:6443"}},
                {"name": "dev-cluster", "cluster": {"server": "https://dev.example:6443"}}
            ],
            "users": [
                {"name": "prod-user", "user": {"token": "secret-1"}},
                {"name": "dev-user", "user": {"token": "dev-secret"}}
            ],
            "contexts": [
                {"name": "prod", "context": {"cluster": "prod-cluster", "user": "prod-user", "namespace": "shop"}},
                {"name": "dev", "context": {"cluster": "dev-cluster", "user": "dev-user"}}
            ],
            "current-context": "dev"
        });
        edit(&mut doc);
        let kc: Kubeconfig = serde_json::from_value(doc).unwrap();
        kubesocks_engine::kubeconfig::standalone(&kc, "prod").unwrap()
    }

    #[test]
    fn an_entry_changed_when_its_server_credentials_namespace_or_cluster_did() {
        let at_connect = entry_of_prod(|_| {});
        assert!(!entry_changed(&at_connect, &entry_of_prod(|_| {})), "read again unchanged");
        let unrelated = entry_of_prod(|kc| {
            kc["users"][1]["user"]["token"] = "rotated".into();
            kc["clusters"][2]["cluster"]["server"] = "https://dev2.example:6443".into();
            kc["contexts"][1]["context"]["namespace"] = "other".into();
            kc["current-context"] = "prod".into();
        });
        assert!(
            !entry_changed(&at_connect, &unrelated),
            "other contexts' entries and the current context do not count"
        );
        type Edit = fn(&mut serde_json::Value);
        let edits: [(&str, Edit); 6] = [
            ("server", |kc| kc["clusters"][0]["cluster"]["server"] = "https://prod2.example:6443".into()),
            ("CA", |kc| kc["clusters"][0]["cluster"]["certificate-authority-data"] = "Q0EtMg==".into()),
            ("token", |kc| kc["users"][0]["user"]["token"] = "secret-2".into()),
            ("exec plugin", |kc| {
                kc["users"][0]["user"] =
                    serde_json::json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}})
            }),
            ("namespace", |kc| kc["contexts"][0]["context"]["namespace"] = "default".into()),
            ("cluster", |kc| kc["contexts"][0]["context"]["cluster"] = "other-cluster".into()),
        ];
        for (what, edit) in edits {
            assert!(entry_changed(&at_connect, &entry_of_prod(edit)), "a changed {what}");
        }
    }

    #[test]
    fn announcements_say_what_started_else_what_stopped() {
        let a = conn("a", "dev", 1081);
        let b = conn("b", "prod", 1082);
        let mut c = conn("c", "staging", 1083);
        assert_eq!(announcement(&Live::default(), &Live::default()), None);
        let started = announcement(&live(vec![a.clone()], vec![]), &live(vec![a.clone(), b.clone()], vec![]));
        assert_eq!(started.as_deref(), Some("Connected prod on socks5h://127.0.0.1:1082"));
        let stopped = announcement(&live(vec![a.clone(), b.clone()], vec![]), &live(vec![b.clone()], vec![]));
        assert_eq!(stopped.as_deref(), Some("Disconnected dev"));
        c.record.socks = None;
        let c = ConnectionStatus::new(c.record, c.stats);
        let both = announcement(&live(vec![a.clone()], vec![]), &live(vec![b, c], vec![]));
        assert_eq!(both.as_deref(), Some("Connected prod on socks5h://127.0.0.1:1082, staging on c"), "starts first");
        let mut busier = a.clone();
        busier.stats.bytes_down = 10;
        assert_eq!(announcement(&live(vec![a], vec![]), &live(vec![busier], vec![])), None, "counters are no news");
    }
}
