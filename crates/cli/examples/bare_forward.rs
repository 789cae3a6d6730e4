//! The smallest port-forwarding proxy kube-rs allows: every accepted TCP
//! connection gets its own `pods/portforward` session to one fixed pod port,
//! and bytes are copied both ways. No SOCKS, no name resolution, no caches,
//! no failover. `tests/bench/run` measures kubesocks against it, so what
//! kubesocks adds on top of kube-rs is visible on its own. The kube client is
//! built by kubesocks' own `kubeconfig::connect`, so both talk to the API
//! server over the same connections and only the engine differs.
//!
//! ```sh
//! KUBECONFIG=... cargo run --release --example bare_forward -- \
//!     --listen 127.0.0.1:18080 --namespace NS --pod POD --port 8080
//! ```

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kubesocks_engine::kubeconfig::{KubeSettings, connect};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    /// Local address to accept connections on.
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    namespace: String,
    /// The pod every connection goes to.
    #[arg(long)]
    pod: String,
    /// The pod's port.
    #[arg(long)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let cluster = connect(&KubeSettings::default()).await?;
    // Port-forwards are HTTP/1.1 upgrades: the client for them, not the HTTP/2 one.
    let pods: Api<Pod> = Api::namespaced(cluster.upgrades, &args.namespace);
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("bare_forward: {} -> pod {}/{} port {}", listener.local_addr()?, args.namespace, args.pod, args.port);
    loop {
        let (conn, _) = listener.accept().await?;
        // As any forwarder would: small request/response exchanges must not wait for Nagle.
        let _ = conn.set_nodelay(true);
        let (pods, pod, port) = (pods.clone(), args.pod.clone(), args.port);
        tokio::spawn(async move {
            if let Err(e) = forward(conn, &pods, &pod, port).await {
                eprintln!("bare_forward: {e:#}");
            }
        });
    }
}

async fn forward(mut conn: TcpStream, pods: &Api<Pod>, pod: &str, port: u16) -> Result<()> {
    let mut forwarder = pods.portforward(pod, &[port]).await.context("port-forward")?;
    let mut upstream = forwarder.take_stream(port).context("no stream for the requested port")?;
    let copied = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
    forwarder.abort();
    copied.context("copy")?;
    Ok(())
}
