//! The kubeconfig's `proxy-url`: an API server reachable only through a
//! proxy (a bastion, a jump host behind another VPN) is reached through it.
//!
//! kube's own client honours `proxy-url` only when it builds its connector
//! itself; kubesocks builds its own (see [`crate::kubeconfig`]), so the proxy
//! is put in here, under the TLS to the API server. Every connection the
//! client opens goes through [`Dialer`]: requests, watches, and the
//! port-forward upgrades, which are sent with the same client. The schemes
//! are kubectl's: `http://` and `https://` (a `CONNECT` tunnel; with
//! `https://` the tunnel runs inside TLS to the proxy) and `socks5://` (the
//! SOCKS server resolves the API server's name). Anything else is refused
//! with its scheme named, never dialled around the proxy.
//!
//! The proxy's certificate is checked with the cluster's TLS settings, as
//! kubectl does: against the cluster's certificate authority, or the
//! system's roots when the kubeconfig names none.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine as _;
use http::{HeaderValue, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `proxy-url` kubesocks cannot use. No error shows the URL's user or
/// password: the `url` each names is the value with everything up to its
/// last `@` left out, and no other field holds any of that part.
#[derive(Debug, thiserror::Error)]
pub enum ProxyUrlError {
    /// The value does not start with a scheme and `//`.
    #[error("proxy-url {url:?} is not a URL like http://host:port: {reason}")]
    Invalid {
        /// The value, its user and password left out.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme is not one kubesocks (or kubectl) speaks.
    #[error(
        "proxy-url {url:?} has the scheme {scheme:?}, which kubesocks does not support (it supports http, https and socks5)"
    )]
    Scheme {
        /// The value, its user and password left out.
        url: String,
        /// The scheme it names.
        scheme: String,
    },
    /// The host is missing or is not a host name or IP address.
    #[error("proxy-url {url:?} names no usable host: {reason}")]
    Host {
        /// The value, its user and password left out.
        url: String,
        /// What is wrong with the host.
        reason: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("proxy-url {url:?} has the port {port:?}, which is not a number from 1 to 65535")]
    Port {
        /// The value, its user and password left out.
        url: String,
        /// The port as written.
        port: String,
    },
    /// The user or the password cannot be read. Neither is shown.
    #[error("proxy-url {url:?} has a user or password kubesocks cannot read: {reason}")]
    Userinfo {
        /// The value, its user and password left out.
        url: String,
        /// What is wrong, naming the user or the password but showing neither.
        reason: String,
    },
}

/// A connection through the proxy that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach {target} through the proxy {proxy}")]
pub struct ThroughProxyError {
    target: String,
    proxy: String,
    #[source]
    source: BoxError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Socks5,
}

/// A parsed `proxy-url`.
#[derive(Clone)]
pub(crate) struct ProxyUrl {
    scheme: Scheme,
    /// Scheme, host and port (the scheme's default port made explicit); no
    /// user, no path.
    address: Uri,
    /// User and password, percent-decoded.
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "ProxyUrl({})", self.address)
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = self.address.to_string();
        f.write_str(address.trim_end_matches('/'))
    }
}

impl ProxyUrl {
    /// Reads a kubeconfig's `proxy-url`: `scheme://[user[:password]@]host[:port][/...]`.
    ///
    /// The user and password end at the *last* `@` of the value, not at the
    /// first `/`, `?` or `#` as RFC 3986 has it: a hand-written password
    /// often holds a `/`, `@`, `?` or `#` unencoded, and a host never holds an
    /// `@`, so the last `@` is the only one that can end them. The host and
    /// port follow, up to the first `/`, `?` or `#`; what comes after (a
    /// path) means nothing for a proxy and is ignored. The price: an `@` in
    /// such a path is misread (`http://proxy:3128/a@b` is host `b`, user
    /// `proxy`, password `3128/a`). The user ends at the first `:`; both are
    /// percent-decoded, and a `%` not followed by two hex digits is refused
    /// rather than guessed at.
    pub fn parse(url: &str) -> Result<ProxyUrl, ProxyUrlError> {
        let url = url.trim();
        let shown = || without_credentials(url);
        let Some((scheme_str, rest)) = scheme_and_rest(url) else {
            let reason = "it does not start with a scheme and '//' (like http://)".to_string();
            return Err(ProxyUrlError::Invalid { url: shown(), reason });
        };
        let scheme_str = scheme_str.to_ascii_lowercase();
        let scheme = match scheme_str.as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "socks5" => Scheme::Socks5,
            _ => return Err(ProxyUrlError::Scheme { url: shown(), scheme: scheme_str }),
        };
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let host_and_port = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        let (host, port) = host_and_port_of(host_and_port)
            .map_err(|reason| ProxyUrlError::Host { url: shown(), reason: reason.into() })?;
        let port = match port {
            None | Some("") => match scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
                Scheme::Socks5 => 1080,
            },
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| ProxyUrlError::Port { url: shown(), port: port.to_string() })?,
        };
        let credentials = userinfo
            .map(|userinfo| credentials_of(userinfo, scheme))
            .transpose()
            .map_err(|reason| ProxyUrlError::Userinfo { url: shown(), reason })?;
        let address = format!("{scheme_str}://{host}:{port}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| ProxyUrlError::Host { url: shown(), reason: e.to_string() })?;
        Ok(ProxyUrl { scheme, address, credentials })
    }

    /// A connector that opens every connection through this proxy, over
    /// `tcp`. `proxy_tls` is the TLS to an `https://` proxy.
    pub fn dialer(&self, tcp: HttpConnector, proxy_tls: rustls::ClientConfig) -> Dialer {
        let via = match self.scheme {
            Scheme::Http => Via::Http(self.with_basic_auth(Tunnel::new(self.address.clone(), tcp))),
            Scheme::Https => {
                let tls =
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(proxy_tls).https_only().enable_http1();
                Via::Https(self.with_basic_auth(Tunnel::new(self.address.clone(), tls.wrap_connector(tcp))))
            }
            Scheme::Socks5 => {
                let socks = SocksV5::new(self.address.clone(), tcp);
                Via::Socks5(match &self.credentials {
                    Some((user, password)) => socks.with_auth(user.clone(), password.clone()),
                    None => socks,
                })
            }
        };
        Dialer { via, proxy: self.to_string() }
    }

    fn with_basic_auth<C>(&self, tunnel: Tunnel<C>) -> Tunnel<C> {
        let Some((user, password)) = &self.credentials else { return tunnel };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        match HeaderValue::from_str(&format!("Basic {token}")) {
            Ok(value) => tunnel.with_auth(value),
            Err(_) => tunnel,
        }
    }
}

/// `url`'s scheme and what follows its `//`, if it starts with a scheme
/// (RFC 3986: a letter, then letters, digits, `+`, `-` and `.`) and `://`.
fn scheme_and_rest(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !well_formed {
        return None;
    }
    Some((scheme, rest.strip_prefix("//")?))
}

/// `host[:port]` read: the host (an IPv6 address keeps its brackets) and
/// the port as written, if there is a `:`.
fn host_and_port_of(host_and_port: &str) -> Result<(&str, Option<&str>), &'static str> {
    let (host, port) = if host_and_port.starts_with('[') {
        let Some(close) = host_and_port.find(']') else {
            return Err("an IPv6 address opened with '[' is not closed with ']'");
        };
        let (host, after) = host_and_port.split_at(close + 1);
        if host[1..close].parse::<std::net::Ipv6Addr>().is_err() {
            return Err("what is in the brackets is not an IPv6 address");
        }
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("only ':' and a port may follow an IPv6 address's ']'"),
        }
    } else {
        match host_and_port.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("an IPv6 address must be put in brackets, like [fd00::1]:1080");
            }
            Some((host, port)) => (host, Some(port)),
            None => (host_and_port, None),
        }
    };
    if host.is_empty() {
        return Err("there is no host after the scheme's '//' (and the user and password, if any)");
    }
    if !host.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        return Err("a host name may hold only ASCII letters, digits, '-', '.' and '_'");
    }
    Ok((host, port))
}

/// The user and password of `userinfo` (all before the last `@`),
/// percent-decoded. The user ends at the first `:`; with none, the password
/// is empty. An error names the part but never holds any of it.
fn credentials_of(userinfo: &str, scheme: Scheme) -> Result<(String, String), String> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |part: &str, name: &str| {
        if part.chars().any(char::is_control) {
            return Err(format!("the {name} holds a control character (percent-encode it)"));
        }
        let bytes = part.as_bytes();
        let well_escaped = bytes
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'%')
            .all(|(i, _)| bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)));
        if !well_escaped {
            return Err(format!("the {name} has a '%' not followed by two hex digits (write a '%' itself as %25)"));
        }
        let decoded = percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map_err(|_| format!("the {name} is not UTF-8 once percent-decoded"))?
            .into_owned();
        // RFC 1929 gives each a one-byte length.
        if scheme == Scheme::Socks5 && decoded.len() > 255 {
            return Err(format!("the {name} is longer than the 255 bytes SOCKS5 allows"));
        }
        Ok(decoded)
    };
    Ok((decode(user, "user")?, decode(password, "password")?))
}

/// `url` with its user and password (if any) left out, fit for an error:
/// everything up to its last `@` (the end of the user and password, as
/// [`ProxyUrl::parse`] reads them) is dropped, the scheme kept.
fn without_credentials(url: &str) -> String {
    let url = url.trim();
    let Some(at) = url.rfind('@') else { return url.to_string() };
    match scheme_and_rest(url) {
        Some((scheme, _)) => format!("{scheme}://{}", &url[at + 1..]),
        None => url[at + 1..].to_string(),
    }
}

/// What connections to the API server go through.
#[derive(Clone)]
enum Via {
    Http(Tunnel<HttpConnector>),
    Https(Tunnel<HttpsConnector<HttpConnector>>),
    Socks5(SocksV5<HttpConnector>),
}

/// The connector under the TLS to the API server: every connection through
/// the proxy.
#[derive(Clone)]
pub(crate) struct Dialer {
    via: Via,
    proxy: String,
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl tower::Service<Uri> for Dialer {
    type Response = Stream;
    type Error = ThroughProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ThroughProxyError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let ready = match &mut self.via {
            Via::Http(c) => c.poll_ready(cx).map_err(BoxError::from),
            Via::Https(c) => c.poll_ready(cx).map_err(BoxError::from),
            Via::Socks5(c) => c.poll_ready(cx).map_err(BoxError::from),
        };
        ready.map_err(|source| ThroughProxyError { target: "the API server".into(), proxy: self.proxy.clone(), source })
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let failed = {
            let (target, proxy) = (target.authority().map(|a| a.to_string()).unwrap_or_default(), self.proxy.clone());
            move |source: BoxError| ThroughProxyError { target, proxy, source }
        };
        match &mut self.via {
            Via::Http(c) => {
                let connecting = c.call(target);
                Box::pin(async move { connecting.await.map(MaybeHttpsStream::Http).map_err(|e| failed(e.into())) })
            }
            Via::Https(c) => {
                let connecting = c.call(target);
                Box::pin(async move { connecting.await.map_err(|e| failed(e.into())) })
            }
            Via::Socks5(c) => {
                let connecting = c.call(target);
                Box::pin(async move { connecting.await.map(MaybeHttpsStream::Http).map_err(|e| failed(e.into())) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_schemes_are_read_with_their_default_ports() {
        for (url, address) in [
            ("http://proxy.example:3128", "http://proxy.example:3128"),
            ("http://proxy.example", "http://proxy.example:80"),
            ("HTTPS://proxy.example/", "https://proxy.example:443"),
            ("socks5://127.0.0.1", "socks5://127.0.0.1:1080"),
            ("socks5://[::1]:9050", "socks5://[::1]:9050"),
        ] {
            let proxy = ProxyUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(proxy.to_string(), address, "{url}");
            assert!(proxy.credentials.is_none());
        }
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let proxy = ProxyUrl::parse("http://me%40corp:pa%3Ass@proxy.example:8080").unwrap();
        assert_eq!(proxy.credentials, Some(("me@corp".to_string(), "pa:ss".to_string())));
        assert_eq!(proxy.to_string(), "http://proxy.example:8080");
        assert!(!format!("{proxy:?}").contains("pa"), "{proxy:?}");
        let proxy = ProxyUrl::parse("socks5://user@127.0.0.1:1080").unwrap();
        assert_eq!(proxy.credentials, Some(("user".to_string(), String::new())));
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        for (url, scheme) in
            [("socks4://127.0.0.1:1080", "socks4"), ("ftp://proxy", "ftp"), ("socks5h://p:1", "socks5h")]
        {
            let e = ProxyUrl::parse(url).unwrap_err();
            assert!(matches!(&e, ProxyUrlError::Scheme { scheme: s, .. } if s == scheme), "{url}: {e}");
            assert!(e.to_string().contains(&format!("the scheme {scheme:?}")), "{e}");
        }
        let e = ProxyUrl::parse("socks4://user:s3cret@127.0.0.1:1080").unwrap_err();
        assert_eq!(
            e.to_string(),
            "proxy-url \"socks4://127.0.0.1:1080\" has the scheme \"socks4\", which kubesocks does not support (it supports http, https and socks5)"
        );
    }

    #[test]
    fn what_is_not_a_url_says_so_without_the_password() {
        for url in ["127.0.0.1:3128", "proxy.example", "", "user:s3cret@proxy:3128", "http:/proxy:3128", "1http://p"] {
            let e = ProxyUrl::parse(url).unwrap_err();
            assert!(matches!(e, ProxyUrlError::Invalid { .. }), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let e = ProxyUrl::parse("user:s3cret@proxy:3128").unwrap_err();
        assert_eq!(
            e.to_string(),
            "proxy-url \"proxy:3128\" is not a URL like http://host:port: it does not start with a scheme and '//' (like http://)"
        );
    }

    fn credentials(url: &str) -> (String, String) {
        let proxy = ProxyUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        proxy.credentials.unwrap_or_else(|| panic!("{url}: no credentials"))
    }

    #[test]
    fn a_password_is_read_as_written_up_to_the_last_at() {
        for (url, password, address) in [
            ("http://user:pa/ss@proxy:3128", "pa/ss", "http://proxy:3128"),
            ("socks5://user:p@ss@host:1080", "p@ss", "socks5://host:1080"),
            ("https://user:pa:ss@proxy.example:8443/", "pa:ss", "https://proxy.example:8443"),
            ("http://user:a/b@c:d?e#f@proxy:3128/", "a/b@c:d?e#f", "http://proxy:3128"),
            ("http://user:s3cr3t/x@y@[fd00::1]", "s3cr3t/x@y", "http://[fd00::1]:80"),
            ("http://user:a%2Fb/c@proxy", "a/b/c", "http://proxy:80"),
        ] {
            assert_eq!(credentials(url), ("user".to_string(), password.to_string()), "{url}");
            assert_eq!(ProxyUrl::parse(url).unwrap().to_string(), address, "{url}");
        }
        // The user ends at the first ':'; an '@' after the first is the password's.
        assert_eq!(credentials("http://me@corp:x@proxy"), ("me@corp".to_string(), "x".to_string()));
        assert_eq!(credentials("http://user:@proxy"), ("user".to_string(), String::new()));
    }

    #[test]
    fn ordinary_urls_are_read_as_before() {
        for (url, address, creds) in [
            ("http://proxy:3128", "http://proxy:3128", None),
            ("https://u:p@proxy.example:8443/", "https://proxy.example:8443", Some(("u", "p"))),
            ("socks5://[fd00::1]:1080", "socks5://[fd00::1]:1080", None),
            ("http://proxy:3128/some/path?q=1#f", "http://proxy:3128", None),
            ("http://proxy:", "http://proxy:80", None),
            ("  socks5://internal_proxy.corp  ", "socks5://internal_proxy.corp:1080", None),
            ("http://u%20v:p%25q%3A@10.0.0.1:03128", "http://10.0.0.1:3128", Some(("u v", "p%q:"))),
            ("http://%C3%A9t%C3%A9:caf%C3%A9@proxy", "http://proxy:80", Some(("été", "café"))),
        ] {
            let proxy = ProxyUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(proxy.to_string(), address, "{url}");
            let creds = creds.map(|(u, p): (&str, &str)| (u.to_string(), p.to_string()));
            assert_eq!(proxy.credentials, creds, "{url}");
        }
    }

    #[test]
    fn a_missing_or_malformed_host_is_named() {
        for url in [
            "http://",
            "http://user:s3cret@/x",
            "http://user:s3cret@",
            "socks5://u:s3cret@:1080",
            "http://:3128",
            "http://?x",
            "http://a b",
            "http://::1:1080",
            "http://[fd00::1",
            "http://[zz]:1080",
            "http://[::1]x",
            "http://pröxy",
            "http://pro%78y",
        ] {
            let e = ProxyUrl::parse(url).unwrap_err();
            assert!(matches!(e, ProxyUrlError::Host { .. }), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        assert_eq!(
            ProxyUrl::parse("socks5://u:s3cret@:1080").unwrap_err().to_string(),
            "proxy-url \"socks5://:1080\" names no usable host: there is no host after the scheme's '//' (and the user \
             and password, if any)"
        );
    }

    #[test]
    fn a_bad_port_is_named_and_only_the_port() {
        for (url, port) in [
            ("http://proxy:abc", "abc"),
            ("http://proxy:99999", "99999"),
            ("http://proxy:65536", "65536"),
            ("http://proxy:0", "0"),
            ("http://proxy:+80", "+80"),
            ("http://proxy:-1", "-1"),
            ("socks5://[::1]:x1080", "x1080"),
            ("http://u:s3cret@proxy:80a/", "80a"),
        ] {
            let e = ProxyUrl::parse(url).unwrap_err();
            assert!(matches!(&e, ProxyUrlError::Port { port: p, .. } if p == port), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        assert_eq!(
            ProxyUrl::parse("http://u:s3cret@proxy:99999").unwrap_err().to_string(),
            "proxy-url \"http://proxy:99999\" has the port \"99999\", which is not a number from 1 to 65535"
        );
    }

    #[test]
    fn a_user_or_password_that_cannot_be_decoded_is_named_not_shown() {
        let long = "p".repeat(256);
        for (url, part) in [
            ("http://u:50%off@proxy", "password"),
            ("http://u:s3cret%@proxy", "password"),
            ("http://u:s3cret%4@proxy", "password"),
            ("http://u%zz:s3cret@proxy", "user"),
            ("http://u:s3cret%FF@proxy", "password"),
            ("http://u:s3cr\tet@proxy", "password"),
            (&format!("socks5://u:{long}@proxy"), "password"),
            (&format!("socks5://{long}@proxy"), "user"),
        ] {
            let e = ProxyUrl::parse(url).unwrap_err();
            assert!(
                matches!(&e, ProxyUrlError::Userinfo { reason, .. } if reason.starts_with(&format!("the {part} "))),
                "{url}: {e}"
            );
            assert!(!e.to_string().contains("s3cr") && !e.to_string().contains("ppp"), "{e}");
        }
        // Over HTTP a password is sent in base64, whatever its length.
        assert_eq!(credentials(&format!("http://u:{long}@proxy")).1, long);
    }

    #[test]
    fn no_error_and_no_output_holds_the_password() {
        for url in [
            "http://user:s3cr3t/x@y@:3128",
            "http://user:s3cr3t/x@y@",
            "http://user:s3cr3t/x@y@proxy:99999",
            "http://user:s3cr3t/x@y@proxy:port",
            "socks4://user:s3cr3t/x@y@proxy:1080",
            "user:s3cr3t/x@y@proxy:1080",
            "http:/user:s3cr3t/x@y@proxy",
            "http://user:s3cr3t/x@y@pro xy",
            "http://user:s3cr3t/x@y%zz@proxy",
            "socks5://user:s3cr3t/x@y@[::1",
            "socks5://user:s3cr3t/x@y@::1",
            " https://s3cr3t/x@y@proxy:1:2 ",
            // Read as user "user", password "s3cr3t/x", host "y": accepted,
            // and still never shown.
            "http://user:s3cr3t/x@y",
            "http://user:s3cr3t/x@y@proxy:3128",
        ] {
            match ProxyUrl::parse(url) {
                Ok(proxy) => {
                    for shown in [proxy.to_string(), format!("{proxy:?}")] {
                        assert!(!shown.contains("s3cr3t"), "{url}: {shown}");
                    }
                }
                Err(e) => {
                    for shown in [e.to_string(), format!("{e:?}"), format!("{e:#?}")] {
                        assert!(!shown.contains("s3cr3t"), "{url}: {shown}");
                    }
                }
            }
        }
        assert!(ProxyUrl::parse("http://user:s3cr3t/x@y@:3128").is_err());
    }
}
