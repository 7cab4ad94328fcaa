//! Pieces of login and registration throttling that need no database: who
//! the client is (the peer, or the last untrusted hop that a trusted proxy
//! names), and an in-process bound on concurrent password checks per
//! account. The counting itself is in the store, atomic with the attempt
//! (see `AuthStore::reserve_login_attempt`).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bucket of clients whose address is unknown (they share one).
pub const UNKNOWN_ADDRESS: &str = "unknown";

/// The stored key of a client address: the canonical IP text (an
/// IPv4-mapped IPv6 address is written as IPv4), or [`UNKNOWN_ADDRESS`].
pub fn address_key(address: Option<IpAddr>) -> String {
    address.map_or_else(|| UNKNOWN_ADDRESS.to_owned(), |ip| ip.to_canonical().to_string())
}

/// The client of a request that arrived from `peer` carrying the
/// `x-forwarded-for` values `forwarded` (each possibly a comma-separated
/// list, in the order received). The header is believed only when `peer` is
/// one of `trusted`: then the client is the last hop that is not itself a
/// trusted proxy (the hops before it could be forged by the client). An
/// unparsable hop ends the walk at the last good one.
pub fn client_address<'a>(
    peer: Option<IpAddr>,
    forwarded: impl IntoIterator<Item = &'a str>,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer_ip = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    if !is_trusted(peer_ip) {
        return Some(peer_ip);
    }
    let hops: Vec<&str> = forwarded
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer_ip;
    for hop in hops.iter().rev().take(64) {
        let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// At most `per_key` holders per key at a time; the others wait in turn.
/// Keys nobody holds or waits for are forgotten, so the map stays as small
/// as the number of accounts being checked right now.
#[derive(Debug)]
pub struct KeyedPermits {
    per_key: usize,
    keys: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A permit of [`KeyedPermits`]; dropping it lets the next waiter in.
#[derive(Debug)]
pub struct KeyedPermit<'a> {
    owner: &'a KeyedPermits,
    key: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl KeyedPermits {
    pub fn new(per_key: usize) -> Self {
        Self {
            per_key: per_key.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a permit of `key`.
    pub async fn acquire(&self, key: &str) -> KeyedPermit<'_> {
        // The guard first: if this call is cancelled it drops last and
        // forgets the key when nobody else needs it.
        let mut guard = KeyedPermit {
            owner: self,
            key: key.to_owned(),
            permit: None,
        };
        let semaphore = {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.entry(key.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_key)))
                .clone()
        };
        // The semaphore is never closed, so this cannot fail; a failure
        // would only mean running unbounded for this one call.
        guard.permit = semaphore.acquire_owned().await.ok();
        guard
    }

    /// Keys with a holder or a waiter (for tests).
    pub fn tracked_keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for KeyedPermit<'_> {
    fn drop(&mut self) {
        let mut keys = self.owner.keys.lock().unwrap_or_else(PoisonError::into_inner);
        drop(self.permit.take());
        // The map holds one reference; each holder or waiter another (the
        // waiter's clone moves into its `acquire_owned`).
        if keys.get(&self.key).is_some_and(|s| Arc::strong_count(s) == 1) {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let peer = Some(ip("203.0.113.7"));
        assert_eq!(client_address(peer, ["198.51.100.1"], &[]), peer);
        assert_eq!(client_address(peer, ["198.51.100.1"], &[ip("10.0.0.1")]), peer);
        assert_eq!(client_address(None, ["198.51.100.1"], &[ip("10.0.0.1")]), None);
    }

    #[test]
    fn a_trusted_proxy_names_the_last_untrusted_hop() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let peer = Some(ip("10.0.0.1"));
        // The client may forge the leftmost entries; the proxies appended the rest.
        assert_eq!(
            client_address(peer, ["1.1.1.1, 198.51.100.9, 10.0.0.2"], &trusted),
            Some(ip("198.51.100.9"))
        );
        assert_eq!(
            client_address(peer, ["1.1.1.1", "198.51.100.9"], &trusted),
            Some(ip("198.51.100.9"))
        );
        // No header: the proxy itself is all we know.
        assert_eq!(client_address(peer, [], &trusted), peer);
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_address(peer, ["not-an-ip, 10.0.0.2"], &trusted),
            Some(ip("10.0.0.2"))
        );
        // An IPv4-mapped peer matches its IPv4 entry.
        let mapped = Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()));
        assert_eq!(
            client_address(mapped, ["198.51.100.9"], &trusted),
            Some(ip("198.51.100.9"))
        );
    }

    #[test]
    fn address_keys_are_canonical() {
        assert_eq!(address_key(None), UNKNOWN_ADDRESS);
        assert_eq!(
            address_key(Some(IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped()))),
            "127.0.0.2"
        );
        assert_eq!(address_key(Some(IpAddr::V6(Ipv6Addr::LOCALHOST))), "::1");
    }

    #[tokio::test]
    async fn permits_bound_each_key_and_are_forgotten() {
        let permits = Arc::new(KeyedPermits::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (permits, running, peak) = (permits.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let _permit = permits.acquire("alice").await;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Another account is not held up by alice's queue.
        let other = tokio::time::timeout(Duration::from_millis(100), permits.acquire("bob")).await;
        assert!(other.is_ok());
        drop(other);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!(permits.tracked_keys(), 0);
    }
}
