//! kubesocks: a local SOCKS5 / HTTP proxy into a Kubernetes cluster.
//!
//! ```text
//! app ──SOCKS5 / HTTP──▶ listener ([`socks`], [`http`])
//!     ──name or IP──▶ [`resolve`] against the watch caches ([`cache`])
//!     ──pods/portforward──▶ [`portforward`] ──▶ the pod's port
//! ```
//!
//! * [`resolve`] holds the rules (service names, per-pod names, ClusterIPs,
//!   Pod IPs → pod ports) as pure functions over a snapshot of the caches.
//! * [`cache`] keeps that snapshot current with kube-runtime reflectors, in the
//!   widest scope RBAC allows; where it allows no watch but GETs, [`direct`]
//!   fetches the few objects each connection's name needs.
//! * [`dial`] turns a destination into an open stream: resolve, port-forward,
//!   fail over between endpoints (or dial directly with `--passthrough`).
//! * [`relay`] copies bytes both ways; [`stats`] counts them.
//! * [`engine`] ties one cluster connection to its listeners; the CLI
//!   ([`cli`]) and the tray app are thin shells over it.
//! * [`daemon`] hosts many engines (managed connections, one per context)
//!   in one process and serves the [`control`] socket the CLI talks to;
//!   [`state`] holds their records, kubeconfigs and logs on disk.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dial;
pub mod direct;
pub mod engine;
pub mod http;
pub mod kubeconfig;
pub mod logging;
pub mod manage;
pub mod portforward;
pub mod relay;
pub mod resolve;
pub mod socks;
pub mod state;
pub mod stats;

/// An error and its sources in one line (`a: b: c`), skipping a source whose
/// text its parent already includes. For logs, `status` and the tray.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}
