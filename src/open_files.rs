//! The process's limit on open files. Every client connection is one, so a limit below
//! `limits.max_connections` means that connections beyond it fail at `accept` (and each failure
//! costs an eviction) instead of getting the clear 503 that `max_connections` gives. Junction
//! raises its soft limit to the hard limit at start and says so when even that is too low.

/// Descriptors Junction needs besides client connections: the database pool, the committer,
/// Redis, the listener, the log, the SQLite files.
const RESERVED: u64 = 256;

fn read() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed to it.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// The soft limit on open files now in force.
pub fn soft_limit() -> Option<u64> {
    read().map(|limit| limit.rlim_cur)
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_to_hard_limit() -> Option<u64> {
    let limit = read()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct passed to it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(limit.rlim_cur)
}

/// The warning to log when `open_files` cannot hold every connection the limits allow.
pub fn shortfall(max_connections: usize, max_http_connections: usize, open_files: u64) -> Option<String> {
    let wanted = (max_connections + max_http_connections) as u64 + RESERVED;
    (open_files < wanted).then(|| {
        format!(
            "the open-file limit ({open_files}) is below limits.max_connections + limits.max_http_connections \
             ({max_connections} + {max_http_connections}) plus {RESERVED} for Junction itself: connections \
             beyond about {} fail instead of getting 503. Raise the limit (LimitNOFILE in systemd, ulimit -n, \
             --ulimit nofile in Docker) or lower limits.max_connections.",
            open_files.saturating_sub(RESERVED)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_the_limits_do_not_fit() {
        let warning = shortfall(100_000, 4_096, 20_000).expect("100,000 connections do not fit in 20,000 files");
        assert!(warning.contains("(20000)") && warning.contains("about 19744"), "{warning}");
        assert_eq!(shortfall(10_000, 4_096, 20_000), None);
        assert_eq!(shortfall(100_000, 4_096, 104_352), None);
        assert!(shortfall(100_000, 4_096, 104_351).is_some());
    }

    #[test]
    fn the_soft_limit_is_raised_and_reported() {
        let read = || {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
            limit
        };
        let before = read();
        let now = raise_to_hard_limit().expect("getrlimit works on Linux");
        let after = read();
        assert_eq!(now, after.rlim_cur, "the limit in force is reported");
        assert!(after.rlim_cur >= before.rlim_cur);
        // A hard limit the kernel takes (not "unlimited") is where the soft limit ends.
        if after.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(after.rlim_cur, after.rlim_max);
        }
    }
}
