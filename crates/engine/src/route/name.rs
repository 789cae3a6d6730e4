//! Reading a name: what a client's host says before anything is looked up.
//!
//! [`Query::read`] turns a host (a name or an IP) into a [`Query`] under the
//! [`Rules`] (cluster domain, default namespace): a Service name, a per-pod
//! name, a pod's dashed IP, an address, or a name outside the cluster. Only
//! names made of RFC 1123 labels are ever looked up. [`Escaped`] is how a
//! client-chosen name is shown in logs and answers.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
pub(super) fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The longest DNS name, without its trailing dot (RFC 1035 §3.1).
const MAX_NAME: usize = 253;
/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// An RFC 1123 label, lower-case: 1–63 of `a-z0-9-`, neither starting nor
/// ending with `-`.
pub(super) fn is_label(label: &str) -> bool {
    (1..=MAX_LABEL).contains(&label.len())
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A lower-case DNS name of RFC 1123 labels within DNS lengths. Only such
/// names are looked up: anything else (a `/`, a `%`, a space, a control
/// character) could reach an API URL or a map key.
pub(super) fn is_dns_name(name: &str) -> bool {
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
    /// it to make that namespace readable *before* it calls [`resolve`](super::rules::resolve): it
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
