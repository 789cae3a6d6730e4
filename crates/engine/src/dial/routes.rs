//! Which back end each alias reaches on a gateway (the port shared by every
//! connected context), and which one takes names without an alias.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::backend::Backend;
use crate::route::alias::{alias_for, split_alias};
use crate::route::{Host, Refusal};

/// An engine as a gateway reaches it; from [`Engine::route`](crate::Engine::route).
#[derive(Clone)]
pub struct Route(pub(crate) Arc<Backend>);

/// Which engine each alias reaches, and which alias takes names without one.
#[derive(Clone, Default)]
pub struct Routes {
    by_alias: BTreeMap<String, Route>,
    default: Option<String>,
}

impl Routes {
    /// No context yet: every request is refused until some are added.
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Names ending in `.<alias>` go to `route` (the alias is made a DNS
    /// label if it is not one).
    pub fn insert(&mut self, alias: &str, route: Route) {
        self.by_alias.insert(alias_for(alias), route);
    }

    /// Names without an alias go to this alias's engine; `None`: they are refused.
    pub fn set_default(&mut self, alias: Option<&str>) {
        self.default = alias.map(alias_for);
    }

    /// The back end `host` goes to, and the host as that back end reads it
    /// (its alias removed).
    pub(crate) fn pick(&self, host: &Host) -> Result<(Arc<Backend>, Host), Refusal> {
        let (alias, rest) = match split_alias(host, |a| self.by_alias.contains_key(a)) {
            Some((alias, rest)) => (Some(alias), rest),
            None => (self.default.clone(), host.clone()),
        };
        match alias.and_then(|a| self.by_alias.get(&a)) {
            Some(route) => Ok((route.0.clone(), rest)),
            None => Err(Refusal::NoContext { host: host.to_string() }),
        }
    }

    /// Every back end with its alias, and the default one again without:
    /// what the PAC file lists.
    pub(crate) fn backends(&self) -> Vec<(Option<String>, Arc<Backend>)> {
        let mut all: Vec<(Option<String>, Arc<Backend>)> =
            self.by_alias.iter().map(|(alias, route)| (Some(alias.clone()), route.0.clone())).collect();
        if let Some(default) = self.default.as_deref().and_then(|a| self.by_alias.get(a)) {
            all.push((None, default.0.clone()));
        }
        all
    }
}
