//! The cluster's objects as kubesocks keeps them: only the fields that
//! resolution reads, deserialized straight from the API server's JSON.
//!
//! The API server sends a production pod as about 5 KiB of JSON (containers,
//! env, probes, labels, annotations, managedFields, conditions). Read into
//! k8s-openapi's `Pod`, all of that is built and held: about 24 KiB of heap
//! per cached pod, so a cluster of 20 000 pods cost half a gigabyte. Read
//! into the types here, serde skips every other field without building it,
//! and a cached pod holds a few hundred bytes (the figures per kind are
//! printed by the cache's test `a_cached_object_holds_…`).
//!
//! Each kind comes twice. The `…AsSent` type is what the watch reads: a
//! [`kube::Resource`], as kube-runtime's watcher needs, so with an
//! `ObjectMeta` (name, namespace, the version a watch resumes from). The
//! plain type is what the caches keep (see `cluster::store`): the same
//! fields with the name and namespace as shared strings and no
//! `ObjectMeta`. Field names and nesting follow the API's, so a reader of
//! the Kubernetes reference finds each field where they expect it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::{Deserialize, Deserializer};

/// A kind as the caches keep it (`cluster::store`), made from what its
/// watch reads.
pub(crate) trait Kept: Sized + Send + Sync + 'static {
    /// The type the watch reads.
    type Sent: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// What lookups find an object by, besides its name.
    type Key: Eq + std::hash::Hash + Clone + Send + Sync + 'static;

    /// What is kept of `sent`, in `namespace` (its namespace, shared).
    fn keep(sent: &Self::Sent, namespace: Arc<str>) -> Self;
    /// The same with a namespace string of its own, for an object fetched
    /// alone rather than kept in a store.
    fn keep_alone(sent: &Self::Sent) -> Self {
        let namespace = kube::Resource::meta(sent).namespace.as_deref().unwrap_or_default().into();
        Self::keep(sent, namespace)
    }
    /// Its name (for the cluster-scoped Namespaces too).
    fn name(&self) -> &Arc<str>;
    /// The keys it is found by.
    fn keys(&self) -> Vec<Self::Key>;
}

/// The label an EndpointSlice names its Service with.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The metadata kept of every object, as the API server sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<Time>,
    /// Read for an EndpointSlice's [`SERVICE_NAME_LABEL`], and not kept.
    labels: Option<BTreeMap<String, String>>,
}

impl From<Metadata> for ObjectMeta {
    /// Kept as kube's `ObjectMeta`, which kube-runtime reads: the name, the
    /// version the watch resumes from and whether it is being deleted, every
    /// other field left empty (the uid too: nothing reads it, and the
    /// store would hold it twice).
    fn from(kept: Metadata) -> ObjectMeta {
        ObjectMeta {
            name: kept.name,
            namespace: kept.namespace,
            resource_version: kept.resource_version,
            deletion_timestamp: kept.deletion_timestamp,
            ..ObjectMeta::default()
        }
    }
}

fn metadata<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    Metadata::deserialize(deserializer).map(ObjectMeta::from)
}

/// A Service: its addresses, ports, and where an ExternalName points.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "ServiceAsSent")]
pub(crate) struct Service {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub spec: Option<ServiceSpec>,
}

/// A Service as the watch reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ServiceAsSent {
    #[serde(deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpec>,
}

impl From<ServiceAsSent> for Service {
    fn from(sent: ServiceAsSent) -> Service {
        Service::keep_alone(&sent)
    }
}

impl Kept for Service {
    type Sent = ServiceAsSent;
    /// Its ClusterIPs.
    type Key = IpAddr;

    fn keep(sent: &ServiceAsSent, namespace: Arc<str>) -> Service {
        Service { namespace, name: name_of(&sent.metadata), spec: sent.spec.clone() }
    }
    fn name(&self) -> &Arc<str> {
        &self.name
    }
    fn keys(&self) -> Vec<IpAddr> {
        let ips = self.spec.as_ref().and_then(|s| s.cluster_ips.as_deref()).unwrap_or_default();
        ips.iter().filter_map(|ip| ip.parse().ok()).collect()
    }
}

/// The one string of node `name`: a cluster has thousands of pods and
/// endpoints on a few nodes, so each node's name is held once, however many
/// refer to it. Names no one holds any more are swept when the table has
/// doubled since the last sweep.
pub(crate) fn node_name(name: &str) -> Arc<str> {
    use std::collections::HashMap;
    use std::sync::{Mutex, Weak};
    struct Nodes {
        by_name: HashMap<Box<str>, Weak<str>>,
        swept_at: usize,
    }
    static NODES: Mutex<Option<Nodes>> = Mutex::new(None);
    let mut nodes = NODES.lock().unwrap();
    let nodes = nodes.get_or_insert_with(|| Nodes { by_name: HashMap::new(), swept_at: 0 });
    if let Some(held) = nodes.by_name.get(name).and_then(Weak::upgrade) {
        return held;
    }
    let held: Arc<str> = Arc::from(name);
    nodes.by_name.insert(name.into(), Arc::downgrade(&held));
    if nodes.by_name.len() >= 2 * nodes.swept_at.max(64) {
        nodes.by_name.retain(|_, weak| weak.strong_count() > 0);
        nodes.swept_at = nodes.by_name.len();
    }
    held
}

fn node<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<Cow<'de, str>>::deserialize(deserializer)?.as_deref().map(node_name))
}

fn name_of(meta: &ObjectMeta) -> Arc<str> {
    meta.name.as_deref().unwrap_or_default().into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub external_name: Option<String>,
    /// `"None"` for a headless Service.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    pub ports: Option<Vec<ServicePort>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: Option<String>,
}

/// An EndpointSlice: its Service, ports and endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "EndpointSliceAsSent")]
pub(crate) struct EndpointSlice {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The Service it belongs to, from its [`SERVICE_NAME_LABEL`].
    pub service: Option<Arc<str>>,
    pub endpoints: Option<Vec<Endpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}

/// An EndpointSlice as the watch reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "SliceJson")]
pub(crate) struct EndpointSliceAsSent {
    pub metadata: ObjectMeta,
    /// Its [`SERVICE_NAME_LABEL`] (kept on its own: a map of one label
    /// would take a whole B-tree node).
    pub service: Option<String>,
    pub endpoints: Option<Vec<Endpoint>>,
    pub ports: Option<Vec<EndpointPort>>,
}

#[derive(Deserialize)]
struct SliceJson {
    metadata: Metadata,
    endpoints: Option<Vec<Endpoint>>,
    ports: Option<Vec<EndpointPort>>,
}

impl From<SliceJson> for EndpointSliceAsSent {
    fn from(sent: SliceJson) -> EndpointSliceAsSent {
        let mut metadata = sent.metadata;
        let service = metadata.labels.take().and_then(|mut labels| labels.remove(SERVICE_NAME_LABEL));
        EndpointSliceAsSent { metadata: metadata.into(), service, endpoints: sent.endpoints, ports: sent.ports }
    }
}

impl From<EndpointSliceAsSent> for EndpointSlice {
    fn from(sent: EndpointSliceAsSent) -> EndpointSlice {
        EndpointSlice::keep_alone(&sent)
    }
}

impl Kept for EndpointSlice {
    type Sent = EndpointSliceAsSent;
    /// Its (namespace, Service).
    type Key = (Arc<str>, Arc<str>);

    fn keep(sent: &EndpointSliceAsSent, namespace: Arc<str>) -> EndpointSlice {
        EndpointSlice {
            namespace,
            name: name_of(&sent.metadata),
            service: sent.service.as_deref().map(Arc::from),
            endpoints: sent.endpoints.clone(),
            ports: sent.ports.clone(),
        }
    }
    fn name(&self) -> &Arc<str> {
        &self.name
    }
    fn keys(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.service.iter().map(|svc| (self.namespace.clone(), svc.clone())).collect()
    }
}

impl EndpointSlice {
    /// The name of the Service this slice belongs to.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Endpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    pub conditions: Option<EndpointConditions>,
    pub hostname: Option<String>,
    pub target_ref: Option<ObjectReference>,
    /// The node its pod runs on (one string per node, shared: see [`node_name`]).
    #[serde(default, deserialize_with = "node")]
    pub node_name: Option<Arc<str>>,
}

impl Endpoint {
    /// The pod it is, as (namespace, name), if its target is a pod.
    pub(crate) fn pod(&self) -> Option<(&str, &str)> {
        let r = self.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod"))?;
        Some((r.namespace.as_deref()?, r.name.as_deref()?))
    }

    /// Whether one of its addresses is `ip`.
    pub(crate) fn has_address(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.parse::<IpAddr>().is_ok_and(|a| a.to_canonical() == ip))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct EndpointConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

/// What an endpoint stands for: a Pod, for the endpoints kubesocks forwards to.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ObjectReference {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct EndpointPort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
}

/// A Pod as kubesocks keeps it: its names, its per-pod DNS name, its IPs,
/// and whether it runs. Pods are most of a cluster's objects, so a kept pod
/// is a few small fields and no `ObjectMeta` (360 bytes on its own, before
/// any string in it); its namespace is one string shared by every pod of
/// the namespace (see `cluster::pods`). Read from the API's JSON through
/// [`PodAsSent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "PodAsSent")]
pub(crate) struct Pod {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// `spec.hostname` and `spec.subdomain`, when both are set: only then
    /// does the pod have a per-pod name, `HOSTNAME.SUBDOMAIN.NS.svc`.
    pub host: Option<Box<(Box<str>, Box<str>)>>,
    pub phase: Phase,
    /// `metadata.deletionTimestamp` is set: the pod is terminating.
    pub deleting: bool,
    /// `status.podIPs` (those that parse).
    pub ips: Box<[IpAddr]>,
    /// `spec.nodeName`, once scheduled (one string per node, shared: see [`node_name`]).
    pub node: Option<Arc<str>>,
}

/// A pod's `status.phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// `Unknown`, none, or one this version does not know.
    Unknown,
}

impl Phase {
    fn parse(phase: Option<&str>) -> Phase {
        match phase {
            Some("Pending") => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            _ => Phase::Unknown,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Unknown => "Unknown",
        }
    }
}

impl Pod {
    /// Running and not being deleted: a pod to dial.
    pub(crate) fn is_running(&self) -> bool {
        !self.deleting && self.phase == Phase::Running
    }

    /// `NAMESPACE/NAME`.
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Its per-pod name's hostname and subdomain, if it has one.
    pub(crate) fn host(&self) -> Option<(&str, &str)> {
        self.host.as_deref().map(|(h, s)| (&**h, &**s))
    }
}

/// What a pod is found by, besides its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PodKey {
    Ip(IpAddr),
    /// Its per-pod name: (namespace, hostname, subdomain). Boxed: most pods
    /// have none, and an IP key is then no bigger than an IP.
    Host(Box<(Arc<str>, Box<str>, Box<str>)>),
}

impl PodKey {
    pub(crate) fn host(namespace: Arc<str>, hostname: &str, subdomain: &str) -> PodKey {
        PodKey::Host(Box::new((namespace, hostname.into(), subdomain.into())))
    }
}

impl Kept for Pod {
    type Sent = PodAsSent;
    type Key = PodKey;

    fn keep(sent: &PodAsSent, namespace: Arc<str>) -> Pod {
        let (spec, status) = (sent.spec.as_ref(), sent.status.as_ref());
        let ips = status.and_then(|s| s.pod_ips.as_deref()).unwrap_or_default();
        Pod {
            namespace,
            name: name_of(&sent.metadata),
            host: match (spec.and_then(|s| s.hostname.as_deref()), spec.and_then(|s| s.subdomain.as_deref())) {
                (Some(h), Some(s)) => Some(Box::new((h.into(), s.into()))),
                _ => None,
            },
            phase: Phase::parse(status.and_then(|s| s.phase.as_deref())),
            deleting: sent.metadata.deletion_timestamp.is_some(),
            ips: ips.iter().filter_map(|i| Some(i.ip.parse::<IpAddr>().ok()?.to_canonical())).collect(),
            node: spec.and_then(|s| s.node_name.as_deref()).map(node_name),
        }
    }
    fn name(&self) -> &Arc<str> {
        &self.name
    }
    fn keys(&self) -> Vec<PodKey> {
        let host = self.host().map(|(h, s)| PodKey::host(self.namespace.clone(), h, s));
        self.ips.iter().map(|ip| PodKey::Ip(*ip)).chain(host).collect()
    }
}

impl From<PodAsSent> for Pod {
    fn from(sent: PodAsSent) -> Pod {
        Pod::keep_alone(&sent)
    }
}

/// A Pod as the API server sends it, with only what [`Pod`] keeps read: the
/// type the pods' watch reads (it must be a [`kube::Resource`]), each one
/// turned into a [`Pod`] as it arrives.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PodAsSent {
    #[serde(deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PodIp {
    pub ip: String,
}

/// A Namespace: only that it exists.
#[derive(Debug, Clone, Default)]
pub(crate) struct Namespace {
    pub name: Arc<str>,
}

/// A Namespace as the watch reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct NamespaceAsSent {
    #[serde(deserialize_with = "metadata")]
    pub metadata: ObjectMeta,
}

impl Kept for Namespace {
    type Sent = NamespaceAsSent;
    type Key = ();

    fn keep(sent: &NamespaceAsSent, _: Arc<str>) -> Namespace {
        Namespace { name: name_of(&sent.metadata) }
    }
    fn name(&self) -> &Arc<str> {
        &self.name
    }
    fn keys(&self) -> Vec<()> {
        Vec::new()
    }
}

/// Makes a type a [`kube::Resource`] of the API's kind, group and version.
macro_rules! resource {
    ($type:ty, $scope:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

resource!(ServiceAsSent, NamespaceResourceScope, "Service", "", "v1", "services");
resource!(EndpointSliceAsSent, NamespaceResourceScope, "EndpointSlice", "discovery.k8s.io", "v1", "endpointslices");
resource!(PodAsSent, NamespaceResourceScope, "Pod", "", "v1", "pods");
resource!(NamespaceAsSent, ClusterResourceScope, "Namespace", "", "v1", "namespaces");

#[cfg(test)]
mod tests {
    use kube::Resource as _;
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_fields_resolution_reads_are_kept() {
        let slice: EndpointSliceAsSent = serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "shop", "resourceVersion": "7",
                         "labels": {SERVICE_NAME_LABEL: "web", "team": "payments"},
                         "annotations": {"a": "b"}, "managedFields": [{"manager": "m"}]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.1"], "nodeName": "n1", "conditions": {"ready": true},
                           "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "u"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
        }))
        .unwrap();
        assert_eq!(slice.service.as_deref(), Some("web"));
        let meta = &slice.metadata;
        assert!(meta.labels.is_none() && meta.annotations.is_none() && meta.managed_fields.is_none());
        assert_eq!(slice.metadata.resource_version.as_deref(), Some("7"), "the watch resumes from it");
        let endpoint = &slice.endpoints.as_ref().unwrap()[0];
        assert_eq!(endpoint.target_ref.as_ref().unwrap().name.as_deref(), Some("web-1"));
        assert_eq!(endpoint.node_name.as_deref(), Some("n1"));
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        let kept = EndpointSlice::from(slice);
        assert_eq!((&*kept.namespace, &*kept.name, kept.service()), ("shop", "web-x", Some("web")));
    }

    #[test]
    fn pods_and_endpoints_on_one_node_share_its_name() {
        let on = |node: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": node}}))
                .unwrap()
        };
        let (a, b, c) = (on("node-shared-1"), on("node-shared-1"), on("node-other-1"));
        assert!(Arc::ptr_eq(a.node.as_ref().unwrap(), b.node.as_ref().unwrap()));
        assert_eq!(c.node.as_deref(), Some("node-other-1"));
        let endpoint: Endpoint = serde_json::from_value(json!({"addresses": [], "nodeName": "node-shared-1"})).unwrap();
        assert!(Arc::ptr_eq(a.node.as_ref().unwrap(), endpoint.node_name.as_ref().unwrap()));
        let unscheduled: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"}})).unwrap();
        assert_eq!(unscheduled.node, None);
    }

    #[test]
    fn a_pod_keeps_its_names_ips_phase_and_whether_it_is_deleted() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "db-0", "namespace": "shop", "resourceVersion": "9", "uid": "u",
                         "deletionTimestamp": "2026-12-01T00:00:00Z", "labels": {"app": "db"}},
            "spec": {"hostname": "db-0", "subdomain": "db", "containers": [{"name": "pg", "image": "postgres"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}, {"ip": "not an IP"}]}
        }))
        .unwrap();
        assert_eq!(pod.full_name(), "shop/db-0");
        assert_eq!(pod.host(), Some(("db-0", "db")));
        assert_eq!(&*pod.ips, ["10.0.0.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]);
        assert_eq!((pod.phase, pod.deleting, pod.is_running()), (Phase::Running, true, false));

        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"},
                                                     "spec": {"hostname": "p"}, "status": {"phase": "Evicted"}}))
        .unwrap();
        assert_eq!(
            (pod.host(), pod.phase.as_str(), pod.ips.len()),
            (None, "Unknown", 0),
            "a hostname alone is no name"
        );
    }

    #[test]
    fn each_kind_is_the_api_servers_resource() {
        assert_eq!(ServiceAsSent::url_path(&(), Some("shop")), "/api/v1/namespaces/shop/services");
        assert_eq!(EndpointSliceAsSent::url_path(&(), None), "/apis/discovery.k8s.io/v1/endpointslices");
        assert_eq!(PodAsSent::url_path(&(), None), "/api/v1/pods");
        assert_eq!(NamespaceAsSent::url_path(&(), None), "/api/v1/namespaces");
        assert_eq!(EndpointSliceAsSent::api_version(&()), "discovery.k8s.io/v1");
    }
}
