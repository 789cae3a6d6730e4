//! The rules: a [`Query`] and a port, against a snapshot of the caches
//! ([`ClusterView`]), to a [`Target`] (pod ports to port-forward to) or a
//! typed [`Refusal`]. Pure: no I/O, no clock, so every rule has a fast unit
//! test below.

use std::net::IpAddr;
use std::sync::Arc;

use crate::objects::{Endpoint as SliceEndpoint, EndpointSlice, Pod, Service};

use super::name::{Escaped, Host, Query};

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
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub namespace: String,
    pub pod: String,
    pub port: u16,
    /// The node the pod runs on, when known: shown, not dialled (the API
    /// server finds the pod's kubelet), so not part of what it is.
    pub node: Option<Arc<str>>,
}

impl Endpoint {
    /// Pod `namespace/pod`'s `port`.
    pub(crate) fn new(namespace: impl Into<String>, pod: impl Into<String>, port: u16) -> Endpoint {
        Endpoint { namespace: namespace.into(), pod: pod.into(), port, node: None }
    }

    /// The same, running on `node`.
    pub(crate) fn on(self, node: Option<Arc<str>>) -> Endpoint {
        Endpoint { node, ..self }
    }
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        (&self.namespace, &self.pod, self.port) == (&other.namespace, &other.pod, other.port)
    }
}

impl Eq for Endpoint {}

impl std::hash::Hash for Endpoint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.namespace, &self.pod, self.port).hash(state);
    }
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
            let pods: Vec<_> = view.pods_by_ip(ip).into_iter().filter(|p| *p.namespace == *namespace).collect();
            pod_target(&pods, port, name)
        }
        Query::UnknownClusterName(name) => Err(Refusal::UnknownPod { what: name }),
        Query::Outside(name) => Err(Refusal::OutsideCluster { host: name }),
    }
}

/// RBAC hiding a namespace that a name certainly points into is a refusal.
pub(super) fn must_see(view: &impl ClusterView, namespace: &str) -> Result<(), Refusal> {
    view.visible(namespace).map_err(|reason| Refusal::Forbidden { namespace: namespace.to_string(), reason })
}

/// The Service a name points at. `maybe` is the whole name of a `svc.ns`
/// form, which is a cluster name only if namespace `ns` exists (or, where
/// namespaces cannot be listed, if the Service is to be seen).
pub(super) fn find_service(
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

/// Pods found by IP or per-pod name: the running one wins (a finished pod may
/// still hold an IP that a new pod reuses).
fn pod_target(pods: &[Arc<Pod>], port: u16, what: String) -> Result<Target, Refusal> {
    let Some(first) = pods.first() else { return Err(Refusal::UnknownPod { what }) };
    let Some(pod) = pods.iter().find(|p| p.is_running()) else {
        let phase = if first.deleting { "Terminating" } else { first.phase.as_str() };
        return Err(Refusal::PodNotRunning { pod: first.full_name(), phase: phase.to_string() });
    };
    let endpoint = Endpoint::new(&*pod.namespace, &*pod.name, port).on(pod.node.clone());
    Ok(Target { what: format!("{} ({what})", pod.full_name()), endpoints: vec![endpoint] })
}

/// Service port → the pod ports behind it, read from its EndpointSlices.
fn service_target(svc: &Service, port: u16, view: &impl ClusterView) -> Result<Target, Refusal> {
    let namespace = svc.namespace.to_string();
    let name = svc.name.to_string();
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
            let endpoint = Endpoint::new(pod.0, pod.1, pod_port).on(ep.node_name.clone());
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
    ep.pod().map(|(namespace, name)| (namespace.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::name::{Named, Rules, is_dns_name, is_label, is_this_machine};
    use crate::testing::*;
    use serde_json::json;

    /// Reads and resolves in one step, as the dial path does.
    fn resolve(host: &Host, port: u16, rules: &Rules, view: &impl ClusterView) -> Result<Target, Refusal> {
        super::resolve(Query::read(host, rules), port, view)
    }

    fn named(host: &Host, rules: &Rules) -> Option<Named> {
        Query::read(host, rules).named()
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
        view.hidden = vec!["com".into()];
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
        p.deleting = true;
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
        view.hidden = vec!["shop".into()];
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

    /// The rules over any input: property tests.
    mod properties {
        use super::*;
        use crate::route::records::{DnsQuery, Records, records};
        use proptest::prelude::*;
        use std::net::Ipv4Addr;

        fn dns(name: &str) -> Result<Records, Refusal> {
            records(DnsQuery::read(name, &rules()), &rules(), &dns_cluster())
        }

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
