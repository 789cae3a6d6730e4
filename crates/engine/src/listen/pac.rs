//! The proxy auto-config (PAC) file a browser fetches from
//! `http://127.0.0.1:PORT/proxy.pac`: cluster names and addresses go to
//! kubesocks, everything else `DIRECT`, so the rest of the web is untouched.
//!
//! What counts as a cluster name is what [`crate::route`] resolves: names
//! ending in `.svc`, `.svc.<domain>` or `.pod.<domain>`, and `svc.ns` for a
//! namespace that exists. Addresses are the ClusterIPs and Pod IPs the caches
//! know when the file is fetched; the file is made afresh on every fetch.
//!
//! The script only compares text: it never calls `dnsResolve`, `isInNet` or
//! `isResolvable`, which would make the browser resolve every name it visits
//! (slow, and a leak of the names to the machine's DNS). An IP literal is
//! recognised by its characters and looked up in a table. Cluster names get
//! no `DIRECT` fallback: a name kubesocks cannot reach must fail, not go to
//! whatever the machine's DNS says it is.
//!
//! Browsers read `SOCKS` as SOCKS4 with names resolved locally, so the proxy
//! is always named `SOCKS5` (or `PROXY` when the file was fetched from a
//! plain HTTP proxy listener).

use std::net::IpAddr;

use crate::route::names::ClusterNames;

/// One cluster in the PAC file: its names, and the alias that picks it on
/// a port shared by several contexts (`web.shop.prod` for alias `prod`);
/// `None` for the cluster that names without an alias go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub alias: Option<String>,
    pub names: ClusterNames,
}

/// The PAC file sending the names of `routes` to `proxy` (`SOCKS5 127.0.0.1:1080`).
/// Addresses carry no alias: only those of the route without one are listed.
pub(crate) fn script(proxy: &str, routes: &[Route]) -> String {
    // Names are RFC 1123 labels and addresses print as digits, dots, colons
    // and hex; JSON-quoting them keeps the script valid whatever they are.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let table = |items: Vec<String>| -> String {
        let entries: Vec<String> = items.iter().map(|s| format!("{}: 1", quote(s))).collect();
        format!("{{{}}}", entries.join(", "))
    };
    let mut addresses = Vec::new();
    let mut clusters = Vec::new();
    // Aliased routes first: `web.shop.prod` is context `prod`'s even when
    // the default cluster has a namespace `prod`.
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by_key(|r| r.alias.is_none());
    for route in ordered {
        let domain = route.names.domain.trim_end_matches('.').to_ascii_lowercase();
        let alias = route.alias.as_deref().map_or("null".to_string(), |a| quote(&format!(".{a}")));
        let namespaces = table(route.names.namespaces.iter().cloned().collect());
        let suffixes = [".svc".to_string(), format!(".svc.{domain}"), format!(".pod.{domain}")].map(|s| quote(&s));
        clusters.push(format!("    {{alias: {alias}, suffixes: [{}], namespaces: {namespaces}}}", suffixes.join(", ")));
        if route.alias.is_none() {
            addresses.extend(route.names.addresses.iter().map(IpAddr::to_string));
        }
    }
    format!(
        r#"// kubesocks: names and addresses in the cluster go through the proxy, all else DIRECT.
// Everything but FindProxyForURL stays inside one function, so a page that
// loads this file as a script finds no list of names or addresses in it.
var FindProxyForURL = (function () {{
  var proxy = {proxy};
  var clusters = [
{clusters}
  ];
  var addresses = {addresses};

  function has(table, key) {{
    return Object.prototype.hasOwnProperty.call(table, key);
  }}

  function endsWith(s, tail) {{
    return s.length > tail.length && s.substring(s.length - tail.length) == tail;
  }}

  function inCluster(name, cluster) {{
    for (var i = 0; i < cluster.suffixes.length; i++) {{
      if (endsWith(name, cluster.suffixes[i])) return true;
    }}
    var labels = name.split(".");
    return labels.length == 2 && labels[0] != "" && has(cluster.namespaces, labels[1]);
  }}

  return function FindProxyForURL(url, host) {{
    var h = host.toLowerCase();
    if (h.charAt(h.length - 1) == ".") h = h.substring(0, h.length - 1);
    if (h.charAt(0) == "[") h = h.substring(1, h.length - 1);
    // An IP literal: looked up as text, never resolved.
    if (/^[0-9.]+$/.test(h) || h.indexOf(":") >= 0) return has(addresses, h) ? proxy : "DIRECT";
    for (var i = 0; i < clusters.length; i++) {{
      var c = clusters[i];
      var name = h;
      if (c.alias !== null) {{
        if (!endsWith(h, c.alias)) continue;
        name = h.substring(0, h.length - c.alias.length);
      }}
      if (inCluster(name, c)) return proxy;
    }}
    return "DIRECT";
  }};
}})();
"#,
        proxy = quote(proxy),
        clusters = clusters.join(",\n"),
        addresses = table(addresses),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ClusterNames {
        ClusterNames {
            domain: "cluster.local".into(),
            namespaces: ["default", "shop"].into_iter().map(String::from).collect(),
            addresses: ["10.96.0.10", "10.244.1.7", "fd00::a"].into_iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn one(names: ClusterNames) -> Vec<Route> {
        vec![Route { alias: None, names }]
    }

    #[test]
    fn the_proxy_is_named_as_given_and_tables_hold_every_name_and_address() {
        let pac = script("SOCKS5 127.0.0.1:1080", &one(names()));
        assert!(pac.contains(r#"var proxy = "SOCKS5 127.0.0.1:1080";"#), "{pac}");
        // The one global: every other line is indented inside the closure.
        let globals: Vec<&str> =
            pac.lines().filter(|l| !l.starts_with(' ') && !l.starts_with("//") && !l.is_empty()).collect();
        assert_eq!(globals, ["var FindProxyForURL = (function () {", "})();"], "{pac}");
        assert!(pac.contains(r#"namespaces: {"default": 1, "shop": 1}"#), "{pac}");
        assert!(pac.contains(r#""10.96.0.10": 1"#) && pac.contains(r#""fd00::a": 1"#), "{pac}");
        assert!(pac.contains(r#"".svc.cluster.local", ".pod.cluster.local""#), "{pac}");
    }

    #[test]
    fn the_script_never_asks_the_browser_to_resolve_a_name() {
        let pac = script("SOCKS5 127.0.0.1:1080", &one(names()));
        for resolving in ["dnsResolve", "isInNet", "isResolvable", "myIpAddress"] {
            assert!(!pac.contains(resolving), "{resolving} in {pac}");
        }
    }

    #[test]
    fn a_domain_with_a_trailing_dot_or_capitals_is_matched_in_lower_case() {
        let names = ClusterNames { domain: "Corp.Example.".into(), ..names() };
        let pac = script("SOCKS5 127.0.0.1:1080", &one(names));
        assert!(pac.contains(r#"".svc.corp.example", ".pod.corp.example""#), "{pac}");
    }

    #[test]
    fn aliased_clusters_come_first_and_only_the_default_lists_addresses() {
        let other = ClusterNames { addresses: ["10.0.0.99".parse().unwrap()].into(), ..names() };
        let routes = vec![Route { alias: None, names: names() }, Route { alias: Some("prod".into()), names: other }];
        let pac = script("SOCKS5 127.0.0.1:1090", &routes);
        let (prod, default) = (pac.find(r#"alias: ".prod""#).unwrap(), pac.find("alias: null").unwrap());
        assert!(prod < default, "{pac}");
        assert!(!pac.contains("10.0.0.99"), "an address cannot carry an alias: {pac}");
    }
}
