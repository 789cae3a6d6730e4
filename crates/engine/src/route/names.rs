//! What one cluster answers, as a list: the PAC file sends these names and
//! addresses to kubesocks and everything else `DIRECT`.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// The names one cluster answers, as the PAC file matches them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClusterNames {
    /// The cluster's DNS domain (`cluster.local`).
    pub domain: String,
    /// The namespaces that exist (or that kubesocks knows of), for `svc.ns`.
    pub namespaces: BTreeSet<String>,
    /// ClusterIPs and Pod IPs.
    pub addresses: BTreeSet<IpAddr>,
}
