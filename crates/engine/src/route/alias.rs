//! Aliases: on the port shared by every connected context, a name's last
//! label picks the context (`productpage.default.prod` → context `prod`,
//! name `productpage.default`). An alias is a context name made a DNS label
//! ([`alias_for`]).

use super::name::Host;

/// `web.shop.prod` → (`prod`, `web.shop`) when `is_alias("prod")`; `None`
/// for an IP, a single label, or a last label that is no alias. Aliases
/// are matched in lower case, as DNS names are.
pub(crate) fn split_alias(host: &Host, is_alias: impl Fn(&str) -> bool) -> Option<(String, Host)> {
    let Host::Name(name) = host else { return None };
    let name = name.strip_suffix('.').unwrap_or(name);
    let (rest, last) = name.rsplit_once('.')?;
    let alias = last.to_ascii_lowercase();
    (!rest.is_empty() && is_alias(&alias)).then(|| (alias, Host::Name(rest.to_string())))
}

/// A context name made a DNS label: lower case, each run of other
/// characters than letters and digits one `-`, at most 63 characters
/// (`arn:aws:eks:eu-west-1:123:cluster/prod` → `arn-aws-eks-eu-west-1-123-cluster-prod`).
/// A name with no letter or digit becomes `context`.
pub fn alias_for(context: &str) -> String {
    let mut label = String::new();
    for c in context.chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c.to_ascii_lowercase());
        } else if !label.is_empty() && !label.ends_with('-') {
            label.push('-');
        }
    }
    label.truncate(63);
    let label = label.trim_end_matches('-');
    if label.is_empty() { "context".to_string() } else { label.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(host: &str) -> Option<(String, String)> {
        let host = Host::parse(host);
        split_alias(&host, |a| ["prod", "staging"].contains(&a)).map(|(a, rest)| (a, rest.to_string()))
    }

    #[test]
    fn the_last_label_picks_the_context_and_is_removed() {
        assert_eq!(split("productpage.default.prod"), Some(("prod".into(), "productpage.default".into())));
        assert_eq!(
            split("web.shop.svc.cluster.local.staging."),
            Some(("staging".into(), "web.shop.svc.cluster.local".into()))
        );
        assert_eq!(split("WEB.Shop.PROD"), Some(("prod".into(), "WEB.Shop".into())));
    }

    #[test]
    fn names_without_an_alias_ips_and_bare_aliases_are_not_split() {
        assert_eq!(split("web.shop"), None);
        assert_eq!(split("prod"), None, "a single label is a short name, not an alias");
        assert_eq!(split(".prod"), None);
        assert_eq!(split("10.0.0.1"), None);
        assert_eq!(split("[fd00::1]"), None);
        assert_eq!(split("web.prod.example.com"), None);
    }

    #[test]
    fn context_names_become_dns_labels() {
        assert_eq!(alias_for("prod"), "prod");
        assert_eq!(alias_for("Kind-Dev"), "kind-dev");
        assert_eq!(alias_for("arn:aws:eks:eu-west-1:123:cluster/prod"), "arn-aws-eks-eu-west-1-123-cluster-prod");
        assert_eq!(alias_for("gke_proj_europe-west1_main"), "gke-proj-europe-west1-main");
        assert_eq!(alias_for("--x--"), "x");
        assert_eq!(alias_for("ü-ö"), "context");
        assert_eq!(alias_for(&"a".repeat(80)).len(), 63);
        assert_eq!(alias_for(&format!("{}-b", "a".repeat(62))), "a".repeat(62), "no trailing dash after truncation");
    }
}
