//! Verified tokens, remembered until they expire so a client reusing its
//! token pays for the signature check once, not per request.
//!
//! Only tokens that passed every check are kept, with the time they stop
//! being valid (`exp` + leeway); a cached token is answered only before that
//! time. The cache is emptied whenever a JWKS reload adds, removes or
//! changes a key, so a retired key stops working at once (a reload with the
//! same keys keeps it: no rotation, or a fetch out of turn that a made-up
//! key id asked for, costs no client a signature check). It is bounded:
//! expired entries are swept when it is full, and if it is still full it
//! starts over.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    sync::RwLock,
    time::{SystemTime, UNIX_EPOCH},
};

use super::Principal;

/// The most tokens remembered.
const MAX_ENTRIES: usize = 10_000;

/// How many bytes at the end of a token its hash covers.
const HASHED_TAIL: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: RwLock<Generation>,
}

/// The entries, and how many times the cache was cleared: a token verified
/// with keys read before a clear is not remembered after it.
#[derive(Debug, Default)]
struct Generation {
    number: u64,
    entries: Entries,
}

/// Verified tokens (their bytes: a lookup needs no UTF-8 check), with their
/// principal and the second they stop being valid.
type Entries = HashMap<Box<[u8]>, (Principal, u64), ByTail>;

/// Hashes a token by its last [`HASHED_TAIL`] bytes only (part of a JWT's
/// signature, as random as the whole token and a fraction of its length);
/// the map still compares whole tokens. Only verified tokens are ever
/// stored, so a caller cannot crowd one bucket with tokens of its making,
/// and a fast hasher (seeded per process) does.
#[derive(Debug, Default, Clone)]
struct ByTail(RandomState);

/// The hasher of [`ByTail`].
type RandomState = foldhash::fast::RandomState;

impl BuildHasher for ByTail {
    type Hasher = TailHasher<<RandomState as BuildHasher>::Hasher>;

    fn build_hasher(&self) -> Self::Hasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher<H>(H);

impl<H: Hasher> Hasher for TailHasher<H> {
    fn write(&mut self, bytes: &[u8]) {
        self.0
            .write(&bytes[bytes.len().saturating_sub(HASHED_TAIL)..]);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl TokenCache {
    /// The principal of `token` if it was verified and is still valid.
    pub(crate) fn get(&self, token: &[u8]) -> Option<Principal> {
        let cache = self.entries.read().ok()?;
        let (principal, until) = cache.entries.get(token)?;
        (now() <= *until).then(|| principal.clone())
    }

    /// The cache's generation: read it before reading the keys a token is
    /// verified with, and hand it to [`insert`](Self::insert).
    pub(crate) fn generation(&self) -> u64 {
        self.entries.read().map_or(0, |cache| cache.number)
    }

    /// Remembers a verified token, valid until `until` (seconds since the
    /// epoch), unless the cache was cleared since `generation` (the keys it
    /// was verified with may be gone).
    pub(crate) fn insert(&self, token: &str, principal: Principal, until: u64, generation: u64) {
        let Ok(mut cache) = self.entries.write() else {
            return;
        };
        if cache.number != generation {
            return;
        }
        let entries = &mut cache.entries;
        if entries.len() >= MAX_ENTRIES {
            let now = now();
            entries.retain(|_, (_, until)| *until >= now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(token.as_bytes().into(), (principal, until));
    }

    /// Forgets every token (the keys changed).
    pub(crate) fn clear(&self) {
        if let Ok(mut cache) = self.entries.write() {
            cache.number += 1;
            cache.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::auth::Credential;

    fn alice() -> Principal {
        Principal::new("alice", [], [], Credential::Jwt { kid: None })
    }

    #[test]
    fn expired_entries_are_not_answered() {
        let cache = TokenCache::default();
        cache.insert("live", alice(), now() + 60, 0);
        cache.insert("dead", alice(), now() - 1, 0);
        assert!(cache.get("live".as_bytes()).is_some());
        assert!(cache.get("dead".as_bytes()).is_none());
        cache.clear();
        assert!(cache.get("live".as_bytes()).is_none());
    }

    #[test]
    fn tokens_are_told_apart_whole_not_by_their_hashed_tail() {
        let cache = TokenCache::default();
        let token = "header.alice.0123456789abcdefghij";
        cache.insert(token, alice(), now() + 60, 0);
        assert!(cache.get(token.as_bytes()).is_some());
        assert!(
            cache
                .get("header.mallory.0123456789abcdefghij".as_bytes())
                .is_none()
        );
        assert!(cache.get("0123456789abcdefghij".as_bytes()).is_none());
        assert!(
            cache
                .get("header.alice.0123456789abcdefghi".as_bytes())
                .is_none()
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::default();
        for i in 0..=MAX_ENTRIES {
            cache.insert(&i.to_string(), alice(), now() + 60, 0);
        }
        assert!(cache.entries.read().unwrap().entries.len() <= MAX_ENTRIES);
    }

    /// A token verified with keys read before a clear (a JWKS reload that
    /// retired them) is not remembered after it.
    #[test]
    fn a_token_verified_before_a_clear_is_not_remembered() {
        let cache = TokenCache::default();
        let before = cache.generation();
        cache.clear();
        cache.insert("stale", alice(), now() + 60, before);
        assert!(cache.get(b"stale").is_none());
        cache.insert("fresh", alice(), now() + 60, cache.generation());
        assert!(cache.get(b"fresh").is_some());
    }
}
