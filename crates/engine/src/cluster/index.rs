//! Indexes beside the kube-runtime stores: Services by ClusterIP,
//! EndpointSlices by Service. (Pods keep their own tables: see `pods`.) Each is kept from the events its
//! reflector applies to its store, so a connection's lookup costs the same
//! however many objects the cluster holds, where filtering the store
//! visited every object.
//!
//! An index holds names, not objects: a lookup takes the objects from the
//! store, which is the truth (the index follows it a moment later), and
//! checks that each still has the key. An object's name is held once per
//! index, shared by both of its tables, so an index costs a few dozen bytes
//! per object beside the object itself.

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

/// Something kept up to date from a reflector's events.
pub(crate) trait Indexer<K>: Send + Sync {
    fn event(&self, event: &Event<K>);
}

/// An object's namespace (empty for a cluster-scoped one) and name.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Name {
    namespace: String,
    name: String,
}

impl Name {
    fn of<K: Resource>(object: &K) -> Arc<Name> {
        let meta = object.meta();
        Arc::new(Name {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        })
    }

    /// The store's key for it.
    fn object_ref<K>(&self) -> ObjectRef<K>
    where
        K: Resource,
        K::DynamicType: Default,
    {
        let r = ObjectRef::new(&self.name);
        if self.namespace.is_empty() { r } else { r.within(&self.namespace) }
    }
}

/// The objects of kind `K` by every key [`Index::keys`] gives them.
pub(crate) struct Index<K: Resource, Key> {
    keys: fn(&K) -> Vec<Key>,
    inner: RwLock<Tables<Key>>,
    kind: PhantomData<fn(&K)>,
    /// Objects lookups have looked at, for the tests that show a lookup's
    /// cost does not grow with the cluster.
    #[cfg(test)]
    pub(crate) visited: std::sync::atomic::AtomicUsize,
}

struct Tables<Key> {
    by_key: HashMap<Key, Vec<Arc<Name>>>,
    /// Each object's keys, to take them out when it changes or goes.
    of: HashMap<Arc<Name>, Vec<Key>>,
    /// While a watch lists afresh: the new tables, swapped in when it is done
    /// (as the store does), so objects gone meanwhile leave the index too.
    relisting: Option<Box<Tables<Key>>>,
}

impl<Key> Default for Tables<Key> {
    fn default() -> Self {
        Tables { by_key: HashMap::new(), of: HashMap::new(), relisting: None }
    }
}

impl<Key: Eq + Hash + Clone> Tables<Key> {
    fn remove(&mut self, object: &Name) {
        for key in self.of.remove(object).unwrap_or_default() {
            if let Some(names) = self.by_key.get_mut(&key) {
                names.retain(|n| **n != *object);
                if names.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    fn insert(&mut self, object: Arc<Name>, keys: Vec<Key>) {
        self.remove(&object);
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            self.by_key.entry(key.clone()).or_default().push(object.clone());
        }
        self.of.insert(object, keys);
    }
}

impl<K, Key> Index<K, Key>
where
    K: Resource,
    K::DynamicType: Default + Eq + Hash + Clone,
    Key: Eq + Hash + Clone,
{
    pub(crate) fn new(keys: fn(&K) -> Vec<Key>) -> Index<K, Key> {
        Index {
            keys,
            inner: RwLock::new(Tables::default()),
            kind: PhantomData,
            #[cfg(test)]
            visited: Default::default(),
        }
    }

    /// The objects that have `key`, as the index last heard.
    pub(crate) fn get(&self, key: &Key) -> Vec<ObjectRef<K>> {
        let tables = self.inner.read().unwrap();
        tables.by_key.get(key).into_iter().flatten().map(|n| n.object_ref()).collect()
    }

    /// The objects of `store` listed under `key` that still have it.
    pub(crate) fn lookup(&self, store: &Store<K>, key: &Key) -> Vec<Arc<K>>
    where
        K: Clone + 'static,
    {
        let refs = self.get(key);
        #[cfg(test)]
        self.visited.fetch_add(refs.len(), std::sync::atomic::Ordering::Relaxed);
        refs.iter().filter_map(|r| store.get(r)).filter(|o| (self.keys)(o).contains(key)).collect()
    }

    /// How many keys it holds, for the tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.read().unwrap().by_key.len()
    }
}

impl<K, Key> Indexer<K> for Index<K, Key>
where
    K: Resource + Send + Sync,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    Key: Eq + Hash + Clone + Send + Sync,
{
    fn event(&self, event: &Event<K>) {
        let mut tables = self.inner.write().unwrap();
        match event {
            // The first list fills the tables as it goes, so they are
            // complete by the time the store says it is ready.
            Event::Init if tables.of.is_empty() => {}
            Event::Init => tables.relisting = Some(Box::default()),
            Event::InitApply(object) => {
                let (name, keys) = (Name::of(object), (self.keys)(object));
                match tables.relisting.as_mut() {
                    Some(next) => next.insert(name, keys),
                    None => tables.insert(name, keys),
                }
            }
            Event::InitDone => {
                if let Some(next) = tables.relisting.take() {
                    *tables = *next;
                }
            }
            Event::Apply(object) => tables.insert(Name::of(object), (self.keys)(object)),
            Event::Delete(object) => tables.remove(&Name::of(object)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use crate::objects::Service;

    use super::*;

    fn by_ip() -> Index<Service, IpAddr> {
        Index::new(|svc: &Service| {
            let ips = svc.spec.as_ref().and_then(|s| s.cluster_ips.as_deref()).unwrap_or_default();
            ips.iter().filter_map(|i| i.parse().ok()).collect()
        })
    }

    fn svc(name: &str, ips: &[&str]) -> Service {
        (*crate::testing::service("ns", name, ips, json!([{"port": 80}]))).clone()
    }

    fn names(index: &Index<Service, IpAddr>, ip: &str) -> Vec<String> {
        index.get(&ip.parse().unwrap()).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn an_object_is_found_by_each_key_and_moves_when_its_keys_change() {
        let index = by_ip();
        index.event(&Event::Apply(svc("a", &["10.0.0.1", "fd00::1"])));
        index.event(&Event::Apply(svc("b", &["10.0.0.2"])));
        assert_eq!(names(&index, "10.0.0.1"), ["a"]);
        assert_eq!(names(&index, "fd00::1"), ["a"]);
        index.event(&Event::Apply(svc("a", &["10.0.0.3"])));
        assert!(names(&index, "10.0.0.1").is_empty(), "the old IP is forgotten");
        assert_eq!(names(&index, "10.0.0.3"), ["a"]);
        index.event(&Event::Delete(svc("a", &["10.0.0.3"])));
        assert!(names(&index, "10.0.0.3").is_empty());
        assert_eq!(index.len(), 1, "only b's IP is left");
    }

    #[test]
    fn a_key_two_objects_have_lists_both_until_one_goes() {
        let index = by_ip();
        index.event(&Event::Apply(svc("old", &["10.0.0.9"])));
        index.event(&Event::Apply(svc("new", &["10.0.0.9"])));
        assert_eq!(names(&index, "10.0.0.9"), ["old", "new"]);
        index.event(&Event::Delete(svc("old", &["10.0.0.9"])));
        assert_eq!(names(&index, "10.0.0.9"), ["new"]);
    }

    #[test]
    fn a_relist_replaces_everything_once_it_is_done() {
        let index = by_ip();
        index.event(&Event::Apply(svc("gone", &["10.0.0.1"])));
        index.event(&Event::Init);
        index.event(&Event::InitApply(svc("kept", &["10.0.0.2"])));
        assert_eq!(names(&index, "10.0.0.1"), ["gone"], "answers from the old tables until the relist is done");
        index.event(&Event::InitDone);
        assert!(names(&index, "10.0.0.1").is_empty(), "an object deleted while the watch was away is forgotten");
        assert_eq!(names(&index, "10.0.0.2"), ["kept"]);
    }
}
