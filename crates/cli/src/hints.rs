//! The advice a command-line user gets with an error. The engine and the
//! daemon state facts ("the port is in use"); which flag to pass about it is
//! this shell's to say.

use kubesocks_engine::EngineError;
use kubesocks_engine::kubeconfig::KubeError;
use kubesocks_managed::control::ErrorKind;

/// The daemon's answer to a request that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Refused {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

/// Prints an error on stderr as `kubesocks: what happened; what to do`.
pub fn report(e: &anyhow::Error) {
    match hint(e) {
        Some(hint) => eprintln!("kubesocks: {}; {hint}", chain(e)),
        None => eprintln!("kubesocks: {}", chain(e)),
    }
}

/// The error and its causes, each said once (typed errors often quote their
/// source in their own text).
fn chain(e: &anyhow::Error) -> String {
    kubesocks_engine::error_chain(e.as_ref())
}

/// The advice for the first error in the chain that has one.
fn hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<EngineError>() {
            return engine_hint(e);
        }
        if let Some(e) = cause.downcast_ref::<KubeError>() {
            return kube_hint(e);
        }
        cause.downcast_ref::<Refused>().and_then(daemon_hint)
    })
}

fn engine_hint(e: &EngineError) -> Option<&'static str> {
    match e {
        EngineError::OpenListener { .. } => {
            Some("set credentials (KUBESOCKS_AUTH=USER:PASSWORD or --auth-file FILE) to listen there")
        }
        EngineError::OpenDnsListener { .. } => Some("give --listen-dns a loopback address, e.g. 127.0.0.1:5353"),
        EngineError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
            Some("pick another address with --listen-socks / --listen-http / --listen-dns")
        }
        EngineError::NoListener => Some("give --listen-socks and/or --listen-http"),
        EngineError::NoConnectionsAllowed => Some("give --max-connections 1 or more"),
        _ => None,
    }
}

fn kube_hint(e: &KubeError) -> Option<&'static str> {
    match e {
        KubeError::NoKubeconfig => Some("set --kubeconfig or KUBECONFIG, or create ~/.kube/config"),
        KubeError::NoContext { .. } => Some("pass --context"),
        KubeError::UnknownContext { .. } => Some("`kubesocks contexts` lists them"),
        _ => None,
    }
}

/// The daemon's errors arrive as text; their kind says what they are about.
fn daemon_hint(r: &Refused) -> Option<&'static str> {
    match r.kind {
        ErrorKind::UnknownConnection => Some("`kubesocks status` lists them"),
        ErrorKind::BadRequest if r.message.contains("not a connection ID") => Some("`kubesocks status` shows them"),
        ErrorKind::BadRequest if r.message.contains("no listener") => Some("ask for --socks and/or --http"),
        ErrorKind::Busy => Some("try again in a moment"),
        ErrorKind::AlreadyConnected => Some("disconnect it first to change that"),
        ErrorKind::Listen if r.message.contains("another program uses this port") => {
            Some("pick another address with --listen-socks / --listen-http / --listen-dns")
        }
        ErrorKind::Kube if r.message.contains("no current context") => Some("pass --context"),
        ErrorKind::Kube if r.message.contains("no kubeconfig") => {
            Some("set --kubeconfig or KUBECONFIG, or create ~/.kube/config")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_is_found_anywhere_in_the_chain() {
        let open = anyhow::Error::new(EngineError::OpenListener { addr: "0.0.0.0:1080".parse().unwrap() })
            .context("cannot start the proxy");
        assert_eq!(
            hint(&open),
            Some("set credentials (KUBESOCKS_AUTH=USER:PASSWORD or --auth-file FILE) to listen there")
        );
        let open_dns = anyhow::Error::new(EngineError::OpenDnsListener { addr: "0.0.0.0:53".parse().unwrap() })
            .context("cannot start the proxy");
        assert_eq!(hint(&open_dns), Some("give --listen-dns a loopback address, e.g. 127.0.0.1:5353"));
        let refused: anyhow::Error =
            Refused { kind: ErrorKind::UnknownConnection, message: "no connection x".into() }.into();
        assert_eq!(hint(&refused), Some("`kubesocks status` lists them"));
        assert_eq!(hint(&anyhow::anyhow!("something else")), None);
    }

    #[test]
    fn a_cause_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("talking to the daemon failed: {source}")]
        struct Quoting {
            #[source]
            source: std::io::Error,
        }
        let reset = std::io::Error::from_raw_os_error(104);
        let said = reset.to_string();
        let e = anyhow::Error::new(Quoting { source: reset }).context("status");
        assert_eq!(chain(&e), format!("status: talking to the daemon failed: {said}"));
        let plain = anyhow::Error::new(std::io::Error::other("disk full")).context("cannot write the record");
        assert_eq!(chain(&plain), "cannot write the record: disk full");
    }
}
