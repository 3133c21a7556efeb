//! [`Throttle`]: a warning that would repeat on every call, logged at most
//! once an interval with a count of the ones held back.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// Decides when a repeated warning is logged: the first time, then at most
/// once every `every`; the ones between are counted, not logged.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    /// When the last warning was logged, and how many were held back since.
    last: Mutex<Option<(Instant, u64)>>,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether to log the warning at `now`: `Some(held back since the last
    /// one)`, or `None` to hold it back.
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some((at, held)) if now.saturating_duration_since(at) < self.every => {
                *last = Some((at, held.saturating_add(1)));
                None
            }
            Some((_, held)) => {
                *last = Some((now, 0));
                Some(held)
            }
            None => {
                *last = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_warning_is_logged_once_an_interval_with_the_count_held_back() {
        let throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.admit(Instant::now()), Some(0), "the first one");
        for _ in 0..1000 {
            assert_eq!(throttle.admit(Instant::now()), None);
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(throttle.admit(Instant::now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(throttle.admit(Instant::now()), Some(1001));
        assert_eq!(throttle.admit(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            throttle.admit(Instant::now()),
            Some(1),
            "after a quiet spell"
        );
    }
}
