//! [`KeptMetrics`]: the metric handles of one route, found once and kept.
//!
//! A family lookup hashes the whole label set (service, method, status) under
//! a lock, three times a request. The handles it returns share their value
//! with the family, so a route keeps its in-flight gauge and, for the first
//! few statuses it answers with, its counter and histogram: a request then
//! costs an atomic load per slot looked at. Statuses beyond those slots are
//! looked up in the families as before.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};

/// Statuses kept per route (an answer's code or HTTP status).
const SLOTS: usize = 6;
/// A slot no status has claimed (no gRPC code or HTTP status is negative).
const FREE: i32 = i32::MIN;

/// One route's in-flight gauge, and its counter and histogram per status.
#[derive(Debug)]
pub(crate) struct KeptMetrics {
    active: OnceLock<Gauge>,
    finished: [Slot; SLOTS],
}

#[derive(Debug)]
struct Slot {
    status: AtomicI32,
    handles: OnceLock<(Counter, Histogram)>,
}

impl Default for KeptMetrics {
    fn default() -> Self {
        Self {
            active: OnceLock::new(),
            finished: std::array::from_fn(|_| Slot {
                status: AtomicI32::new(FREE),
                handles: OnceLock::new(),
            }),
        }
    }
}

impl KeptMetrics {
    /// The in-flight gauge, found by `find` the first time.
    pub(crate) fn active(&self, find: impl FnOnce() -> Gauge) -> &Gauge {
        self.active.get_or_init(find)
    }

    /// Counts one answer with `status` that took `elapsed`, with the counter
    /// and histogram found by `find` the first time (or every time, once
    /// the slots are taken).
    pub(crate) fn finished(
        &self,
        status: i32,
        elapsed: Duration,
        find: impl FnOnce() -> (Counter, Histogram),
    ) {
        let record = |(requests, duration): &(Counter, Histogram)| {
            requests.inc();
            duration.observe(elapsed.as_secs_f64());
        };
        if let Some(slot) = self.slot(status) {
            record(slot.handles.get_or_init(find));
        } else {
            record(&find());
        }
    }

    /// The slot of `status`, claimed now if a free one is left.
    fn slot(&self, status: i32) -> Option<&Slot> {
        for slot in &self.finished {
            let mut current = slot.status.load(Ordering::Acquire);
            if current == FREE {
                match slot.status.compare_exchange(
                    FREE,
                    status,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Some(slot),
                    Err(claimed) => current = claimed,
                }
            }
            if current == status {
                return Some(slot);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handles() -> (Counter, Histogram) {
        (Counter::default(), Histogram::new([1.0]))
    }

    #[test]
    fn a_status_keeps_its_handles_and_the_rest_are_looked_up_each_time() {
        let kept = KeptMetrics::default();
        let mut found = 0;
        for round in 0..3 {
            for status in 0..10 {
                kept.finished(status, Duration::ZERO, || {
                    found += 1;
                    handles()
                });
            }
            // The first SLOTS statuses were found once; the other four each round.
            assert_eq!(found, SLOTS + (10 - SLOTS) * (round + 1));
        }
    }

    #[test]
    fn the_gauge_is_found_once() {
        let kept = KeptMetrics::default();
        let gauge: Gauge = Gauge::default();
        kept.active(|| gauge.clone()).inc();
        kept.active(|| unreachable!("kept")).inc();
        assert_eq!(gauge.get(), 2);
    }
}
