//! Proxy credentials: RFC 1929 for SOCKS, `Proxy-Authorization: Basic` for HTTP.

use base64::Engine as _;

/// A user name and password clients must present. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (safe to show; the password never is).
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<hidden>").finish()
    }
}

impl std::str::FromStr for Credentials {
    type Err = String;

    /// Reads `user:password`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => {
                Ok(Credentials { user: user.to_string(), password: password.to_string() })
            }
            _ => Err("expected USER:PASSWORD with both parts non-empty".to_string()),
        }
    }
}

impl Credentials {
    /// Compares without stopping at the first differing byte, so timing tells nothing.
    pub(crate) fn matches(&self, user: &str, password: &str) -> bool {
        fn same(a: &[u8], b: &[u8]) -> bool {
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        }
        same(self.user.as_bytes(), user.as_bytes()) & same(self.password.as_bytes(), password.as_bytes())
    }

    /// Checks a `Proxy-Authorization` header value.
    pub(crate) fn matches_basic(&self, header: &str) -> bool {
        let Some(encoded) = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        text.split_once(':').is_some_and(|(u, p)| self.matches(u, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_both_forms() {
        let c: Credentials = "alice:s3cr:et".parse().unwrap();
        assert!(c.matches("alice", "s3cr:et"));
        assert!(!c.matches("alice", "s3cr"));
        assert!(c.matches_basic("Basic YWxpY2U6czNjcjpldA=="));
        assert!(!c.matches_basic("Basic YWxpY2U6d3Jvbmc="));
        assert!(!c.matches_basic("Bearer x"));
        assert!("alice".parse::<Credentials>().is_err());
        assert!(":pw".parse::<Credentials>().is_err());
        assert!(!format!("{c:?}").contains("s3cr"));
    }
}
