//! The kubesocks proxy engine: a local SOCKS5 / HTTP proxy into one
//! Kubernetes cluster, every connection forwarded through the API server's
//! `pods/portforward`.
//!
//! ```text
//! app ──SOCKS5 / HTTP──▶ listener (socks, http; what they share: shared)
//!     ──name or IP──▶ resolve, against the watch caches (cache, direct)
//!     ──pods/portforward──▶ dial → portforward ──▶ the pod's port
//! ```
//!
//! This crate is the bottom layer of kubesocks. It knows nothing of the
//! command line, the daemon or the tray app: those shells (the
//! `kubesocks-managed` and `kubesocks` crates, and `kubesocks-tray`) start an
//! [`Engine`] with a [`ProxyConfig`] and read its [`StatsSnapshot`]s. Errors
//! state facts; the shells add advice that fits their users (a flag to pass,
//! a setting to change).
//!
//! Inside, each module has one job:
//! * `resolve` holds the rules (service names, per-pod names, ClusterIPs,
//!   Pod IPs → pod ports) as pure functions over a snapshot of the caches;
//!   this is where it is decided whether a name is in the cluster at all.
//! * `cache` keeps that snapshot current with kube-runtime reflectors, in the
//!   widest scope RBAC allows; where RBAC allows no watch but GETs, `direct`
//!   fetches the few objects each connection's name needs.
//! * `dial` turns a destination into an open stream: resolve, port-forward
//!   (`portforward`), or dial directly when passthrough is on. Its `Failure`
//!   is what a client is told. `failover` tries a target's endpoints in
//!   turn, and moves a connection whose pod refused late (after the client
//!   was answered) to the next one, replaying what the client sent.
//! * `portforward` speaks the data path: one SPDY/3.1 session per pod
//!   (tunnelled in a WebSocket, or over the legacy SPDY upgrade; the framing
//!   is the `kubesocks-spdy` crate), a stream pair per connection, and
//!   `v4.channel.k8s.io` as the last resort.
//! * `socks` and `http` are the listeners, on one mixed port (the first
//!   byte tells them apart) or each on its own; `pac` writes the proxy
//!   auto-config file the HTTP side serves to browsers; `shared` is the one path both take
//!   for each client (ID, count, dial, log, last error), and where a SOCKS
//!   reply code or HTTP status is chosen for a failure.
//! * `relay` copies bytes both ways; `stats` counts them.
//! * [`kubeconfig`] reads kubeconfigs and builds the API client;
//!   `proxy_url` puts the kubeconfig's `proxy-url` under it.
//! * `dns` is the optional DNS helper: cluster names answered from the same
//!   caches (through `resolve`), for apps that resolve names themselves.
//! * `listener` binds ports and runs the accept loop every listener shares.
//! * `engine` ties one cluster connection to its listeners and drains them;
//!   `gateway` is one port for the engines of every connected context, each
//!   picked by the alias a name ends in.

#![deny(missing_docs)]

mod auth;
mod byte_stream;
mod cache;
mod dial;
mod direct;
mod dns;
mod engine;
mod exec;
mod failover;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod gateway;
mod http;
pub mod kubeconfig;
mod listener;
mod nofile;
mod pac;
mod portforward;
mod proxy_url;
mod relay;
mod resolve;
mod seconds;
mod shared;
mod socks;
mod stats;

pub use auth::Credentials;
pub use cache::CacheError;
pub use engine::{Engine, EngineError, ProxyConfig, loopback, pac_url};
pub use gateway::{Gateway, GatewayConfig, Route, Routes, alias_for};
pub use listener::Listen;
pub use portforward::{DataPath, Protocol};
pub use stats::{ErrorReport, StatsSnapshot};

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
