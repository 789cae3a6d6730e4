//! Moments when the paths to the cluster may have died at once: the machine
//! woke from sleep, or its network changed (Wi-Fi, a VPN up or down, an
//! address or route added or removed). The port-forward sessions are then
//! checked at once rather than at their next keepalive (see
//! `portforward::pool`); the API server's connection proves itself every
//! second anyway (`cluster::connect`).
//!
//! On Linux, network changes come from a netlink socket subscribed to link,
//! address and route changes, and a wake from the clocks: `CLOCK_BOOTTIME`
//! goes on during suspend and `CLOCK_MONOTONIC` does not, so comparing them
//! once a second sees a resume within a second of it, needing neither
//! D-Bus nor logind (absent in containers and WSL). Where neither source is
//! available nothing is reported, and the sessions' keepalive timers still
//! find a dead path on their own.

use std::time::Duration;

use tokio::sync::mpsc;

/// Why the paths may have died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The machine was suspended for about this long.
    Resumed(Duration),
    /// A link, address or route changed.
    NetworkChanged,
}

impl std::fmt::Display for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wake::Resumed(asleep) => write!(f, "woke after {}s asleep", asleep.as_secs()),
            Wake::NetworkChanged => f.write_str("the network changed"),
        }
    }
}

/// A sleep shorter than this is taken for clock jitter.
const MIN_SLEEP: Duration = Duration::from_secs(2);
/// Network changes come in bursts (an interface brings its addresses and
/// routes): one report for each burst, this long after its first message.
const SETTLE: Duration = Duration::from_millis(250);

/// Starts watching in the background; the events arrive on the returned
/// channel, and the watching stops when it is dropped.
pub(crate) fn watch() -> mpsc::Receiver<Wake> {
    let (tx, rx) = mpsc::channel(4);
    #[cfg(target_os = "linux")]
    {
        tokio::spawn(linux::resumes(tx.clone()));
        match linux::NetlinkRoute::open() {
            Ok(socket) => {
                tokio::spawn(linux::network_changes(socket, tx));
            }
            Err(e) => tracing::debug!(error = %e, "no netlink socket: network changes are found by keepalive alone"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    drop(tx);
    rx
}

/// How long the machine slept between two readings of (monotonic, boot)
/// time, if it did: boot time runs on during suspend, monotonic time stops.
fn slept(before: (Duration, Duration), now: (Duration, Duration)) -> Option<Duration> {
    let monotonic = now.0.saturating_sub(before.0);
    let boot = now.1.saturating_sub(before.1);
    Some(boot.saturating_sub(monotonic)).filter(|asleep| *asleep >= MIN_SLEEP)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    use tokio::io::unix::AsyncFd;
    use tokio::sync::mpsc;

    use super::{SETTLE, Wake, slept};

    fn clock(id: libc::clockid_t) -> Duration {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `t` is a valid timespec to write to; both clocks exist on every Linux.
        unsafe { libc::clock_gettime(id, &mut t) };
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    fn clocks() -> (Duration, Duration) {
        (clock(libc::CLOCK_MONOTONIC), clock(libc::CLOCK_BOOTTIME))
    }

    /// Reports each resume from suspend, until the receiver is gone.
    pub(super) async fn resumes(tx: mpsc::Sender<Wake>) {
        let mut before = clocks();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = tx.closed() => return,
            }
            let now = clocks();
            if let Some(asleep) = slept(before, now) {
                let _ = tx.try_send(Wake::Resumed(asleep));
            }
            before = now;
        }
    }

    /// A netlink socket that hears of link, address and route changes.
    pub(super) struct NetlinkRoute(AsyncFd<OwnedFd>);

    impl NetlinkRoute {
        pub(super) fn open() -> io::Result<NetlinkRoute> {
            let flags = libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, flags, libc::NETLINK_ROUTE) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_nl is plain data; all-zero is its empty value.
            let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            addr.nl_groups = (libc::RTMGRP_LINK
                | libc::RTMGRP_IPV4_IFADDR
                | libc::RTMGRP_IPV6_IFADDR
                | libc::RTMGRP_IPV4_ROUTE
                | libc::RTMGRP_IPV6_ROUTE) as u32;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `addr` is a valid sockaddr_nl of `len` bytes.
            if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: an OwnedFd stays open, and the same descriptor, until dropped.
            let registered = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
            Ok(NetlinkRoute(registered))
        }

        /// Waits for the next message (its content does not matter: any change is one).
        async fn next(&self, buf: &mut [u8]) -> io::Result<()> {
            loop {
                let mut ready = self.0.readable().await?;
                // SAFETY: `buf` is valid for writes of its length.
                let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n >= 0 {
                    return Ok(());
                }
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => ready.clear_ready(),
                    // Messages were lost to a full buffer: a change all the same.
                    _ if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
                    _ => return Err(e),
                }
            }
        }
    }

    /// Reports network changes, one per burst, until the receiver is gone.
    pub(super) async fn network_changes(socket: NetlinkRoute, tx: mpsc::Sender<Wake>) {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            tokio::select! {
                heard = socket.next(&mut buf) => if let Err(e) = heard {
                    tracing::debug!(error = %e, "netlink socket failed: network changes are found by keepalive alone");
                    return;
                },
                _ = tx.closed() => return,
            }
            // The rest of the burst, then one report.
            let settle = tokio::time::sleep(SETTLE);
            tokio::pin!(settle);
            loop {
                tokio::select! {
                    _ = &mut settle => break,
                    heard = socket.next(&mut buf) => if heard.is_err() { break },
                }
            }
            let _ = tx.try_send(Wake::NetworkChanged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_sleep_is_boot_time_that_monotonic_time_did_not_see() {
        // A second of both: awake.
        assert_eq!(slept((s(100), s(100)), (s(101), s(101))), None);
        // Jitter between the two readings is no sleep.
        assert_eq!(slept((s(100), s(100)), (s(101), s(101) + Duration::from_millis(900))), None);
        // A minute asleep: boot time ran on, monotonic time did not.
        assert_eq!(slept((s(100), s(150)), (s(101), s(211))), Some(s(60)));
        // Clocks read out of order never panic nor count as sleep.
        assert_eq!(slept((s(101), s(101)), (s(100), s(100))), None);
    }

    /// The netlink socket opens and binds where kubesocks runs (tests need
    /// no privilege for it: only changing the network does).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_netlink_route_socket_opens() {
        linux::NetlinkRoute::open().expect("a NETLINK_ROUTE socket");
    }
}
