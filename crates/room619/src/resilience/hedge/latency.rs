//! [`LatencyWindow`]: the recent latencies of a downstream, and the hedge
//! delay they give.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// How many recent latencies are kept.
const WINDOW: usize = 128;
/// The delay is recomputed after this many new samples.
const RECOMPUTE_EVERY: usize = 16;
/// `delay_micros` while too few samples are known: no hedging yet.
const NOT_ENOUGH_DATA: u64 = u64::MAX;

/// A ring of the last [`WINDOW`] latencies and the hedge delay computed from
/// them. Callers read the delay with one atomic load; recording takes a
/// short lock, and every [`RECOMPUTE_EVERY`] samples a sort of the window.
#[derive(Debug)]
pub(super) struct LatencyWindow {
    ring: Mutex<Ring>,
    delay_micros: AtomicU64,
    percentile: f64,
    min_samples: usize,
    min_delay: Duration,
    max_delay: Duration,
}

#[derive(Debug)]
struct Ring {
    samples: [u32; WINDOW],
    len: usize,
    next: usize,
    since_recompute: usize,
}

impl LatencyWindow {
    pub(super) fn new(
        percentile: f64,
        min_samples: usize,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        Self {
            ring: Mutex::new(Ring {
                samples: [0; WINDOW],
                len: 0,
                next: 0,
                since_recompute: 0,
            }),
            delay_micros: AtomicU64::new(NOT_ENOUGH_DATA),
            percentile: percentile.clamp(0.0, 1.0),
            min_samples: min_samples.min(WINDOW),
            min_delay,
            max_delay: max_delay.max(min_delay),
        }
    }

    /// The current hedge delay, or `None` while fewer than `min_samples`
    /// latencies are known.
    pub(super) fn delay(&self) -> Option<Duration> {
        match self.delay_micros.load(Ordering::Relaxed) {
            NOT_ENOUGH_DATA => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// Records one call's latency.
    pub(super) fn record(&self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let next = ring.next;
        ring.samples[next] = micros;
        ring.next = (next + 1) % WINDOW;
        ring.len = (ring.len + 1).min(WINDOW);
        ring.since_recompute += 1;
        let due = ring.len >= self.min_samples
            && (ring.since_recompute >= RECOMPUTE_EVERY || ring.len == self.min_samples);
        if !due {
            return;
        }
        ring.since_recompute = 0;
        let mut sorted = ring.samples;
        let known = &mut sorted[..ring.len];
        drop(ring);
        known.sort_unstable();
        let index = percentile_index(self.percentile, known.len());
        let delay =
            Duration::from_micros(u64::from(known[index])).clamp(self.min_delay, self.max_delay);
        let micros = u64::try_from(delay.as_micros()).unwrap_or(NOT_ENOUGH_DATA - 1);
        self.delay_micros.store(micros, Ordering::Relaxed);
    }
}

/// The index of the `percentile` among `len` sorted samples: the smallest
/// rank `k` with `k ≥ percentile · len`, minus one.
fn percentile_index(percentile: f64, len: usize) -> usize {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let target = percentile * f64::from(len);
    let rank = (1..=len).find(|&k| f64::from(k) >= target).unwrap_or(len);
    usize::try_from(rank.saturating_sub(1)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(min_samples: usize) -> LatencyWindow {
        LatencyWindow::new(
            0.9,
            min_samples,
            Duration::from_millis(1),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn no_delay_until_enough_samples() {
        let window = window(10);
        for _ in 0..9 {
            window.record(Duration::from_millis(5));
        }
        assert_eq!(window.delay(), None);
        window.record(Duration::from_millis(5));
        assert_eq!(window.delay(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn the_delay_is_the_percentile_of_the_window_clamped() {
        let window = window(1);
        // Recomputed at the 1st sample and every 16th after: the 97th is one.
        for millis in 1..=97 {
            window.record(Duration::from_millis(millis));
        }
        // p90 of 97 samples is the 88th (the first rank ≥ 87.3).
        assert_eq!(window.delay(), Some(Duration::from_millis(88)));
        for _ in 0..WINDOW {
            window.record(Duration::from_secs(5));
        }
        assert_eq!(
            window.delay(),
            Some(Duration::from_secs(1)),
            "clamped to max"
        );
        for _ in 0..WINDOW {
            window.record(Duration::ZERO);
        }
        assert_eq!(
            window.delay(),
            Some(Duration::from_millis(1)),
            "clamped to min"
        );
    }
}
