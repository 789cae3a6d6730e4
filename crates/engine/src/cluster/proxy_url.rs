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

/// A `proxy-url` kubesocks cannot use.
#[derive(Debug, thiserror::Error)]
pub enum ProxyUrlError {
    /// The value is not a URL with a scheme and a host.
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
    /// Reads a kubeconfig's `proxy-url`.
    pub fn parse(url: &str) -> Result<ProxyUrl, ProxyUrlError> {
        let invalid = |reason: &str| ProxyUrlError::Invalid { url: without_credentials(url), reason: reason.into() };
        let uri: Uri = url.trim().parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            None => return Err(invalid("it names no scheme")),
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some("socks5") => Scheme::Socks5,
            Some(other) => {
                return Err(ProxyUrlError::Scheme { url: without_credentials(url), scheme: other.to_string() });
            }
        };
        let authority = uri.authority().ok_or_else(|| invalid("it names no host"))?;
        if authority.host().is_empty() {
            return Err(invalid("it names no host"));
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Socks5 => 1080,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        let credentials = authority.as_str().rsplit_once('@').map(|(userinfo, _)| {
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (decode(user), decode(password))
        });
        let scheme_str = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        let address = format!("{scheme_str}://{}:{port}", authority.host())
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
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

/// `url` with its user and password (if any) left out, fit for an error.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) if scheme.is_empty() => rest[at + 1..].to_string(),
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
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
        for url in ["127.0.0.1:3128", "proxy.example", "", "http://", "http://user:s3cret@/x", "http://a b"] {
            let e = ProxyUrl::parse(url).unwrap_err();
            assert!(matches!(e, ProxyUrlError::Invalid { .. }), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }
}
