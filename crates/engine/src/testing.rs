//! One in-memory cluster for the engine's tests, its fuzz targets and its
//! in-process tier: a [`ClusterView`] made of plain object lists, builders
//! for the objects in it, a small cluster of every kind of object the rules
//! tell apart, and an API server in memory that serves that cluster to a
//! real engine (lists answer, watches wait, port-forwards are forbidden).

use std::net::IpAddr;
use std::sync::Arc;

use crate::objects::{EndpointSlice, Pod, Service};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::http::{Request, Response};
use serde_json::{Value, json};

use crate::route::ClusterView;

/// A cluster made of plain object lists, read the way the caches read theirs.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) namespaces: Option<Vec<String>>,
    pub(crate) hidden: Vec<String>,
    pub(crate) services: Vec<Arc<Service>>,
    pub(crate) slices: Vec<Arc<EndpointSlice>>,
    pub(crate) pods: Vec<Arc<Pod>>,
}

fn has_ip<'a>(ips: impl IntoIterator<Item = &'a String>, ip: IpAddr) -> bool {
    ips.into_iter().any(|s| s.parse::<IpAddr>().ok() == Some(ip))
}

impl ClusterView for View {
    fn namespace_exists(&self, namespace: &str) -> Option<bool> {
        self.namespaces.as_ref().map(|n| n.iter().any(|n| n == namespace))
    }
    fn visible(&self, namespace: &str) -> Result<(), String> {
        if self.hidden.iter().any(|h| h == namespace) {
            Err("RBAC does not allow list services".into())
        } else {
            Ok(())
        }
    }
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.iter().find(|s| &*s.namespace == namespace && &*s.name == name).cloned()
    }
    fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.services
            .iter()
            .find(|s| has_ip(s.spec.as_ref().and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten(), ip))
            .cloned()
    }
    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices.iter().filter(|s| &*s.namespace == namespace && s.service() == Some(service)).cloned().collect()
    }
    fn pods_by_ip(&self, ip: IpAddr) -> Vec<Arc<Pod>> {
        self.pods.iter().filter(|p| p.ips.contains(&ip)).cloned().collect()
    }
    fn pods_by_hostname(&self, namespace: &str, hostname: &str, subdomain: &str) -> Vec<Arc<Pod>> {
        self.pods
            .iter()
            .filter(|p| &*p.namespace == namespace && p.host() == Some((hostname, subdomain)))
            .cloned()
            .collect()
    }
}

/// The small cluster's objects, as the API server lists them: namespaces
/// `default`, `shop` and `secret` (hidden from the view); Services `web`
/// (dual-stack ClusterIP), `catalog` (a named target port), `ext`
/// (ExternalName) and headless `db`; running, pending and failed pods.
pub(crate) fn objects() -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
    let namespaces = ["default", "shop", "secret"].map(|n| json!({"metadata": {"name": n}})).to_vec();
    let services = vec![
        json!({"metadata": {"namespace": "default", "name": "web"},
               "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                        "ports": [{"name": "http", "port": 80}]}}),
        json!({"metadata": {"namespace": "shop", "name": "catalog"},
               "spec": {"clusterIPs": ["10.96.0.20"], "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}}),
        json!({"metadata": {"namespace": "shop", "name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]}}),
        json!({"metadata": {"namespace": "shop", "name": "db"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
        json!({"metadata": {"namespace": "secret", "name": "vault"}, "spec": {"ports": [{"port": 8200}]}}),
    ];
    let ep = |ns: &str, pod: &str, ip: &str, ready: bool| {
        json!({"addresses": [ip], "conditions": {"ready": ready},
               "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
    };
    let slice = |ns: &str, svc: &str, ports: Value, endpoints: Value| {
        json!({"metadata": {"namespace": ns, "name": format!("{svc}-x"), "labels": {"kubernetes.io/service-name": svc}},
               "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
    };
    let slices = vec![
        slice(
            "default",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("default", "web-1", "10.244.0.1", true), ep("default", "web-2", "10.244.0.2", false)]),
        ),
        slice(
            "shop",
            "catalog",
            json!([{"name": "http", "port": 8080}, {"name": "metrics", "port": 9100}]),
            json!([ep("shop", "catalog-a", "10.244.0.3", true)]),
        ),
        slice("shop", "db", json!([{"port": 5432}]), json!([ep("shop", "db-0", "10.244.0.4", true)])),
    ];
    let pod = |ns: &str, name: &str, ips: &[&str], phase: &str, host: Option<(&str, &str)>| {
        let mut spec = json!({"containers": []});
        if let Some((hostname, subdomain)) = host {
            spec = json!({"containers": [], "hostname": hostname, "subdomain": subdomain});
        }
        json!({"metadata": {"namespace": ns, "name": name}, "spec": spec,
               "status": {"phase": phase, "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()}})
    };
    let pods = vec![
        pod("default", "web-1", &["10.244.0.1", "fd00::1"], "Running", None),
        pod("default", "web-2", &["10.244.0.2"], "Pending", None),
        pod("shop", "catalog-a", &["10.244.0.3"], "Running", None),
        pod("shop", "db-0", &["10.244.0.4"], "Running", Some(("db-0", "db"))),
        pod("shop", "old", &["10.244.1.9"], "Failed", None),
    ];
    (namespaces, services, slices, pods)
}

#[cfg(feature = "fuzzing")]
pub(crate) fn decode<T: serde::de::DeserializeOwned>(values: &[Value]) -> Vec<Arc<T>> {
    values.iter().map(|v| Arc::new(serde_json::from_value(v.clone()).expect("a valid object"))).collect()
}

#[cfg(feature = "fuzzing")]
pub(crate) static SMALL: std::sync::LazyLock<View> = std::sync::LazyLock::new(|| {
    let (namespaces, services, slices, pods) = objects();
    let namespaces: Vec<Arc<crate::objects::NamespaceAsSent>> = decode(&namespaces);
    View {
        namespaces: Some(namespaces.iter().filter_map(|n| n.metadata.name.clone()).collect()),
        hidden: vec!["secret".into()],
        services: decode(&services),
        slices: decode(&slices),
        pods: decode(&pods),
    }
});

/// An in-memory API server holding the small cluster, for a user who may
/// do anything: every list answers, watches never do (nothing changes),
/// and port-forwards are forbidden, so no connection ever reaches a pod.
pub(crate) fn api_client() -> kube::Client {
    let service = tower::service_fn(|req: Request<kube::client::Body>| async move {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let body = req.into_body().collect().await?.to_bytes();
        let (namespaces, services, slices, pods) = objects();
        let list = |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items});
        let (status, answer) = if path.ends_with("/selfsubjectaccessreviews") {
            let review: Value = serde_json::from_slice(&body)?;
            (
                200,
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                       "spec": review["spec"], "status": {"allowed": true}}),
            )
        } else if query.contains("watch=true") {
            std::future::pending::<()>().await;
            unreachable!()
        } else if path.ends_with("/portforward") {
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": "pods/portforward is forbidden in this fuzz cluster"}),
            )
        } else {
            match path.as_str() {
                "/api/v1/namespaces" => (200, list(namespaces)),
                "/api/v1/services" => (200, list(services)),
                "/apis/discovery.k8s.io/v1/endpointslices" => (200, list(slices)),
                "/api/v1/pods" => (200, list(pods)),
                _ => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
            }
        };
        let body = Full::new(Bytes::from(answer.to_string()));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            Response::builder().status(status).header("content-type", "application/json").body(body)?,
        )
    });
    kube::Client::new(service, "default")
}

/// Builders for the unit tests' objects, and the clusters they make.
#[cfg(test)]
pub(crate) fn service(ns: &str, name: &str, ips: &[&str], ports: serde_json::Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ips.first(), "clusterIPs": ips, "ports": ports}
        }))
        .unwrap(),
    )
}

#[cfg(test)]
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

#[cfg(test)]
pub(crate) fn ep(ns: &str, pod: &str, ready: bool) -> serde_json::Value {
    json!({"addresses": ["10.244.0.9"], "conditions": {"ready": ready, "serving": ready, "terminating": false},
           "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
}

#[cfg(test)]
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

#[cfg(test)]
pub(crate) fn rules() -> crate::route::Rules {
    crate::route::Rules::new("cluster.local", "default")
}

/// A cluster with `default/web` (port 80 → pods web-1, web-2 on 8080) and
/// `shop/catalog` (named targetPort: pods listen on different numbers).
#[cfg(test)]
pub(crate) fn cluster() -> View {
    View {
        namespaces: Some(vec!["default".into(), "shop".into()]),
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
#[cfg(test)]
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

/// Objects shaped like a production cluster's, as the API server sends
/// them: a pod of about 4 KiB of JSON (two containers with env, probes and
/// resources, labels, annotations, owner, managedFields, conditions), its
/// Service and EndpointSlice. Object `i` lives in namespace `ns-{i % 50}`
/// and has pod IP `10.1.x.y` and ClusterIP `10.96.x.y`.
#[cfg(test)]
pub(crate) mod realistic {
    use serde_json::{Value, json};

    fn ip(prefix: &str, i: usize) -> String {
        format!("{prefix}.{}.{}", i / 250, i % 250 + 1)
    }

    fn meta(i: usize, name: &str) -> Value {
        json!({
            "name": name, "namespace": format!("ns-{}", i % 50),
            "uid": format!("{:08x}-1c2d-4e5f-8a9b-{:012x}", i, i * 7919),
            "resourceVersion": format!("{}", 100_000 + i),
            "creationTimestamp": "2026-11-30T08:15:42Z",
            "labels": {"app.kubernetes.io/name": format!("app-{i}"), "app.kubernetes.io/part-of": "shop",
                       "app.kubernetes.io/version": "1.24.3", "pod-template-hash": "7d9f8b6c5d", "team": "payments"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-30T08:15:00Z",
                            "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2026-11-30T08:15:42Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:team": {}}},
                                            "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}}]
        })
    }

    fn container(name: &str, port: u16) -> Value {
        let env: Vec<Value> = (0..6)
            .map(|e| json!({"name": format!("SETTING_{e}"), "value": format!("value-of-setting-number-{e}")}))
            .collect();
        let probe = json!({"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP"}, "initialDelaySeconds": 5,
                           "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3});
        json!({"name": name, "image": format!("registry.example.com/shop/{name}:1.24.3"),
               "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}], "env": env,
               "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
               "livenessProbe": probe, "readinessProbe": probe,
               "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
               "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"})
    }

    pub(crate) fn pod(i: usize) -> Value {
        let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": "2026-11-30T08:15:50Z"});
        let status = |name: &str| {
            json!({"name": name, "ready": true, "restartCount": 0, "started": true,
                   "image": format!("registry.example.com/shop/{name}:1.24.3"),
                   "imageID": format!("registry.example.com/shop/{name}@sha256:{:064x}", i),
                   "containerID": format!("containerd://{:064x}", i * 31),
                   "state": {"running": {"startedAt": "2026-11-30T08:15:48Z"}}})
        };
        let conditions = ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition);
        json!({
            "metadata": meta(i, &format!("app-{i}-7d9f8b6c5d-x{i:04}")),
            "spec": {"containers": [container("app", 8080), container("sidecar", 15090)],
                     "nodeName": format!("node-{}", i % 40), "serviceAccountName": "default",
                     "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                     "terminationGracePeriodSeconds": 30,
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
                     "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]},
            "status": {"phase": "Running", "podIP": ip("10.1", i), "podIPs": [{"ip": ip("10.1", i)}],
                       "hostIP": "192.168.4.20", "hostIPs": [{"ip": "192.168.4.20"}], "qosClass": "Burstable",
                       "startTime": "2026-11-30T08:15:42Z",
                       "conditions": conditions,
                       "containerStatuses": [status("app"), status("sidecar")]}
        })
    }

    pub(crate) fn service(i: usize) -> Value {
        json!({
            "metadata": meta(i, &format!("app-{i}")),
            "spec": {"type": "ClusterIP", "clusterIP": ip("10.96", i), "clusterIPs": [ip("10.96", i)],
                     "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                     "internalTrafficPolicy": "Cluster", "selector": {"app.kubernetes.io/name": format!("app-{i}")},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                               {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]},
            "status": {"loadBalancer": {}}
        })
    }

    pub(crate) fn slice(i: usize) -> Value {
        let mut metadata = meta(i, &format!("app-{i}-h7x2k"));
        metadata["labels"]["kubernetes.io/service-name"] = json!(format!("app-{i}"));
        metadata["labels"]["endpointslice.kubernetes.io/managed-by"] = json!("endpointslice-controller.k8s.io");
        let endpoint = |j: usize| {
            json!({"addresses": [ip("10.1", i * 3 + j)], "nodeName": format!("node-{}", j),
                   "conditions": {"ready": true, "serving": true, "terminating": false},
                   "targetRef": {"kind": "Pod", "namespace": format!("ns-{}", i % 50),
                                 "name": format!("app-{i}-7d9f8b6c5d-x{j}"), "uid": format!("{:032x}", i * 3 + j)}})
        };
        json!({
            "metadata": metadata, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090, "protocol": "TCP"}],
            "endpoints": [endpoint(0), endpoint(1), endpoint(2)]
        })
    }
}

/// The heap a test thread holds: what it allocated less what it freed. A
/// `#[tokio::test]` runs every task on its own thread, so the difference
/// across building something is what that thing holds.
#[cfg(test)]
pub(crate) mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
    }

    fn count(bytes: isize) {
        // `try_with`: nothing to count while the thread is being torn down.
        let _ = HELD.try_with(|held| held.set(held.get() + bytes));
    }

    // SAFETY: every call is passed to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            unsafe { System.dealloc(p, layout) };
            count(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, layout, size) };
            if !q.is_null() {
                count(size as isize - layout.size() as isize);
            }
            q
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Bytes this thread holds now.
    pub(crate) fn held() -> isize {
        HELD.with(Cell::get)
    }
}
