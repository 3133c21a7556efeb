//! When each caller sends: as soon as it is free (closed loop), or on a
//! fixed schedule (open loop).
//!
//! The open-loop schedule is one slot every `1 / rate` seconds from the
//! start; of `callers` callers, caller `i` owns slots `i`, `i + callers`,
//! `i + 2 × callers`, ... A caller free before its next slot waits for it;
//! one still busy with its previous request when the slot comes is *late*:
//! it sends as soon as it is free, and that request is timed from its slot
//! all the same, so a stall of the server shows in the latencies of the
//! requests it held back (no coordinated omission).
//!
//! tokio's timer fires on millisecond ticks, too coarse for requests that
//! take tens of microseconds, and a runtime thread that spins on the clock
//! instead is never idle, so the kernel treats it as a CPU hog and lets
//! other threads run first for milliseconds at a time on a busy machine.
//! The slots are therefore released by a thread of their own (the pacer):
//! it sleeps on the kernel's high-resolution timer until [`LEAD`] before
//! each slot (a timed wait of a normal thread may end up to that much late:
//! the kernel's default timer slack), then hands the slot to its caller
//! through a channel. A request is timed from its slot, or from when it
//! was sent if that was earlier, so a request sent a little early is not
//! timed short. How far from their slots the requests went out (the send
//! lag) is measured and reported beside the latencies.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};

use crate::BoxError;

/// Nanoseconds in a second.
const NANOS: u128 = 1_000_000_000;

/// How long before its slot the pacer releases a slot: the kernel's
/// default timer slack for a normal thread (`/proc/self/timerslack_ns`),
/// by which its timed wait may end late.
const LEAD: Duration = Duration::from_micros(50);

/// Slots a caller may have waiting before the pacer gives up the next ones
/// (counted as unsent): a caller that far behind is stuck.
const BACKLOG: usize = 4_096;

/// One request to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turn {
    /// Its slot in an open-loop run, the moment it is sent in a
    /// closed-loop one: its latency is measured from here, or from when it
    /// was sent if that was earlier.
    pub(crate) due: Instant,
    /// Whether the caller was still busy when the slot was released.
    pub(crate) late: bool,
    /// Whether `due` is a slot of the schedule (open loop).
    pub(crate) scheduled: bool,
}

/// The turns of one caller.
#[derive(Debug)]
pub(crate) enum Pace {
    /// A turn whenever the caller is free, until `deadline`.
    Closed { deadline: Instant },
    /// The caller's slots of the schedule, as the pacer releases them.
    Open(Slots),
}

/// One caller's share of an open-loop schedule.
#[derive(Debug)]
pub(crate) struct Slots {
    released: mpsc::Receiver<Instant>,
    /// After this instant, no more requests are sent: a target slower than
    /// the offered rate cannot hold the run open for ever.
    stop: Instant,
    /// Slots of this caller never sent (the target fell too far behind).
    unsent: u64,
}

/// Slots the pacer could not hand to their caller (its backlog full).
#[derive(Debug, Clone, Default)]
pub(crate) struct Dropped(Arc<AtomicU64>);

impl Dropped {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The pacer thread of an open-loop run.
pub(crate) struct Pacer {
    thread: std::thread::JoinHandle<Option<u64>>,
    dropped: Dropped,
}

impl Pacer {
    /// Waits for the pacer to end (after its last slot, or at its next one
    /// once every caller has gone); returns the slots it could not hand to
    /// their caller and its CPU time in nanoseconds, if read.
    pub(crate) async fn finish(self) -> Result<(u64, Option<u64>), BoxError> {
        let cpu = tokio::task::spawn_blocking(move || self.thread.join())
            .await?
            .map_err(|_panic| "the pacer thread panicked")?;
        Ok((self.dropped.get(), cpu))
    }
}

/// The paces of `callers` callers from `start` for `duration`: closed loop
/// without a `rate`, else their shares of a schedule of `rate` requests per
/// second, released by the pacer thread started here.
///
/// # Errors
///
/// If the run would end beyond what an `Instant` holds, or the pacer
/// thread cannot be started.
pub(crate) fn plan(
    start: Instant,
    duration: Duration,
    rate: Option<u32>,
    callers: usize,
) -> Result<(Vec<Pace>, Option<Pacer>), BoxError> {
    let callers = callers.max(1);
    let deadline = start
        .checked_add(duration)
        .ok_or("the run's duration is out of range")?;
    let Some(rate) = rate.filter(|rate| *rate > 0) else {
        let paces = (0..callers).map(|_| Pace::Closed { deadline }).collect();
        return Ok((paces, None));
    };
    // Twice the duration at most: the backlog of a late target is drained
    // for as long again, then given up.
    let stop = deadline
        .checked_add(duration)
        .ok_or("the run's duration is out of range")?;
    let (senders, paces): (Vec<_>, Vec<_>) = (0..callers)
        .map(|_| {
            let (sender, released) = mpsc::channel(BACKLOG);
            let slots = Slots {
                released,
                stop,
                unsent: 0,
            };
            (sender, Pace::Open(slots))
        })
        .unzip();
    let schedule = Schedule::new(start, duration, rate)?;
    let dropped = Dropped::default();
    let counter = dropped.clone();
    let thread = std::thread::Builder::new()
        .name(super::PACER_THREAD.to_owned())
        .spawn(move || {
            schedule.release(&senders, &counter);
            crate::cpu::this_thread_nanos()
        })?;
    Ok((paces, Some(Pacer { thread, dropped })))
}

impl Pace {
    /// Waits for the next turn; `None` when the run is over.
    pub(crate) async fn next(&mut self) -> Option<Turn> {
        match self {
            Self::Closed { deadline } => {
                let now = Instant::now();
                (now < *deadline).then_some(Turn {
                    due: now,
                    late: false,
                    scheduled: false,
                })
            }
            Self::Open(slots) => slots.next().await,
        }
    }

    /// Slots of the schedule this caller never sent (0 in a closed loop).
    pub(crate) fn unsent(&self) -> u64 {
        match self {
            Self::Closed { .. } => 0,
            Self::Open(slots) => slots.unsent,
        }
    }
}

impl Slots {
    async fn next(&mut self) -> Option<Turn> {
        // A slot already released came while the caller was busy.
        let (due, late) = match self.released.try_recv() {
            Ok(due) => (due, true),
            Err(TryRecvError::Empty) => (self.released.recv().await?, false),
            Err(TryRecvError::Disconnected) => return None,
        };
        if Instant::now() >= self.stop {
            // Given up: this slot and those still waiting. The pacer is
            // done by now (its last slot is at half the stop).
            self.unsent += 1;
            self.released.close();
            while self.released.recv().await.is_some() {
                self.unsent += 1;
            }
            return None;
        }
        Some(Turn {
            due,
            late,
            scheduled: true,
        })
    }
}

/// The slots of an open-loop run.
struct Schedule {
    start: Instant,
    /// Requests per second, all callers together.
    rate: u128,
    /// Slots `0..total` are in the run.
    total: u64,
}

impl Schedule {
    fn new(start: Instant, duration: Duration, rate: u32) -> Result<Self, BoxError> {
        let rate = u128::from(rate);
        Ok(Self {
            start,
            rate,
            // Slot `s` is at `s / rate` s: in the run while that is before
            // the deadline, so `total = ceil(duration × rate)`.
            total: u64::try_from((duration.as_nanos() * rate).div_ceil(NANOS))?,
        })
    }

    /// The instant of slot `slot`: `slot / rate` seconds after the start.
    fn at(&self, slot: u64) -> Option<Instant> {
        let nanos = u64::try_from(u128::from(slot) * NANOS / self.rate).ok()?;
        self.start.checked_add(Duration::from_nanos(nanos))
    }

    /// The pacer: hands each slot to its caller (`senders[slot % callers]`)
    /// when it comes. Runs on a thread of its own.
    fn release(&self, senders: &[mpsc::Sender<Instant>], dropped: &Dropped) {
        let callers = u64::try_from(senders.len()).unwrap_or(u64::MAX);
        let mut gone = vec![false; senders.len()];
        let mut left = senders.len();
        for slot in 0..self.total {
            let Some(due) = self.at(slot) else {
                return;
            };
            let Some(sender) = usize::try_from(slot % callers)
                .ok()
                .and_then(|caller| senders.get(caller).zip(gone.get_mut(caller)))
            else {
                return;
            };
            wait_until(due.checked_sub(LEAD).unwrap_or(due));
            match sender.0.try_send(due) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped.0.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Closed(_)) => {
                    if !*sender.1 {
                        *sender.1 = true;
                        left -= 1;
                    }
                    if left == 0 {
                        return;
                    }
                }
            }
        }
    }
}

/// Blocks this thread (the pacer's own, never a runtime's) until `due`:
/// parked with a timeout, which the kernel times with its high-resolution
/// timer, however often it wakes early.
fn wait_until(due: Instant) {
    loop {
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::park_timeout(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn turns(pace: &mut Pace) -> Vec<Turn> {
        let mut turns = Vec::new();
        while let Some(turn) = pace.next().await {
            turns.push(turn);
        }
        turns
    }

    #[tokio::test]
    async fn without_a_rate_the_loop_is_closed() {
        let (paces, pacer_thread) = plan(Instant::now(), Duration::from_secs(1), None, 4).unwrap();
        assert!(pacer_thread.is_none());
        assert_eq!(paces.len(), 4);
        assert!(paces.iter().all(|pace| matches!(pace, Pace::Closed { .. })));
    }

    #[tokio::test]
    async fn each_caller_gets_every_nth_slot_of_the_schedule_when_it_comes() {
        let start = Instant::now();
        // 1 000 requests a second for 10 ms: slots 0..10, one a millisecond.
        let (mut paces, pacer_thread) =
            plan(start, Duration::from_millis(10), Some(1_000), 4).unwrap();
        let turns = turns(&mut paces[1]).await;
        let dues: Vec<Instant> = turns.iter().map(|turn| turn.due).collect();
        let ms = Duration::from_millis;
        assert_eq!(dues, [start + ms(1), start + ms(5), start + ms(9)]);
        assert!(turns.iter().all(|turn| turn.scheduled));
        assert!(Instant::now() + LEAD >= start + ms(9));
        drop(paces);
        let (dropped, _cpu) = pacer_thread.unwrap().finish().await.unwrap();
        assert_eq!(dropped, 0);
    }

    #[test]
    fn a_fraction_of_a_slot_counts_as_one() {
        let total = |micros| {
            Schedule::new(Instant::now(), Duration::from_micros(micros), 1_000)
                .unwrap()
                .total
        };
        assert_eq!(total(1_500), 2);
        assert_eq!(total(2_000), 2);
    }

    #[tokio::test]
    async fn slots_that_came_while_the_caller_was_busy_are_late() {
        let start = Instant::now();
        let (mut paces, _) = plan(start, Duration::from_millis(20), Some(1_000), 1).unwrap();
        // Busy for 3 ms or so: the first slots are released meanwhile.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let turns = turns(&mut paces[0]).await;
        assert_eq!(turns.len(), 20);
        assert!(turns[0].late && turns[0].due == start);
        assert!(!turns[19].late, "the last slot was waited for");
    }

    #[tokio::test]
    async fn a_caller_past_the_stop_gives_up_its_remaining_slots() {
        // Started 30 ms ago for 10 ms: every slot is out, the stop (20 ms)
        // has passed.
        let start = Instant::now()
            .checked_sub(Duration::from_millis(30))
            .unwrap();
        let (mut paces, _) = plan(start, Duration::from_millis(10), Some(1_000), 4).unwrap();
        // Let the pacer release the past slots.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(paces[1].next().await.is_none());
        // Slots 1, 5 and 9 of 0..10.
        assert_eq!(paces[1].unsent(), 3);
    }
}
