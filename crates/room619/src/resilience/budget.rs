//! A retry budget built from configured values that may be out of range.

use std::time::Duration;

use tower::retry::budget::TpsBudget;

/// The shortest and longest window a budget accepts (tower's bounds).
const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// The largest ratio a budget accepts.
const MAX_RATIO: f32 = 1000.0;

/// A [`TpsBudget`] over `ttl`, allowing `min_per_second` plus `ratio` of the
/// calls. Values outside tower's bounds (which it asserts) are clamped to
/// them, and a NaN ratio counts as 0; configuration validation reports them
/// first, so this only guards hand-built policies.
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
