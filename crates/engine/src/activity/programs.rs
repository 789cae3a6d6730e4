//! Which local program opened a client connection: its process name and
//! PID, found from the client socket's addresses. Best effort: a client on
//! another machine, a process of another user (its `/proc/PID/fd` is not
//! readable), or one gone by the time it is looked at, is "unknown".
//!
//! Looking costs a read of the kernel's socket table and a scan of
//! `/proc`, so it never runs on a connection's path, and only when someone
//! asks: a client's [`ProgramSlot`] holds its socket's addresses from the
//! accept on, and [`ProgramSlot::find`] (when the connections are listed,
//! or when one fails: before its client is told and goes) queues the lookup
//! once, for one worker thread. Until someone looks, a connection costs
//! nothing here; while the tray's window or `connections --watch` looks,
//! the open connections are looked up once each, in batches. The worker
//! takes what is queued as one batch (one read of the socket table for
//! many sockets) and tries the processes that owned recent sockets first: a
//! browser opening hundreds of connections is found in its own few
//! descriptors, not in every process's. Platforms other than Linux can add
//! a [`FindPrograms`] of their own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// A local process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Program {
    /// Its PID.
    pub pid: u32,
    /// Its name (`/proc/PID/comm`: at most 15 bytes).
    pub name: String,
}

/// The program behind one client connection: where to look for it, and
/// what was found once someone asked ([`ProgramSlot::find`]).
#[derive(Debug, Default)]
pub(crate) struct ProgramSlot {
    /// None: nothing to look for (a client on another machine).
    socket: Option<Socket>,
    queued: std::sync::atomic::AtomicBool,
    program: OnceLock<Option<Program>>,
    set: tokio::sync::Notify,
}

impl ProgramSlot {
    /// The slot of a client connection on `socket`. Only clients on this
    /// machine are looked for.
    pub(crate) fn of(socket: Socket) -> ProgramSlot {
        let here = socket.client.ip().to_canonical().is_loopback();
        ProgramSlot { socket: here.then_some(socket), ..ProgramSlot::default() }
    }

    /// Looks the program up (once: later calls wait for the same answer),
    /// waiting up to `limit` for it.
    pub(crate) async fn find(self: &Arc<Self>, limit: std::time::Duration) -> Option<Program> {
        let set = self.set.notified();
        if !self.looked_up() {
            self.queue();
            let _ = tokio::time::timeout(limit, set).await;
        }
        self.get()
    }

    /// Queues the lookup unless it is queued already.
    fn queue(self: &Arc<Self>) {
        if self.queued.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        match self.socket {
            Some(socket) => Programs::shared().look_up(socket, self.clone()),
            None => self.set(None),
        }
    }

    /// The program, once looked up and found.
    pub(crate) fn get(&self) -> Option<Program> {
        self.program.get().cloned().flatten()
    }

    /// Whether the lookup has ended (found or not).
    pub(crate) fn looked_up(&self) -> bool {
        self.program.get().is_some()
    }

    fn set(&self, program: Option<Program>) {
        let _ = self.program.set(program);
        self.set.notify_waiters();
    }
}

/// One client socket as the client sees it: its own address, and the
/// listener's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Socket {
    pub client: SocketAddr,
    pub listener: SocketAddr,
}

/// Finds the programs that own client sockets: one answer per socket, in order.
pub(crate) trait FindPrograms: Send + 'static {
    fn find(&mut self, sockets: &[Socket]) -> Vec<Option<Program>>;
}

/// How many lookups may wait: past that, a client is "unknown" rather than
/// a burst of connections costing memory.
const QUEUE: usize = 1024;

/// The lookup worker: a thread of its own, started on first use.
pub(crate) struct Programs {
    queue: SyncSender<(Socket, Arc<ProgramSlot>)>,
}

impl Programs {
    /// The process's worker, reading `/proc`.
    pub(crate) fn shared() -> &'static Programs {
        static SHARED: OnceLock<Programs> = OnceLock::new();
        SHARED.get_or_init(|| Programs::start(ProcFs::default()))
    }

    fn start(mut finder: impl FindPrograms) -> Programs {
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
        let spawned =
            std::thread::Builder::new().name("kubesocks-programs".into()).spawn(move || work(&mut finder, &jobs));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread that finds client programs; they show as unknown");
        }
        Programs { queue }
    }

    /// Queues a lookup of the program behind `socket`, its answer for `slot`.
    fn look_up(&self, socket: Socket, slot: Arc<ProgramSlot>) {
        if let Err(TrySendError::Full((_, slot)) | TrySendError::Disconnected((_, slot))) =
            self.queue.try_send((socket, slot))
        {
            slot.set(None);
        }
    }
}

/// The worker's loop: waits for one lookup, takes whatever else is queued
/// with it, and answers them all from one pass.
fn work(finder: &mut impl FindPrograms, jobs: &Receiver<(Socket, Arc<ProgramSlot>)>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < QUEUE
            && let Ok(next) = jobs.try_recv()
        {
            batch.push(next);
        }
        let sockets: Vec<Socket> = batch.iter().map(|(s, _)| *s).collect();
        let found = finder.find(&sockets);
        for ((_, slot), program) in batch.into_iter().zip(found.into_iter().chain(std::iter::repeat(None))) {
            slot.set(program);
        }
    }
}

/// Linux: a socket's inode from `/proc/net/tcp` (or `tcp6`), then the
/// process with a descriptor on `socket:[INODE]` among `/proc/*/fd`.
#[derive(Default)]
pub(crate) struct ProcFs {
    /// Processes that owned the latest sockets found, tried first.
    recent: Vec<u32>,
}

/// How many recent owners are tried before every process is.
const RECENT: usize = 8;

impl FindPrograms for ProcFs {
    fn find(&mut self, sockets: &[Socket]) -> Vec<Option<Program>> {
        let inodes = socket_inodes(sockets);
        let mut wanted: HashMap<u64, Option<u32>> = inodes.iter().flatten().map(|&inode| (inode, None)).collect();
        if !wanted.is_empty() {
            // The recent owners first, then (if some are left) everyone.
            let recent = self.recent.clone();
            scan(recent.into_iter(), &mut wanted);
            if wanted.values().any(Option::is_none) {
                scan(all_pids(), &mut wanted);
            }
        }
        let mut programs = Vec::with_capacity(sockets.len());
        for inode in inodes {
            let pid = inode.and_then(|i| wanted.get(&i).copied().flatten());
            let program = pid.and_then(|pid| {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                Some(Program { pid, name: name.trim_end().to_string() })
            });
            if let Some(p) = &program {
                self.recent.retain(|&r| r != p.pid);
                self.recent.insert(0, p.pid);
                self.recent.truncate(RECENT);
            }
            programs.push(program);
        }
        programs
    }
}

/// The inode of each socket, from the kernel's socket tables (read once
/// per table for the whole batch).
fn socket_inodes(sockets: &[Socket]) -> Vec<Option<u64>> {
    let mut by_socket: HashMap<Socket, u64> = HashMap::new();
    let v4 = sockets.iter().any(|s| s.client.ip().to_canonical().is_ipv4());
    let v6 = sockets.iter().any(|s| s.client.is_ipv6());
    for (table, wanted) in [("/proc/net/tcp", v4), ("/proc/net/tcp6", v6)] {
        if !wanted {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        // The header line parses as no socket.
        for (local, remote, inode) in text.lines().filter_map(parse_tcp_line) {
            by_socket.insert(Socket { client: local, listener: remote }, inode);
        }
    }
    sockets
        .iter()
        .map(|s| {
            by_socket
                .get(s)
                .or_else(|| by_socket.get(&Socket { client: mapped(s.client), listener: mapped(s.listener) }))
        })
        .map(|inode| inode.copied().filter(|&i| i != 0))
        .collect()
}

/// A v4 address as the v6 table shows it for a dual-stack socket, and back.
fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(v6) => SocketAddr::new(v6.to_canonical(), addr.port()),
    }
}

/// One line of `/proc/net/tcp{,6}`: local address, remote address, inode.
/// `  0: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000 0 123456 ...`
fn parse_tcp_line(line: &str) -> Option<(SocketAddr, SocketAddr, u64)> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    // st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode
    let inode = fields.nth(6)?.parse().ok()?;
    Some((local, remote, inode))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit
/// word of the address is in the kernel's byte order (little-endian on the
/// machines kubesocks runs on), the port in hex.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every process's PID, from `/proc`.
fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Finds, among `pids`' open descriptors, the owners of the inodes in
/// `wanted` that have none yet. Unreadable processes are passed over.
fn scan(pids: impl Iterator<Item = u32>, wanted: &mut HashMap<u64, Option<u32>>) {
    let mut left = wanted.values().filter(|p| p.is_none()).count();
    for pid in pids {
        if left == 0 {
            return;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
            else {
                continue;
            };
            if let Some(owner @ None) = wanted.get_mut(&inode) {
                *owner = Some(pid);
                left -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v4_line_of_the_socket_table_reads_as_its_addresses_and_inode() {
        let line = "   3: 0100007F:C350 0100007F:0438 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let (local, remote, inode) = parse_tcp_line(line).expect("a socket line");
        assert_eq!(local, "127.0.0.1:50000".parse().unwrap());
        assert_eq!(remote, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(inode, 4242);
    }

    #[test]
    fn a_v6_line_reads_with_each_word_in_host_order() {
        // ::1 port 1080 and ::ffff:127.0.0.1 port 50000, as a little-endian kernel writes them.
        let line = "   0: 00000000000000000000000001000000:0438 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 77 1";
        let (local, remote, inode) = parse_tcp_line(line).expect("a socket line");
        assert_eq!(local, "[::1]:1080".parse().unwrap());
        assert_eq!(remote, "[::ffff:127.0.0.1]:50000".parse().unwrap());
        assert_eq!(inode, 77);
    }

    #[test]
    fn the_header_and_broken_lines_are_passed_over() {
        assert!(
            parse_tcp_line(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
            )
            .is_none()
        );
        assert!(parse_tcp_line("   0: 0100007F 0100007F:0438").is_none());
        assert!(parse_tcp_line("   0: 0100007G:0001 0100007F:0438 01 0:0 0:0 0 0 0 5").is_none());
    }

    #[test]
    fn this_test_is_found_as_the_program_behind_its_own_client_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let socket = Socket { client: client.local_addr().unwrap(), listener: listener.local_addr().unwrap() };
        let found = ProcFs::default().find(&[socket]);
        let program = found[0].clone().expect("this process owns the socket");
        assert_eq!(program.pid, std::process::id());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(program.name, comm.trim_end());
    }

    #[test]
    fn a_socket_no_one_has_is_unknown_and_the_batch_keeps_its_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let real = Socket { client: client.local_addr().unwrap(), listener: listener.local_addr().unwrap() };
        let gone = Socket { client: "127.0.0.1:1".parse().unwrap(), listener: real.listener };
        let found = ProcFs::default().find(&[gone, real, gone]);
        assert_eq!(found.len(), 3);
        assert!(found[0].is_none() && found[2].is_none());
        assert_eq!(found[1].as_ref().map(|p| p.pid), Some(std::process::id()));
    }

    #[tokio::test]
    async fn a_client_on_another_machine_is_not_looked_up() {
        let slot = Arc::new(ProgramSlot::of(Socket {
            client: "192.0.2.7:40000".parse().unwrap(),
            listener: "192.0.2.1:1080".parse().unwrap(),
        }));
        assert!(!slot.looked_up(), "nothing is done before someone asks");
        assert_eq!(slot.find(std::time::Duration::from_secs(5)).await, None);
        assert!(slot.looked_up());
    }

    #[tokio::test]
    async fn a_slot_is_looked_up_once_asked_and_only_then() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let slot = Arc::new(ProgramSlot::of(Socket {
            client: client.local_addr().unwrap(),
            listener: listener.local_addr().unwrap(),
        }));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!slot.looked_up() && slot.get().is_none());
        let found = slot.find(std::time::Duration::from_secs(5)).await;
        assert_eq!(found.map(|p| p.pid), Some(std::process::id()));
    }

    /// A finder that counts its batches.
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl FindPrograms for Counting {
        fn find(&mut self, sockets: &[Socket]) -> Vec<Option<Program>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            sockets.iter().map(|s| Some(Program { pid: u32::from(s.client.port()), name: "x".into() })).collect()
        }
    }

    #[test]
    fn queued_lookups_are_answered_each_with_its_own_program() {
        let batches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let programs = Programs::start(Counting(batches.clone()));
        let listener: SocketAddr = "127.0.0.1:1080".parse().unwrap();
        let slots: Vec<_> = (1..=50u16)
            .map(|port| {
                let slot = Arc::new(ProgramSlot::default());
                programs.look_up(Socket { client: SocketAddr::from(([127, 0, 0, 1], port)), listener }, slot.clone());
                (port, slot)
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while slots.iter().any(|(_, s)| !s.looked_up()) {
            assert!(std::time::Instant::now() < deadline, "lookups answered within 5 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for (port, slot) in slots {
            assert_eq!(slot.get().map(|p| p.pid), Some(u32::from(port)));
        }
        assert!(batches.load(std::sync::atomic::Ordering::SeqCst) <= 50);
    }
}
