//! Which changes deserve a desktop notification: a connection's new error,
//! a change of its health (its API server lost or back, a watch failing),
//! and a connect that failed. Each is reported once, not on every push, and a
//! connection's errors at most once per [`QUIET_SECS`]: refusals are errors
//! too, and a browser pointed at the proxy can cause one a second.

use std::collections::HashMap;

use kubesocks_engine::HealthState;

use crate::host::Live;

/// The least time between two notifications about one connection's errors.
const QUIET_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub title: String,
    pub body: String,
}

/// Remembers when each connection last raised a notification.
#[derive(Debug, Default)]
pub struct Alerts {
    last_sent: HashMap<String, u64>,
}

impl Alerts {
    /// The alerts for the step from `before` to `after`, at `now` (Unix seconds).
    pub fn between(&mut self, before: &Live, after: &Live, now: u64) -> Vec<Alert> {
        self.last_sent.retain(|id, _| after.connections.iter().any(|c| &c.record.id == id));
        let mut alerts = Vec::new();
        for c in &after.connections {
            let Some(error) = &c.stats.last_error else { continue };
            let old = before
                .connections
                .iter()
                .find(|o| o.record.id == c.record.id)
                .and_then(|o| o.stats.last_error.as_ref());
            let quiet = self.last_sent.get(&c.record.id).is_some_and(|&sent| now.saturating_sub(sent) < QUIET_SECS);
            if old != Some(error) && !quiet {
                self.last_sent.insert(c.record.id.clone(), now);
                alerts.push(Alert {
                    title: format!("kubesocks: error on {} ({})", c.record.context, c.record.id),
                    body: error.message.clone(),
                });
            }
        }
        alerts.extend(health_changes(before, after));
        alerts.extend(failed_connects(before, after));
        alerts
    }
}

/// Connections whose health changed since `before`.
fn health_changes(before: &Live, after: &Live) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for c in &after.connections {
        let Some(old) = before.connections.iter().find(|o| o.record.id == c.record.id) else { continue };
        let (old, new) = (&old.stats.health, &c.stats.health);
        if std::mem::discriminant(old) == std::mem::discriminant(new) {
            continue;
        }
        // A first list done is nothing to tell (nor one under way, below).
        if matches!((old, new), (HealthState::Syncing { .. }, HealthState::Connected)) {
            continue;
        }
        let context = &c.record.context;
        alerts.push(match new {
            HealthState::Reconnecting { error, .. } => Alert {
                title: format!("kubesocks: {context} cannot reach its API server"),
                body: format!("Reconnecting. Names it has not told kubesocks about are refused meanwhile. {error}"),
            },
            HealthState::Degraded { watch, error, .. } => {
                Alert { title: format!("kubesocks: a watch fails on {context}"), body: format!("{watch}: {error}") }
            }
            HealthState::Syncing { .. } => continue,
            HealthState::Connected => Alert {
                title: format!("kubesocks: {context} reaches its API server again"),
                body: "Its caches are fed again.".into(),
            },
        });
    }
    alerts
}

/// Connects that failed since `before`: always worth a notification.
fn failed_connects(before: &Live, after: &Live) -> Vec<Alert> {
    let mut alerts = Vec::new();
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
    use crate::host::{Attempt, sample_connection};
    use kubesocks_engine::ErrorReport;
    use kubesocks_managed::control::ConnectionStatus;

    fn conn(id: &str, error: Option<(&str, u64)>) -> ConnectionStatus {
        let mut c = sample_connection(id, &format!("ctx-{id}"), 1081);
        c.stats.last_error = error.map(|(m, at)| ErrorReport { message: m.into(), at });
        c
    }

    #[test]
    fn a_new_connection_error_alerts_once_then_not_again_for_a_while() {
        let mut alerts = Alerts::default();
        let quiet = Live { connections: vec![conn("a", None)], attempts: vec![], ..Live::default() };
        let failing = Live { connections: vec![conn("a", Some(("refused", 5)))], attempts: vec![], ..Live::default() };
        let sent = alerts.between(&quiet, &failing, 5);
        assert_eq!(sent, [Alert { title: "kubesocks: error on ctx-a (a)".into(), body: "refused".into() }]);
        assert_eq!(alerts.between(&failing, &failing, 6), []);
        let again = Live { connections: vec![conn("a", Some(("refused", 9)))], attempts: vec![], ..Live::default() };
        assert_eq!(alerts.between(&failing, &again, 9), [], "a second error within a minute stays quiet");
        let later = Live { connections: vec![conn("a", Some(("gone", 70)))], attempts: vec![], ..Live::default() };
        assert_eq!(alerts.between(&again, &later, 70).len(), 1, "a new error after the quiet time alerts");
        let other = Live {
            connections: vec![conn("a", Some(("gone", 70))), conn("b", Some(("x", 71)))],
            attempts: vec![],
            ..Live::default()
        };
        assert_eq!(alerts.between(&later, &other, 71).len(), 1, "each connection has its own quiet time");
    }

    #[test]
    fn each_change_of_health_alerts_once() {
        let mut alerts = Alerts::default();
        let with = |health: HealthState| {
            let mut c = conn("a", None);
            c.stats.health = health;
            Live { connections: vec![c], ..Live::default() }
        };
        let healthy = with(HealthState::Connected);
        let away = with(HealthState::Reconnecting { since: 5, error: "connection refused".into() });
        let sent = alerts.between(&healthy, &away, 5);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].title, "kubesocks: ctx-a cannot reach its API server");
        assert!(sent[0].body.ends_with("connection refused"), "{:?}", sent[0].body);
        let still = with(HealthState::Reconnecting { since: 5, error: "reset".into() });
        assert_eq!(alerts.between(&away, &still, 6), [], "still reconnecting is no change");
        let back = alerts.between(&still, &healthy, 9);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].title, "kubesocks: ctx-a reaches its API server again");
        let degraded =
            with(HealthState::Degraded { watch: "Pod in the cluster".into(), since: 9, error: "403".into() });
        assert_eq!(alerts.between(&healthy, &degraded, 10)[0].body, "Pod in the cluster: 403");
    }

    #[test]
    fn a_failed_connect_alerts_once_and_one_under_way_does_not() {
        let pending = Live { attempts: vec![Attempt { context: "dev".into(), error: None }], ..Live::default() };
        let mut alerts = Alerts::default();
        assert_eq!(alerts.between(&Live::default(), &pending, 1), []);
        let failed = Live {
            attempts: vec![Attempt { context: "dev".into(), error: Some("unreachable".into()) }],
            ..Live::default()
        };
        assert_eq!(
            alerts.between(&pending, &failed, 2),
            [Alert { title: "kubesocks: cannot connect dev".into(), body: "unreachable".into() }]
        );
        assert_eq!(alerts.between(&failed, &failed, 3), []);
    }
}
