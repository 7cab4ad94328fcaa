//! Authorize's cache of what it reads about a user: the principal, the tier
//! and the blocked flag (never the password hash).
//!
//! Without it every authenticated call re-read the user from the database,
//! which capped every RPC at the store's read rate. With it:
//! - a block, unblock, tier change or delete made through this replica
//!   evicts the user at once; a read that raced with it is not cached (a
//!   generation counter, bumped by every eviction, must be unchanged from
//!   before the read to after it);
//! - one made through another replica applies when the entry's `ttl` ends
//!   (`authorize_cache_ttl`, 500 ms by default), well inside the 1 s a
//!   block must take everywhere;
//! - at most `capacity` users are held; when full, expired entries go, and
//!   if none had expired, everything does.

use std::{
    collections::HashMap,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use reporunner_proto::common::v1::{Principal, Tier};

/// What Authorize needs of a user.
#[derive(Clone, Debug)]
pub(crate) struct Cached {
    pub principal: Principal,
    pub tier: Tier,
    pub blocked: bool,
}

#[derive(Debug)]
pub(crate) struct UserCache {
    ttl: Duration,
    capacity: usize,
    generation: AtomicU64,
    entries: RwLock<HashMap<String, (Instant, Cached)>>,
}

impl UserCache {
    /// A `ttl` of zero turns the cache off: every call reads the store.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            generation: AtomicU64::new(0),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// Taken before a read of the store; [`UserCache::put`] caches the read
    /// only when no eviction came in between.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The fresh entry of `user_id`.
    pub fn get(&self, user_id: &str) -> Option<Cached> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(user_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, cached)| cached.clone())
    }

    /// Caches what a read that began at generation `seen` found.
    pub fn put(&self, user_id: &str, cached: Cached, seen: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the lock evictions take too: no eviction can slip between
        // this check and the insert.
        if self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(user_id) {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(user_id.to_owned(), (Instant::now(), cached));
    }

    /// Forgets `user_id`, after a change of the user was committed.
    pub fn evict(&self, user_id: &str) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(id: &str, blocked: bool) -> Cached {
        Cached {
            principal: Principal {
                user_id: id.to_owned(),
                username: id.to_owned(),
                tier: Tier::Free.into(),
            },
            tier: Tier::Free,
            blocked,
        }
    }

    #[test]
    fn an_entry_lives_for_the_ttl_and_an_eviction_ends_it() {
        let cache = UserCache::new(Duration::from_millis(200), 10);
        let seen = cache.generation();
        cache.put("u1", cached("u1", false), seen);
        assert!(!cache.get("u1").unwrap().blocked);
        cache.evict("u1");
        assert!(cache.get("u1").is_none());
        cache.put("u1", cached("u1", false), cache.generation());
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("u1").is_none(), "expired");
    }

    #[test]
    fn a_read_that_raced_with_an_eviction_is_not_cached() {
        let cache = UserCache::new(Duration::from_secs(60), 10);
        let seen = cache.generation();
        // The read found the user unblocked; a block committed and evicted
        // before the read's result came to be cached.
        cache.evict("u1");
        cache.put("u1", cached("u1", false), seen);
        assert!(cache.get("u1").is_none());
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_capacity_is_bounded() {
        let off = UserCache::new(Duration::ZERO, 10);
        off.put("u1", cached("u1", false), off.generation());
        assert!(off.get("u1").is_none());

        let cache = UserCache::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            let id = format!("u{i}");
            cache.put(&id, cached(&id, false), cache.generation());
            assert!(cache.entries.read().unwrap().len() <= 3);
            assert!(cache.get(&id).is_some());
        }
    }
}
