//! GCRA (the generic cell rate algorithm): one timestamp per key, the
//! "theoretical arrival time" (TAT). A request is allowed when the TAT is at
//! most `tolerance` ahead of now; each allowed request moves it on by
//! `interval`. The Redis backend runs the same arithmetic in a script.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

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

/// The number of keys after which expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// TATs of every key, in this process.
#[derive(Debug)]
pub(crate) struct LocalStore {
    epoch: Instant,
    tats: Mutex<HashMap<String, u64>>,
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
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let Ok(mut tats) = self.tats.lock() else {
            // A poisoned map means a bug elsewhere; let traffic through.
            return Ok(());
        };
        if let Some(tat) = tats.get_mut(key) {
            *tat = gcra.decide(Some(*tat), now)?;
            return Ok(());
        }
        let tat = gcra.decide(None, now)?;
        if tats.len() >= SWEEP_AT {
            // A TAT in the past is the same as no TAT.
            tats.retain(|_, tat| *tat > now);
        }
        tats.insert(key.to_owned(), tat);
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

    #[test]
    fn the_local_store_counts_keys_apart() {
        let store = LocalStore::default();
        let gcra = Gcra::new(1, Duration::from_secs(3600), 0);
        assert!(store.check_key("a", gcra).is_ok());
        assert!(store.check_key("a", gcra).is_err());
        assert!(store.check_key("b", gcra).is_ok());
    }
}
