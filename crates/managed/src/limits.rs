//! Process limits a proxy needs raised at start.

/// The open-file limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now (the hard limit, if raising it worked).
    pub now: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs the outcome
/// once. Every client connection costs a descriptor or two (its socket, the
/// pod's), and at the usual soft limit of 1024 a few hundred clients would
/// starve the watches and dials too. `None` if the limit cannot be read.
pub fn raise_nofile_limit() -> Option<NofileLimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return None;
    }
    let (before, hard) = (limit.rlim_cur, limit.rlim_max);
    if before < hard {
        let raised = libc::rlimit { rlim_cur: hard, rlim_max: hard };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(soft = before, hard, %error, "cannot raise the open-file limit");
            return Some(NofileLimit { before, now: before, hard });
        }
    }
    let limit = NofileLimit { before, now: hard, hard };
    tracing::info!(before, now = hard, "open-file limit");
    Some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let mut lowered = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in raise_nofile_limit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lowered) }, 0);
        let hard = lowered.rlim_max;
        lowered.rlim_cur = 256.min(hard);
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let limit = raise_nofile_limit().unwrap();
        assert_eq!(limit, NofileLimit { before: 256.min(hard), now: hard, hard });
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, hard);
    }
}
