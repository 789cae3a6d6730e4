//! How many client connections the process's open-file limit leaves room
//! for. Every served client holds a descriptor (two on the v4 WebSocket
//! protocol, where each connection is a connection to the API server of its
//! own). Past the limit `accept` fails and clients wait unanswered in the
//! listen queue, so the connection cap is kept below the limit instead:
//! beyond the cap clients are refused at once, with a reason in the log.

/// Descriptors kept for everything but clients: the runtime, the listeners,
/// log files, connections to the API server and port-forward sessions.
const RESERVED: u64 = 64;

/// The cap that fits an open-file limit of `soft_limit`: `wanted`, or fewer
/// when `refusals` (clients over the cap being answered at once) and the
/// reserve must fit beside clients costing `per_client` descriptors each.
/// At least 1.
pub(crate) fn cap_for(wanted: usize, soft_limit: u64, per_client: u64, refusals: u64) -> usize {
    let room = soft_limit.saturating_sub(RESERVED + refusals) / per_client.max(1);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1)
}

/// The connection cap of a listener whose clients cost `per_client`
/// descriptors: `wanted`, lowered (and said so) where the open-file limit
/// leaves room for fewer clients.
pub(crate) fn fitting_cap(wanted: usize, per_client: u64) -> usize {
    let Some(limit) = soft_limit() else { return wanted };
    let cap = cap_for(wanted, limit, per_client, super::front_door::MAX_REFUSALS as u64);
    if cap < wanted {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = cap,
            "the open-file limit ({limit}) leaves room for {cap} client connections; more are refused (raise `ulimit -n` to serve more)"
        );
    }
    cap
}

/// The soft open-file limit of this process, if it can be read.
pub(crate) fn soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_reserve_and_the_refusals() {
        assert_eq!(cap_for(4096, 256, 1, 64), 128);
        assert_eq!(cap_for(4096, 256, 2, 64), 64);
        assert_eq!(cap_for(4096, 1 << 20, 1, 64), 4096, "a high limit leaves the cap as asked");
        assert_eq!(cap_for(100, 256, 1, 64), 100, "a cap below the room stays");
        assert_eq!(cap_for(4096, 16, 1, 64), 1, "a limit too low for the reserve still serves one");
        assert_eq!(cap_for(4096, u64::MAX, 1, 64), 4096);
    }
}
