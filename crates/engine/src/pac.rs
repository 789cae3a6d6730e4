//! The proxy auto-config (PAC) file a browser fetches from
//! `http://127.0.0.1:PORT/proxy.pac`: cluster names and addresses go to
//! kubesocks, everything else `DIRECT`, so the rest of the web is untouched.
//!
//! What counts as a cluster name is what [`crate::resolve`] resolves: names
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

use std::collections::BTreeSet;
use std::net::IpAddr;

/// The names one cluster answers, as the PAC file matches them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClusterNames {
    /// The cluster's DNS domain (`cluster.local`).
    pub domain: String,
    /// The namespaces that exist (or that kubesocks knows of), for `svc.ns`.
    pub namespaces: BTreeSet<String>,
    /// ClusterIPs and Pod IPs.
    pub addresses: BTreeSet<IpAddr>,
}

/// The PAC file sending `names` to `proxy` (`SOCKS5 127.0.0.1:1080`).
pub(crate) fn script(proxy: &str, names: &ClusterNames) -> String {
    // Names are RFC 1123 labels and addresses print as digits, dots, colons
    // and hex; JSON-quoting them keeps the script valid whatever they are.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let table = |items: Vec<String>| -> String {
        let entries: Vec<String> = items.iter().map(|s| format!("{}: 1", quote(s))).collect();
        format!("{{{}}}", entries.join(", "))
    };
    let domain = names.domain.trim_end_matches('.').to_ascii_lowercase();
    let namespaces = table(names.namespaces.iter().cloned().collect());
    let addresses = table(names.addresses.iter().map(IpAddr::to_string).collect());
    format!(
        r#"// kubesocks: names and addresses in the cluster go through the proxy, all else DIRECT.
var proxy = {proxy};
var suffixes = [".svc", {svc}, {pod}];
var namespaces = {namespaces};
var addresses = {addresses};

function has(table, key) {{
  return Object.prototype.hasOwnProperty.call(table, key);
}}

function FindProxyForURL(url, host) {{
  var h = host.toLowerCase();
  if (h.charAt(h.length - 1) == ".") h = h.substring(0, h.length - 1);
  if (h.charAt(0) == "[") h = h.substring(1, h.length - 1);
  // An IP literal: looked up as text, never resolved.
  if (/^[0-9.]+$/.test(h) || h.indexOf(":") >= 0) return has(addresses, h) ? proxy : "DIRECT";
  for (var i = 0; i < suffixes.length; i++) {{
    var s = suffixes[i];
    if (h.length > s.length && h.substring(h.length - s.length) == s) return proxy;
  }}
  var labels = h.split(".");
  if (labels.length == 2 && labels[0] != "" && has(namespaces, labels[1])) return proxy;
  return "DIRECT";
}}
"#,
        proxy = quote(proxy),
        svc = quote(&format!(".svc.{domain}")),
        pod = quote(&format!(".pod.{domain}")),
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

    #[test]
    fn the_proxy_is_named_as_given_and_tables_hold_every_name_and_address() {
        let pac = script("SOCKS5 127.0.0.1:1080", &names());
        assert!(pac.contains(r#"var proxy = "SOCKS5 127.0.0.1:1080";"#), "{pac}");
        assert!(pac.contains(r#"var namespaces = {"default": 1, "shop": 1};"#), "{pac}");
        assert!(pac.contains(r#""10.96.0.10": 1"#) && pac.contains(r#""fd00::a": 1"#), "{pac}");
        assert!(pac.contains(r#"".svc.cluster.local", ".pod.cluster.local""#), "{pac}");
    }

    #[test]
    fn the_script_never_asks_the_browser_to_resolve_a_name() {
        let pac = script("SOCKS5 127.0.0.1:1080", &names());
        for resolving in ["dnsResolve", "isInNet", "isResolvable", "myIpAddress"] {
            assert!(!pac.contains(resolving), "{resolving} in {pac}");
        }
    }

    #[test]
    fn a_domain_with_a_trailing_dot_or_capitals_is_matched_in_lower_case() {
        let names = ClusterNames { domain: "Corp.Example.".into(), ..names() };
        let pac = script("SOCKS5 127.0.0.1:1080", &names);
        assert!(pac.contains(r#"".svc.corp.example", ".pod.corp.example""#), "{pac}");
    }
}
