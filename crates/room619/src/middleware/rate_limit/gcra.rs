//! GCRA (the generic cell rate algorithm): one timestamp per key, the
//! "theoretical arrival time" (TAT). A request is allowed when the TAT is at
//! most `tolerance` ahead of now; each allowed request moves it on by
//! `interval`. A TAT is read as at most `tolerance + interval` ahead, the
//! farthest the rule itself moves it, so that a rule an update loosened is
//! not held to the TATs of the stricter one ([`Gcra::bound`]). The Redis
//! backend runs the same arithmetic in a script.

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

    /// `tat` as this rule sees it at `now`: at most `tolerance + interval`
    /// ahead, the farthest the rule itself moves a TAT. One farther ahead
    /// was set under a stricter rule that an update replaced (1 a day, now
    /// 1000 a minute); kept, it would hold the client to the old limit.
    pub(crate) fn bound(self, tat: u64, now: u64) -> u64 {
        tat.min(
            now.saturating_add(self.tolerance)
                .saturating_add(self.interval),
        )
    }

    /// The decision at `now` for a key whose TAT is `tat`: the new TAT, or
    /// how long to wait.
    pub(crate) fn decide(self, tat: Option<u64>, now: u64) -> Result<u64, Duration> {
        let tat = self.bound(tat.unwrap_or(now).max(now), now);
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
            .map(drop)
    }

    /// Decides for `counter` under `gcra` now, recording an allowed request.
    pub(crate) fn check(&self, counter: &Counter<'_>, gcra: Gcra) -> Result<(), Duration> {
        self.check_with(gcra, |buffer| counter.write_key(buffer))
            .map(drop)
    }

    /// As [`check`](Self::check), with the counter's TAT once the request
    /// is recorded (in [`now`](Self::now)'s nanoseconds).
    pub(crate) fn record(&self, counter: &Counter<'_>, gcra: Gcra) -> Result<u64, Duration> {
        self.check_with(gcra, |buffer| counter.write_key(buffer))
    }

    /// How long a request counted as `counter` would wait under `gcra` now,
    /// recording nothing: `Ok` when it would pass.
    pub(crate) fn peek(&self, counter: &Counter<'_>, gcra: Gcra) -> Result<(), Duration> {
        let now = self.now();
        let Ok(mut tats) = self.tats.lock() else {
            return Ok(());
        };
        let Tats { by_key, key, .. } = &mut *tats;
        key.clear();
        counter.write_key(key);
        match by_key.get(key.as_str()) {
            Some(tat) => gcra.decide(Some(*tat), now).map(drop),
            None => Ok(()),
        }
    }

    /// Nanoseconds since the store was made: the clock of its TATs.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decides for the key `name` writes, under `gcra`, now: the key's new
    /// TAT, or how long to wait.
    fn check_with(&self, gcra: Gcra, name: impl FnOnce(&mut String)) -> Result<u64, Duration> {
        let now = self.now();
        let Ok(mut tats) = self.tats.lock() else {
            // A poisoned map means a bug elsewhere; let traffic through.
            return Ok(now);
        };
        let Tats {
            by_key,
            key,
            sweep_at,
        } = &mut *tats;
        key.clear();
        name(key);
        if let Some(tat) = by_key.get_mut(key.as_str()) {
            // Bounded before deciding, and kept bounded when refused: a
            // refusal leaves the TAT as it is, and a TAT bounded only on
            // reading would stay `tolerance + interval` ahead for good.
            *tat = gcra.bound(*tat, now);
            *tat = gcra.decide(Some(*tat), now)?;
            return Ok(*tat);
        }
        let tat = gcra.decide(None, now)?;
        if by_key.len() >= (*sweep_at).max(SWEEP_AT) {
            // A TAT in the past is the same as no TAT.
            by_key.retain(|_, tat| *tat > now);
            *sweep_at = by_key.len().saturating_mul(2);
        }
        by_key.insert(key.clone(), tat);
        Ok(tat)
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

    /// Under an unchanged rule the bound never binds: the TAT an allowed
    /// request leaves is at most `tolerance + interval` ahead.
    #[test]
    fn the_bound_leaves_the_decisions_of_an_unchanged_rule_alone() {
        let gcra = Gcra::new(5, Duration::from_secs(60), 2);
        let mut tat = None;
        for now in (0..600_000_000_000_u64).step_by(1_000_000_000) {
            for _ in 0..3 {
                if let Ok(next) = gcra.decide(tat, now) {
                    assert_eq!(gcra.bound(next, now), next);
                    tat = Some(next);
                }
            }
        }
    }

    /// A TAT a day ahead, left by `1 per day`, is read under `1000 per
    /// minute` as at most a minute ahead: the client waits one interval
    /// (60 ms), not a day.
    #[test]
    fn a_tat_set_under_a_stricter_rule_is_bounded_by_the_current_one() {
        let old = Gcra::new(1, Duration::from_secs(86_400), 0);
        let new = Gcra::new(1000, Duration::from_secs(60), 0);
        let tat = old.decide(None, 0).unwrap();
        assert_eq!(old.decide(Some(tat), 0), Err(Duration::from_secs(86_400)));
        assert_eq!(new.decide(Some(tat), 0), Err(Duration::from_millis(60)));
        assert!(new.decide(Some(new.bound(tat, 0)), 60_000_000).is_ok());
    }

    /// Through the store: the bounded TAT is kept when the request is
    /// refused, so the client passes once the new interval has gone by
    /// (bounding on reading alone would refuse it for good).
    #[tokio::test]
    async fn the_store_keeps_a_bounded_tat_so_a_loosened_rule_lets_the_client_through() {
        let store = LocalStore::default();
        let old = Gcra::new(1, Duration::from_secs(86_400), 0);
        let new = Gcra::new(1000, Duration::from_secs(60), 0);
        assert!(store.check_key("k", old).is_ok());
        assert!(store.check_key("k", old).unwrap_err() > Duration::from_secs(86_000));
        let wait = store.check_key("k", new).unwrap_err();
        assert!(wait <= Duration::from_millis(60), "{wait:?}");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.check_key("k", new).is_ok());
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
