//! From what a client asked for to where it goes, or why not. Pure: the
//! modules here do no I/O and read no clock; they work on a snapshot of the
//! caches, so every rule has a fast unit test.
//!
//! * [`name`] reads a host once into a [`Query`] (a Service name, a per-pod
//!   name, an address, or a name outside the cluster).
//! * [`rules`] resolves a query and a port against a [`ClusterView`] to a
//!   [`Target`] (pod ports) or a typed [`Refusal`]; the refusal's
//!   [`RefusalKind`] is what the listeners turn into a SOCKS reply code or
//!   an HTTP status (`dial::Failure`).
//! * [`records`] answers the DNS helper's questions from the same snapshot.
//! * [`alias`] splits a context's alias off a name on the shared port.
//! * [`names`] is what a cluster answers, as the PAC file lists it.

pub(crate) mod alias;
pub(crate) mod name;
pub(crate) mod names;
pub(crate) mod records;
pub(crate) mod rules;

pub(crate) use name::{Escaped, Host, Named, Query, Rules, is_this_machine};
pub(crate) use rules::{ClusterView, Endpoint, Refusal, RefusalKind, resolve};
