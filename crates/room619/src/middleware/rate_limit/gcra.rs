//! GCRA (the generic cell rate algorithm): one timestamp per key, the
//! "theoretical arrival time" (TAT). A request is allowed when the TAT is at
//! most `tolerance` ahead of now; each allowed request moves it on by
//! `interval`. The Redis backend runs the same arithmetic in a script.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::counter::Counter;

/// The GCRA parameters of a rule, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Time one request "costs": `period / limit`.
    pub(crate) interval: u64,
    /// How far ahead the TAT may run: `(limit + burst - 1) * interval`, so
    /// `limit + burst` requests pass at once.
    pub(crate) tolerance: u64,
}

impl Gcra {
    pub(crate) fn new(limit: u32, period: Duration, burst: u32) -> Self {
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / u64::from(limit.max(1))).max(1);
        let capacity = u64::from(limit) + u64::from(burst);
        Self {
            interval,
            tolerance: interval.saturating_mul(capacity.saturating_sub(1)),
        }
    }

    /// The decision at `now` for a key whose TAT is `tat`: the new TAT, or
    /// how long to wait.
    pub(crate) fn decide(self, tat: Option<u64>, now: u64) -> Result<u64, Duration> {
        let tat = tat.unwrap_or(now).max(now);
        if tat - now > self.tolerance {
            return Err(Duration::from_nanos(tat - self.tolerance - now));
        }
        Ok(tat.saturating_add(self.interval))
    }
}

/// The number of keys after which expired ones are first swept; the next
/// sweep waits until the map has doubled since, so that sweeping stays a
/// constant cost a request however many keys are live.
const SWEEP_AT: usize = 10_000;

/// TATs of every key, in this process.
#[derive(Debug)]
pub(crate) struct LocalStore {
    epoch: Instant,
    tats: Mutex<Tats>,
}

/// The TATs by key, and a buffer to name a request's counter in (a key is
/// allocated only when a counter is new). Hashed with std's `SipHash`: a
/// client chooses much of its key (an address in its IPv6 prefix, a
/// forwarded address behind a trusted proxy), so the map must not be
/// floodable.
#[derive(Debug, Default)]
struct Tats {
    by_key: HashMap<String, u64>,
    key: String,
    /// The size at which the next sweep runs (0: `SWEEP_AT`).
    sweep_at: usize,
}

impl Default for LocalStore {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            tats: Mutex::default(),
        }
    }
}

impl LocalStore {
    /// Decides for `key` under `gcra` now, recording an allowed request.
    pub(crate) fn check_key(&self, key: &str, gcra: Gcra) -> Result<(), Duration> {
        self.check_with(gcra, |buffer| buffer.push_str(key))
    }

    /// Decides for `counter` under `gcra` now, recording an allowed request.
    pub(crate) fn check(&self, counter: &Counter<'_>, gcra: Gcra) -> Result<(), Duration> {
        self.check_with(gcra, |buffer| counter.write_key(buffer))
    }

    /// Decides for the key `name` writes, under `gcra`, now.
    fn check_with(&self, gcra: Gcra, name: impl FnOnce(&mut String)) -> Result<(), Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let Ok(mut tats) = self.tats.lock() else {
            // A poisoned map means a bug elsewhere; let traffic through.
            return Ok(());
        };
        let Tats {
            by_key,
            key,
            sweep_at,
        } = &mut *tats;
        key.clear();
        name(key);
        if let Some(tat) = by_key.get_mut(key.as_str()) {
            *tat = gcra.decide(Some(*tat), now)?;
            return Ok(());
        }
        let tat = gcra.decide(None, now)?;
        if by_key.len() >= (*sweep_at).max(SWEEP_AT) {
            // A TAT in the past is the same as no TAT.
            by_key.retain(|_, tat| *tat > now);
            *sweep_at = by_key.len().saturating_mul(2);
        }
        by_key.insert(key.clone(), tat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_plus_burst_pass_at_once_then_one_per_interval() {
        let gcra = Gcra::new(5, Duration::from_secs(60), 2);
        let mut tat = None;
        let mut passed = 0;
        for _ in 0..15 {
            if let Ok(next) = gcra.decide(tat, 0) {
                tat = Some(next);
                passed += 1;
            }
        }
        assert_eq!(passed, 7);
        let wait = gcra.decide(tat, 0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(12));
        assert!(
            gcra.decide(tat, wait.as_nanos().try_into().unwrap())
                .is_ok()
        );
    }

    /// Past `SWEEP_AT` live keys, a new key does not sweep the whole map
    /// again each time: the next sweep waits until the map has doubled.
    #[test]
    fn sweeps_of_live_keys_are_spaced_out() {
        let store = LocalStore::default();
        let gcra = Gcra::new(1, Duration::from_secs(3600), 0);
        for n in 0..=SWEEP_AT {
            assert!(store.check_key(&n.to_string(), gcra).is_ok());
        }
        let tats = store.tats.lock().unwrap();
        assert_eq!(tats.by_key.len(), SWEEP_AT + 1, "nothing had expired");
        assert_eq!(
            tats.sweep_at,
            2 * SWEEP_AT,
            "the next sweep at twice the size"
        );
    }

    #[test]
    fn the_local_store_counts_keys_apart() {
        let store = LocalStore::default();
        let gcra = Gcra::new(1, Duration::from_secs(3600), 0);
        assert!(store.check_key("a", gcra).is_ok());
        assert!(store.check_key("a", gcra).is_err());
        assert!(store.check_key("b", gcra).is_ok());
        let counter = Counter {
            rule: "b",
            by: crate::middleware::rate_limit::counter::By::InProcess,
        };
        assert!(store.check(&counter, gcra).is_ok(), "`b|in-process` is new");
        assert!(store.check(&counter, gcra).is_err());
        assert!(
            store.check_key("b|in-process", gcra).is_err(),
            "the same key"
        );
    }
}
