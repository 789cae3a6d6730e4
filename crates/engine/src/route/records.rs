//! DNS records: what the DNS helper answers for a name, from the same
//! snapshot and the same reading of names as a proxy connection.

use std::net::IpAddr;
use std::sync::Arc;

use crate::objects::{Endpoint as SliceEndpoint, EndpointSlice, Service};

use super::name::{Host, Query, Rules, is_label, normalize};
use super::rules::{ClusterView, Refusal, find_service, must_see};

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
                .filter(|p| p.is_running())
                .flat_map(|p| p.ips.iter().copied())
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
            let running = view.pods_by_ip(ip).iter().any(|p| *p.namespace == *namespace && p.is_running());
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
    let namespace = svc.namespace.to_string();
    let name = svc.name.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RefusalKind;
    use crate::testing::*;
    use serde_json::json;

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
        view.hidden = vec!["shop".into()];
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
}
