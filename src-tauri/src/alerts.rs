//! Which changes deserve a desktop notification: a connection's new error,
//! and a connect that failed. Each is reported once, not on every push.

use crate::host::Live;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub title: String,
    pub body: String,
}

/// The alerts for the step from `before` to `after`.
pub fn between(before: &Live, after: &Live) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for c in &after.connections {
        let Some(error) = &c.last_error else { continue };
        let old = before.connections.iter().find(|o| o.id == c.id).and_then(|o| o.last_error.as_ref());
        if old != Some(error) {
            alerts.push(Alert {
                title: format!("kubesocks: error on {} ({})", c.context, c.id),
                body: error.message.clone(),
            });
        }
    }
    for a in &after.attempts {
        let Some(error) = &a.error else { continue };
        let old = before.attempts.iter().find(|o| o.context == a.context).and_then(|o| o.error.as_ref());
        if old != Some(error) {
            alerts.push(Alert { title: format!("kubesocks: cannot connect {}", a.context), body: error.clone() });
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Attempt, ConnectionStatus};
    use kubesocks::control::ErrorReport;

    fn conn(id: &str, error: Option<(&str, u64)>) -> ConnectionStatus {
        ConnectionStatus {
            id: id.into(),
            context: format!("ctx-{id}"),
            server: "https://k:6443".into(),
            namespace: "default".into(),
            socks: Some("127.0.0.1:1080".parse().unwrap()),
            http: None,
            socks_url: Some("socks5h://127.0.0.1:1080".into()),
            http_url: None,
            pid: 1,
            started_at: 1_700_000_000,
            log: "/l".into(),
            kubeconfig: "/k".into(),
            active_connections: 0,
            total_connections: 0,
            bytes_up: 0,
            bytes_down: 0,
            last_error: error.map(|(m, at)| ErrorReport { message: m.into(), at }),
        }
    }

    #[test]
    fn a_new_connection_error_alerts_once() {
        let quiet = Live { connections: vec![conn("a", None)], attempts: vec![] };
        let failing = Live { connections: vec![conn("a", Some(("refused", 5)))], attempts: vec![] };
        let alerts = between(&quiet, &failing);
        assert_eq!(alerts, [Alert { title: "kubesocks: error on ctx-a (a)".into(), body: "refused".into() }]);
        assert_eq!(between(&failing, &failing), []);
        let again = Live { connections: vec![conn("a", Some(("refused", 9)))], attempts: vec![] };
        assert_eq!(between(&failing, &again).len(), 1, "the same message later is a new failure");
    }

    #[test]
    fn a_failed_connect_alerts_once_and_one_under_way_does_not() {
        let pending = Live { connections: vec![], attempts: vec![Attempt { context: "dev".into(), error: None }] };
        assert_eq!(between(&Live::default(), &pending), []);
        let failed = Live {
            connections: vec![],
            attempts: vec![Attempt { context: "dev".into(), error: Some("unreachable".into()) }],
        };
        assert_eq!(
            between(&pending, &failed),
            [Alert { title: "kubesocks: cannot connect dev".into(), body: "unreachable".into() }]
        );
        assert_eq!(between(&failed, &failed), []);
    }
}
