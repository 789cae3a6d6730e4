//! kubesocks' managed mode: one process (the daemon) hosts a proxy engine per
//! kube context, each a *connection* with an ID, its own listeners,
//! kubeconfig and log, and serves a control socket that the CLI and the tray
//! app drive.
//!
//! ```text
//! kubesocks connect ──control.sock (one JSON line each way)──▶ Daemon ──▶ Engine per context
//! tray app ─────────────── in-process calls, Daemon::watch ─────▶ the same Daemon
//! ```
//!
//! This crate sits on `kubesocks-engine` and under the CLI and the tray.
//! * [`control`] is the protocol: its [`control::Request`]s and
//!   [`control::Response`]s, the client's call, and the server's framing
//!   (line limit, timeout, the peer's uid).
//! * [`daemon`] keeps the registry of connections and answers requests.
//! * [`limits`] raises the open-file limit at start.
//! * [`state`] holds the records, kubeconfigs and logs on disk; [`logging`]
//!   sets up tracing and routes each connection's lines to its own file;
//!   `log_files` keeps those files bounded (moved aside at 8 MiB, stopped
//!   connections' logs removed 14 days after their last line).
//!
//! Like the engine, it states facts in its errors; the shells add advice.

pub mod control;
pub mod daemon;
pub mod limits;
mod log_files;
pub mod logging;
pub mod state;

pub use daemon::{ConnectOutcome, Daemon, DaemonError};
