//! Watch caches of the objects resolution needs: Services, EndpointSlices and
//! Pods (and Namespaces where they may be listed), fed by kube-runtime
//! watchers into stores of their own (see `store`) so that a proxied
//! connection costs no list or get request.
//!
//! Scope follows RBAC. When the user may list and watch all three kinds
//! cluster-wide, one watch per kind covers the cluster. Otherwise each
//! namespace a client names is checked (SelfSubjectAccessReview) the first time
//! it is named, and watched on its own if allowed. Where RBAC allows no watch
//! but GETs of services, endpoints and pods, names there are looked up with
//! direct GETs per connection ([`crate::cluster::lookup`]). A namespace RBAC hides is
//! remembered with the missing permission, which the refusal then names.
//!
//! Answer first, sync after: in each scope, Services and EndpointSlices are
//! listed first, and a Service name answers as soon as they are; pods are
//! listed after them (in a big cluster they are most of the bytes).
//! Meanwhile a pod IP behind a Service is found in the EndpointSlices and
//! its pod fetched by name; only names that need another pod (a pod IP
//! behind no Service, a per-pod name) wait for that list. Cluster-wide, [`ClusterCache::start`]
//! does not wait for the lists at all: until Services and EndpointSlices
//! are listed, a name is answered from GETs of what it names (as where
//! RBAC allows only GETs), so the first connection is served in a few
//! round trips however big the cluster.

use std::collections::HashMap;
use std::future::ready;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;
use tracing::Instrument as _;

use crate::cluster::health::{Health, HealthState};
use crate::cluster::lookup::{self, Fetched};
use crate::cluster::store::Store;
use crate::objects::{EndpointSlice, Kept, Namespace, Pod, PodKey, Service};
use crate::route::names::ClusterNames;
use crate::route::{self, ClusterView, Query};

/// How long a first list may take before a namespace is reported as not synced.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// How long RBAC's "no" (to watching, or to everything) is believed before the
/// next connection into that namespace asks again: rights granted meanwhile
/// then take effect without a restart.
const RECHECK_DENIED: Duration = Duration::from_secs(60);

/// How many namespaces RBAC is asked about in a minute, in namespaced mode
/// where namespaces cannot be listed. Each new `x.<label>.svc` name is a
/// namespace to probe (two access reviews, and a watch where allowed), and
/// any local process or web page can make up names: past this, names in
/// namespaces not yet probed are refused until the minute has passed,
/// without a request to the API server.
const MAX_PROBES_PER_MINUTE: usize = 30;

/// How long a failed watch waits before it tries again: 250 ms, doubling to
/// 500 ms, each plus up to as much again at random, so under a second.
/// kube-runtime's default (client-go's: 0.8 s doubling to 30 s) is made for
/// many controllers sharing one API server; a proxy has a handful of watches,
/// and once the API server answers again after a restart (or the network
/// comes back), new Services must resolve within a second, not after the
/// 10 s or more the default has grown to by then. Against a server that is
/// down this is a refused connection per watch and half-second or so.
fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_millis(500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

/// Why the caches could not be set up, or a name not looked up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Asking the API server what RBAC allows failed.
    #[error("checking RBAC permissions failed: {0}")]
    AccessReview(#[source] kube::Error),
    /// A first list did not finish in time.
    #[error("the watch caches for {scope} did not sync within {SYNC_TIMEOUT:?}; is the API server overloaded?")]
    SyncTimeout {
        /// The cluster, or a namespace.
        scope: String,
    },
    /// Too many namespaces were named in the last minute to ask RBAC about another.
    #[error(
        "namespace {namespace} is not known yet, and {MAX_PROBES_PER_MINUTE} namespaces were probed in the last minute, the most allowed; it is probed once the minute has passed"
    )]
    TooManyNamespaces {
        /// The namespace not probed.
        namespace: String,
    },
    /// A direct GET failed.
    #[error("looking up {what} in namespace {namespace} failed: {source}")]
    Lookup {
        /// Where it was looked up.
        namespace: String,
        /// What was looked up.
        what: String,
        /// The API server's error.
        // Boxed: a kube error is large, and every engine error carries this enum.
        #[source]
        source: Box<kube::Error>,
    },
}

impl CacheError {
    /// RBAC refused a request (it changed since the access review).
    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(self, CacheError::Lookup { source, .. } if matches!(&**source, kube::Error::Api(s) if s.code == 403))
    }
}

/// The three stores for one scope (the cluster or one namespace).
#[derive(Clone)]
struct Stores {
    services: Arc<Store<Service>>,
    slices: Arc<Store<EndpointSlice>>,
    pods: Arc<Store<Pod>>,
    services_listed: Listed,
    slices_listed: Listed,
    pods_listed: Listed,
}

/// What is known about one namespace in namespaced mode.
#[derive(Clone)]
enum Access {
    Watched(Stores),
    /// RBAC allows GETs but no list/watch (`missing` names what it denies):
    /// names there are looked up per connection ([`crate::cluster::lookup`]).
    Direct {
        missing: String,
        checked: Instant,
    },
    /// RBAC hides it; `missing` names the missing permission.
    Forbidden {
        missing: String,
        checked: Instant,
    },
}

impl Access {
    /// Whether RBAC should be asked again (a watch, once running, stays).
    fn recheck(&self) -> bool {
        match self {
            Access::Watched(_) => false,
            Access::Direct { checked, .. } | Access::Forbidden { checked, .. } => checked.elapsed() >= RECHECK_DENIED,
        }
    }
}

/// One namespace's setup in namespaced mode: set once (by whichever first
/// connection gets there; the others wait for it), replaced when RBAC is to
/// be asked again.
type Setup = Arc<OnceCell<Access>>;

enum Scope {
    Cluster(Stores),
    /// Each namespace is set up on its own: the lock guards only the maps,
    /// and is never held across a request, so a slow namespace delays only
    /// the connections into it.
    Namespaced(std::sync::Mutex<Namespaces>),
}

/// The namespaces of namespaced mode.
#[derive(Default)]
struct Namespaces {
    /// Every namespace named, with its setup (done or under way).
    setups: HashMap<String, Setup>,
    /// The namespaces whose setup is done, as snapshots read them: replaced
    /// (not changed) when one is added, so a snapshot shares it for the
    /// cost of an `Arc`, however many namespaces there are.
    ready: Arc<HashMap<String, Access>>,
    /// When each probe of the last minute started.
    probes: std::collections::VecDeque<Instant>,
}

impl Namespaces {
    /// Counts a probe if one more fits in the last minute.
    fn take_probe(&mut self, now: Instant) -> bool {
        while self.probes.front().is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60)) {
            self.probes.pop_front();
        }
        let room = self.probes.len() < MAX_PROBES_PER_MINUTE;
        if room {
            self.probes.push_back(now);
        }
        room
    }

    /// Forgets RBAC's answers that are due to be asked again: a namespace
    /// named once and refused does not stay in memory, so names made up by
    /// the thousand leave nothing behind.
    fn forget_stale(&mut self) {
        if self.ready.values().any(Access::recheck) {
            self.setups.retain(|_, setup| !setup.get().is_some_and(Access::recheck));
            self.ready = Arc::new(
                self.ready.iter().filter(|(_, a)| !a.recheck()).map(|(k, a)| (k.clone(), a.clone())).collect(),
            );
        }
    }

    /// Publishes a finished setup to the snapshots.
    fn publish(&mut self, namespace: &str, access: &Access) {
        let mut ready = HashMap::clone(&self.ready);
        ready.insert(namespace.to_string(), access.clone());
        self.ready = Arc::new(ready);
    }
}

/// Reflector tasks that are aborted when dropped, unless kept: a setup that
/// fails (or whose caller gives up) leaves nothing running.
struct AbortOnDrop(Vec<AbortHandle>);

impl AbortOnDrop {
    fn keep(mut self) -> Vec<AbortHandle> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The live caches of one engine. Cheap to share behind an `Arc`.
pub(crate) struct ClusterCache {
    client: Client,
    health: Health,
    scope: Scope,
    namespaces: Option<Arc<Store<Namespace>>>,
    tasks: std::sync::Mutex<Vec<AbortHandle>>,
}

impl Drop for ClusterCache {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl ClusterCache {
    /// Starts the caches in the widest scope RBAC allows. Namespaced, it
    /// waits for the default namespace's first sync; cluster-wide, only for
    /// the list of namespaces (names are answered by GETs until the rest is
    /// listed).
    pub async fn start(client: Client, default_namespace: &str) -> Result<ClusterCache, CacheError> {
        let tasks = std::sync::Mutex::new(Vec::new());
        let health = Health::new(client.clone());
        let cluster_wide = missing_permission(&client, None).await?.is_none();
        let (namespaces, namespaces_listed) = if allowed(&client, None, "", "namespaces", "list").await?
            && allowed(&client, None, "", "namespaces", "watch").await?
        {
            let store = Arc::new(Store::<Namespace>::default());
            let (listed, task) = reflect(Api::all(client.clone()), &health, None, store.clone(), ready(()));
            tasks.lock().unwrap().push(task);
            (Some(store), Some(listed))
        } else {
            (None, None)
        };
        let scope = if cluster_wide {
            let (stores, handles) = Stores::start(&client, &health, None);
            tasks.lock().unwrap().extend(handles);
            Scope::Cluster(stores)
        } else {
            Scope::Namespaced(std::sync::Mutex::new(Namespaces::default()))
        };
        let cache = ClusterCache { client, health, scope, namespaces, tasks };
        if let Scope::Namespaced(_) = &cache.scope {
            cache.ensure_namespace(default_namespace).await?;
        }
        if let Some(listed) = &namespaces_listed {
            listed.wait("namespaces").await?;
        }
        tracing::info!(
            scope = if cluster_wide { "cluster" } else { "per namespace" },
            namespaces_listed = cache.namespaces.is_some(),
            "watch caches started"
        );
        Ok(cache)
    }

    /// Waits until the Services and EndpointSlices of the scopes watched so
    /// far are listed (or [`SYNC_TIMEOUT`] passed): for what wants the whole
    /// picture rather than one name, such as an example Service to show.
    pub async fn listed(&self) {
        let _ = self.snapshot().await.wait_listed().await;
    }

    /// In namespaced mode, starts watching `namespace` the first time it is
    /// named (if RBAC allows) and waits for its first sync. Where RBAC said no,
    /// it asks again after [`RECHECK_DENIED`].
    pub async fn ensure_namespace(&self, namespace: &str) -> Result<(), CacheError> {
        let Scope::Namespaced(map) = &self.scope else { return Ok(()) };
        // A namespace that does not exist needs no watch (and `example.com` must
        // not cost an access review for namespace "com" on every connection).
        if let Some(ns) = &self.namespaces
            && ns.get("", namespace).is_none()
        {
            return Ok(());
        }
        let setup = {
            let mut map = map.lock().unwrap();
            let known = map.setups.get(namespace).is_some_and(|s| s.get().is_none_or(|a| !a.recheck()));
            if !known {
                // Only a probe pays for housekeeping: a connection into a
                // known namespace costs a map lookup.
                map.forget_stale();
                if !map.take_probe(Instant::now()) {
                    return Err(CacheError::TooManyNamespaces { namespace: namespace.to_string() });
                }
            }
            // A setup due for a recheck was just forgotten: a fresh one asks again.
            map.setups.entry(namespace.to_string()).or_default().clone()
        };
        // Concurrent first connections to a namespace share one setup; if it
        // fails (or its caller gives up), the next one to come tries again.
        let mut fresh = false;
        let access = setup
            .get_or_try_init(|| {
                fresh = true;
                self.set_up(namespace)
            })
            .await?;
        if fresh {
            map.lock().unwrap().publish(namespace, access);
        }
        Ok(())
    }

    /// Asks RBAC what kubesocks may do in `namespace` and, where it may
    /// watch, starts its reflectors and waits for their first sync. The
    /// reflectors of a setup that fails or is dropped are stopped.
    async fn set_up(&self, namespace: &str) -> Result<Access, CacheError> {
        Ok(match missing_permission(&self.client, Some(namespace)).await? {
            Some(missing) if may_get(&self.client, namespace).await? => {
                tracing::info!(
                    namespace,
                    %missing,
                    "no watch cache here; names in this namespace are looked up with GETs on each connection"
                );
                Access::Direct { missing, checked: Instant::now() }
            }
            Some(missing) => {
                tracing::warn!(namespace, %missing, "RBAC hides this namespace from kubesocks");
                Access::Forbidden { missing, checked: Instant::now() }
            }
            None => {
                let (stores, handles) = Stores::start(&self.client, &self.health, Some(namespace));
                let running = AbortOnDrop(handles);
                stores.wait(&format!("namespace {namespace}")).await?;
                self.tasks.lock().unwrap().extend(running.keep());
                Access::Watched(stores)
            }
        })
    }

    /// Whether the watches are fed.
    pub fn health(&self) -> HealthState {
        self.health.state()
    }

    /// A consistent-enough view of the caches.
    pub async fn snapshot(&self) -> Snapshot {
        let scope = match &self.scope {
            Scope::Cluster(stores) => SnapshotScope::Cluster(stores.clone()),
            Scope::Namespaced(map) => SnapshotScope::Namespaced(map.lock().unwrap().ready.clone()),
        };
        Snapshot { scope, namespaces: self.namespaces.clone(), fetched: None, pods_fetched: Vec::new() }
    }

    /// Everything the resolution of `query` needs: the namespace its name points
    /// into made readable (watched from now on, or its objects fetched with
    /// direct GETs where RBAC allows only those), its pods listed if it
    /// needs them, and a snapshot.
    pub async fn snapshot_for(&self, query: &Query) -> Result<Snapshot, CacheError> {
        let named = query.named();
        if let Some(named) = &named {
            self.ensure_namespace(named.namespace()).await?;
        }
        let mut snapshot = self.snapshot().await;
        if let Query::Ip(_) = query {
            // Whether it is a ClusterIP is known once the Services are listed.
            snapshot.wait_listed().await?;
        }
        let pods_of = match query {
            Query::PodHostname { namespace, .. } | Query::PodIp { namespace, .. } => Some(Some(namespace.as_str())),
            Query::Ip(ip) if snapshot.service_by_ip(*ip).is_none() => Some(None),
            _ => None,
        };
        if let Some(namespace) = pods_of {
            let ip = match query {
                Query::Ip(ip) | Query::PodIp { ip, .. } => Some(*ip),
                _ => None,
            };
            let mut fetched = Vec::new();
            for stores in snapshot.stores(namespace) {
                if let Some(ip) = ip.filter(|_| !stores.pods_listed.is_done()) {
                    // Until the pods are listed (in a big cluster, most of the
                    // bytes), a pod IP behind a Service is found in the
                    // EndpointSlices, listed first, and its pod fetched by name.
                    let named = lookup::pods_at(stores.slices.all().iter().map(|s| &**s), ip);
                    if !named.is_empty() {
                        match lookup::fetch_pods(&self.client, &named).await {
                            Ok(pods) if !pods.is_empty() => {
                                fetched.extend(pods);
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(%ip, error = %e, "a GET of a pod before the pods' list failed"),
                        }
                    }
                }
                stores.pods_listed.wait("pods").await?;
            }
            snapshot.pods_fetched = fetched;
        }
        let Some(named) = named else { return Ok(snapshot) };
        if snapshot.is_direct(named.namespace()) {
            snapshot.fetched = lookup::fetch(&self.client, &named).await.map_err(|source| CacheError::Lookup {
                namespace: named.namespace().to_string(),
                what: named.to_string(),
                source: Box::new(source),
            })?;
        } else if snapshot.listing() {
            match lookup::fetch(&self.client, &named).await {
                Ok(fetched) => snapshot.fetched = fetched,
                Err(e) => {
                    tracing::debug!(name = %named, error = %e, "a GET before the first lists failed; waiting for them");
                    snapshot.wait_listed().await?;
                }
            }
        }
        Ok(snapshot)
    }
}

impl Stores {
    fn start(client: &Client, health: &Health, namespace: Option<&str>) -> (Stores, Vec<AbortHandle>) {
        let services: Arc<Store<Service>> = Arc::default();
        let slices: Arc<Store<EndpointSlice>> = Arc::default();
        let pods: Arc<Store<Pod>> = Arc::default();
        let (services_listed, a) = reflect(api(client, namespace), health, namespace, Arc::clone(&services), ready(()));
        let (slices_listed, b) = reflect(api(client, namespace), health, namespace, Arc::clone(&slices), ready(()));
        // Pods are listed once Services and slices are: those answer most names.
        let first = {
            let (services, slices) = (services_listed.clone(), slices_listed.clone());
            async move {
                futures::future::join(services.done(), slices.done()).await;
            }
        };
        let (pods_listed, c) = reflect(api(client, namespace), health, namespace, Arc::clone(&pods), first);
        let stores = Stores { services, slices, pods, services_listed, slices_listed, pods_listed };
        (stores, vec![a, b, c])
    }

    /// Waits for the first lists of Services and EndpointSlices (pods are
    /// waited for by the names that need them).
    async fn wait(&self, scope: &str) -> Result<(), CacheError> {
        let both = futures::future::join(self.services_listed.wait(scope), self.slices_listed.wait(scope)).await;
        both.0.and(both.1)
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Whether a reflector's first list is done. Any number of tasks may wait
/// for it (a `Store`'s own `wait_until_ready` wakes only the last to ask).
#[derive(Clone)]
struct Listed(tokio::sync::watch::Receiver<bool>);

impl Listed {
    fn is_done(&self) -> bool {
        *self.0.borrow()
    }

    /// Until the first list is done, or its reflector stopped.
    async fn done(&self) {
        let _ = self.0.clone().wait_for(|listed| *listed).await;
    }

    /// [`Listed::done`], given up after [`SYNC_TIMEOUT`].
    async fn wait(&self, scope: &str) -> Result<(), CacheError> {
        tokio::time::timeout(SYNC_TIMEOUT, self.done())
            .await
            .map_err(|_| CacheError::SyncTimeout { scope: scope.to_string() })
    }
}

/// Watches `api` in the background, once `after` is done, keeping `store`
/// from its events, and returns whether the first list is done. Its first
/// list, failures and recoveries are logged and told to `health`, under
/// the name "KIND in the cluster" or "KIND in namespace NS".
fn reflect<T: Kept>(
    api: Api<T::Sent>,
    health: &Health,
    namespace: Option<&str>,
    store: Arc<Store<T>>,
    after: impl Future<Output = ()> + Send + 'static,
) -> (Listed, AbortHandle) {
    let kind = T::Sent::kind(&()).to_string();
    let watch = match namespace {
        Some(ns) => format!("{kind} in namespace {ns}"),
        None => format!("{kind} in the cluster"),
    };
    let stream = watcher(api, watcher::Config::default()).backoff(watch_backoff());
    // Retries come twice a second while the API server is away: the first
    // failure is a warning, the rest debug lines, and the recovery is told.
    let mut failures = 0u64;
    // A watch stopped while failing (its namespace's setup given up) leaves no failure behind.
    health.syncing(&watch);
    let reported = Reported { health: health.clone(), watch };
    let (listed, first_list) = tokio::sync::watch::channel(false);
    let mut listing_since = Some(Instant::now());
    let watch = stream.for_each(move |event| {
        let watch = &reported.watch;
        match event {
            Err(e) => {
                reported.health.failed(watch, &e);
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%watch, error = %e, "watch failed; retrying every second or sooner");
                } else {
                    tracing::debug!(%watch, error = %e, failures, "watch failed again");
                }
            }
            Ok(event) => {
                store.event(&event);
                reported.health.fed(watch);
                if matches!(event, watcher::Event::InitDone) {
                    // Namespaces are few, and their list comes before the first answer.
                    if kind != "Namespace" {
                        release_list_memory();
                    }
                    if let Some(since) = listing_since.take() {
                        reported.health.synced(watch);
                        listed.send_replace(true);
                        tracing::debug!(%watch, took_ms = since.elapsed().as_millis() as u64, "first list done");
                    }
                }
                if failures > 0 {
                    tracing::info!(%watch, failures, "watch resumed");
                    failures = 0;
                }
            }
        }
        futures::future::ready(())
    });
    let task = tokio::spawn(
        async move {
            after.await;
            watch.await
        }
        .in_current_span(),
    );
    (Listed(first_list), task.abort_handle())
}

/// Gives back to the system the memory a list's pages were read into. A big
/// cluster's list comes in pages of megabytes, parsed on several threads;
/// glibc keeps what they freed in its per-thread arenas, tens of MiB that
/// nothing reuses until the next list.
fn release_list_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A watch as [`Health`] knows it, forgotten there when the watch ends.
struct Reported {
    health: Health,
    watch: String,
}

impl Drop for Reported {
    fn drop(&mut self) {
        self.health.fed(&self.watch);
        self.health.synced(&self.watch);
    }
}

/// Asks the API server whether this user may `verb` the `resource`.
async fn allowed(
    client: &Client,
    namespace: Option<&str>,
    group: &str,
    resource: &str,
    verb: &str,
) -> Result<bool, CacheError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: namespace.map(str::to_string),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.map_err(CacheError::AccessReview)?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Whether RBAC allows the GETs [`crate::cluster::lookup`] makes in `namespace`.
async fn may_get(client: &Client, namespace: &str) -> Result<bool, CacheError> {
    for resource in ["services", "endpoints", "pods"] {
        if !allowed(client, Some(namespace), "", resource, "get").await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The first list/watch permission that resolution needs and RBAC denies, as
/// text for the user ("list services in namespace team-b"), or `None`.
async fn missing_permission(client: &Client, namespace: Option<&str>) -> Result<Option<String>, CacheError> {
    let needed = [("", "services"), ("discovery.k8s.io", "endpointslices"), ("", "pods")];
    for (group, resource) in needed {
        for verb in ["list", "watch"] {
            if !allowed(client, namespace, group, resource, verb).await? {
                let qualified = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
                let place = namespace.map_or("cluster-wide".to_string(), |ns| format!("in namespace {ns}"));
                return Ok(Some(format!("RBAC does not allow {verb} {qualified} {place}")));
            }
        }
    }
    Ok(None)
}

#[derive(Clone)]
enum SnapshotScope {
    Cluster(Stores),
    Namespaced(Arc<HashMap<String, Access>>),
}

/// The caches as [`resolve`](crate::route::resolve) reads them, plus what
/// was fetched for this one resolution in a namespace without a cache.
pub(crate) struct Snapshot {
    scope: SnapshotScope,
    namespaces: Option<Arc<Store<Namespace>>>,
    fetched: Option<Fetched>,
    /// Pods fetched by name for a pod IP asked before the pods were listed.
    pods_fetched: Vec<Arc<Pod>>,
}

impl Snapshot {
    /// A Service of `namespace` to show in examples: the first by name whose
    /// first port reaches a ready endpoint, leaving out the API server's own
    /// `kubernetes` Service (so the example a user tries answers).
    pub fn example_service(&self, namespace: &str) -> Option<(String, i32)> {
        let mut found: Vec<(String, i32)> = self
            .stores(Some(namespace))
            .into_iter()
            .flat_map(|s| s.services.all_in(namespace))
            .filter(|svc| &*svc.name != "kubernetes")
            .filter_map(|svc| {
                let spec = svc.spec.as_ref()?;
                if spec.type_.as_deref() == Some("ExternalName") {
                    return None;
                }
                Some((svc.name.to_string(), spec.ports.as_ref()?.first()?.port))
            })
            // Only a Service that answers: its port resolves to a ready endpoint.
            .filter(|(name, port)| {
                let query = Query::Service { namespace: namespace.to_string(), name: name.clone() };
                u16::try_from(*port).is_ok_and(|port| route::resolve(query, port, self).is_ok())
            })
            .collect();
        found.sort();
        found.into_iter().next()
    }

    /// The names and addresses this snapshot knows, for the PAC file: every
    /// namespace (listed, or else those kubesocks has looked into, and
    /// `default_namespace`), and every ClusterIP and Pod IP it holds.
    pub fn cluster_names(&self, domain: &str, default_namespace: &str) -> ClusterNames {
        let mut names = ClusterNames { domain: domain.to_string(), ..ClusterNames::default() };
        names.namespaces.insert(default_namespace.to_string());
        match &self.namespaces {
            Some(store) => names.namespaces.extend(store.all().iter().map(|ns| ns.name.to_string())),
            None => {
                if let SnapshotScope::Namespaced(map) = &self.scope {
                    let seen = map.iter().filter(|(_, a)| !matches!(a, Access::Forbidden { .. }));
                    names.namespaces.extend(seen.map(|(ns, _)| ns.clone()));
                }
                for stores in self.stores(None) {
                    names.namespaces.extend(stores.services.all().iter().map(|svc| svc.namespace.to_string()));
                }
            }
        }
        for stores in self.stores(None) {
            names.addresses.extend(stores.services.keys());
            names.addresses.extend(stores.pods.keys().into_iter().filter_map(|key| match key {
                PodKey::Ip(ip) => Some(ip),
                PodKey::Host(..) => None,
            }));
        }
        names
    }

    /// Waits until the Services and EndpointSlices of every scope in this
    /// snapshot are listed (each scope's wait bounded by [`SYNC_TIMEOUT`]).
    async fn wait_listed(&self) -> Result<(), CacheError> {
        for stores in self.stores(None) {
            stores.wait("the cluster").await?;
        }
        Ok(())
    }

    /// Whether the cluster-wide Services or EndpointSlices are still being
    /// listed for the first time (names are then looked up with GETs).
    fn listing(&self) -> bool {
        matches!(&self.scope, SnapshotScope::Cluster(s) if !(s.services_listed.is_done() && s.slices_listed.is_done()))
    }

    fn is_direct(&self, namespace: &str) -> bool {
        matches!(&self.scope, SnapshotScope::Namespaced(map) if matches!(map.get(namespace), Some(Access::Direct { .. })))
    }

    /// The objects fetched for this resolution, if they are from `namespace`.
    fn fetched(&self, namespace: &str) -> Option<&Fetched> {
        self.fetched.as_ref().filter(|f| f.namespace == namespace)
    }

    /// The stores that may hold objects of `namespace` (all of them for IP lookups).
    fn stores(&self, namespace: Option<&str>) -> Vec<&Stores> {
        match (&self.scope, namespace) {
            (SnapshotScope::Cluster(s), _) => vec![s],
            (SnapshotScope::Namespaced(map), Some(ns)) => match map.get(ns) {
                Some(Access::Watched(s)) => vec![s],
                _ => vec![],
            },
            (SnapshotScope::Namespaced(map), None) => map
                .values()
                .filter_map(|a| match a {
                    Access::Watched(s) => Some(s),
                    Access::Direct { .. } | Access::Forbidden { .. } => None,
                })
                .collect(),
        }
    }
}

impl ClusterView for Snapshot {
    fn namespace_exists(&self, namespace: &str) -> Option<bool> {
        let store = self.namespaces.as_ref()?;
        Some(store.get("", namespace).is_some())
    }

    fn visible(&self, namespace: &str) -> Result<(), String> {
        match &self.scope {
            SnapshotScope::Cluster(_) => Ok(()),
            SnapshotScope::Namespaced(map) => match map.get(namespace) {
                Some(Access::Watched(_)) => Ok(()),
                Some(Access::Direct { .. }) if self.fetched(namespace).is_some() => Ok(()),
                // Only a pod-IP name reaches here: GETs cannot find a pod by its IP.
                Some(Access::Direct { missing, .. }) => Err(format!("{missing}, so pods there cannot be found by IP")),
                Some(Access::Forbidden { missing, .. }) => Err(missing.clone()),
                // Nothing to hide in a namespace that does not exist.
                None if self.namespace_exists(namespace) == Some(false) => Ok(()),
                None => Err(format!("namespace {namespace} is not watched")),
            },
        }
    }

    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.stores(Some(namespace)).into_iter().find_map(|s| s.services.get(namespace, name)).or_else(|| {
            let fetched = self.fetched(namespace)?.service.clone();
            fetched.filter(|svc| &*svc.name == name)
        })
    }

    fn service_by_ip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.stores(None).into_iter().find_map(|s| s.services.find(&ip).pop())
    }

    fn endpoint_slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        let of_service = |slice: &EndpointSlice| &*slice.namespace == namespace && slice.service() == Some(service);
        let fetched = self.fetched(namespace).into_iter().flat_map(|f| &f.slices).filter(|s| of_service(s)).cloned();
        let key = (Arc::from(namespace), Arc::from(service));
        self.stores(Some(namespace)).into_iter().flat_map(|s| s.slices.find(&key)).chain(fetched).collect()
    }

    fn pods_by_ip(&self, ip: IpAddr) -> Vec<Arc<Pod>> {
        let fetched = self.pods_fetched.iter().filter(|p| p.ips.contains(&ip)).cloned();
        self.stores(None).into_iter().flat_map(|s| s.pods.find(&PodKey::Ip(ip))).chain(fetched).collect()
    }

    fn pods_by_hostname(&self, namespace: &str, hostname: &str, subdomain: &str) -> Vec<Arc<Pod>> {
        let named = |pod: &Pod| &*pod.namespace == namespace && pod.host() == Some((hostname, subdomain));
        let fetched = self.fetched(namespace).into_iter().flat_map(|f| &f.pods).filter(|p| named(p)).cloned();
        let key = PodKey::host(namespace.into(), hostname, subdomain);
        self.stores(Some(namespace)).into_iter().flat_map(|s| s.pods.find(&key)).chain(fetched).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper::http::{Request, Response};
    use serde_json::json;

    use super::*;
    use crate::route::{Host, Rules};

    /// Requests into namespace `slow` that are waiting for an answer; the
    /// answer never comes, so the count falls only when their caller is gone.
    #[derive(Default)]
    struct Fake {
        slow_in_flight: AtomicUsize,
        /// Access reviews asked so far.
        reviews: AtomicUsize,
    }

    struct InFlight(Arc<Fake>);

    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.slow_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// An API server in memory for a user who may watch namespaces `fast`
    /// and `slow` but nothing cluster-wide. `fast` lists at once (Service
    /// `web`); `slow` never answers its first lists, as an overloaded API
    /// server or a huge namespace would not in time.
    fn client(fake: Arc<Fake>) -> Client {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let body = req.into_body().collect().await?.to_bytes();
                let answer = if path.ends_with("/selfsubjectaccessreviews") {
                    fake.reviews.fetch_add(1, Ordering::SeqCst);
                    let review: serde_json::Value = serde_json::from_slice(&body)?;
                    let attributes = &review["spec"]["resourceAttributes"];
                    let allowed = attributes["resource"] != "namespaces" && attributes["namespace"].is_string();
                    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                           "spec": {}, "status": {"allowed": allowed}})
                } else if path.contains("/namespaces/slow/") || query.contains("watch=true") {
                    let _in_flight = path.contains("/namespaces/slow/").then(|| {
                        fake.slow_in_flight.fetch_add(1, Ordering::SeqCst);
                        InFlight(fake.clone())
                    });
                    std::future::pending::<()>().await;
                    unreachable!()
                } else {
                    let kind = path.rsplit('/').next().unwrap_or_default();
                    let items = match kind {
                        "services" => vec![json!({"metadata": {"name": "web", "namespace": "fast"},
                                                  "spec": {"ports": [{"port": 80}]}})],
                        _ => vec![],
                    };
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
                };
                let body = Full::new(Bytes::from(answer.to_string()));
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    Response::builder().header("content-type", "application/json").body(body).unwrap(),
                )
            }
        });
        Client::new(service, "fast")
    }

    /// A cluster-wide cache over an API server that holds these objects of
    /// `kind` ("pods", "services" or "endpointslices") and nothing else.
    async fn cache_holding(kind: &'static str, objects: Arc<Vec<serde_json::Value>>) -> ClusterCache {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let objects = objects.clone();
            async move {
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let answer = if path.ends_with("/selfsubjectaccessreviews") {
                    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                           "spec": {}, "status": {"allowed": true}})
                } else if query.contains("watch=true") {
                    std::future::pending::<()>().await;
                    unreachable!()
                } else {
                    let items = if path.ends_with(&format!("/{kind}")) { objects.to_vec() } else { vec![] };
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
                };
                let body = Full::new(Bytes::from(answer.to_string()));
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    Response::builder().header("content-type", "application/json").body(body).unwrap(),
                )
            }
        });
        let cache = ClusterCache::start(Client::new(service, "default"), "default").await.unwrap();
        let Scope::Cluster(stores) = &cache.scope else { panic!("a cluster-wide cache") };
        stores.pods_listed.done().await;
        cache
    }

    /// `n` pods (IPs 10.1.x.y, hostname `host-N` in subdomain `sub`).
    async fn cache_of_pods(n: usize) -> ClusterCache {
        let pods = (0..n).map(|i| {
            json!({"metadata": {"namespace": format!("ns-{}", i % 50), "name": format!("pod-{i}")},
                   "spec": {"containers": [], "hostname": format!("host-{i}"), "subdomain": "sub"},
                   "status": {"phase": "Running", "podIPs": [{"ip": format!("10.1.{}.{}", i / 250, i % 250)}]}})
        });
        cache_holding("pods", Arc::new(pods.collect())).await
    }

    /// What a cache holds per object, measured on the test's thread (where
    /// every task of a `#[tokio::test]` runs): the heap held with 2 000
    /// production-shaped objects of a kind, less that with none, over 2 000.
    /// The stores, their keys and the indexes all count. Kept as
    /// k8s-openapi's types (managedFields cleared), they held 23 777 bytes
    /// per pod, 4 310 per Service and 4 716 per EndpointSlice; as slim
    /// types in kube-runtime's stores with indexes beside them, 1 159, 1 274
    /// and 1 826.
    #[tokio::test]
    async fn a_cached_object_holds_a_fraction_of_what_the_api_server_sends() {
        use crate::testing::{heap, realistic};
        const N: usize = 2000;
        type Make = fn(usize) -> serde_json::Value;
        let kinds: [(&str, Make, isize); 3] = [
            ("pods", realistic::pod, 400),
            ("services", realistic::service, 650),
            ("endpointslices", realistic::slice, 1200),
        ];
        let mut figures = Vec::new();
        for (kind, make, most) in kinds {
            let mut held = [0isize; 2];
            let mut json_bytes = 0;
            for (slot, n) in [(0, 0), (1, N)] {
                let objects: Vec<serde_json::Value> = (0..n).map(make).collect();
                json_bytes = objects.iter().map(|o| o.to_string().len()).sum::<usize>() / N;
                let objects = Arc::new(objects);
                let before = heap::held();
                let cache = cache_holding(kind, objects).await;
                held[slot] = heap::held() - before;
                drop(cache);
                // Aborted reflectors are dropped when the runtime next runs.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let per_object = (held[1] - held[0]) / N as isize;
            println!(
                "{kind}: {json_bytes} bytes of JSON each from the API server, {per_object} bytes held per cached object"
            );
            figures.push((kind, per_object, most));
        }
        for (kind, per_object, most) in figures {
            assert!(per_object <= most, "a cached object of {kind} holds {per_object} bytes, more than {most}");
        }
    }

    #[tokio::test]
    async fn a_lookup_by_pod_ip_or_hostname_looks_at_one_pod_with_2000_pods_as_with_20() {
        let mut visited = Vec::new();
        for n in [20, 2000] {
            let cache = cache_of_pods(n).await;
            let snapshot = cache.snapshot().await;
            let SnapshotScope::Cluster(stores) = &snapshot.scope else { panic!("a cluster-wide cache") };
            assert_eq!(stores.pods.len(), n);
            let looked_at = || stores.pods.visited.swap(0, Ordering::Relaxed);
            let found = snapshot.pods_by_ip("10.1.0.7".parse().unwrap());
            assert_eq!(found.iter().map(|p| &*p.name).collect::<Vec<_>>(), ["pod-7"], "{n} pods");
            let by_ip = looked_at();
            let found = snapshot.pods_by_hostname("ns-7", "host-7", "sub");
            assert_eq!(found.iter().map(|p| &*p.name).collect::<Vec<_>>(), ["pod-7"], "{n} pods");
            let by_host = looked_at();
            assert!(snapshot.pods_by_ip("10.9.9.9".parse().unwrap()).is_empty());
            assert_eq!(looked_at(), 0, "an IP no pod has");
            visited.push((n, by_ip, by_host));
        }
        println!("pods looked at per lookup (pods, by IP, by hostname): {visited:?}");
        assert_eq!(visited, [(20, 1, 1), (2000, 1, 1)], "a lookup's cost grows with the cluster");
    }

    /// Services and slices are listed first and a Service name answers as
    /// soon as they are; pods are listed only then. Meanwhile the context
    /// says `syncing`, a pod IP behind a Service answers from its slice and
    /// a GET of the pod, and only a pod IP behind none waits for the list.
    #[tokio::test]
    async fn a_service_name_answers_while_pods_are_still_listed() {
        let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let pods_listed = Arc::new(tokio::sync::Notify::new());
        let service = tower::service_fn({
            let (log, pods_listed) = (log.clone(), pods_listed.clone());
            move |req: Request<kube::client::Body>| {
                let (log, pods_listed) = (log.clone(), pods_listed.clone());
                async move {
                    let path = req.uri().path().to_string();
                    let query = req.uri().query().unwrap_or_default().to_string();
                    let items = if path.ends_with("/selfsubjectaccessreviews") {
                        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                            "spec": {}, "status": {"allowed": true}});
                        return Ok(Response::new(Full::new(Bytes::from(review.to_string()))));
                    } else if query.contains("watch=true") {
                        std::future::pending::<()>().await;
                        unreachable!()
                    } else if path == "/api/v1/services" {
                        vec![json!({"metadata": {"namespace": "default", "name": "web"},
                                    "spec": {"clusterIPs": ["10.96.0.1"], "ports": [{"port": 80}]}})]
                    } else if path == "/apis/discovery.k8s.io/v1/endpointslices" {
                        vec![json!({"metadata": {"namespace": "default", "name": "db-x",
                                                 "labels": {"kubernetes.io/service-name": "db"}},
                                    "endpoints": [{"addresses": ["10.244.0.2"], "conditions": {"ready": true},
                                                   "targetRef": {"kind": "Pod", "namespace": "default", "name": "q"}}],
                                    "ports": [{"port": 5432}]})]
                    } else if path == "/api/v1/namespaces/default/pods/q" {
                        log.lock().unwrap().push("pod q got".into());
                        let pod = json!({"metadata": {"namespace": "default", "name": "q"},
                                         "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.2"}]}});
                        return Ok(Response::new(Full::new(Bytes::from(pod.to_string()))));
                    } else if path == "/api/v1/pods" {
                        log.lock().unwrap().push("pods asked".into());
                        pods_listed.notified().await;
                        vec![json!({"metadata": {"namespace": "default", "name": "p"},
                                    "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.1"}]}})]
                    } else {
                        vec![]
                    };
                    log.lock().unwrap().push(format!("{path} answered"));
                    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items});
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(Bytes::from(
                        list.to_string(),
                    ))))
                }
            }
        });
        let cache = Arc::new(ClusterCache::start(Client::new(service, "default"), "default").await.unwrap());
        cache.listed().await;
        assert_eq!(cache.health(), HealthState::Syncing { watch: "Pod in the cluster".into() });
        let rules = Rules::new("cluster.local", "default");
        let web = Query::read(&Host::parse("web.default"), &rules);
        let snapshot = tokio::time::timeout(Duration::from_secs(1), cache.snapshot_for(&web)).await.unwrap().unwrap();
        assert!(
            route::resolve(web, 80, &snapshot).is_err_and(|e| matches!(e, route::Refusal::NoReadyEndpoints { .. }))
        );
        let cluster_ip = Query::read(&Host::parse("10.96.0.1"), &rules);
        assert!(tokio::time::timeout(Duration::from_secs(1), cache.snapshot_for(&cluster_ip)).await.is_ok());

        // A pod IP behind a Service: found in its EndpointSlice, its pod fetched by name.
        let behind_service = Query::read(&Host::parse("10.244.0.2"), &rules);
        let snapshot =
            tokio::time::timeout(Duration::from_secs(1), cache.snapshot_for(&behind_service)).await.unwrap().unwrap();
        let target = route::resolve(behind_service, 5432, &snapshot).expect("the pod behind a Service");
        assert_eq!((target.endpoints[0].pod.as_str(), target.endpoints[0].port), ("q", 5432));

        // One behind none waits for the pods' list.
        let pod_ip = Query::read(&Host::parse("10.244.0.1"), &rules);
        let waiting = tokio::spawn({
            let cache = cache.clone();
            async move { cache.snapshot_for(&pod_ip).await.map(|s| !s.pods_by_ip("10.244.0.1".parse().unwrap()).is_empty()) }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "a pod IP waits for the pods' first list");
        pods_listed.notify_one();
        assert!(waiting.await.unwrap().unwrap(), "and is found once it is done");
        assert_eq!(cache.health(), HealthState::Connected);

        let log = log.lock().unwrap().clone();
        let at = |what: &str| log.iter().position(|l| l == what).unwrap_or_else(|| panic!("{what} not in {log:?}"));
        assert!(at("pods asked") > at("/api/v1/services answered"), "{log:?}");
        assert!(at("pods asked") > at("/apis/discovery.k8s.io/v1/endpointslices answered"), "{log:?}");
        assert!(at("pod q got") < log.len(), "{log:?}");
    }

    /// Cluster-wide, the first connection does not wait for the Services'
    /// and EndpointSlices' lists (in a big cluster, many pages): until they
    /// are done, its name is answered from GETs of the Service and its
    /// endpoints. Here the lists never finish, and the name still answers.
    #[tokio::test]
    async fn a_service_name_answers_by_get_before_the_cluster_is_listed() {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| async move {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or_default().to_string();
            let answer = match path.as_str() {
                p if p.ends_with("/selfsubjectaccessreviews") => {
                    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                           "spec": {}, "status": {"allowed": true}})
                }
                "/api/v1/namespaces" if !query.contains("watch=true") => {
                    json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"},
                           "items": [{"metadata": {"name": "default"}}]})
                }
                "/api/v1/namespaces/default/services/web" => {
                    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": "web"},
                           "spec": {"clusterIPs": ["10.96.0.10"], "ports": [{"port": 80, "targetPort": 8080}]}})
                }
                "/api/v1/namespaces/default/endpoints/web" => {
                    json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"namespace": "default", "name": "web"},
                           "subsets": [{"addresses": [{"ip": "10.244.0.5",
                                                       "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0"}}],
                                        "ports": [{"port": 8080}]}]})
                }
                // Every other list and watch: a cluster too big to list in time.
                _ => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            };
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(Bytes::from(answer.to_string()))))
        });
        let started = tokio::time::timeout(
            Duration::from_secs(2),
            ClusterCache::start(Client::new(service, "default"), "default"),
        );
        let cache = started.await.expect("the start waits for the Services' list").unwrap();
        let web = Query::read(&Host::parse("web.default"), &Rules::new("cluster.local", "default"));
        let snapshot = tokio::time::timeout(Duration::from_secs(2), cache.snapshot_for(&web)).await.unwrap().unwrap();
        let target = route::resolve(web, 80, &snapshot).expect("the name answers from GETs");
        let endpoint = route::Endpoint::new("default", "web-0", 8080);
        assert_eq!(target.endpoints, [endpoint]);
    }

    fn service_query(name: &str) -> Query {
        Query::read(&Host::parse(name), &Rules::new("cluster.local", "fast"))
    }

    #[tokio::test]
    async fn a_namespace_that_is_slow_to_sync_delays_no_other() {
        let fake = Arc::new(Fake::default());
        let cache = Arc::new(ClusterCache::start(client(fake.clone()), "fast").await.unwrap());
        let stuck = tokio::spawn({
            let cache = cache.clone();
            async move { cache.ensure_namespace("slow").await }
        });
        // Its Services and slices: pods are listed after them.
        while fake.slow_in_flight.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // `slow` is being set up (its first lists are under way): `fast` answers meanwhile.
        let snapshot = tokio::time::timeout(Duration::from_secs(2), cache.snapshot_for(&service_query("web.fast.svc")))
            .await
            .expect("a watched namespace answers while another one syncs")
            .unwrap();
        assert!(snapshot.service("fast", "web").is_some());
        assert!(!stuck.is_finished(), "the slow namespace is still syncing");
        stuck.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_setup_that_times_out_leaves_no_reflector_running() {
        let fake = Arc::new(Fake::default());
        let cache = ClusterCache::start(client(fake.clone()), "fast").await.unwrap();
        for attempt in 1..=2 {
            let e = cache.ensure_namespace("slow").await.unwrap_err();
            assert!(matches!(e, CacheError::SyncTimeout { .. }), "attempt {attempt}: {e}");
            tokio::task::yield_now().await;
            assert_eq!(fake.slow_in_flight.load(Ordering::SeqCst), 0, "attempt {attempt}: reflectors left running");
        }
        // Giving up on a setup (the client left) stops its reflectors too.
        let given_up = tokio::time::timeout(Duration::from_secs(1), cache.ensure_namespace("slow")).await;
        assert!(given_up.is_err());
        tokio::task::yield_now().await;
        assert_eq!(fake.slow_in_flight.load(Ordering::SeqCst), 0, "an abandoned setup leaves reflectors running");
    }

    /// Names made up by the thousand (a web page's `x.ns<i>.svc` in a loop)
    /// where namespaces cannot be listed: at most a minute's worth of
    /// namespaces are probed, the rest cost no request, and a snapshot
    /// shares the map of namespaces rather than copying it.
    #[tokio::test]
    async fn a_flood_of_made_up_namespaces_is_probed_at_a_bounded_rate() {
        let fake = Arc::new(Fake::default());
        let cache = ClusterCache::start(client(fake.clone()), "fast").await.unwrap();
        let mut probed = 0;
        for i in 0..200 {
            match cache.ensure_namespace(&format!("made-up-{i}")).await {
                Ok(()) => probed += 1,
                Err(CacheError::TooManyNamespaces { .. }) => {}
                Err(e) => panic!("made-up-{i}: {e}"),
            }
        }
        assert_eq!(probed, MAX_PROBES_PER_MINUTE - 1, "the default namespace's probe at start counts too");
        let reviews = fake.reviews.load(Ordering::SeqCst);
        for i in 200..400 {
            assert!(cache.ensure_namespace(&format!("made-up-{i}")).await.is_err());
        }
        assert_eq!(fake.reviews.load(Ordering::SeqCst), reviews, "a refused probe asks the API server nothing");
        assert!(cache.ensure_namespace("made-up-3").await.is_ok(), "a namespace probed already still answers");

        let (a, b) = (cache.snapshot().await, cache.snapshot().await);
        let (SnapshotScope::Namespaced(a), SnapshotScope::Namespaced(b)) = (&a.scope, &b.scope) else {
            panic!("namespaced mode")
        };
        assert!(Arc::ptr_eq(a, b), "snapshots share the namespaces rather than copying them");
        assert_eq!(a.len(), MAX_PROBES_PER_MINUTE);
    }

    #[test]
    fn refusals_due_for_a_recheck_are_forgotten_and_probes_are_counted_per_minute() {
        let now = Instant::now();
        let long_ago = now.checked_sub(RECHECK_DENIED + Duration::from_secs(1)).unwrap();
        let mut namespaces = Namespaces::default();
        namespaces.publish("old", &Access::Forbidden { missing: "list pods".into(), checked: long_ago });
        namespaces.publish("new", &Access::Forbidden { missing: "list pods".into(), checked: now });
        for ns in ["old", "new"] {
            namespaces.setups.insert(ns.into(), Arc::new(OnceCell::new_with(Some(namespaces.ready[ns].clone()))));
        }
        namespaces.forget_stale();
        assert_eq!(namespaces.ready.keys().collect::<Vec<_>>(), ["new"]);
        assert_eq!(namespaces.setups.keys().collect::<Vec<_>>(), ["new"]);

        for _ in 0..MAX_PROBES_PER_MINUTE {
            assert!(namespaces.take_probe(long_ago));
        }
        assert!(!namespaces.take_probe(long_ago + Duration::from_secs(59)), "the minute is full");
        assert!(namespaces.take_probe(now), "a minute later there is room again");
    }
}
