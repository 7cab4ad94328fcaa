//! Free ports: bind, read the port, let go.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::error::{Result, RunnerError};

/// Hands out ports that were free a moment ago.
#[derive(Debug)]
pub struct PortAllocator {
    range: Option<(u16, u16)>,
    next: AtomicU32,
}

impl PortAllocator {
    /// Ports from `start..=end`, or any the OS gives when both are 0.
    pub fn new(start: u16, end: u16) -> Self {
        Self {
            range: (start != 0 && end >= start).then_some((start, end)),
            next: AtomicU32::new(0),
        }
    }

    /// A port that is free on `host` now (the listener is dropped at once,
    /// so another program may take it first; the window is short).
    pub fn allocate(&self, host: IpAddr) -> Result<u16> {
        match self.range {
            None => free_port(host, 0)
                .ok_or_else(|| RunnerError::Exhausted("no free port is left on this host".into())),
            Some((start, end)) => {
                let size = u32::from(end - start) + 1;
                // Round robin over the range, so that a port just released
                // (maybe in TIME_WAIT) is not handed out again at once.
                let offset = self.next.fetch_add(1, Ordering::Relaxed);
                (0..size)
                    .filter_map(|i| u16::try_from(u32::from(start) + (offset + i) % size).ok())
                    .find_map(|port| free_port(host, port))
                    .ok_or_else(|| {
                        RunnerError::Exhausted(format!(
                            "no port in {start}..={end} is free; stop a component first"
                        ))
                    })
            }
        }
    }

    /// Whether `port` is free on `host` now.
    pub fn is_free(host: IpAddr, port: u16) -> bool {
        free_port(host, port).is_some()
    }
}

fn free_port(host: IpAddr, port: u16) -> Option<u16> {
    let listener = TcpListener::bind(SocketAddr::new(host, port)).ok()?;
    listener.local_addr().ok().map(|addr| addr.port())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Two adjacent ports held by this test: (listener on p, listener on p+1).
    fn adjacent_pair() -> (TcpListener, TcpListener) {
        for _ in 0..100 {
            let first = TcpListener::bind((LOCAL, 0)).unwrap();
            let port = first.local_addr().unwrap().port();
            if port == u16::MAX {
                continue;
            }
            if let Ok(second) = TcpListener::bind((LOCAL, port + 1)) {
                return (first, second);
            }
        }
        panic!("no two adjacent free ports in 100 tries");
    }

    #[test]
    fn ports_come_from_the_range_and_busy_ones_are_skipped() {
        let any = PortAllocator::new(0, 0).allocate(LOCAL).unwrap();
        assert_ne!(any, 0);
        // Hold two adjacent ports, let the second go, and ask the range of
        // both: the busy one is skipped, whichever the round robin starts at.
        let (held, next) = adjacent_pair();
        let busy = held.local_addr().unwrap().port();
        drop(next);
        let allocator = PortAllocator::new(busy, busy + 1);
        assert_eq!(allocator.allocate(LOCAL).unwrap(), busy + 1);
        assert_eq!(
            allocator.allocate(LOCAL).unwrap(),
            busy + 1,
            "the round robin's second start"
        );
        let only_busy = PortAllocator::new(busy, busy);
        let err = only_busy.allocate(LOCAL).unwrap_err().to_string();
        assert!(
            err.contains(&format!("no port in {busy}..={busy} is free")),
            "{err}"
        );
    }
}
