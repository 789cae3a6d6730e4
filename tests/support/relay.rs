//! A fault relay: a TCP relay the tests put between kubesocks and the API
//! server, which they can tell to fail the way real paths fail on a laptop.
//!
//! - [`FaultRelay::freeze_held`]: every connection it holds stops carrying
//!   bytes in both directions; what arrives is read and dropped, and no
//!   socket is closed. This is a network change, or a VPN or proxy in the
//!   path losing its far side: no FIN, no RST, just silence, while new
//!   connections (a new route) work.
//! - [`FaultRelay::reset_held`]: every connection it holds is reset.
//! - [`FaultRelay::refuse_new`]: new connections are reset at once, as by a
//!   host that is up but has nothing listening.
//! - [`FaultRelay::delay`]: every chunk waits that long before it goes on.
//!
//! [`FaultRelay::kubeconfig`] writes a copy of a kubeconfig whose server is
//! the relay (the test cluster's certificate is valid for 127.0.0.1).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One relayed connection: its two copying tasks and its switches.
struct Held {
    frozen: Arc<AtomicBool>,
    /// Tells the copying tasks to let go of their halves without a FIN.
    reset: watch::Sender<bool>,
    /// Duplicates of both sockets, to set a zero linger on: once every
    /// descriptor of a socket is closed, that sends RST instead of FIN.
    sockets: Vec<std::net::TcpStream>,
    tasks: [JoinHandle<()>; 2],
}

#[derive(Default)]
struct Faults {
    refuse: bool,
    delay: Duration,
    held: Vec<Held>,
}

pub struct FaultRelay {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    accept: JoinHandle<()>,
    /// The kubeconfig through it, from [`FaultRelay::in_front_of`]; its folder is removed on drop.
    kubeconfig: Option<PathBuf>,
}

impl FaultRelay {
    /// Starts relaying a loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let accept = tokio::spawn(accept(listener, upstream, faults.clone()));
        FaultRelay { addr, faults, accept, kubeconfig: None }
    }

    /// A relay in front of the API server of `kubeconfig`, with a copy of
    /// that kubeconfig through it ([`FaultRelay::relayed_kubeconfig`]).
    pub async fn in_front_of(kubeconfig: &Path) -> FaultRelay {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut relay = FaultRelay::start(FaultRelay::server_of(kubeconfig)).await;
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kubesocks-relay-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        relay.kubeconfig = Some(relay.kubeconfig(kubeconfig, &dir));
        relay
    }

    /// The kubeconfig [`FaultRelay::in_front_of`] wrote.
    pub fn relayed_kubeconfig(&self) -> &Path {
        self.kubeconfig.as_deref().expect("a relay made with in_front_of")
    }

    /// The address of the test cluster's API server in `kubeconfig`.
    pub fn server_of(kubeconfig: &Path) -> SocketAddr {
        let text = std::fs::read_to_string(kubeconfig).unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server:"))
            .unwrap_or_else(|| panic!("{} names no server", kubeconfig.display()));
        let authority = server.trim().trim_start_matches("https://").trim_end_matches('/');
        authority.parse().unwrap_or_else(|e| panic!("server {authority:?} is not an address: {e}"))
    }

    /// A copy of `kubeconfig`, in `dir`, that reaches the API server through this relay.
    pub fn kubeconfig(&self, kubeconfig: &Path, dir: &Path) -> PathBuf {
        let server = Self::server_of(kubeconfig);
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let copy = dir.join("through-relay.kubeconfig");
        let relayed = text.replace(&format!("https://{server}"), &format!("https://{}", self.addr));
        assert_ne!(relayed, text, "the server's URL was not replaced");
        std::fs::write(&copy, relayed).unwrap();
        copy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it holds and still relays (not frozen, not reset).
    pub fn live(&self) -> usize {
        let mut faults = self.faults.lock().unwrap();
        faults.held.retain(|h| !h.tasks.iter().all(JoinHandle::is_finished));
        faults.held.iter().filter(|h| !h.frozen.load(Ordering::Relaxed)).count()
    }

    /// Every connection held now goes silent: bytes are read and dropped,
    /// sockets stay open. Connections made later are relayed. Returns how
    /// many were frozen.
    pub fn freeze_held(&self) -> usize {
        let faults = self.faults.lock().unwrap();
        let mut frozen = 0;
        for held in &faults.held {
            if !held.tasks.iter().all(JoinHandle::is_finished) && !held.frozen.swap(true, Ordering::Relaxed) {
                frozen += 1;
            }
        }
        frozen
    }

    /// Every connection held now is reset, both sides.
    pub fn reset_held(&self) {
        let held = std::mem::take(&mut self.faults.lock().unwrap().held);
        for h in held {
            for s in &h.sockets {
                let _ = socket_linger_zero(s);
            }
            let _ = h.reset.send(true);
        }
    }

    /// While on, a new connection is reset as soon as it is accepted.
    pub fn refuse_new(&self, on: bool) {
        self.faults.lock().unwrap().refuse = on;
    }

    /// Every chunk, either way, waits this long before it is passed on.
    pub fn delay(&self, delay: Duration) {
        self.faults.lock().unwrap().delay = delay;
    }
}

impl Drop for FaultRelay {
    /// Resets what it still holds, so nothing it froze lingers on.
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_held();
        if let Some(dir) = self.kubeconfig.as_deref().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// SO_LINGER 0: closing the socket's last descriptor then sends RST.
fn socket_linger_zero(s: &std::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a pointer to a linger of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, faults: Arc<Mutex<Faults>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { return };
        if faults.lock().unwrap().refuse {
            let client = client.into_std().unwrap();
            let _ = socket_linger_zero(&client);
            continue;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            let _ = socket_linger_zero(&client.into_std().unwrap());
            continue;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let sockets = vec![dup(&client), dup(&server)];
        let frozen = Arc::new(AtomicBool::new(false));
        let (reset, on_reset) = watch::channel(false);
        let (client_rx, client_tx) = client.into_split();
        let (server_rx, server_tx) = server.into_split();
        let tasks = [
            tokio::spawn(pipe(client_rx, server_tx, frozen.clone(), on_reset.clone(), faults.clone())),
            tokio::spawn(pipe(server_rx, client_tx, frozen.clone(), on_reset, faults.clone())),
        ];
        let mut faults = faults.lock().unwrap();
        // Connections that both sides have ended are forgotten.
        faults.held.retain(|h| !h.tasks.iter().all(JoinHandle::is_finished));
        faults.held.push(Held { frozen, reset, sockets, tasks });
    }
}

/// A second descriptor of the same socket, to reset it later.
fn dup(s: &TcpStream) -> std::net::TcpStream {
    use std::os::fd::{AsFd as _, FromRawFd as _, IntoRawFd as _};
    let owned = s.as_fd().try_clone_to_owned().expect("dup a socket");
    // SAFETY: the descriptor was just duplicated and is owned by no one else.
    unsafe { std::net::TcpStream::from_raw_fd(owned.into_raw_fd()) }
}

/// Copies one direction; while frozen, reads and drops. On reset, lets go
/// of both halves without a FIN (`forget`), so the socket's last close
/// sends the RST its zero linger asks for.
async fn pipe(
    mut rx: OwnedReadHalf,
    mut tx: OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    mut reset: watch::Receiver<bool>,
    faults: Arc<Mutex<Faults>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            _ = reset.wait_for(|r| *r) => return tx.forget(),
            read = rx.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if frozen.load(Ordering::Relaxed) {
            continue;
        }
        let delay = faults.lock().unwrap().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if tx.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    if frozen.load(Ordering::Relaxed) {
        // A frozen connection stays silent, FIN included, until it is reset
        // (the relay is dropped).
        let _ = reset.wait_for(|r| *r).await;
        return tx.forget();
    }
    let _ = tx.shutdown().await;
}
