//! Entry points for the fuzz targets in `fuzz/` (the repository's), compiled only
//! with the `fuzzing` feature: not an API. Each function takes what a client
//! or the API server could send and panics when a rule is broken (the fuzzer
//! reports the panic as a crash); bad input itself must only ever be refused.
//!
//! * [`name`]: a client's host read under the rules ([`Query::read`]) and
//!   resolved against an empty and a small cluster; the same text read as a
//!   DNS question and answered ([`records`]).
//! * [`endpoints`]: a core/v1 Endpoints object as the API server could send
//!   it, turned into EndpointSlices ([`crate::cluster::lookup`]) and resolved.
//! * [`Proxy`]: a whole engine, its SOCKS5 and HTTP listeners on loopback,
//!   over an in-memory API server, for client bytes end to end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;

use crate::objects::Service;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::route::records::{DnsQuery, Records, records};
use crate::route::rules::Target;
use crate::route::{Endpoint, Host, Query, Refusal, Rules, resolve};
use crate::testing::{SMALL, View, api_client};
use crate::{Credentials, Engine, Listen, ProxyConfig, loopback};

/// An RFC 1123 label, checked here independently of `route`'s own check.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Reads `host` (as a SOCKS or HTTP client sends it) under the rules for
/// `cluster_domain` and `default_namespace` (a valid label, as the engine
/// is given), then resolves it on `port` against an empty cluster and a
/// small one. Checks that whatever is looked up is made of RFC 1123 labels,
/// that case and one trailing dot change nothing, that a target has
/// endpoints, and that no refusal's text carries a control character.
pub fn name(host: &str, port: u16, cluster_domain: &str, default_namespace: &str) {
    assert!(is_label(default_namespace), "the default namespace must be a label");
    let rules = Rules::new(cluster_domain, default_namespace);
    let parsed = Host::parse(host);
    let shown = parsed.to_string();
    assert!(!shown.chars().any(char::is_control), "{host:?} shown as {shown:?}");
    let query = Query::read(&parsed, &rules);
    let looked_up: Vec<&str> = match &query {
        Query::Service { namespace, name } | Query::MaybeService { namespace, name, .. } => vec![namespace, name],
        Query::PodHostname { namespace, hostname, subdomain } => vec![namespace, hostname, subdomain],
        Query::PodIp { namespace, .. } => vec![namespace],
        Query::Ip(_) | Query::UnknownClusterName(_) | Query::Outside(_) => vec![],
    };
    for part in looked_up {
        assert!(is_label(part), "{host:?} read as {query:?}: {part:?} would be looked up");
    }
    if let Some(named) = query.named() {
        assert!(is_label(named.namespace()), "{host:?} points into namespace {:?}", named.namespace());
    }
    // Brackets are for IPv6 literals alone, which take no trailing dot.
    if !host.ends_with('.') && !host.contains(['[', ']']) {
        let upper = host.to_ascii_uppercase();
        assert_eq!(query, Query::read(&Host::parse(&upper), &rules), "{host:?} vs {upper:?}");
        let dotted = format!("{host}.");
        assert_eq!(query, Query::read(&Host::parse(&dotted), &rules), "{host:?} vs {dotted:?}");
    }
    check_outcome(host, resolve(query.clone(), port, &View::default()));
    check_outcome(host, resolve(query, port, &*SMALL));
    // The DNS helper reads the same text as a question's name.
    check_records(host, records(DnsQuery::read(host, &rules), &rules, &View::default()));
    check_records(host, records(DnsQuery::read(host, &rules), &rules, &*SMALL));
}

/// SRV targets are names of RFC 1123 labels; refusals show no control character.
fn check_records(host: &str, outcome: Result<Records, Refusal>) {
    match outcome {
        Ok(records) => {
            for srv in &records.srv {
                assert!(srv.target.split('.').all(is_label), "{host:?}: SRV target {:?}", srv.target);
            }
        }
        Err(refusal) => {
            let text = refusal.to_string();
            assert!(!text.chars().any(char::is_control), "{host:?} refused as {text:?}");
        }
    }
}

fn check_outcome(host: &str, outcome: Result<Target, Refusal>) {
    match outcome {
        Ok(target) => assert!(!target.endpoints.is_empty(), "{host:?} resolved to no endpoint: {target:?}"),
        Err(refusal) => {
            let _ = refusal.kind();
            let text = refusal.to_string();
            assert!(!text.chars().any(char::is_control), "{host:?} refused as {text:?}");
        }
    }
}

/// Decodes `json` as a core/v1 Endpoints object (nothing more to do if it
/// is not one), turns it into EndpointSlices as direct GETs do, and resolves
/// each port of a Service of its name over them. Checks that each subset
/// becomes one slice of the Service with every address in it, and that the
/// Service resolves to exactly the ready pod addresses on the pod ports of
/// the right name (or is refused for having none).
pub fn endpoints(json: &[u8]) {
    let Ok(mut endpoints) = serde_json::from_slice::<Endpoints>(json) else { return };
    let _ = crate::cluster::lookup::slices_of(&endpoints);
    // A GET in a namespace answers objects of that namespace.
    let namespace = endpoints.metadata.namespace.get_or_insert_with(|| "default".to_string()).clone();
    let service = endpoints.metadata.name.clone().unwrap_or_default();
    let slices = crate::cluster::lookup::slices_of(&endpoints);
    let subsets = endpoints.subsets.as_deref().unwrap_or_default();
    assert_eq!(slices.len(), subsets.len(), "one slice per subset");
    for (slice, subset) in slices.iter().zip(subsets) {
        assert_eq!(slice.service(), Some(service.as_str()));
        assert_eq!(&*slice.namespace, namespace);
        let addresses =
            subset.addresses.as_ref().map_or(0, Vec::len) + subset.not_ready_addresses.as_ref().map_or(0, Vec::len);
        let members = slice.endpoints.as_deref().unwrap_or_default();
        assert_eq!(members.len(), addresses, "every address of the subset is in its slice");
        assert!(members.iter().all(|m| m.addresses.len() == 1));
        assert_eq!(slice.ports.as_ref().map_or(0, Vec::len), subset.ports.as_ref().map_or(0, Vec::len));
    }

    // A Service with one port per port name the subsets use.
    let mut names: Vec<Option<String>> =
        subsets.iter().flat_map(|s| s.ports.iter().flatten()).map(|p| p.name.clone()).collect();
    names.sort();
    names.dedup();
    names.truncate(16);
    let ports: Vec<Value> = names.iter().enumerate().map(|(i, name)| json!({"name": name, "port": i + 1})).collect();
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"namespace": namespace, "name": service}, "spec": {"ports": ports}}),
    )
    .expect("a Service");
    let view =
        View { services: vec![Arc::new(svc)], slices: slices.into_iter().map(Arc::new).collect(), ..View::default() };
    for (i, port_name) in names.iter().enumerate() {
        let port_name = port_name.clone().unwrap_or_default();
        let port = u16::try_from(i + 1).expect("at most 16 ports");
        let query = Query::Service { namespace: namespace.clone(), name: service.clone() };
        let outcome = resolve(query, port, &view);
        // What the rules should find: each subset's first port of that name,
        // on each of its ready addresses that names a pod.
        let mut expected: Vec<Endpoint> = Vec::new();
        for subset in subsets {
            let pod_port = subset.ports.iter().flatten().find(|p| p.name.clone().unwrap_or_default() == port_name);
            let Some(pod_port) = pod_port.and_then(|p| u16::try_from(p.port).ok()) else { continue };
            for address in subset.addresses.iter().flatten() {
                let Some(r) = address.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")) else {
                    continue;
                };
                let (Some(ns), Some(pod)) = (r.namespace.clone(), r.name.clone()) else { continue };
                expected.push(Endpoint::new(ns, pod, pod_port));
            }
        }
        expected.sort_by(|a, b| (&a.pod, a.port).cmp(&(&b.pod, b.port)));
        expected.dedup();
        match outcome {
            Ok(target) => {
                let (mut got, mut want) = (target.endpoints.clone(), expected.clone());
                got.sort_by(|a, b| (&a.namespace, &a.pod, a.port).cmp(&(&b.namespace, &b.pod, b.port)));
                want.sort_by(|a, b| (&a.namespace, &a.pod, a.port).cmp(&(&b.namespace, &b.pod, b.port)));
                got.dedup();
                want.dedup();
                assert_eq!(got, want, "port {port} ({port_name:?})");
            }
            Err(Refusal::NoReadyEndpoints { .. }) => {
                assert!(expected.is_empty(), "port {port} ({port_name:?}) refused, expected {expected:?}")
            }
            Err(other) => panic!("port {port} ({port_name:?}): {other}"),
        }
    }
}

/// How long one client's exchange may take before it counts as a hang.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running engine with a SOCKS5 and an HTTP listener on loopback, over
/// the in-memory API server, on a runtime of its own. Start one per fuzz
/// process and send it one client's bytes per input.
pub struct Proxy {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
}

impl Proxy {
    /// Starts the engine; with `credentials` (`user:password`) clients must
    /// present them.
    pub fn start(credentials: Option<&str>) -> Proxy {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let config = ProxyConfig {
            socks: Some(Listen::exact(loopback(0))),
            http: Some(Listen::exact(loopback(0))),
            auth: credentials.map(|c| c.parse::<Credentials>().expect("user:password")),
            handshake_timeout: Duration::from_secs(2),
            ..ProxyConfig::default()
        };
        // The client's request buffer runs on the runtime.
        let client = runtime.block_on(async { api_client() });
        let cluster = crate::kubeconfig::Cluster {
            upgrades: client.clone(),
            client,
            context: "fuzz".into(),
            server: "https://fuzz.invalid".into(),
            proxy: None,
            namespace: "default".into(),
        };
        let engine = runtime.block_on(Engine::start(cluster, config)).expect("the engine starts");
        Proxy { runtime, engine }
    }

    /// Sends `input` to the SOCKS listener as one client, closes the
    /// sending side, and returns all the proxy answered before it closed.
    /// Panics if it neither answers nor closes within 10 s.
    pub fn socks(&self, input: &[u8]) -> Vec<u8> {
        self.exchange(self.engine.socks_addr().expect("a SOCKS listener"), input)
    }

    /// The same for the HTTP listener.
    pub fn http(&self, input: &[u8]) -> Vec<u8> {
        self.exchange(self.engine.http_addr().expect("an HTTP listener"), input)
    }

    fn exchange(&self, addr: SocketAddr, input: &[u8]) -> Vec<u8> {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("the listener accepts");
            // The proxy may close before reading everything: that is an answer too.
            if stream.write_all(input).await.is_ok() {
                let _ = stream.shutdown().await;
            }
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            answer
        };
        let done = self.runtime.block_on(async { tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await });
        done.unwrap_or_else(|_| panic!("no answer and no close within {EXCHANGE_TIMEOUT:?} for {input:?}"))
    }

    /// Client connections the engine counts as open right now.
    pub fn active(&self) -> u64 {
        self.engine.stats().active_connections
    }
}
