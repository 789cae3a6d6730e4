//! Direct GETs, for namespaces where RBAC lets a user read objects by name but
//! not list or watch them. No cache can be kept there, so each connection
//! fetches just the objects its name needs and hands them to the same pure
//! rules as the caches ([`crate::route`]):
//!
//! * a Service name: the Service and its Endpoints (two GETs);
//! * a per-pod name `host.sub.ns.svc`: the Endpoints of `sub`, then the pods
//!   they name with hostname `host`.
//!
//! A Service's EndpointSlices cannot be fetched by name (their names are
//! generated), so its core/v1 Endpoints object is read instead. It has the
//! Service's name, is kept by the endpoints controller, and is still served
//! although deprecated since Kubernetes 1.33; [`slices_of`] turns it into the
//! EndpointSlices the rules read. A pod cannot be found by IP with GETs alone:
//! `a-b-c-d.ns.pod` names in such a namespace are refused, saying why.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use kube::{Api, Client};

use crate::objects::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice, ObjectReference, Pod,
    PodAsSent, Service, ServiceAsSent,
};
use crate::route::Named;

/// The objects one name needs from one namespace, fetched just now.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fetched {
    pub namespace: String,
    pub service: Option<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<Pod>>,
}

/// Fetches what `named` needs, or `None` for what GETs cannot find (a pod by IP).
/// Objects that do not exist are simply absent: the rules then refuse the name.
pub(crate) async fn fetch(client: &Client, named: &Named) -> Result<Option<Fetched>, kube::Error> {
    let namespace = named.namespace().to_string();
    let services: Api<ServiceAsSent> = Api::namespaced(client.clone(), &namespace);
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
    let fetched = match named {
        Named::Service { name, .. } => {
            let (service, endpoints) = tokio::try_join!(services.get_opt(name), endpoints.get_opt(name))?;
            Fetched {
                service: service.map(|svc| Arc::new(Service::from(svc))),
                slices: endpoints.iter().flat_map(slices_of).map(Arc::new).collect(),
                namespace,
                pods: Vec::new(),
            }
        }
        Named::PodHostname { hostname, subdomain, .. } => {
            let names: Vec<(String, String)> = match endpoints.get_opt(subdomain).await? {
                Some(endpoints) => {
                    pods_with_hostname(&endpoints, hostname).into_iter().map(|pod| (namespace.clone(), pod)).collect()
                }
                None => Vec::new(),
            };
            Fetched { pods: fetch_pods(client, &names).await?, namespace, ..Fetched::default() }
        }
        Named::PodIp { .. } => return Ok(None),
    };
    Ok(Some(fetched))
}

/// The pods, as (namespace, name), that `slices` list at `ip`, ready or not.
pub(crate) fn pods_at<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, ip: IpAddr) -> Vec<(String, String)> {
    let mut pods: Vec<(String, String)> = slices
        .into_iter()
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|endpoint| endpoint.has_address(ip))
        .filter_map(|endpoint| endpoint.pod().map(|(ns, name)| (ns.to_string(), name.to_string())))
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

/// The pods `names` (namespace, name) names that exist, fetched by name.
pub(crate) async fn fetch_pods(client: &Client, names: &[(String, String)]) -> Result<Vec<Arc<Pod>>, kube::Error> {
    let mut found = Vec::new();
    for (namespace, name) in names {
        let pods: Api<PodAsSent> = Api::namespaced(client.clone(), namespace);
        found.extend(pods.get_opt(name).await?.map(|pod| Arc::new(Pod::from(pod))));
    }
    Ok(found)
}

/// The names of the pods an Endpoints object lists under `hostname`, ready or not.
fn pods_with_hostname(endpoints: &Endpoints, hostname: &str) -> Vec<String> {
    let mut names: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten().chain(s.not_ready_addresses.iter().flatten()))
        .filter(|a| a.hostname.as_deref() == Some(hostname))
        .filter_map(|a| a.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod"))?.name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One EndpointSlice per subset of a core/v1 Endpoints object, labelled with
/// its Service's name like the ones the EndpointSlice controller writes.
/// Endpoints keep only ready and not-ready addresses, so a not-ready one
/// becomes `ready: false` with `serving` unknown: the rules never use it.
pub(crate) fn slices_of(endpoints: &Endpoints) -> Vec<EndpointSlice> {
    let service: Arc<str> = endpoints.metadata.name.as_deref().unwrap_or_default().into();
    let namespace: Arc<str> = endpoints.metadata.namespace.as_deref().unwrap_or_default().into();
    let endpoint = |address: &EndpointAddress, ready: bool| SliceEndpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
        hostname: address.hostname.clone(),
        target_ref: address.target_ref.as_ref().map(|r| ObjectReference {
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }),
        node_name: address.node_name.as_deref().map(crate::objects::node_name),
    };
    endpoints
        .subsets
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, subset)| {
            let ready = subset.addresses.iter().flatten().map(|a| endpoint(a, true));
            let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| endpoint(a, false));
            let members: Vec<SliceEndpoint> = ready.chain(not_ready).collect();
            EndpointSlice {
                namespace: namespace.clone(),
                name: format!("{service}-endpoints-{i}").into(),
                service: Some(service.clone()),
                endpoints: Some(members),
                ports: Some(
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| SlicePort { name: p.name.clone(), port: Some(p.port), protocol: p.protocol.clone() })
                        .collect(),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two subsets, as the endpoints controller writes them for pods whose
    /// named port differs: one ready address each, and one not ready.
    fn endpoints() -> Endpoints {
        let pod = |name: &str| json!({"kind": "Pod", "namespace": "shop", "name": name});
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "subsets": [
                {"addresses": [{"ip": "10.0.0.1", "hostname": "web-1", "targetRef": pod("web-1")}],
                 "notReadyAddresses": [{"ip": "10.0.0.3", "hostname": "web-3", "targetRef": pod("web-3")}],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [{"ip": "fd00::2", "hostname": "web-2", "targetRef": pod("web-2")}],
                 "ports": [{"name": "http", "port": 8081, "protocol": "TCP"}]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn each_subset_becomes_a_slice_of_the_service() {
        let slices = slices_of(&endpoints());
        assert_eq!(slices.len(), 2);
        for slice in &slices {
            assert_eq!(&*slice.namespace, "shop");
            assert_eq!(slice.service(), Some("web"));
        }
        assert_ne!(slices[0].name, slices[1].name);

        let ports = slices[1].ports.as_ref().unwrap();
        assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), Some(8081)));

        let members = slices[0].endpoints.as_ref().unwrap();
        let summary: Vec<_> = members
            .iter()
            .map(|e| {
                let r = e.target_ref.as_ref().unwrap();
                (r.name.as_deref().unwrap(), e.addresses[0].as_str(), e.conditions.as_ref().unwrap().ready)
            })
            .collect();
        assert_eq!(summary, [("web-1", "10.0.0.1", Some(true)), ("web-3", "10.0.0.3", Some(false))]);
        // Not ready in Endpoints says nothing of serving: the rules must not fall back to it.
        assert_eq!(members[1].conditions.as_ref().unwrap().serving, None);
    }

    #[test]
    fn empty_endpoints_give_no_slices() {
        let none: Endpoints = serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap();
        assert!(slices_of(&none).is_empty());
    }

    #[test]
    fn the_pods_at_an_ip_are_those_the_slices_name_there() {
        let slices = slices_of(&endpoints());
        assert_eq!(pods_at(&slices, "10.0.0.3".parse().unwrap()), [("shop".to_string(), "web-3".to_string())]);
        assert_eq!(pods_at(&slices, "fd00::2".parse().unwrap()), [("shop".to_string(), "web-2".to_string())]);
        assert!(pods_at(&slices, "10.0.0.9".parse().unwrap()).is_empty());
    }

    #[test]
    fn per_pod_names_are_found_ready_or_not() {
        assert_eq!(pods_with_hostname(&endpoints(), "web-2"), ["web-2"]);
        assert_eq!(pods_with_hostname(&endpoints(), "web-3"), ["web-3"]);
        assert!(pods_with_hostname(&endpoints(), "web-9").is_empty());
    }
}
