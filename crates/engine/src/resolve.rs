//! Name and target resolution: the rules that turn what a client asked for
//! (a name or an IP, and a port) into pods to port-forward to.
//!
//! Everything here is pure. A client's host is read once into a [`Query`]
//! ([`Query::read`]: what the name says, before anything is looked up); the
//! cache layer ([`crate::cache`]) asks it which namespace it points into
//! ([`Query::named`]) and makes that namespace readable; then [`resolve`]
//! reads a [`ClusterView`] (a snapshot of the watch caches) and returns a
//! [`Target`] or a typed [`Refusal`]. No I/O, no clock, so every rule has a
//! fast unit test below.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};

/// Settings that shape how names are read.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// Cluster DNS domain, `cluster.local` unless the user says otherwise.
    pub cluster_domain: String,
    /// Namespace for short names: `-n`, else the context's, else `default`.
    pub default_namespace: String,
    /// Whether passthrough may dial this machine's own addresses
    /// ([`is_this_machine`]); refused unless the user said so.
    pub passthrough_local: bool,
}

impl Rules {
    pub fn new(cluster_domain: &str, default_namespace: &str) -> Rules {
        Rules {
            cluster_domain: normalize(cluster_domain),
            default_namespace: default_namespace.to_string(),
            passthrough_local: false,
        }
    }
}

/// Whether `ip` reaches this machine itself rather than another one:
/// loopback (`127.0.0.0/8`, `::1`), unspecified (`0.0.0.0/8`, `::`, which
/// connect to this machine too) and link-local (`169.254.0.0/16`,
/// `fe80::/10`) addresses, IPv4-mapped ones included. Passthrough must not
/// let a client reach services that trust this machine's own connections.
pub(crate) fn is_this_machine(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0 || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local(),
    }
}

/// What a client asked to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Reads a host as sent by a client: an IP literal (IPv6 with or without
    /// brackets) or a DNS name.
    pub fn parse(s: &str) -> Host {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(s.to_string()),
        }
    }
}

impl std::fmt::Display for Host {
    /// A name as the client sent it, with control characters escaped: it
    /// goes into logs, `status` and answers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => write!(f, "{}", Escaped(n)),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Text a client chose (a name, a path), shown with control characters,
/// newlines and backslashes escaped (`\n`, `\u{1b}`, `\\`), so that it cannot
/// forge log lines or send terminal escapes to whoever reads them.
pub(crate) struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A snapshot of what kubesocks knows about the cluster. Implemented by the
/// live watch caches and, in tests, by plain lists of objects.
pub(crate) trait ClusterView {
    /// `Some(true/false)` when namespaces can be listed, `None` when RBAC hides them.
    fn namespace_exists(&self, namespace: &str) -> Option<bool>;
    /// `Err(reason)` when the objects of this namespace cannot be seen (RBAC).
    fn visible(&self, namespace: &str) -> Result<(), String>;
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Service>>;
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
    /// Every known pod that has (or had) this IP, in any phase.
    fn pods_by_ip(&self, ip: IpAddr) -> Vec<Arc<Pod>>;
    fn pods_by_hostname(&self, namespace: &str, hostname: &str, subdomain: &str) -> Vec<Arc<Pod>>;
}

/// One pod port to port-forward to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    pub namespace: String,
    pub pod: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}/{}:{}", self.namespace, self.pod, self.port)
    }
}

/// Where a connection goes: one or more equivalent pod ports, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// What the client's address turned out to be, for logs ("service default/web:80").
    pub what: String,
    /// Never empty. A Service's ready endpoints in a stable order; the dialer
    /// rotates through them to spread load and fails over in this order.
    pub endpoints: Vec<Endpoint>,
}

/// Why a connection is not forwarded. Each maps to a SOCKS reply and an HTTP
/// status through [`Refusal::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{} is not a name or address inside the cluster", Escaped(host))]
    OutsideCluster { host: String },
    #[error("service {service} is an ExternalName for {external}, which is outside the cluster")]
    ExternalName { service: String, external: String },
    #[error("no service {name} in namespace {namespace}")]
    UnknownService { namespace: String, name: String },
    #[error("service {service} does not expose port {port} (it exposes {exposed})")]
    PortNotExposed { service: String, port: u16, exposed: String },
    #[error("service {service} has no ready endpoint for port {port}")]
    NoReadyEndpoints { service: String, port: u16 },
    #[error("no pod matches {}", Escaped(what))]
    UnknownPod { what: String },
    #[error("service {service} has no {protocol} port named {port}")]
    NoNamedPort { service: String, port: String, protocol: &'static str },
    #[error("pod {pod} is not running (phase {phase})")]
    PodNotRunning { pod: String, phase: String },
    #[error("cannot see namespace {namespace}: {reason}")]
    Forbidden { namespace: String, reason: String },
    #[error(
        "{host} is {addr}, an address of this machine (loopback, unspecified or link-local), which passthrough does not dial unless allowed"
    )]
    ThisMachine { host: String, addr: IpAddr },
    #[error("{host} does not end in the alias of a connected context, and the shared port has no default context")]
    NoContext { host: String },
}

/// The three outcomes a client protocol can express for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// Policy: outside the cluster, or RBAC. SOCKS 0x02, HTTP 403.
    NotAllowed,
    /// Nothing to connect to. SOCKS 0x04, HTTP 502.
    Unreachable,
    /// Something there, but not that port. SOCKS 0x05, HTTP 502.
    Refused,
}

impl Refusal {
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::OutsideCluster { .. }
            | Refusal::ExternalName { .. }
            | Refusal::Forbidden { .. }
            | Refusal::ThisMachine { .. }
            | Refusal::NoContext { .. } => RefusalKind::NotAllowed,
            Refusal::PortNotExposed { .. } | Refusal::NoNamedPort { .. } => RefusalKind::Refused,
            Refusal::UnknownService { .. }
            | Refusal::NoReadyEndpoints { .. }
            | Refusal::UnknownPod { .. }
            | Refusal::PodNotRunning { .. } => RefusalKind::Unreachable,
        }
    }
}

/// How a client's host reads, before looking anything up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    Ip(IpAddr),
    /// `svc`, `svc.ns.svc`, `svc.ns.svc.D`: certainly a Service name.
    Service {
        namespace: String,
        name: String,
    },
    /// `svc.ns`: a Service only if namespace `ns` exists (`example.com` must stay outside).
    MaybeService {
        namespace: String,
        name: String,
        /// The whole name, for a refusal.
        host: String,
    },
    /// `host.sub.ns.svc[.D]`: a pod's stable per-pod name.
    PodHostname {
        namespace: String,
        hostname: String,
        subdomain: String,
    },
    /// `a-b-c-d.ns.pod[.D]`.
    PodIp {
        namespace: String,
        ip: IpAddr,
        name: String,
    },
    /// Has the cluster domain but no form we know, e.g. `x.y.z.cluster.local`.
    UnknownClusterName(String),
    Outside(String),
}

/// Lower-case, without the one trailing dot of an absolute name: DNS names
/// compare that way.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The longest DNS name, without its trailing dot (RFC 1035 §3.1).
const MAX_NAME: usize = 253;
/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// An RFC 1123 label, lower-case: 1–63 of `a-z0-9-`, neither starting nor
/// ending with `-`.
fn is_label(label: &str) -> bool {
    (1..=MAX_LABEL).contains(&label.len())
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A lower-case DNS name of RFC 1123 labels within DNS lengths. Only such
/// names are looked up: anything else (a `/`, a `%`, a space, a control
/// character) could reach an API URL or a map key.
fn is_dns_name(name: &str) -> bool {
    name.len() <= MAX_NAME && name.split('.').all(is_label)
}

fn read_name(name: &str, rules: &Rules) -> Query {
    let name = normalize(name);
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Query::Ip(ip.to_canonical());
    }
    if !is_dns_name(&name) {
        return Query::Outside(name);
    }
    let suffix = format!(".{}", rules.cluster_domain);
    let (rest, had_domain) = match name.strip_suffix(&suffix) {
        Some(rest) => (rest, true),
        None => (name.as_str(), false),
    };
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Query::Outside(name);
    }
    let owned = |s: &str| s.to_string();
    match labels.as_slice() {
        [svc] if !had_domain => Query::Service { namespace: rules.default_namespace.clone(), name: owned(svc) },
        [svc, ns] if !had_domain => Query::MaybeService { namespace: owned(ns), name: owned(svc), host: name.clone() },
        [svc, ns, "svc"] => Query::Service { namespace: owned(ns), name: owned(svc) },
        [host, sub, ns, "svc"] => {
            Query::PodHostname { namespace: owned(ns), hostname: owned(host), subdomain: owned(sub) }
        }
        [dashed, ns, "pod"] => match pod_ip_from_dashes(dashed) {
            Some(ip) => Query::PodIp { namespace: owned(ns), ip, name: name.clone() },
            None => Query::UnknownClusterName(name.clone()),
        },
        _ if had_domain => Query::UnknownClusterName(name.clone()),
        _ => Query::Outside(name.clone()),
    }
}

/// `10-244-0-5` → 10.244.0.5; `fd00--1` → fd00::1 (cluster DNS writes IPv6 colons as dashes).
fn pod_ip_from_dashes(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// What a name points at inside one namespace, read from the name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Named {
    /// `svc`, `svc.ns`, `svc.ns.svc[.D]` (for `svc.ns` only if `ns` turns out to exist).
    Service { namespace: String, name: String },
    /// `host.sub.ns.svc[.D]`.
    PodHostname { namespace: String, hostname: String, subdomain: String },
    /// `a-b-c-d.ns.pod[.D]`.
    PodIp { namespace: String },
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Named::Service { name, .. } => write!(f, "service {name}"),
            Named::PodHostname { hostname, subdomain, .. } => write!(f, "pod {hostname}.{subdomain}"),
            Named::PodIp { .. } => f.write_str("a pod by IP"),
        }
    }
}

impl Named {
    pub fn namespace(&self) -> &str {
        match self {
            Named::Service { namespace, .. } | Named::PodHostname { namespace, .. } | Named::PodIp { namespace } => {
                namespace
            }
        }
    }
}

impl Query {
    /// Reads a client's host under `rules`; done once per connection.
    pub fn read(host: &Host, rules: &Rules) -> Query {
        match host {
            // `::ffff:10.96.0.10` is 10.96.0.10: the caches hold IPv4 addresses as such.
            Host::Ip(ip) => Query::Ip(ip.to_canonical()),
            Host::Name(name) => read_name(name, rules),
        }
    }

    /// The namespaced object the name points at, if any. The cache layer uses
    /// it to make that namespace readable *before* it calls [`resolve`]: it
    /// starts a watch there, or, where RBAC allows only GETs, fetches just
    /// these objects.
    pub fn named(&self) -> Option<Named> {
        match self {
            Query::Service { namespace, name } | Query::MaybeService { namespace, name, .. } => {
                Some(Named::Service { namespace: namespace.clone(), name: name.clone() })
            }
            Query::PodHostname { namespace, hostname, subdomain } => Some(Named::PodHostname {
                namespace: namespace.clone(),
                hostname: hostname.clone(),
                subdomain: subdomain.clone(),
            }),
            Query::PodIp { namespace, .. } => Some(Named::PodIp { namespace: namespace.clone() }),
            _ => None,
        }
    }
}

/// Resolves a client's destination against a snapshot of the cluster.
pub(crate) fn resolve(query: Query, port: u16, view: &impl ClusterView) -> Result<Target, Refusal> {
    match query {
        Query::Ip(ip) => resolve_ip(ip, port, view),
        Query::Service { namespace, name } => service_target(&*find_service(view, namespace, name, None)?, port, view),
        Query::MaybeService { namespace, name, host } => {
            service_target(&*find_service(view, namespace, name, Some(host))?, port, view)
        }
        Query::PodHostname { namespace, hostname, subdomain } => {
            must_see(view, &namespace)?;
            let what = format!("{hostname}.{subdomain} in namespace {namespace}");
            let pods = view.pods_by_hostname(&namespace, &hostname, &subdomain);
            pod_target(&pods, port, what)
        }
        Query::PodIp { namespace, ip, name } => {
            must_see(view, &namespace)?;
            let pods: Vec<_> = view
                .pods_by_ip(ip)
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(&namespace))
                .collect();
            pod_target(&pods, port, name)
        }
        Query::UnknownClusterName(name) => Err(Refusal::UnknownPod { what: name }),
        Query::Outside(name) => Err(Refusal::OutsideCluster { host: name }),
    }
}

/// RBAC hiding a namespace that a name certainly points into is a refusal.
fn must_see(view: &impl ClusterView, namespace: &str) -> Result<(), Refusal> {
    view.visible(namespace).map_err(|reason| Refusal::Forbidden { namespace: namespace.to_string(), reason })
}

/// The Service a name points at. `maybe` is the whole name of a `svc.ns`
/// form, which is a cluster name only if namespace `ns` exists (or, where
/// namespaces cannot be listed, if the Service is to be seen).
fn find_service(
    view: &impl ClusterView,
    namespace: String,
    name: String,
    maybe: Option<String>,
) -> Result<Arc<Service>, Refusal> {
    if let Some(host) = maybe
        && view.namespace_exists(&namespace) != Some(true)
    {
        // No such namespace, or namespaces cannot be listed and the Service
        // is not to be seen: an outside name like `example.com`.
        return view
            .visible(&namespace)
            .ok()
            .and_then(|_| view.service(&namespace, &name))
            .ok_or(Refusal::OutsideCluster { host });
    }
    must_see(view, &namespace)?;
    view.service(&namespace, &name).ok_or(Refusal::UnknownService { namespace, name })
}

fn resolve_ip(ip: IpAddr, port: u16, view: &impl ClusterView) -> Result<Target, Refusal> {
    if let Some(svc) = view.service_by_ip(ip) {
        return service_target(&svc, port, view);
    }
    let pods = view.pods_by_ip(ip);
    if pods.is_empty() {
        return Err(Refusal::OutsideCluster { host: Host::Ip(ip).to_string() });
    }
    pod_target(&pods, port, format!("pod IP {ip}"))
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Pods found by IP or per-pod name: the running one wins (a finished pod may
/// still hold an IP that a new pod reuses).
fn pod_target(pods: &[Arc<Pod>], port: u16, what: String) -> Result<Target, Refusal> {
    let Some(first) = pods.first() else { return Err(Refusal::UnknownPod { what }) };
    let Some(pod) = pods.iter().find(|p| is_running(p)) else {
        let phase = if first.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            first.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into())
        };
        return Err(Refusal::PodNotRunning { pod: full_name(&first.metadata), phase });
    };
    let endpoint = Endpoint {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        port,
    };
    Ok(Target { what: format!("{} ({what})", full_name(&pod.metadata)), endpoints: vec![endpoint] })
}

fn full_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

/// Service port → the pod ports behind it, read from its EndpointSlices.
fn service_target(svc: &Service, port: u16, view: &impl ClusterView) -> Result<Target, Refusal> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let id = format!("{namespace}/{name}");
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        let external = spec.and_then(|s| s.external_name.clone()).unwrap_or_default();
        return Err(Refusal::ExternalName { service: id, external });
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let Some(svc_port) = ports.iter().find(|p| p.port == i32::from(port)) else {
        let exposed = ports.iter().map(|p| p.port.to_string()).collect::<Vec<_>>().join(", ");
        let exposed = if exposed.is_empty() { "no ports".to_string() } else { exposed };
        return Err(Refusal::PortNotExposed { service: id, port, exposed });
    };
    // The slice port with the Service port's name carries the pod's port number
    // for that slice: that is how a named targetPort resolves per pod.
    let port_name = svc_port.name.clone().unwrap_or_default();

    let mut ready = Vec::new();
    let mut serving = Vec::new();
    for slice in view.endpoint_slices(&namespace, &name) {
        let Some(pod_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let Some(pod) = pod_of(ep) else { continue };
            let endpoint = Endpoint { namespace: pod.0, pod: pod.1, port: pod_port };
            let c = ep.conditions.as_ref();
            // An unknown `ready` means ready, as the EndpointSlice API asks consumers to read it.
            if c.and_then(|c| c.ready).unwrap_or(true) {
                ready.push(endpoint);
            } else if c.and_then(|c| c.serving) == Some(true) && c.and_then(|c| c.terminating) != Some(true) {
                serving.push(endpoint);
            }
        }
    }
    let mut endpoints = if ready.is_empty() { serving } else { ready };
    // One pod can appear in two slices while the controller moves it: keep it once.
    endpoints.sort_by(|a, b| (&a.pod, a.port).cmp(&(&b.pod, b.port)));
    endpoints.dedup();
    if endpoints.is_empty() {
        return Err(Refusal::NoReadyEndpoints { service: id, port });
    }
    Ok(Target { what: format!("service {id}:{port}"), endpoints })
}

/// Only endpoints backed by a Pod can be port-forwarded to.
fn pod_of(ep: &SliceEndpoint) -> Option<(String, String)> {
    let r = ep.target_ref.as_ref()?;
    if r.kind.as_deref() != Some("Pod") {
        return None;
    }
    Some((r.namespace.clone()?, r.name.clone()?))
}

/// A name a DNS client asked about, read once. An SRV name
/// (`_http._tcp.web.shop.svc.cluster.local`) is a port name and a protocol
/// in front of a Service's name; the name behind them is read by
/// [`Query::read`], as a proxy client's host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsQuery {
    /// The whole name, lower-case, without a trailing dot.
    pub name: String,
    /// `_port._proto.`, when the name starts with it.
    pub srv: Option<SrvPrefix>,
    pub query: Query,
}

/// The `_http._tcp.` of an SRV name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvPrefix {
    /// The Service port's name.
    pub port: String,
    /// `TCP`, `UDP` or `SCTP`, as Service ports spell it.
    pub protocol: &'static str,
}

impl DnsQuery {
    pub fn read(name: &str, rules: &Rules) -> DnsQuery {
        let name = normalize(name);
        let (srv, rest) = match split_srv(&name) {
            Some((srv, rest)) => (Some(srv), rest),
            None => (None, name.as_str()),
        };
        let query = match Query::read(&Host::parse(rest), rules) {
            // A one-label name would be a top-level domain: clients with a
            // search list ask `web.ns.svc.D`, not `web`. An address is no name.
            Query::Service { .. } if !rest.contains('.') => Query::Outside(rest.to_string()),
            Query::Ip(_) => Query::Outside(rest.to_string()),
            query => query,
        };
        DnsQuery { name, srv, query }
    }
}

/// `_http._tcp.rest` → the port name, the protocol and `rest`.
fn split_srv(name: &str) -> Option<(SrvPrefix, &str)> {
    let (port, rest) = name.strip_prefix('_')?.split_once('.')?;
    let (protocol, rest) = rest.strip_prefix('_')?.split_once('.')?;
    let protocol = match protocol {
        "tcp" => "TCP",
        "udp" => "UDP",
        "sctp" => "SCTP",
        _ => return None,
    };
    is_label(port).then(|| (SrvPrefix { port: port.to_string(), protocol }, rest))
}

/// What the DNS helper answers for one name; the record types asked for
/// pick from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Records {
    /// A and AAAA: a Service's ClusterIPs, a headless Service's ready
    /// endpoints, a pod's IPs.
    pub addresses: Vec<IpAddr>,
    /// SRV, for `_port._proto.` names.
    pub srv: Vec<Srv>,
    /// The external host of an ExternalName Service (a CNAME).
    pub alias: Option<String>,
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Srv {
    pub port: u16,
    /// A name this DNS helper answers too (without the trailing dot): the
    /// Service's, or for a headless Service each endpoint's per-pod name.
    pub target: String,
}

/// The records for a name a DNS client asked about, from a snapshot of the
/// caches. A refusal of kind [`RefusalKind::NotAllowed`] is a name outside
/// the cluster (or hidden by RBAC); any other, a cluster name with nothing
/// behind it. A name that exists with no addresses (a headless Service
/// without ready endpoints) has empty records.
pub(crate) fn records(question: DnsQuery, rules: &Rules, view: &impl ClusterView) -> Result<Records, Refusal> {
    let name = question.name.clone();
    match find_records(question, &rules.cluster_domain, view) {
        // Names under the cluster domain are the cluster's, even those of no
        // form it has (`cluster.local` itself, `we_b.ns.svc.cluster.local`).
        Err(Refusal::OutsideCluster { .. }) if in_domain(&name, &rules.cluster_domain) => {
            Err(Refusal::UnknownPod { what: name })
        }
        found => found,
    }
}

fn find_records(question: DnsQuery, domain: &str, view: &impl ClusterView) -> Result<Records, Refusal> {
    let DnsQuery { name, srv, query } = question;
    let unknown = || Refusal::UnknownPod { what: name.clone() };
    match query {
        Query::Service { namespace, name } => {
            service_records(&*find_service(view, namespace, name, None)?, srv, domain, view)
        }
        Query::MaybeService { namespace, name, host } => {
            service_records(&*find_service(view, namespace, name, Some(host))?, srv, domain, view)
        }
        // SRV names exist for Service ports only.
        _ if srv.is_some() && in_domain(&name, domain) => Err(unknown()),
        Query::PodHostname { namespace, hostname, subdomain } => {
            must_see(view, &namespace)?;
            let mut addresses: Vec<IpAddr> = view
                .pods_by_hostname(&namespace, &hostname, &subdomain)
                .iter()
                .filter(|p| is_running(p))
                .flat_map(|p| pod_ips(p))
                .collect();
            if addresses.is_empty() {
                // The SRV targets of a headless Service's endpoints that
                // have no hostname are their dashed addresses.
                addresses = ready_endpoints(&view.endpoint_slices(&namespace, &subdomain))
                    .filter(|(_, ep)| {
                        ep.hostname.as_deref() == Some(&hostname) || dashed(ep).as_deref() == Some(&*hostname)
                    })
                    .flat_map(|(_, ep)| endpoint_ips(ep))
                    .collect();
            }
            let what = format!("{hostname}.{subdomain} in namespace {namespace}");
            addresses.sort();
            addresses.dedup();
            if addresses.is_empty() {
                Err(Refusal::UnknownPod { what })
            } else {
                Ok(Records { addresses, ..Default::default() })
            }
        }
        Query::PodIp { namespace, ip, name } => {
            must_see(view, &namespace)?;
            let running = view
                .pods_by_ip(ip)
                .iter()
                .any(|p| p.metadata.namespace.as_deref() == Some(&namespace) && is_running(p));
            if running {
                Ok(Records { addresses: vec![ip], ..Default::default() })
            } else {
                Err(Refusal::UnknownPod { what: name })
            }
        }
        Query::UnknownClusterName(_) => Err(unknown()),
        Query::Outside(_) | Query::Ip(_) => Err(Refusal::OutsideCluster { host: name.clone() }),
    }
}

fn in_domain(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// A Service's records: its ClusterIPs (a headless Service: its ready
/// endpoints' addresses), or for an SRV name the port of that name.
fn service_records(
    svc: &Service,
    srv: Option<SrvPrefix>,
    domain: &str,
    view: &impl ClusterView,
) -> Result<Records, Refusal> {
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.as_ref();
    let fqdn = format!("{name}.{namespace}.svc.{domain}");
    let headless = spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let external = spec.filter(|s| s.type_.as_deref() == Some("ExternalName"));
    let Some(srv) = srv else {
        if let Some(external) = external {
            return Ok(Records {
                alias: Some(normalize(external.external_name.as_deref().unwrap_or_default())),
                ..Default::default()
            });
        }
        let mut addresses: Vec<IpAddr> = if headless {
            ready_endpoints(&view.endpoint_slices(&namespace, &name)).flat_map(|(_, ep)| endpoint_ips(ep)).collect()
        } else {
            let ips = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
            ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()).collect()
        };
        addresses.sort();
        addresses.dedup();
        return Ok(Records { addresses, ..Default::default() });
    };
    let no_port = || Refusal::NoNamedPort {
        service: format!("{namespace}/{name}"),
        port: srv.port.clone(),
        protocol: srv.protocol,
    };
    let is_it = |port_name: Option<&str>, protocol: Option<&str>| {
        port_name == Some(&*srv.port) && protocol.unwrap_or("TCP") == srv.protocol
    };
    let ports = spec.filter(|_| external.is_none()).and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let svc_port = ports.iter().find(|p| is_it(p.name.as_deref(), p.protocol.as_deref())).ok_or_else(no_port)?;
    if !headless {
        let port = u16::try_from(svc_port.port).map_err(|_| no_port())?;
        return Ok(Records { srv: vec![Srv { port, target: fqdn }], ..Default::default() });
    }
    // Headless: each ready endpoint on its own port, named as it answers A questions.
    let slices = view.endpoint_slices(&namespace, &name);
    let mut srv: Vec<Srv> = ready_endpoints(&slices)
        .filter_map(|(slice, ep)| {
            let port = slice.ports.iter().flatten().find(|p| is_it(p.name.as_deref(), p.protocol.as_deref()))?.port?;
            let host = ep.hostname.clone().or_else(|| dashed(ep))?;
            Some(Srv { port: u16::try_from(port).ok()?, target: format!("{host}.{fqdn}") })
        })
        .collect();
    srv.sort_by(|a, b| (&a.target, a.port).cmp(&(&b.target, b.port)));
    srv.dedup();
    Ok(Records { srv, ..Default::default() })
}

/// The endpoints of these slices that are ready (an unknown `ready` counts as ready).
fn ready_endpoints(slices: &[Arc<EndpointSlice>]) -> impl Iterator<Item = (&EndpointSlice, &SliceEndpoint)> {
    slices.iter().flat_map(|slice| {
        let ready =
            slice.endpoints.iter().flatten().filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
        ready.map(move |ep| (slice.as_ref(), ep))
    })
}

fn endpoint_ips(ep: &SliceEndpoint) -> impl Iterator<Item = IpAddr> + '_ {
    ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
}

/// An endpoint's first address as a DNS label (`10.244.0.5` → `10-244-0-5`),
/// which names it where it has no hostname, as cluster DNS does.
fn dashed(ep: &SliceEndpoint) -> Option<String> {
    let ip = endpoint_ips(ep).next()?;
    Some(ip.to_string().replace(['.', ':'], "-")).filter(|label| is_label(label))
}

fn pod_ips(pod: &Pod) -> impl Iterator<Item = IpAddr> + '_ {
    let ips = pod.status.as_ref().and_then(|s| s.pod_ips.as_deref()).unwrap_or_default();
    ips.iter().filter_map(|i| i.ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads and resolves in one step, as the dial path does.
    fn resolve(host: &Host, port: u16, rules: &Rules, view: &impl ClusterView) -> Result<Target, Refusal> {
        super::resolve(Query::read(host, rules), port, view)
    }

    fn named(host: &Host, rules: &Rules) -> Option<Named> {
        Query::read(host, rules).named()
    }

    /// A snapshot made of plain object lists, the way the caches hold them.
    #[derive(Default)]
    struct View {
        namespaces: Option<Vec<&'static str>>,
        hidden: Vec<&'static str>,
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
        pods: Vec<Arc<Pod>>,
    }

    fn ns_of<T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>>(o: &T) -> &str {
        o.metadata().namespace.as_deref().unwrap_or_default()
    }

    impl ClusterView for View {
        fn namespace_exists(&self, namespace: &str) -> Option<bool> {
            self.namespaces.as_ref().map(|n| n.contains(&namespace))
        }
        fn visible(&self, namespace: &str) -> Result<(), String> {
            if self.hidden.contains(&namespace) { Err("RBAC forbids list services".into()) } else { Ok(()) }
        }
        fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
            self.services
                .iter()
                .find(|s| ns_of(s.as_ref()) == namespace && s.metadata.name.as_deref() == Some(name))
                .cloned()
        }
        fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Service>> {
            self.services
                .iter()
                .find(|s| {
                    let spec = s.spec.as_ref().unwrap();
                    spec.cluster_ips.iter().flatten().any(|c| c.parse::<IpAddr>().ok() == Some(ip))
                })
                .cloned()
        }
        fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
            self.slices
                .iter()
                .filter(|s| {
                    ns_of(s.as_ref()) == namespace
                        && s.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            .map(|s| s.as_str())
                            == Some(service)
                })
                .cloned()
                .collect()
        }
        fn pods_by_ip(&self, ip: IpAddr) -> Vec<Arc<Pod>> {
            self.pods
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.pod_ips.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|i| i.ip.parse::<IpAddr>().ok() == Some(ip))
                })
                .cloned()
                .collect()
        }
        fn pods_by_hostname(&self, namespace: &str, hostname: &str, subdomain: &str) -> Vec<Arc<Pod>> {
            self.pods
                .iter()
                .filter(|p| {
                    let spec = p.spec.as_ref().unwrap();
                    ns_of(p.as_ref()) == namespace
                        && spec.hostname.as_deref() == Some(hostname)
                        && spec.subdomain.as_deref() == Some(subdomain)
                })
                .cloned()
                .collect()
        }
    }

    fn service(ns: &str, name: &str, ips: &[&str], ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"clusterIP": ips.first(), "clusterIPs": ips, "ports": ports}
            }))
            .unwrap(),
        )
    }

    fn slice(ns: &str, svc: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": format!("{svc}-abc"),
                             "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4", "ports": ports, "endpoints": endpoints
            }))
            .unwrap(),
        )
    }

    fn ep(ns: &str, pod: &str, ready: bool) -> serde_json::Value {
        json!({"addresses": ["10.244.0.9"], "conditions": {"ready": ready, "serving": ready, "terminating": false},
               "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
    }

    fn pod(ns: &str, name: &str, ips: &[&str], phase: &str, host: Option<(&str, &str)>) -> Arc<Pod> {
        let ips: Vec<_> = ips.iter().map(|i| json!({"ip": i})).collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": {"containers": [], "hostname": host.map(|h| h.0), "subdomain": host.map(|h| h.1)},
                "status": {"phase": phase, "podIPs": ips}
            }))
            .unwrap(),
        )
    }

    fn rules() -> Rules {
        Rules::new("cluster.local", "default")
    }

    /// A cluster with `default/web` (port 80 → pods web-1, web-2 on 8080) and
    /// `shop/catalog` (named targetPort: pods listen on different numbers).
    fn cluster() -> View {
        View {
            namespaces: Some(vec!["default", "shop"]),
            services: vec![
                service("default", "web", &["10.96.0.10", "fd00::10"], json!([{"name": "http", "port": 80}])),
                service(
                    "shop",
                    "catalog",
                    &["10.96.0.20"],
                    json!([{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]),
                ),
            ],
            slices: vec![
                slice(
                    "default",
                    "web",
                    json!([{"name": "http", "port": 8080}]),
                    json!([ep("default", "web-2", true), ep("default", "web-1", true)]),
                ),
                slice(
                    "shop",
                    "catalog",
                    json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]),
                    json!([ep("shop", "catalog-a", true)]),
                ),
                slice(
                    "shop",
                    "catalog",
                    json!([{"name": "http", "port": 8081}, {"name": "metrics", "port": 9100}]),
                    json!([ep("shop", "catalog-b", true)]),
                ),
            ],
            pods: vec![
                pod("default", "web-1", &["10.244.0.1", "fd00::1"], "Running", None),
                pod("default", "web-2", &["10.244.0.2"], "Running", None),
                pod("shop", "db-0", &["10.244.1.1"], "Running", Some(("db-0", "db"))),
                pod("shop", "old", &["10.244.1.9"], "Succeeded", None),
            ],
            ..Default::default()
        }
    }

    fn go(host: &str, port: u16) -> Result<Target, Refusal> {
        resolve(&Host::parse(host), port, &rules(), &cluster())
    }

    fn pods_of(t: &Target) -> Vec<String> {
        t.endpoints.iter().map(|e| format!("{}/{}:{}", e.namespace, e.pod, e.port)).collect()
    }

    #[test]
    fn every_service_name_form_reaches_the_service() {
        for name in
            ["web", "web.default", "web.default.svc", "web.default.svc.cluster.local", "WEB.Default.SVC.cluster.local."]
        {
            let t = go(name, 80).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(pods_of(&t), ["default/web-1:8080", "default/web-2:8080"], "{name}");
        }
    }

    #[test]
    fn short_names_use_the_default_namespace() {
        let r = Rules::new("cluster.local", "shop");
        let t = resolve(&Host::parse("catalog"), 80, &r, &cluster()).unwrap();
        assert_eq!(t.what, "service shop/catalog:80");
        assert_eq!(
            resolve(&Host::parse("web"), 80, &r, &cluster()),
            Err(Refusal::UnknownService { namespace: "shop".into(), name: "web".into() })
        );
    }

    #[test]
    fn named_target_port_resolves_per_pod_from_the_same_slice() {
        let t = go("catalog.shop", 80).unwrap();
        assert_eq!(pods_of(&t), ["shop/catalog-a:8080", "shop/catalog-b:8081"]);
        let t = go("catalog.shop", 9090).unwrap();
        assert_eq!(pods_of(&t), ["shop/catalog-a:9100", "shop/catalog-b:9100"]);
    }

    #[test]
    fn a_custom_cluster_domain_replaces_cluster_local() {
        let r = Rules::new("corp.example.", "default");
        assert!(resolve(&Host::parse("web.default.svc.corp.example"), 80, &r, &cluster()).is_ok());
        // With another domain, `cluster.local` is just an outside name.
        assert!(matches!(
            resolve(&Host::parse("web.default.svc.cluster.local"), 80, &r, &cluster()),
            Err(Refusal::OutsideCluster { .. })
        ));
    }

    #[test]
    fn two_labels_are_a_service_only_when_the_namespace_exists() {
        assert!(matches!(go("example.com", 80), Err(Refusal::OutsideCluster { .. })));
        assert!(matches!(go("nothere.shop", 80), Err(Refusal::UnknownService { .. })));
        // Where namespaces cannot be listed, the Service itself decides.
        let mut view = cluster();
        view.namespaces = None;
        assert!(resolve(&Host::parse("web.default"), 80, &rules(), &view).is_ok());
        assert!(matches!(
            resolve(&Host::parse("example.com"), 80, &rules(), &view),
            Err(Refusal::OutsideCluster { .. })
        ));
        // A namespace hidden by RBAC reads as outside too, not as forbidden.
        view.hidden = vec!["com"];
        assert!(matches!(
            resolve(&Host::parse("example.com"), 80, &rules(), &view),
            Err(Refusal::OutsideCluster { .. })
        ));
    }

    #[test]
    fn cluster_ips_of_both_families_map_to_the_service() {
        assert_eq!(go("10.96.0.10", 80).unwrap().what, "service default/web:80");
        assert_eq!(go("fd00::10", 80).unwrap().what, "service default/web:80");
        assert_eq!(go("[fd00::10]", 80).unwrap().what, "service default/web:80");
    }

    #[test]
    fn pod_ips_reach_running_pods_on_the_asked_port() {
        assert_eq!(pods_of(&go("10.244.0.2", 8080).unwrap()), ["default/web-2:8080"]);
        assert_eq!(pods_of(&go("fd00::1", 22).unwrap()), ["default/web-1:22"]);
        assert!(matches!(go("10.244.1.9", 80), Err(Refusal::PodNotRunning { .. })));
    }

    #[test]
    fn a_terminating_pod_is_not_dialled_by_ip() {
        let mut view = cluster();
        let mut p = (*view.pods[1]).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        view.pods[1] = Arc::new(p);
        let r = resolve(&Host::parse("10.244.0.2"), 80, &rules(), &view);
        assert_eq!(r, Err(Refusal::PodNotRunning { pod: "default/web-2".into(), phase: "Terminating".into() }));
    }

    #[test]
    fn dashed_pod_names_and_per_pod_hostnames() {
        assert_eq!(pods_of(&go("10-244-0-1.default.pod.cluster.local", 9000).unwrap()), ["default/web-1:9000"]);
        assert_eq!(pods_of(&go("fd00--1.default.pod", 9000).unwrap()), ["default/web-1:9000"]);
        // The right IP in the wrong namespace is not a match.
        assert!(matches!(go("10-244-0-1.shop.pod.cluster.local", 80), Err(Refusal::UnknownPod { .. })));
        assert_eq!(pods_of(&go("db-0.db.shop.svc.cluster.local", 5432).unwrap()), ["shop/db-0:5432"]);
        assert_eq!(pods_of(&go("db-0.db.shop.svc", 5432).unwrap()), ["shop/db-0:5432"]);
        assert!(matches!(go("db-9.db.shop.svc", 5432), Err(Refusal::UnknownPod { .. })));
    }

    #[test]
    fn outside_names_and_addresses_are_refused_as_not_allowed() {
        for host in ["example.com", "www.example.com", "8.8.8.8", "10.96.99.99", "a..b"] {
            let r = go(host, 80).unwrap_err();
            assert_eq!(r.kind(), RefusalKind::NotAllowed, "{host}: {r}");
        }
        // Cluster-domain names of an unknown shape are unreachable, not outside.
        assert_eq!(go("a.b.c.d.e.cluster.local", 80).unwrap_err().kind(), RefusalKind::Unreachable);
    }

    #[test]
    fn ports_a_service_does_not_expose_are_refused() {
        let r = go("web", 81).unwrap_err();
        assert_eq!(r, Refusal::PortNotExposed { service: "default/web".into(), port: 81, exposed: "80".into() });
        assert_eq!(r.kind(), RefusalKind::Refused);
    }

    #[test]
    fn only_ready_endpoints_unless_none_then_serving_not_terminating() {
        let mut view = cluster();
        view.slices[0] = slice(
            "default",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("default", "web-1", true), ep("default", "web-2", false)]),
        );
        assert_eq!(pods_of(&resolve(&Host::parse("web"), 80, &rules(), &view).unwrap()), ["default/web-1:8080"]);

        let serving = |pod: &str, terminating: bool| {
            json!({"conditions": {"ready": false, "serving": true, "terminating": terminating}, "addresses": ["10.0.0.1"],
                   "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}})
        };
        view.slices[0] = slice(
            "default",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([serving("web-1", true), serving("web-2", false)]),
        );
        assert_eq!(pods_of(&resolve(&Host::parse("web"), 80, &rules(), &view).unwrap()), ["default/web-2:8080"]);

        view.slices[0] =
            slice("default", "web", json!([{"name": "http", "port": 8080}]), json!([ep("default", "web-1", false)]));
        assert_eq!(
            resolve(&Host::parse("web"), 80, &rules(), &view),
            Err(Refusal::NoReadyEndpoints { service: "default/web".into(), port: 80 })
        );
    }

    #[test]
    fn external_name_services_are_refused_naming_the_external_host() {
        let mut view = cluster();
        view.services.push(Arc::new(
            serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "ext"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]}}))
            .unwrap(),
        ));
        let r = resolve(&Host::parse("ext"), 5432, &rules(), &view).unwrap_err();
        assert_eq!(r, Refusal::ExternalName { service: "default/ext".into(), external: "db.example.com".into() });
        assert!(r.to_string().contains("db.example.com"));
    }

    #[test]
    fn hidden_namespaces_are_forbidden_for_certain_cluster_names() {
        let mut view = cluster();
        view.hidden = vec!["shop"];
        let r = resolve(&Host::parse("catalog.shop.svc"), 80, &rules(), &view).unwrap_err();
        assert_eq!(r.kind(), RefusalKind::NotAllowed);
        assert!(r.to_string().contains("RBAC"), "{r}");
    }

    #[test]
    fn only_rfc1123_labels_are_looked_up() {
        let long_label = "a".repeat(64);
        for host in [
            "a/proxy/x.team",
            "a/proxy/x.default.svc",
            "web%2fproxy.default",
            "-web.default",
            "web-.default.svc",
            "we_b.default",
            "web .default",
            "web\n.default",
            "wéb.default",
            "web..",
            ".web",
            "web.default..",
            &format!("{long_label}.default.svc"),
        ] {
            assert_eq!(named(&Host::parse(host), &rules()), None, "{host:?} must not be looked up");
            assert!(matches!(go(host, 80), Err(Refusal::OutsideCluster { .. })), "{host:?}: {:?}", go(host, 80));
        }
        // At the limits: a 63-character label, a 253-character name.
        let label = "a".repeat(63);
        assert_eq!(
            named(&Host::parse(&format!("{label}.default.svc")), &rules()),
            Some(Named::Service { namespace: "default".into(), name: label.clone() })
        );
        let name = |len: usize| format!("{label}.{label}.{label}.{}", "c".repeat(len - 192));
        assert!(is_dns_name(&name(253)) && !is_dns_name(&name(254)));
        assert!(matches!(go(&format!("{}.", name(253)), 80), Err(Refusal::OutsideCluster { .. })));
        assert!(matches!(Query::read(&Host::parse(&name(254)), &rules()), Query::Outside(_)));
        assert!(is_label("a-1") && is_label("0") && !is_label("") && !is_label("A") && !is_label("a-"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        assert_eq!(go("::ffff:10.96.0.10", 80).unwrap().what, "service default/web:80");
        assert_eq!(go("[::ffff:10.244.0.2]", 8080).map(|t| pods_of(&t)), Ok(vec!["default/web-2:8080".to_string()]));
        let mapped = Host::Ip("::ffff:10.96.0.10".parse().unwrap());
        assert_eq!(Query::read(&mapped, &rules()), Query::Ip("10.96.0.10".parse().unwrap()));
    }

    #[test]
    fn this_machines_own_addresses_are_told_apart() {
        for local in
            ["127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "169.254.169.254", "::1", "::", "fe80::1", "febf::1"]
        {
            assert!(is_this_machine(local.parse().unwrap()), "{local}");
        }
        for mapped in ["::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:169.254.1.1"] {
            assert!(is_this_machine(mapped.parse().unwrap()), "{mapped}");
        }
        for other in ["10.96.0.10", "192.168.1.1", "8.8.8.8", "169.253.1.1", "fd00::1", "fec0::1", "2001:db8::1"] {
            assert!(!is_this_machine(other.parse().unwrap()), "{other}");
        }
        let r = Refusal::ThisMachine { host: "localhost".into(), addr: "127.0.0.1".parse().unwrap() };
        assert_eq!(r.kind(), RefusalKind::NotAllowed);
        assert!(r.to_string().contains("localhost is 127.0.0.1, an address of this machine"), "{r}");
    }

    #[test]
    fn client_chosen_names_are_shown_escaped() {
        let host = Host::parse("evil\n2026-01-01 INFO forged\x1b[31m\\");
        assert_eq!(host.to_string(), "evil\\n2026-01-01 INFO forged\\u{1b}[31m\\\\");
        let refusal = go("evil\n\x1b[2J", 80).unwrap_err();
        assert_eq!(refusal.to_string(), "evil\\n\\u{1b}[2j is not a name or address inside the cluster");
        assert_eq!(Escaped("plain.name").to_string(), "plain.name");
    }

    #[test]
    fn named_says_what_a_name_points_at() {
        let named = |h: &str| named(&Host::parse(h), &rules());
        let service = |ns: &str, name: &str| Some(Named::Service { namespace: ns.into(), name: name.into() });
        assert_eq!(named("web"), service("default", "web"));
        assert_eq!(named("Catalog.Shop."), service("shop", "catalog"));
        assert_eq!(named("catalog.shop.svc.cluster.local"), service("shop", "catalog"));
        assert_eq!(
            named("db-0.db.shop.svc.cluster.local"),
            Some(Named::PodHostname { namespace: "shop".into(), hostname: "db-0".into(), subdomain: "db".into() })
        );
        let pod = named("10-1-2-3.team.pod.cluster.local").unwrap();
        assert_eq!((pod.namespace(), &pod), ("team", &Named::PodIp { namespace: "team".into() }));
        assert_eq!(named("10.1.2.3"), None);
        assert_eq!(named("www.example.com"), None);
        assert_eq!(named("a.b.c.d.cluster.local"), None);
    }

    /// [`cluster`] plus a headless Service `shop/db` (port `pg`): pod db-0
    /// (hostname db-0) and a pod without a hostname are ready, a third is not.
    fn dns_cluster() -> View {
        let mut view = cluster();
        let mut db: Service = (*service("shop", "db", &["None"], json!([{"name": "pg", "port": 5432}]))).clone();
        db.spec.as_mut().unwrap().cluster_ips = None;
        view.services.push(Arc::new(db));
        let member = |pod: &str, ip: &str, hostname: Option<&str>, ready: bool| {
            json!({"addresses": [ip], "hostname": hostname, "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}})
        };
        view.slices.push(slice(
            "shop",
            "db",
            json!([{"name": "pg", "port": 5433, "protocol": "TCP"}]),
            json!([
                member("db-0", "10.244.1.1", Some("db-0"), true),
                member("db-x", "10.244.1.2", None, true),
                member("db-1", "10.244.1.3", Some("db-1"), false),
            ]),
        ));
        view
    }

    fn dns(name: &str) -> Result<Records, Refusal> {
        records(DnsQuery::read(name, &rules()), &rules(), &dns_cluster())
    }

    fn addresses(name: &str) -> Vec<String> {
        let found = dns(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        found.addresses.iter().map(|ip| ip.to_string()).collect()
    }

    fn srv_of(name: &str) -> Vec<String> {
        let found = dns(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        found.srv.iter().map(|s| format!("{}:{}", s.target, s.port)).collect()
    }

    #[test]
    fn dns_answers_a_services_cluster_ips_for_its_full_and_namespaced_names() {
        for name in
            ["web.default.svc.cluster.local.", "WEB.default.svc.cluster.local", "web.default.svc", "web.default"]
        {
            assert_eq!(addresses(name), ["10.96.0.10", "fd00::10"], "{name}");
        }
        assert_eq!(addresses("catalog.shop.svc.cluster.local"), ["10.96.0.20"]);
    }

    #[test]
    fn dns_refuses_a_bare_label_and_addresses_as_outside_names() {
        // `web` resolves for the proxy, but a DNS name of one label is a top-level domain.
        for name in
            ["web", "web.", "10.96.0.10", "fd00::10", "example.com", "www.example.com", "_http._tcp.example.com"]
        {
            let refusal = dns(name).unwrap_err();
            assert!(matches!(refusal, Refusal::OutsideCluster { .. }), "{name}: {refusal:?}");
            assert_eq!(refusal.kind(), RefusalKind::NotAllowed, "{name}");
        }
    }

    #[test]
    fn dns_answers_a_headless_service_with_its_ready_endpoints_only() {
        assert_eq!(addresses("db.shop.svc.cluster.local"), ["10.244.1.1", "10.244.1.2"]);
        // A headless Service without ready endpoints exists with no address.
        let mut view = dns_cluster();
        view.slices.pop();
        let found = records(DnsQuery::read("db.shop.svc.cluster.local", &rules()), &rules(), &view).unwrap();
        assert_eq!(found, Records::default());
    }

    #[test]
    fn dns_answers_per_pod_names_from_pods_and_headless_endpoints() {
        assert_eq!(addresses("db-0.db.shop.svc.cluster.local"), ["10.244.1.1"]);
        assert_eq!(addresses("10-244-1-2.db.shop.svc.cluster.local"), ["10.244.1.2"]);
        // Not ready, and not a pod with that hostname: no such name.
        assert!(matches!(dns("db-1.db.shop.svc.cluster.local"), Err(Refusal::UnknownPod { .. })));
        assert!(matches!(dns("db-9.db.shop.svc.cluster.local"), Err(Refusal::UnknownPod { .. })));
    }

    #[test]
    fn dns_answers_dashed_pod_names_of_running_pods_in_their_namespace() {
        assert_eq!(addresses("10-244-0-1.default.pod.cluster.local"), ["10.244.0.1"]);
        assert_eq!(addresses("fd00--1.default.pod.cluster.local"), ["fd00::1"]);
        for name in [
            "10-244-0-1.shop.pod.cluster.local",
            "10-244-1-9.shop.pod.cluster.local",
            "10-9-9-9.default.pod.cluster.local",
        ] {
            let refusal = dns(name).unwrap_err();
            assert_eq!(refusal.kind(), RefusalKind::Unreachable, "{name}: {refusal}");
        }
    }

    #[test]
    fn dns_answers_srv_for_named_ports() {
        assert_eq!(srv_of("_http._tcp.web.default.svc.cluster.local"), ["web.default.svc.cluster.local:80"]);
        assert_eq!(srv_of("_metrics._tcp.catalog.shop.svc.cluster.local"), ["catalog.shop.svc.cluster.local:9090"]);
        // A headless Service: each ready endpoint on its own port, under a name that answers A.
        let targets = srv_of("_pg._tcp.db.shop.svc.cluster.local");
        assert_eq!(targets, ["10-244-1-2.db.shop.svc.cluster.local:5433", "db-0.db.shop.svc.cluster.local:5433"]);
        for target in &targets {
            assert_eq!(addresses(target.split(':').next().unwrap()).len(), 1, "{target}");
        }
        // SRV names carry no addresses, and plain names no SRV.
        assert!(dns("_http._tcp.web.default.svc.cluster.local").unwrap().addresses.is_empty());
        assert!(dns("web.default.svc.cluster.local").unwrap().srv.is_empty());
    }

    #[test]
    fn dns_refuses_srv_names_of_ports_a_service_does_not_name() {
        for name in [
            "_grpc._tcp.web.default.svc.cluster.local",
            "_http._udp.web.default.svc.cluster.local",
            "_http._tcp.nothere.default.svc.cluster.local",
            "_http._tcp.10-244-0-1.default.pod.cluster.local",
            "_http._tcp.db-0.db.shop.svc.cluster.local",
        ] {
            let refusal = dns(name).unwrap_err();
            assert_ne!(refusal.kind(), RefusalKind::NotAllowed, "{name}: {refusal}");
        }
        assert_eq!(
            dns("_http._udp.web.default.svc.cluster.local"),
            Err(Refusal::NoNamedPort { service: "default/web".into(), port: "http".into(), protocol: "UDP" })
        );
    }

    #[test]
    fn dns_says_unknown_cluster_names_do_not_exist() {
        for name in [
            "nothere.default.svc.cluster.local",
            "nothere.shop",
            "a.b.c.d.e.cluster.local",
            "we_b.default.svc.cluster.local",
            "_x.cluster.local",
            "cluster.local",
        ] {
            let refusal = dns(name).unwrap_err();
            assert_eq!(refusal.kind(), RefusalKind::Unreachable, "{name}: {refusal}");
        }
    }

    #[test]
    fn dns_names_an_external_name_services_host_and_hides_hidden_namespaces() {
        let mut view = dns_cluster();
        view.services.push(Arc::new(
            serde_json::from_value(json!({"metadata": {"namespace": "default", "name": "ext"},
                "spec": {"type": "ExternalName", "externalName": "DB.example.com.", "ports": [{"name": "pg", "port": 5432}]}}))
            .unwrap(),
        ));
        let ask = |name: &str, view: &View| records(DnsQuery::read(name, &rules()), &rules(), view);
        let found = ask("ext.default.svc.cluster.local", &view).unwrap();
        assert_eq!(found, Records { alias: Some("db.example.com".into()), ..Default::default() });
        assert!(ask("_pg._tcp.ext.default.svc.cluster.local", &view).is_err());
        view.hidden = vec!["shop"];
        let refusal = ask("catalog.shop.svc.cluster.local", &view).unwrap_err();
        assert!(matches!(refusal, Refusal::Forbidden { .. }), "{refusal:?}");
    }

    #[test]
    fn a_name_in_the_cluster_domain_with_control_characters_is_refused_escaped() {
        let name = "web.def\u{7}ault.pod.cluster.local";
        let refusal = records(DnsQuery::read(name, &rules()), &rules(), &dns_cluster()).unwrap_err();
        assert!(matches!(refusal, Refusal::UnknownPod { .. }), "{refusal:?}");
        assert_eq!(refusal.to_string(), "no pod matches web.def\\u{7}ault.pod.cluster.local");
    }

    #[test]
    fn dns_questions_are_read_once_with_their_srv_prefix() {
        let read = |name: &str| DnsQuery::read(name, &rules());
        let question = read("_HTTP._tcp.web.default.svc.cluster.local.");
        assert_eq!(question.name, "_http._tcp.web.default.svc.cluster.local");
        assert_eq!(question.srv, Some(SrvPrefix { port: "http".into(), protocol: "TCP" }));
        assert_eq!(question.query, Query::Service { namespace: "default".into(), name: "web".into() });
        // Not an SRV prefix: the whole name is read (and has no valid form).
        for name in [
            "_http._quic.web.default.svc.cluster.local",
            "_-x._tcp.web.default.svc.cluster.local",
            "_http.web.default.svc",
        ] {
            assert_eq!(read(name).srv, None, "{name}");
            assert!(matches!(read(name).query, Query::Outside(_)), "{name}");
        }
    }

    /// The rules over any input: property tests.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A valid label: what the cluster names its objects.
        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
        }

        /// Names made of the characters that matter here: label characters,
        /// dots, upper case, and a few that must never reach a URL.
        fn name_like() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9.\\-_/%?# \n\u{1b}é]{0,70}"
        }

        fn labels_of(query: &Query) -> Vec<String> {
            match query {
                Query::Service { namespace, name } | Query::MaybeService { namespace, name, .. } => {
                    vec![namespace.clone(), name.clone()]
                }
                Query::PodHostname { namespace, hostname, subdomain } => {
                    vec![namespace.clone(), hostname.clone(), subdomain.clone()]
                }
                Query::PodIp { namespace, .. } => vec![namespace.clone()],
                _ => vec![],
            }
        }

        proptest! {
            #[test]
            fn no_input_panics(host in any::<String>(), port in any::<u16>()) {
                let _ = go(&host, port);
                let _ = dns(&host);
                let _ = Host::parse(&host).to_string();
            }

            #[test]
            fn no_name_like_input_panics(host in name_like(), port in any::<u16>()) {
                let _ = go(&host, port);
                let _ = dns(&host);
                let _ = dns(&format!("_{host}._tcp.web.default.svc.cluster.local"));
            }

            #[test]
            fn whatever_is_looked_up_is_made_of_valid_labels(host in name_like()) {
                let query = Query::read(&Host::parse(&host), &rules());
                for part in labels_of(&query) {
                    prop_assert!(is_label(&part), "{host:?} read as {query:?}");
                }
                if let Some(named) = query.named() {
                    prop_assert!(is_label(named.namespace()), "{host:?}");
                }
            }

            #[test]
            fn case_and_a_trailing_dot_change_nothing(host in name_like()) {
                prop_assume!(!host.ends_with('.'));
                let read = |h: &str| Query::read(&Host::parse(h), &rules());
                prop_assert_eq!(read(&host), read(&host.to_ascii_uppercase()));
                prop_assert_eq!(read(&host), read(&format!("{host}.")));
                prop_assert_eq!(go(&host, 80), go(&format!("{}.", host.to_ascii_uppercase()), 80));
            }

            #[test]
            fn service_names_of_valid_labels_are_read_as_services(svc in label(), ns in label()) {
                let query = Query::read(&Host::parse(&format!("{svc}.{ns}.svc.cluster.local")), &rules());
                prop_assert_eq!(query, Query::Service { namespace: ns, name: svc });
            }

            #[test]
            fn ipv4_mapped_addresses_read_as_ipv4(a in any::<u8>(), b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
                let v4 = Ipv4Addr::new(a, b, c, d);
                let mapped = Host::Ip(IpAddr::V6(v4.to_ipv6_mapped()));
                prop_assert_eq!(Query::read(&mapped, &rules()), Query::Ip(IpAddr::V4(v4)));
                let text = Host::parse(&format!("[::ffff:{v4}]"));
                prop_assert_eq!(Query::read(&text, &rules()), Query::Ip(IpAddr::V4(v4)));
            }
        }
    }
}
