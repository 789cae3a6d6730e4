//! An in-memory cluster for the rules' unit tests: a [`ClusterView`] made
//! of plain object lists, and builders for the objects in it.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::name::Rules;
use super::rules::ClusterView;

/// A snapshot made of plain object lists, the way the caches hold them.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) namespaces: Option<Vec<&'static str>>,
    pub(crate) hidden: Vec<&'static str>,
    pub(crate) services: Vec<Arc<Service>>,
    pub(crate) slices: Vec<Arc<EndpointSlice>>,
    pub(crate) pods: Vec<Arc<Pod>>,
}

pub(crate) fn ns_of<T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>>(
    o: &T,
) -> &str {
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
                    && s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).map(|s| s.as_str())
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

pub(crate) fn service(ns: &str, name: &str, ips: &[&str], ports: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ips.first(), "clusterIPs": ips, "ports": ports}
        }))
        .unwrap(),
    )
}

pub(crate) fn slice(ns: &str, svc: &str, ports: serde_json::Value, endpoints: serde_json::Value) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-abc"),
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints
        }))
        .unwrap(),
    )
}

pub(crate) fn ep(ns: &str, pod: &str, ready: bool) -> serde_json::Value {
    json!({"addresses": ["10.244.0.9"], "conditions": {"ready": ready, "serving": ready, "terminating": false},
           "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
}

pub(crate) fn pod(ns: &str, name: &str, ips: &[&str], phase: &str, host: Option<(&str, &str)>) -> Arc<Pod> {
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

pub(crate) fn rules() -> Rules {
    Rules::new("cluster.local", "default")
}

/// A cluster with `default/web` (port 80 → pods web-1, web-2 on 8080) and
/// `shop/catalog` (named targetPort: pods listen on different numbers).
pub(crate) fn cluster() -> View {
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

/// [`cluster`] plus a headless Service `shop/db` (port `pg`): pod db-0
/// (hostname db-0) and a pod without a hostname are ready, a third is not.
pub(crate) fn dns_cluster() -> View {
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
