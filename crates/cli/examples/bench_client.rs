//! Load client of `tests/bench/run`: HTTP/1.0 GETs, each on a fresh TCP
//! connection and read to the end (the server closes after its answer),
//! either straight to a server or through a SOCKS5 proxy that is sent the
//! host name (socks5h). Every mode of the benchmark runs this same client,
//! so its own cost is the same everywhere; the direct mode measures it.
//! Prints one JSON object on stdout.
//!
//! ```sh
//! bench_client --connect 127.0.0.1:1080 --socks web.shop.svc.cluster.local:80 seq --count 300
//! bench_client --connect 127.0.3.1:8080 --path /big seq --count 3
//! bench_client --connect 127.0.0.1:18080 concurrent --clients 64 --each 20
//! bench_client --connect 127.0.0.1:18080 wait --within 60
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Where to connect: the server itself, or the SOCKS5 proxy with --socks.
    #[arg(long)]
    connect: SocketAddr,
    /// Ask the SOCKS5 proxy at --connect for HOST:PORT (the name goes to the proxy).
    #[arg(long)]
    socks: Option<String>,
    #[arg(long, default_value = "/small")]
    path: String,
    /// Seconds one request may take, connection to last byte.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Retries until one request succeeds; prints when (Unix time, ns).
    Wait {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        within: f64,
    },
    /// Sequential requests, one connection each.
    Seq {
        #[arg(long)]
        count: usize,
    },
    /// `clients` concurrent clients, each making `each` sequential requests.
    Concurrent {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        each: usize,
    },
}

struct Target {
    connect: SocketAddr,
    socks: Option<(String, u16)>,
    request: Vec<u8>,
    timeout: Duration,
}

/// Big enough that a bulk download costs few reads.
const BUF: usize = 256 * 1024;

// One thread: the client's share of the machine stays the same in every mode.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let socks = match args.socks.as_deref().map(parse_host_port).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench_client: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let host = args.socks.clone().unwrap_or_else(|| args.connect.to_string());
    let target = Arc::new(Target {
        connect: args.connect,
        socks,
        request: format!("GET {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kubesocks-bench\r\n\r\n", args.path)
            .into_bytes(),
        timeout: Duration::from_secs_f64(args.timeout),
    });
    let (out, ok) = match args.command {
        Command::Wait { within } => wait(&target, Duration::from_secs_f64(within)).await,
        Command::Seq { count } => {
            let mut buf = vec![0u8; BUF];
            let mut runs = Vec::with_capacity(count);
            for _ in 0..count {
                runs.push(timed(&target, &mut buf).await);
            }
            (json!({ "runs": runs }), true)
        }
        Command::Concurrent { clients, each } => concurrent(&target, clients, each).await,
    };
    println!("{out}");
    if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s}: expected HOST:PORT"))?;
    let port = port.parse().map_err(|_| format!("{s}: bad port"))?;
    if host.is_empty() || host.len() > 255 {
        return Err(format!("{s}: a SOCKS5 host name has 1 to 255 bytes"));
    }
    Ok((host.to_string(), port))
}

async fn wait(target: &Target, within: Duration) -> (Value, bool) {
    let started = Instant::now();
    let mut buf = vec![0u8; BUF];
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match fetch(target, &mut buf).await {
            Ok(_) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                return (json!({ "ok_unix_ns": now.as_nanos() as u64, "attempts": attempts }), true);
            }
            Err(e) if started.elapsed() >= within => {
                return (json!({ "attempts": attempts, "last_error": e }), false);
            }
            // Short, so the moment the proxy can serve is seen within a few ms.
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

async fn concurrent(target: &Arc<Target>, clients: usize, each: usize) -> (Value, bool) {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let target = target.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut runs = Vec::with_capacity(each);
            for _ in 0..each {
                runs.push(timed(&target, &mut buf).await);
            }
            runs
        });
    }
    let mut runs = Vec::with_capacity(clients * each);
    while let Some(done) = tasks.join_next().await {
        runs.extend(done.unwrap_or_default());
    }
    (json!({ "wall_s": started.elapsed().as_secs_f64(), "runs": runs }), true)
}

/// One request, as `{"ms", "bytes"}` or `{"ms", "error"}`.
async fn timed(target: &Target, buf: &mut [u8]) -> Value {
    let started = Instant::now();
    let result = fetch(target, buf).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(bytes) => json!({ "ms": ms, "bytes": bytes }),
        Err(error) => json!({ "ms": ms, "error": error }),
    }
}

/// Connects, sends the request and reads the answer to EOF; returns the body
/// length once it is checked against the status and Content-Length.
async fn fetch(target: &Target, buf: &mut [u8]) -> Result<u64, String> {
    match tokio::time::timeout(target.timeout, fetch_inner(target, buf)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {:?}", target.timeout)),
    }
}

async fn fetch_inner(target: &Target, buf: &mut [u8]) -> Result<u64, String> {
    let mut stream =
        TcpStream::connect(target.connect).await.map_err(|e| format!("connect to {}: {e}", target.connect))?;
    let _ = stream.set_nodelay(true);
    if let Some((host, port)) = &target.socks {
        socks_connect(&mut stream, host, *port).await?;
    }
    stream.write_all(&target.request).await.map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::new();
    let mut parsed: Option<u64> = None; // Content-Length, once the head is in
    let mut body = 0u64;
    loop {
        let n = stream.read(buf).await.map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        if parsed.is_some() {
            body += n as u64;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            parsed = Some(parse_head(&head[..end])?);
            body = (head.len() - end - 4) as u64;
        } else if head.len() > 64 * 1024 {
            return Err("no end of the response head in 64 KiB".into());
        }
    }
    let expected =
        parsed.ok_or_else(|| format!("connection closed after {} bytes, before a response head", head.len()))?;
    if body != expected {
        return Err(format!("body of {body} bytes, Content-Length {expected}"));
    }
    Ok(body)
}

fn parse_head(head: &[u8]) -> Result<u64, String> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answer {status:?}"));
    }
    lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| "no Content-Length in the answer".to_string())
}

/// RFC 1928 CONNECT with a domain name, no authentication.
async fn socks_connect(stream: &mut TcpStream, host: &str, port: u16) -> Result<(), String> {
    let io = |e: std::io::Error| format!("SOCKS5 handshake: {e}");
    stream.write_all(&[5, 1, 0]).await.map_err(io)?;
    let mut method = [0u8; 2];
    stream.read_exact(&mut method).await.map_err(io)?;
    if method != [5, 0] {
        return Err(format!("SOCKS5 method reply {method:?}"));
    }
    let mut request = vec![5, 1, 0, 3, host.len() as u8];
    request.extend_from_slice(host.as_bytes());
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await.map_err(io)?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.map_err(io)?;
    if reply[1] != 0 {
        return Err(format!("SOCKS5 reply {:#04x}", reply[1]));
    }
    let bound = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await.map_err(io)?;
            len[0] as usize + 2
        }
        other => return Err(format!("SOCKS5 reply with address type {other}")),
    };
    let mut skip = [0u8; 257];
    stream.read_exact(&mut skip[..bound]).await.map_err(io)?;
    Ok(())
}
