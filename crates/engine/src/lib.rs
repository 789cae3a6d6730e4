//! The kubesocks proxy engine: a local SOCKS5 / HTTP proxy into one
//! Kubernetes cluster, every connection forwarded through the API server's
//! `pods/portforward`.
//!
//! This crate is the bottom layer of kubesocks. It knows nothing of the
//! command line, the daemon or the tray app: those shells (the
//! `kubesocks-managed` and `kubesocks` crates, and `kubesocks-tray`) start an
//! [`Engine`] with a [`ProxyConfig`] and read its [`StatsSnapshot`]s. Errors
//! state facts; the shells add advice that fits their users (a flag to pass,
//! a setting to change).
//!
//! The folders follow a connection's path; each one's `mod.rs` says what
//! its part does:
//!
//! ```text
//! app ──SOCKS5 / HTTP──▶ listen/   accept, front door, socks, http, own pages, dns
//!     ──host, port─────▶ dial/     back end (a cluster's dialer) or, on a gateway, the alias's
//!     ──name or IP─────▶ route/    read the name, the rules → target or refusal (pure)
//!                        cluster/  …against the caches' snapshot (kubeconfig, client, caches)
//!     ──endpoints──────▶ dial/failover → portforward/ (SPDY or WebSocket session per pod)
//!     ──bytes──────────▶ relay     both ways, counted in stats and activity
//! ```
//!
//! [`Engine`] (one cluster behind its listeners) and [`Gateway`] (one port
//! for every connected context) share one lifecycle (`listen::server`):
//! check, bind, fit the cap, serve, drain. Import edges point one way:
//! `engine`/`gateway` → `listen` → `dial` → `portforward`, `cluster` →
//! `route`, both over `objects` (what is kept of each cluster object).

#![deny(missing_docs)]

mod activity;
mod byte_stream;
mod cluster;
mod config;
mod dial;
mod engine;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod gateway;
mod listen;
mod objects;
mod portforward;
#[cfg(test)]
mod promises;
mod relay;
mod route;
mod seconds;
mod stats;
#[cfg(any(test, feature = "fuzzing"))]
mod testing;
mod wake;

pub use activity::{
    ActivitySnapshot, ConnState, FailedConnection, OpenConnection, Program, ReasonCount, TrafficSecond, Via,
};
pub use cluster::cache::CacheError;
pub use cluster::health::HealthState;
pub use cluster::kubeconfig;
pub use config::{ProxyConfig, loopback, pac_url};
pub use dial::routes::{Route, Routes};
pub use engine::Engine;
pub use error::{EngineError, error_chain};
pub use gateway::{Gateway, GatewayConfig};
pub use listen::Listen;
pub use listen::auth::Credentials;
pub use portforward::{DataPath, Protocol};
pub use route::alias::alias_for;
pub use stats::{ErrorReport, StatsSnapshot};
