//! The watch caches' store: every object of one kind in one scope, kept as
//! the slim type resolution reads, by name and by the keys lookups use.
//!
//! kube-runtime's watcher reads the API server's objects (the `…AsSent`
//! types of `crate::objects`, which carry an `ObjectMeta` as every watched
//! type must); a [`Store`] turns each into its [`Kept`] type as the event
//! arrives, allocating only what it keeps, and drops the rest. A kept
//! object has no `ObjectMeta` (360 bytes on its own before any string in
//! it): its name, and its namespace as one string shared by every object of
//! the namespace. The tables share one `Arc` per object. kube-runtime's own
//! store keeps the watched type itself, a key of four strings, and (beside
//! it, for lookups by IP or by Service) an index with the name again: a
//! cached pod cost 1 159 bytes there and 316 here, a Service 1 274 and 550,
//! an EndpointSlice 1 826 and 1 063 (printed by the cache's test
//! `a_cached_object_holds_…`). Allocating little while a list is read
//! matters too: what a list leaves scattered among the kept objects is
//! memory the process cannot give back.
//!
//! A relist (the watch started again and lists afresh) fills new tables
//! while lookups still read the old ones, and swaps them in once it is
//! done, so objects deleted while the watch was away are forgotten, as
//! kube-runtime's store does.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;

use crate::objects::Kept;

/// The objects of one kind in one scope, kept from its watch's events.
pub(crate) struct Store<T: Kept> {
    inner: RwLock<Tables<T>>,
    /// Objects lookups have looked at, for the tests that show a lookup's
    /// cost does not grow with the cluster.
    #[cfg(test)]
    pub(crate) visited: std::sync::atomic::AtomicUsize,
}

impl<T: Kept> Default for Store<T> {
    fn default() -> Self {
        Store {
            inner: RwLock::default(),
            #[cfg(test)]
            visited: Default::default(),
        }
    }
}

struct Tables<T: Kept> {
    /// By namespace ("" for a cluster-scoped kind), then name; each
    /// namespace's string is the one its objects share.
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, Arc<T>>>,
    /// By key. A key may be had by more than one object (a pod IP, for a
    /// moment, by a finished pod and the new one given its IP).
    by_key: HashMap<T::Key, Vec<Arc<T>>>,
    /// While the watch lists afresh: the tables being filled.
    relisting: Option<Box<Tables<T>>>,
}

impl<T: Kept> Default for Tables<T> {
    fn default() -> Self {
        Tables { by_name: HashMap::new(), by_key: HashMap::new(), relisting: None }
    }
}

fn names_of<K: Resource>(sent: &K) -> (&str, &str) {
    let meta = sent.meta();
    (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default())
}

impl<T: Kept> Tables<T> {
    fn insert(&mut self, sent: &T::Sent) {
        let (namespace, name) = names_of(sent);
        self.remove(namespace, name);
        let shared = match self.by_name.get_key_value(namespace) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(namespace),
        };
        let object = Arc::new(T::keep(sent, shared.clone()));
        for key in object.keys() {
            self.by_key.entry(key).or_default().push(object.clone());
        }
        self.by_name.entry(shared).or_default().insert(object.name().clone(), object);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(objects) = self.by_name.get_mut(namespace) else { return };
        let Some(old) = objects.remove(name) else { return };
        if objects.is_empty() {
            self.by_name.remove(namespace);
        }
        for key in old.keys() {
            if let Some(objects) = self.by_key.get_mut(&key) {
                objects.retain(|o| !Arc::ptr_eq(o, &old));
                if objects.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

impl<T: Kept> Store<T> {
    /// Applies one event of the kind's watch.
    pub(crate) fn event(&self, event: &Event<T::Sent>) {
        let mut tables = self.inner.write().unwrap_or_else(PoisonError::into_inner);
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

    /// The object `name` of `namespace` ("" for a cluster-scoped kind).
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        let tables = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let found = tables.by_name.get(namespace).and_then(|objects| objects.get(name)).cloned();
        #[cfg(test)]
        self.visited.fetch_add(usize::from(found.is_some()), std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// The objects that have `key`.
    pub(crate) fn find(&self, key: &T::Key) -> Vec<Arc<T>> {
        let tables = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        self.seen(tables.by_key.get(key).cloned().unwrap_or_default())
    }

    /// Every object of `namespace`, in no order.
    pub(crate) fn all_in(&self, namespace: &str) -> Vec<Arc<T>> {
        let tables = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        tables.by_name.get(namespace).map(|objects| objects.values().cloned().collect()).unwrap_or_default()
    }

    /// Every object, in no order.
    pub(crate) fn all(&self) -> Vec<Arc<T>> {
        let tables = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        tables.by_name.values().flat_map(|objects| objects.values().cloned()).collect()
    }

    /// Every key held.
    pub(crate) fn keys(&self) -> Vec<T::Key> {
        let tables = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        tables.by_key.keys().cloned().collect()
    }

    /// How many objects it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.read().unwrap().by_name.values().map(HashMap::len).sum()
    }

    fn seen(&self, found: Vec<Arc<T>>) -> Vec<Arc<T>> {
        #[cfg(test)]
        self.visited.fetch_add(found.len(), std::sync::atomic::Ordering::Relaxed);
        found
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use super::*;
    use crate::objects::{Pod, PodAsSent, PodKey};

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

    fn ip(s: &str) -> PodKey {
        PodKey::Ip(s.parse::<IpAddr>().unwrap())
    }

    fn host(ns: &str, hostname: &str, subdomain: &str) -> PodKey {
        PodKey::host(ns.into(), hostname, subdomain)
    }

    #[test]
    fn an_object_is_found_by_name_and_each_key_and_moves_when_they_change() {
        let pods = Store::<Pod>::default();
        pods.event(&Event::Apply(sent("ns", "a", &["10.0.0.1", "fd00::1"], "Running", Some(("a", "sub")))));
        pods.event(&Event::Apply(sent("ns", "b", &["10.0.0.2"], "Running", None)));
        assert_eq!(names(pods.find(&ip("10.0.0.1"))), ["ns/a"]);
        assert_eq!(names(pods.find(&ip("fd00::1"))), ["ns/a"]);
        assert_eq!(names(pods.find(&host("ns", "a", "sub"))), ["ns/a"]);
        assert!(pods.find(&host("other", "a", "sub")).is_empty());
        assert_eq!(pods.get("ns", "b").map(|p| p.full_name()).as_deref(), Some("ns/b"));

        pods.event(&Event::Apply(sent("ns", "a", &["10.0.0.3"], "Running", None)));
        assert!(pods.find(&ip("10.0.0.1")).is_empty(), "the old IP is forgotten");
        assert!(pods.find(&host("ns", "a", "sub")).is_empty(), "so is the old per-pod name");
        assert_eq!(names(pods.find(&ip("10.0.0.3"))), ["ns/a"]);
        pods.event(&Event::Delete(sent("ns", "a", &["10.0.0.3"], "Running", None)));
        assert!(pods.find(&ip("10.0.0.3")).is_empty() && pods.get("ns", "a").is_none());
        assert_eq!((pods.len(), pods.keys()), (1, vec![ip("10.0.0.2")]), "only b is left");
    }

    #[test]
    fn a_key_two_objects_have_finds_both_until_one_goes() {
        let pods = Store::<Pod>::default();
        pods.event(&Event::Apply(sent("ns", "old", &["10.0.0.9"], "Failed", None)));
        pods.event(&Event::Apply(sent("ns", "new", &["10.0.0.9"], "Running", None)));
        let mut both = names(pods.find(&ip("10.0.0.9")));
        both.sort();
        assert_eq!(both, ["ns/new", "ns/old"]);
        pods.event(&Event::Delete(sent("ns", "old", &["10.0.0.9"], "Failed", None)));
        assert_eq!(names(pods.find(&ip("10.0.0.9"))), ["ns/new"]);
    }

    #[test]
    fn a_relist_replaces_everything_once_it_is_done() {
        let pods = Store::<Pod>::default();
        pods.event(&Event::Apply(sent("ns", "gone", &["10.0.0.1"], "Running", None)));
        pods.event(&Event::Init);
        pods.event(&Event::InitApply(sent("ns", "kept", &["10.0.0.2"], "Running", None)));
        assert_eq!(
            names(pods.find(&ip("10.0.0.1"))),
            ["ns/gone"],
            "answers from the old tables until the relist is done"
        );
        pods.event(&Event::InitDone);
        assert!(pods.find(&ip("10.0.0.1")).is_empty(), "a pod deleted while the watch was away is forgotten");
        assert_eq!(names(pods.find(&ip("10.0.0.2"))), ["ns/kept"]);
    }

    #[test]
    fn the_objects_of_a_namespace_share_its_name() {
        let pods = Store::<Pod>::default();
        pods.event(&Event::Apply(sent("shop", "a", &["10.0.0.1"], "Running", None)));
        pods.event(&Event::Apply(sent("shop", "b", &["10.0.0.2"], "Running", None)));
        let (a, b) = (pods.get("shop", "a").unwrap(), pods.get("shop", "b").unwrap());
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
    }
}
