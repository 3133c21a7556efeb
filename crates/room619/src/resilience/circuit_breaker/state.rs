//! The breaker's state machine and sliding windows, free of I/O so it can be
//! tested step by step on a paused clock.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use super::{BreakerPolicy, Window};

/// How many buckets a time window is cut into.
const TIME_BUCKETS: u32 = 10;
/// The longest open period, whatever the policy says (a clock overflow
/// would panic).
const LONGEST_OPEN: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How often a half-open breaker with every probe out looks again.
const PROBE_RECHECK: Duration = Duration::from_millis(10);

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A bounded number of probe calls decide between closing and reopening.
    HalfOpen,
}

/// Permission to make one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// A normal call while closed.
    Closed,
    /// One of the probes of a half-open period: the `period`-th since the
    /// breaker was made. A probe that ends in a later period (it hung
    /// through a reopening) says nothing about that one.
    Probe {
        /// Which half-open period issued it.
        period: u64,
    },
}

/// A change of state, reported so it can be logged and measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        issued: u32,
        succeeded: u32,
        period: u64,
        /// Since when every probe is out. One of them has run at least
        /// that long: past `slow_call_duration` it is a slow probe, and the
        /// breaker reopens (a probe that hangs must not keep it half-open
        /// for ever).
        full_since: Option<Instant>,
    },
}

/// One breaker: policy, window and state.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    window: Counts,
    consecutive_failures: u32,
    state: State,
    /// Half-open periods begun so far.
    periods: u64,
}

impl Breaker {
    /// A closed breaker.
    #[must_use]
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            window: Counts::new(policy.window),
            policy,
            consecutive_failures: 0,
            state: State::Closed,
            periods: 0,
        }
    }

    /// The current state (an open breaker whose time is up reads as
    /// half-open; a half-open one whose probes overran, as open).
    #[must_use]
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            _ if self.open_until(now).is_some() => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Until when it rejects every call, if it is open.
    #[must_use]
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        let until = match self.state {
            State::Open { until } => until,
            State::HalfOpen { .. } => self.reopened_until(now)?,
            State::Closed => return None,
        };
        (now < until).then_some(until)
    }

    /// When a call would next be admitted: `None` now, or the instant to look
    /// again (the end of the open period; soon, when half-open with every
    /// probe out).
    #[must_use]
    pub fn next_admission(&self, now: Instant) -> Option<Instant> {
        if let Some(until) = self.open_until(now) {
            return Some(until);
        }
        match self.state {
            State::HalfOpen { issued, .. }
                if issued >= self.policy.half_open_probes && self.reopened_until(now).is_none() =>
            {
                Some(now + PROBE_RECHECK)
            }
            _ => None,
        }
    }

    /// When half-open with a probe out for `slow_call_duration`: the end of
    /// the open period that probe's slowness began.
    fn reopened_until(&self, now: Instant) -> Option<Instant> {
        let State::HalfOpen {
            full_since: Some(since),
            ..
        } = self.state
        else {
            return None;
        };
        let slow_at = since.checked_add(self.policy.slow_call_duration)?;
        (now >= slow_at).then(|| slow_at + self.policy.open_duration.min(LONGEST_OPEN))
    }

    /// Reopens a half-open breaker whose probes overran (see
    /// [`reopened_until`](Self::reopened_until)).
    fn settle(&mut self, now: Instant) -> Option<Transition> {
        let until = self.reopened_until(now)?;
        self.state = State::Open { until };
        Some(Transition {
            from: BreakerState::HalfOpen,
            to: BreakerState::Open,
        })
    }

    /// Asks to make a call; `None` means reject it.
    pub fn try_acquire(&mut self, now: Instant) -> (Option<Permit>, Option<Transition>) {
        let mut transition = self.settle(now);
        if let State::Open { until } = self.state {
            if now < until {
                return (None, transition);
            }
            self.periods += 1;
            self.state = State::HalfOpen {
                issued: 0,
                succeeded: 0,
                period: self.periods,
                full_since: None,
            };
            transition = Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen,
            });
        }
        let permit = match &mut self.state {
            State::Closed => Some(Permit::Closed),
            State::HalfOpen {
                issued,
                period,
                full_since,
                ..
            } if *issued < self.policy.half_open_probes => {
                *issued += 1;
                if *issued >= self.policy.half_open_probes {
                    *full_since = Some(now);
                }
                Some(Permit::Probe { period: *period })
            }
            State::HalfOpen { .. } | State::Open { .. } => None,
        };
        (permit, transition)
    }

    /// Gives back a probe that was never used (its call was cancelled).
    pub fn release(&mut self, permit: Permit) {
        if let (
            Permit::Probe { period },
            State::HalfOpen {
                issued,
                period: current,
                full_since,
                ..
            },
        ) = (permit, &mut self.state)
            && period == *current
        {
            *issued = issued.saturating_sub(1);
            *full_since = None;
        }
    }

    /// A permitted call was dropped before it finished, `elapsed` after it
    /// started. Cut at its attempt's timeout, or at a deadline that blames
    /// the backend (`timed_out`), it failed; left running as long as a slow
    /// call it was one (a hung instance's calls are cut, never finished, and
    /// must still count); dropped sooner (its caller went away, another
    /// hedge answered) it says nothing, as [`ignored`](Self::ignored).
    pub fn dropped(
        &mut self,
        now: Instant,
        permit: Permit,
        timed_out: bool,
        elapsed: Duration,
    ) -> Option<Transition> {
        if timed_out {
            return self.record(now, permit, true, elapsed);
        }
        self.ignored(now, permit, elapsed)
    }

    /// A permitted call ended, `elapsed` after it started, in a way that
    /// says nothing about the backend (it ran out of a deadline too short
    /// to blame it): neither a success nor a failure. Nothing is recorded
    /// and a probe's slot is given back, unless the call ran as long as a
    /// slow call: then it was one.
    pub fn ignored(
        &mut self,
        now: Instant,
        permit: Permit,
        elapsed: Duration,
    ) -> Option<Transition> {
        if elapsed >= self.policy.slow_call_duration {
            return self.record(now, permit, false, elapsed);
        }
        // A half-open breaker whose probes overran reopens first: the slot
        // given back must not hide that.
        let reopened = self.settle(now);
        self.release(permit);
        reopened
    }

    /// Records the outcome of a permitted call that took `elapsed`.
    pub fn record(
        &mut self,
        now: Instant,
        permit: Permit,
        failed: bool,
        elapsed: Duration,
    ) -> Option<Transition> {
        if let Some(reopened) = self.settle(now) {
            // Whatever the call was, its period is over.
            return Some(reopened);
        }
        let slow = elapsed >= self.policy.slow_call_duration;
        match (permit, &mut self.state) {
            (Permit::Closed, State::Closed) => {
                self.window.record(now, failed, slow);
                self.consecutive_failures = if failed {
                    self.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                self.should_open(now)
                    .then(|| self.open(now, BreakerState::Closed))
            }
            (
                Permit::Probe { period },
                State::HalfOpen {
                    succeeded,
                    period: current,
                    ..
                },
            ) if period == *current => {
                if failed || slow {
                    return Some(self.open(now, BreakerState::HalfOpen));
                }
                *succeeded += 1;
                if *succeeded < self.policy.half_open_probes {
                    return None;
                }
                self.state = State::Closed;
                self.window = Counts::new(self.policy.window);
                self.consecutive_failures = 0;
                Some(Transition {
                    from: BreakerState::HalfOpen,
                    to: BreakerState::Closed,
                })
            }
            // A call admitted in an earlier state, or in an earlier
            // half-open period, finished late: it no longer says anything
            // about the current state.
            _ => None,
        }
    }

    fn should_open(&mut self, now: Instant) -> bool {
        let threshold = self.policy.consecutive_failures;
        if threshold > 0 && self.consecutive_failures >= threshold {
            return true;
        }
        let (calls, failures, slow) = self.window.totals(now);
        if calls == 0 || calls < self.policy.minimum_calls {
            return false;
        }
        let calls = f64::from(calls);
        f64::from(failures) / calls >= self.policy.failure_rate
            || f64::from(slow) / calls >= self.policy.slow_call_rate
    }

    fn open(&mut self, now: Instant, from: BreakerState) -> Transition {
        self.state = State::Open {
            until: now + self.policy.open_duration.min(LONGEST_OPEN),
        };
        Transition {
            from,
            to: BreakerState::Open,
        }
    }
}

/// Outcome counts over a count- or time-based sliding window.
#[derive(Debug)]
enum Counts {
    Calls {
        size: usize,
        outcomes: VecDeque<(bool, bool)>,
        failures: u32,
        slow: u32,
    },
    Time {
        bucket: Duration,
        buckets: VecDeque<Bucket>,
    },
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Counts {
    fn new(window: Window) -> Self {
        match window {
            Window::Count(size) => Self::Calls {
                size: size.max(1) as usize,
                outcomes: VecDeque::new(),
                failures: 0,
                slow: 0,
            },
            Window::Time(span) => Self::Time {
                bucket: (span / TIME_BUCKETS).max(Duration::from_millis(1)),
                buckets: VecDeque::new(),
            },
        }
    }

    fn record(&mut self, now: Instant, failed: bool, is_slow: bool) {
        match self {
            Self::Calls {
                size,
                outcomes,
                failures,
                slow,
            } => {
                if outcomes.len() == *size
                    && let Some((old_failed, old_slow)) = outcomes.pop_front()
                {
                    *failures -= u32::from(old_failed);
                    *slow -= u32::from(old_slow);
                }
                outcomes.push_back((failed, is_slow));
                *failures += u32::from(failed);
                *slow += u32::from(is_slow);
            }
            Self::Time { bucket, buckets } => {
                let span = *bucket * TIME_BUCKETS;
                while buckets
                    .front()
                    .is_some_and(|b| now.duration_since(b.start) >= span)
                {
                    buckets.pop_front();
                }
                let current = match buckets.back_mut() {
                    Some(last) if now.duration_since(last.start) < *bucket => last,
                    _ => {
                        buckets.push_back(Bucket {
                            start: now,
                            calls: 0,
                            failures: 0,
                            slow: 0,
                        });
                        let Some(last) = buckets.back_mut() else {
                            return;
                        };
                        last
                    }
                };
                current.calls += 1;
                current.failures += u32::from(failed);
                current.slow += u32::from(is_slow);
            }
        }
    }

    /// (calls, failures, slow calls) in the window.
    fn totals(&self, now: Instant) -> (u32, u32, u32) {
        match self {
            Self::Calls {
                outcomes,
                failures,
                slow,
                ..
            } => (
                u32::try_from(outcomes.len()).unwrap_or(u32::MAX),
                *failures,
                *slow,
            ),
            Self::Time { bucket, buckets } => {
                let span = *bucket * TIME_BUCKETS;
                buckets
                    .iter()
                    .filter(|b| now.duration_since(b.start) < span)
                    .fold((0, 0, 0), |(c, f, s), b| {
                        (c + b.calls, f + b.failures, s + b.slow)
                    })
            }
        }
    }
}
