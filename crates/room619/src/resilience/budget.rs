//! A retry budget: tower's `TpsBudget` with the ratio kept to a millionth.
//!
//! tower's budget withdraws `1 / ratio` tokens, cut to a whole number, per
//! retry against one per call: a ratio of 0.7 allowed every call a retry,
//! 0.4 one in two, and a hedge's 0.15 one in six. Here a call deposits a
//! million and a retry withdraws `1 000 000 / ratio`, rounded: 0.7 allows
//! 70 % of the calls a retry. The rest is tower's: deposits count for `ttl`, in ten
//! slots that expire one after the other, over a reserve of
//! `min_per_second × ttl` retries.

use std::{
    fmt,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicIsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tower::retry::budget::Budget;

/// The shortest and longest window a budget accepts (tower's bounds).
const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// The largest ratio a budget accepts.
const MAX_RATIO: f32 = 1000.0;
/// What one call deposits.
const DEPOSIT: isize = 1_000_000;
/// The slots `ttl` is cut into.
const SLOTS: u32 = 10;

/// A retry budget over `ttl`, allowing `min_per_second` plus `ratio` of the
/// calls. Values outside tower's bounds are clamped to them, and a NaN
/// ratio counts as 0; configuration validation reports them first, so this
/// only guards hand-built policies.
pub(crate) fn tps_budget(ttl: Duration, min_per_second: u32, ratio: f32) -> TpsBudget {
    let ttl = ttl.clamp(TTL_RANGE.0, TTL_RANGE.1);
    let ratio = if ratio.is_nan() {
        0.0
    } else {
        ratio.clamp(0.0, MAX_RATIO)
    };
    let min_per_second = min_per_second.min(u32::MAX >> 2);
    TpsBudget::new(ttl, min_per_second, ratio)
}

/// Deposits by calls and withdrawals by retries over a sliding window.
pub(crate) struct TpsBudget {
    generation: Mutex<Generation>,
    /// Tokens always there: `min_per_second × ttl` retries' worth.
    reserve: isize,
    /// What each expired slot of the window holds.
    slots: Box<[AtomicIsize]>,
    /// How long a slot lasts.
    slot: Duration,
    /// What the current slot holds so far.
    writer: AtomicIsize,
    deposit: isize,
    withdraw: isize,
}

/// The slot being written, and since when.
#[derive(Debug)]
struct Generation {
    index: usize,
    since: Instant,
}

impl TpsBudget {
    fn new(ttl: Duration, min_per_second: u32, ratio: f32) -> Self {
        let (deposit, withdraw) = if ratio <= 0.0 {
            // Deposits buy nothing: only the reserve pays for retries.
            (0, 1)
        } else {
            // `DEPOSIT / ratio`, rounded, at least 1 (read through a
            // `Duration`: a float to an integer without a lossy cast).
            let withdraw = Duration::try_from_secs_f64(1e6 / f64::from(ratio) + 0.5)
                .map_or(u64::MAX, |whole| whole.as_secs());
            (
                DEPOSIT,
                isize::try_from(withdraw).unwrap_or(isize::MAX).max(1),
            )
        };
        let reserve = isize::try_from(min_per_second)
            .unwrap_or(isize::MAX)
            .saturating_mul(isize::try_from(ttl.as_secs()).unwrap_or(isize::MAX))
            .saturating_mul(withdraw);
        Self {
            generation: Mutex::new(Generation {
                index: 0,
                since: Instant::now(),
            }),
            reserve,
            slots: (0..SLOTS).map(|_| AtomicIsize::new(0)).collect(),
            slot: ttl / SLOTS,
            writer: AtomicIsize::new(0),
            deposit,
            withdraw,
        }
    }

    /// Moves the window on: the current slot is committed, and the slots
    /// older than `ttl` are emptied.
    fn expire(&self) {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut passed = now.saturating_duration_since(generation.since);
        if passed < self.slot {
            return;
        }
        let committed = self.writer.swap(0, Ordering::SeqCst);
        self.slots[generation.index].store(committed, Ordering::SeqCst);
        let mut index = (generation.index + 1) % self.slots.len();
        while passed > self.slot {
            self.slots[index].store(0, Ordering::SeqCst);
            passed -= self.slot;
            index = (index + 1) % self.slots.len();
        }
        generation.index = index;
        generation.since = now;
    }

    fn balance(&self) -> isize {
        self.slots
            .iter()
            .map(|slot| slot.load(Ordering::SeqCst))
            .fold(self.writer.load(Ordering::SeqCst), isize::saturating_add)
            .saturating_add(self.reserve)
    }
}

impl Budget for TpsBudget {
    fn deposit(&self) {
        self.expire();
        self.writer.fetch_add(self.deposit, Ordering::SeqCst);
    }

    fn withdraw(&self) -> bool {
        self.expire();
        if self.balance() >= self.withdraw {
            self.writer.fetch_sub(self.withdraw, Ordering::SeqCst);
            true
        } else {
            false
        }
    }
}

impl fmt::Debug for TpsBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpsBudget")
            .field("deposit", &self.deposit)
            .field("withdraw", &self.withdraw)
            .field("balance", &self.balance())
            .finish_non_exhaustive()
    }
}

/// Checks a budget's values; the error says which is wrong (`ttl` or `ratio`).
pub(crate) fn check(ttl: Duration, ratio: f32) -> Result<(), (&'static str, String)> {
    if ttl < TTL_RANGE.0 || ttl > TTL_RANGE.1 {
        return Err(("ttl", format!("must be between 1s and 60s (got {ttl:?})")));
    }
    if !(0.0..=MAX_RATIO).contains(&ratio) {
        return Err(("ratio", format!("must be in [0, 1000] (got {ratio})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tower::retry::budget::Budget as _;

    use super::*;

    /// A ratio holds to a thousandth (tower's budget cut `1 / ratio` to a
    /// whole number: 0.7 allowed every call a retry).
    #[tokio::test]
    async fn a_fractional_ratio_allows_that_share_of_the_calls() {
        for (ratio, allowed) in [
            (0.7, 70),
            (0.4, 40),
            (0.15, 15),
            (0.2, 20),
            (1.0, 100),
            (2.5, 250),
        ] {
            let budget = tps_budget(Duration::from_secs(10), 0, ratio);
            for _ in 0..100 {
                budget.deposit();
            }
            let mut retries = 0;
            while budget.withdraw() {
                retries += 1;
            }
            assert_eq!(retries, allowed, "ratio {ratio}");
        }
        let none = tps_budget(Duration::from_secs(10), 0, 0.0);
        none.deposit();
        assert!(!none.withdraw());
    }

    /// Deposits count for `ttl`; the reserve stays.
    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl_and_the_reserve_stays() {
        let budget = tps_budget(Duration::from_secs(1), 1, 1.0);
        for _ in 0..5 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        // Only the reserve: one a second over a one-second window.
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
    }

    #[test]
    fn out_of_range_values_are_clamped_instead_of_panicking() {
        for (ttl, ratio) in [
            (Duration::ZERO, f32::NAN),
            (Duration::from_secs(3600), -1.0),
            (Duration::from_secs(10), f32::INFINITY),
        ] {
            let budget = tps_budget(ttl, u32::MAX, ratio);
            budget.deposit();
            assert!(budget.withdraw(), "min_per_second allows a retry");
            assert!(check(ttl, ratio).is_err());
        }
        assert!(check(Duration::from_secs(10), 0.2).is_ok());
    }
}
