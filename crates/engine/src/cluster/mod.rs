//! The cluster side: which cluster, how to talk to it, and what it holds.
//!
//! * [`kubeconfig`] reads the kubeconfig document (files, context,
//!   namespace) the way kubectl does; [`connect`] builds the API client from
//!   it, with [`exec`] running credential plugins and [`proxy_url`] putting
//!   the kubeconfig's `proxy-url` under the TLS.
//! * [`cache`] keeps a snapshot of Services, EndpointSlices and Pods current
//!   from kube-runtime watchers, as the slim types of `crate::objects`, in
//!   the widest scope RBAC allows; where RBAC allows no watch but GETs,
//!   [`lookup`] fetches the few objects one name needs. The rules in
//!   `crate::route` read that snapshot. Each kind is kept in a [`store`]:
//!   by name, and by the keys lookups use (Services by ClusterIP,
//!   EndpointSlices by Service, pods by IP and per-pod name).
//! * [`health`] sums up whether the watches are fed: connected,
//!   reconnecting (the API server unreachable) or degraded.

pub(crate) mod cache;
pub(crate) mod connect;
pub(crate) mod exec;
pub(crate) mod health;
pub mod kubeconfig;
pub(crate) mod lookup;
pub(crate) mod proxy_url;
pub(crate) mod store;
