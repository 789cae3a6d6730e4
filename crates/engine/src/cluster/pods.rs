//! The pods' cache: every pod of a scope as a slim [`Pod`], by name, by IP
//! and by per-pod name, kept from a watch's events.
//!
//! Services, EndpointSlices and Namespaces are kept in kube-runtime stores,
//! with indexes beside them (see `index`). Pods are kept here instead,
//! because they are most of a cluster's objects: a kube-runtime store keeps
//! the watched type itself (which must carry a full `ObjectMeta`) and a key
//! of four strings per object, and an index beside it a name per object
//! again, about 1.2 KB per pod in all. Here a [`Pod`] is made from the
//! watch's [`PodAsSent`] as it arrives, allocating only what it keeps, and
//! the tables share one `Arc<Pod>` and one namespace string per namespace: a
//! few hundred bytes per pod (printed by the cache's test
//! `a_cached_object_holds_…`). Allocating little while a list is read
//! matters too: what a list leaves scattered among the kept objects is
//! memory the process cannot give back.
//!
//! A relist (the watch started again and lists afresh) fills new tables
//! while lookups still read the old ones, and swaps them in once it is
//! done, so pods deleted while the watch was away are forgotten, as
//! kube-runtime's store does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;

use crate::objects::{Pod, PodAsSent};

/// The pods of one scope, kept from its watch's events.
#[derive(Default)]
pub(crate) struct Pods {
    inner: RwLock<Tables>,
    /// Pods lookups have looked at, for the tests that show a lookup's
    /// cost does not grow with the cluster.
    #[cfg(test)]
    pub(crate) visited: std::sync::atomic::AtomicUsize,
}

/// A per-pod name: (namespace, hostname, subdomain).
type HostKey = (Arc<str>, Box<str>, Box<str>);

#[derive(Default)]
struct Tables {
    /// By namespace, then name; each namespace's string is the one its pods share.
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Pod>>>,
    /// A pod IP may be held by more than one pod for a moment: a finished
    /// pod and the new one given its IP.
    by_ip: HashMap<IpAddr, Vec<Arc<Pod>>>,
    /// By (namespace, hostname, subdomain), for pods that have both.
    by_host: HashMap<HostKey, Vec<Arc<Pod>>>,
    /// While the watch lists afresh: the tables being filled.
    relisting: Option<Box<Tables>>,
}

impl Tables {
    fn insert(&mut self, sent: &PodAsSent) {
        let (namespace, name) = names_of(sent);
        self.remove(namespace, name);
        let shared = match self.by_name.get_key_value(namespace) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(namespace),
        };
        let pod = Arc::new(Pod::kept(sent, shared.clone()));
        for ip in &pod.ips {
            self.by_ip.entry(*ip).or_default().push(pod.clone());
        }
        if let Some(key) = host_key(&pod) {
            self.by_host.entry(key).or_default().push(pod.clone());
        }
        self.by_name.entry(shared).or_default().insert(pod.name.clone(), pod);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(pods) = self.by_name.get_mut(namespace) else { return };
        let Some(old) = pods.remove(name) else { return };
        if pods.is_empty() {
            self.by_name.remove(namespace);
        }
        for ip in &old.ips {
            remove_from(&mut self.by_ip, ip, &old);
        }
        if let Some(key) = host_key(&old) {
            remove_from(&mut self.by_host, &key, &old);
        }
    }
}

fn names_of(sent: &PodAsSent) -> (&str, &str) {
    let meta = &sent.metadata;
    (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

fn host_key(pod: &Pod) -> Option<HostKey> {
    pod.host().map(|(hostname, subdomain)| (pod.namespace.clone(), hostname.into(), subdomain.into()))
}

fn remove_from<K: Eq + std::hash::Hash>(table: &mut HashMap<K, Vec<Arc<Pod>>>, key: &K, pod: &Arc<Pod>) {
    if let Some(pods) = table.get_mut(key) {
        pods.retain(|p| !Arc::ptr_eq(p, pod));
        if pods.is_empty() {
            table.remove(key);
        }
    }
}

impl Pods {
    /// Applies one event of the pods' watch.
    pub(crate) fn event(&self, event: &Event<PodAsSent>) {
        let mut tables = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            // The first list fills the tables as it goes.
            Event::Init if tables.by_name.is_empty() => {}
            Event::Init => tables.relisting = Some(Box::default()),
            Event::InitApply(sent) => match tables.relisting.as_mut() {
                Some(next) => next.insert(sent),
                None => tables.insert(sent),
            },
            Event::InitDone => {
                if let Some(next) = tables.relisting.take() {
                    *tables = *next;
                }
            }
            Event::Apply(sent) => tables.insert(sent),
            Event::Delete(sent) => {
                let (namespace, name) = names_of(sent);
                tables.remove(namespace, name);
            }
        }
    }

    /// The pods that have `ip`.
    pub(crate) fn by_ip(&self, ip: IpAddr) -> Vec<Arc<Pod>> {
        let tables = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.seen(tables.by_ip.get(&ip).cloned().unwrap_or_default())
    }

    /// The pods of `namespace` named `hostname` in `subdomain`.
    pub(crate) fn by_host(&self, namespace: &str, hostname: &str, subdomain: &str) -> Vec<Arc<Pod>> {
        let tables = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key: HostKey = (Arc::from(namespace), Box::from(hostname), Box::from(subdomain));
        self.seen(tables.by_host.get(&key).cloned().unwrap_or_default())
    }

    /// Every pod IP held.
    pub(crate) fn ips(&self) -> Vec<IpAddr> {
        let tables = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        tables.by_ip.keys().copied().collect()
    }

    /// How many pods it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.read().unwrap().by_name.values().map(HashMap::len).sum()
    }

    fn seen(&self, pods: Vec<Arc<Pod>>) -> Vec<Arc<Pod>> {
        #[cfg(test)]
        self.visited.fetch_add(pods.len(), std::sync::atomic::Ordering::Relaxed);
        pods
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sent(ns: &str, name: &str, ips: &[&str], phase: &str, host: Option<(&str, &str)>) -> PodAsSent {
        let ips: Vec<_> = ips.iter().map(|i| json!({"ip": i})).collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {"hostname": host.map(|h| h.0), "subdomain": host.map(|h| h.1)},
            "status": {"phase": phase, "podIPs": ips}
        }))
        .unwrap()
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        pods.iter().map(|p| p.full_name()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_pod_is_found_by_each_ip_and_its_per_pod_name_and_moves_when_they_change() {
        let pods = Pods::default();
        pods.event(&Event::Apply(sent("ns", "a", &["10.0.0.1", "fd00::1"], "Running", Some(("a", "sub")))));
        pods.event(&Event::Apply(sent("ns", "b", &["10.0.0.2"], "Running", None)));
        assert_eq!(names(pods.by_ip(ip("10.0.0.1"))), ["ns/a"]);
        assert_eq!(names(pods.by_ip(ip("fd00::1"))), ["ns/a"]);
        assert_eq!(names(pods.by_host("ns", "a", "sub")), ["ns/a"]);
        assert!(pods.by_host("other", "a", "sub").is_empty());

        pods.event(&Event::Apply(sent("ns", "a", &["10.0.0.3"], "Running", None)));
        assert!(pods.by_ip(ip("10.0.0.1")).is_empty(), "the old IP is forgotten");
        assert!(pods.by_host("ns", "a", "sub").is_empty(), "so is the old per-pod name");
        assert_eq!(names(pods.by_ip(ip("10.0.0.3"))), ["ns/a"]);
        pods.event(&Event::Delete(sent("ns", "a", &["10.0.0.3"], "Running", None)));
        assert!(pods.by_ip(ip("10.0.0.3")).is_empty());
        assert_eq!((pods.len(), pods.ips()), (1, vec![ip("10.0.0.2")]), "only b is left");
    }

    #[test]
    fn a_pod_ip_reused_by_a_new_pod_finds_both_until_the_old_one_goes() {
        let pods = Pods::default();
        pods.event(&Event::Apply(sent("ns", "old", &["10.0.0.9"], "Failed", None)));
        pods.event(&Event::Apply(sent("ns", "new", &["10.0.0.9"], "Running", None)));
        assert_eq!(names(pods.by_ip(ip("10.0.0.9"))), ["ns/old", "ns/new"]);
        pods.event(&Event::Delete(sent("ns", "old", &["10.0.0.9"], "Failed", None)));
        assert_eq!(names(pods.by_ip(ip("10.0.0.9"))), ["ns/new"]);
    }

    #[test]
    fn a_relist_replaces_everything_once_it_is_done() {
        let pods = Pods::default();
        pods.event(&Event::Apply(sent("ns", "gone", &["10.0.0.1"], "Running", None)));
        pods.event(&Event::Init);
        pods.event(&Event::InitApply(sent("ns", "kept", &["10.0.0.2"], "Running", None)));
        assert_eq!(
            names(pods.by_ip(ip("10.0.0.1"))),
            ["ns/gone"],
            "answers from the old tables until the relist is done"
        );
        pods.event(&Event::InitDone);
        assert!(pods.by_ip(ip("10.0.0.1")).is_empty(), "a pod deleted while the watch was away is forgotten");
        assert_eq!(names(pods.by_ip(ip("10.0.0.2"))), ["ns/kept"]);
    }

    #[test]
    fn the_pods_of_a_namespace_share_its_name() {
        let pods = Pods::default();
        pods.event(&Event::Apply(sent("shop", "a", &["10.0.0.1"], "Running", None)));
        pods.event(&Event::Apply(sent("shop", "b", &["10.0.0.2"], "Running", None)));
        let (a, b) = (&pods.by_ip(ip("10.0.0.1"))[0], &pods.by_ip(ip("10.0.0.2"))[0]);
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
    }
}
