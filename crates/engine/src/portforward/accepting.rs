//! Which pod ports took a connection lately.
//!
//! The kubelet never says that it reached a pod's port, only that it could
//! not, so a new connection waits a little for that word before the client
//! is told it is connected (see [`super`]). A port that has just carried a
//! connection will almost always take the next one, so there the wait is
//! skipped and the client is answered as soon as the data stream is there,
//! as kubectl does. The rare refusal that then comes late is handled by
//! [`crate::dial::failover`]: the next endpoint, or a reset. A port never seen to
//! take a connection, or seen to refuse one, gets the whole wait, so that a
//! refusal there is told to the client as such (SOCKS `0x05`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::route::Endpoint;

/// How long a port that took a connection is trusted to take the next.
const REMEMBERED: Duration = Duration::from_secs(300);
/// Ports remembered at most; past that, the oldest are forgotten.
const MAX_REMEMBERED: usize = 4096;

#[derive(Default)]
pub(crate) struct Accepting {
    /// When each port last sent something back.
    seen: Mutex<HashMap<Endpoint, Instant>>,
}

impl Accepting {
    /// `endpoint`'s pod answered on a connection at `now`.
    pub(crate) fn took(&self, endpoint: &Endpoint, now: Instant) {
        let mut seen = self.seen.lock().unwrap();
        // The usual case, once per connection: a port already known.
        if let Some(at) = seen.get_mut(endpoint) {
            *at = now;
            return;
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, at| now.saturating_duration_since(*at) < REMEMBERED);
            if seen.len() >= MAX_REMEMBERED
                && let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(e, _)| e.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(endpoint.clone(), now);
    }

    /// `endpoint` refused a connection: it gets the whole wait again.
    pub(crate) fn refused(&self, endpoint: &Endpoint) {
        self.seen.lock().unwrap().remove(endpoint);
    }

    /// Whether `endpoint` took a connection recently enough, at `now`, to
    /// skip the wait for a refusal.
    pub(crate) fn takes(&self, endpoint: &Endpoint, now: Instant) -> bool {
        let seen = self.seen.lock().unwrap();
        seen.get(endpoint).is_some_and(|at| now.saturating_duration_since(*at) < REMEMBERED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(pod: &str, port: u16) -> Endpoint {
        Endpoint::new("shop", pod, port)
    }

    #[test]
    fn a_port_is_trusted_after_it_answered_until_it_refuses_or_time_passes() {
        let (accepting, now) = (Accepting::default(), Instant::now());
        assert!(!accepting.takes(&port("web-1", 8080), now), "never seen: the whole wait");
        accepting.took(&port("web-1", 8080), now);
        assert!(accepting.takes(&port("web-1", 8080), now + Duration::from_secs(1)));
        assert!(!accepting.takes(&port("web-1", 9090), now), "another port of the pod");
        assert!(!accepting.takes(&port("web-2", 8080), now), "the same port of another pod");
        assert!(!accepting.takes(&port("web-1", 8080), now + REMEMBERED), "too long ago");
        accepting.refused(&port("web-1", 8080));
        assert!(!accepting.takes(&port("web-1", 8080), now), "refused since");
    }

    #[test]
    fn past_the_limit_the_oldest_port_is_forgotten() {
        let (accepting, start) = (Accepting::default(), Instant::now());
        for i in 0..MAX_REMEMBERED {
            accepting.took(&port(&format!("p{i}"), 80), start + Duration::from_millis(i as u64));
        }
        let now = start + Duration::from_secs(10);
        accepting.took(&port("new", 80), now);
        assert!(accepting.takes(&port("new", 80), now));
        assert!(!accepting.takes(&port("p0", 80), now), "the oldest made room");
        assert!(accepting.takes(&port("p1", 80), now));
        assert_eq!(accepting.seen.lock().unwrap().len(), MAX_REMEMBERED);
    }
}
