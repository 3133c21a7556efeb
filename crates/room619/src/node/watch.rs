//! [`ShutdownWatch`]: a connection's view of the listener's shutdown
//! signals, cheap to poll.
//!
//! A connection's task is woken many times per request (each read, write
//! and answer). Selecting on the two `cancelled()` futures beside the
//! connection polls both on every one of those wake-ups, and each poll locks
//! the token's mutex. The watch polls them only after one of them woke the
//! task: they are given a waker of their own that sets a flag and wakes the
//! task.
//!
//! On an HTTP/1 connection the watch also closes the connection once it has
//! been quiet for the header read timeout: no request started or finished,
//! none in flight and nothing written (the connection's [`Activity`]). That is hyper's
//! `header_read_timeout` (a head trickled for ever is cut; an idle
//! keep-alive connection is closed) without its cost: hyper arms a timer
//! for every request head and drops it when the head is read, about 2.5k
//! instructions a request (docs/PERFORMANCE.md); the watch has one timer
//! per connection, looked at every quarter of the timeout.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use futures_util::task::AtomicWaker;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{
    live::{Activity, Counts},
    serve::Signals,
};

/// How many looks, a quarter of the timeout apart, must find a connection
/// quiet before it is closed: it is closed between the timeout and 1.25
/// times the timeout after it went quiet.
const QUIET_LOOKS: u32 = 4;

/// What the listener asked of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Finish what is in flight, then close (`Signals::drain`).
    Drain,
    /// Close now (`Signals::force_close`).
    ForceClose,
    /// The connection has been quiet for the header read timeout: nothing
    /// is in flight (it is idle, or a head never ended); close it now.
    Quiet,
    /// An answer's write has waited for room in the socket, with nothing
    /// written, for the write stall timeout: the client stopped reading.
    Stalled,
}

/// Resolves to [`Signal::Drain`] once, then to [`Signal::ForceClose`]; to
/// [`Signal::Quiet`] or [`Signal::Stalled`] once, when it watches the
/// connection's activity.
pub(crate) struct ShutdownWatch {
    drain: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    force_close: Pin<Box<WaitForCancellationFutureOwned>>,
    quiet: Option<QuietWatch>,
    woken: Arc<Woken>,
    /// `woken` as a waker, made once.
    waker: Waker,
}

/// The signals' waker: remembers that it was woken and wakes the task.
#[derive(Default)]
struct Woken {
    flag: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Looks at a connection's [`Activity`] every `period`.
struct QuietWatch {
    activity: Arc<Activity>,
    period: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The counts at the last look.
    seen: Counts,
    /// Looks in a row that found nothing started, finished or in flight.
    quiet_looks: u32,
    /// Looks in a row that found a write waiting and nothing written.
    stalled_looks: u32,
    /// How many such looks close the connection.
    stall_limit: u32,
}

impl QuietWatch {
    /// Whether the connection has now been quiet for [`QUIET_LOOKS`] looks,
    /// or its writing stalled for `stall_limit` looks.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Option<Signal> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            let counts = self.activity.counts();
            let still = counts == self.seen;
            self.seen = counts;
            self.quiet_looks = if still && counts.idle() {
                self.quiet_looks + 1
            } else {
                0
            };
            self.stalled_looks = if still && counts.waiting() {
                self.stalled_looks + 1
            } else {
                0
            };
            if self.quiet_looks >= QUIET_LOOKS {
                return Some(Signal::Quiet);
            }
            if self.stalled_looks >= self.stall_limit {
                return Some(Signal::Stalled);
            }
            self.sleep
                .as_mut()
                .reset(crate::rpc::deadline::after(self.period));
        }
        None
    }
}

/// What an HTTP/1 connection's watch looks for: its [`Activity`], quiet
/// for `quiet` (the header read timeout), or its writing stalled for
/// `stall` (the write stall timeout).
pub(crate) struct Idleness {
    pub(crate) activity: Arc<Activity>,
    pub(crate) quiet: Duration,
    pub(crate) stall: Duration,
}

impl ShutdownWatch {
    /// Watches the listener's `signals` and, when given an [`Idleness`],
    /// whether the connection stays quiet or its writing stalls.
    pub(crate) fn new(signals: &Signals, idleness: Option<Idleness>) -> Self {
        // Set, so the first poll registers the signals' waker.
        let woken = Arc::new(Woken {
            flag: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            drain: Some(Box::pin(signals.drain.clone().cancelled_owned())),
            force_close: Box::pin(signals.force_close.clone().cancelled_owned()),
            quiet: idleness.map(|idleness| {
                let period = idleness.quiet / QUIET_LOOKS;
                let stall_looks = idleness.stall.as_nanos().div_ceil(period.as_nanos().max(1));
                QuietWatch {
                    activity: idleness.activity,
                    period,
                    sleep: Box::pin(tokio::time::sleep(period)),
                    seen: Counts::default(),
                    quiet_looks: 0,
                    stalled_looks: 0,
                    stall_limit: u32::try_from(stall_looks).unwrap_or(u32::MAX).max(1),
                }
            }),
            waker: Waker::from(Arc::clone(&woken)),
            woken,
        }
    }
}

impl Future for ShutdownWatch {
    type Output = Signal;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Signal> {
        self.woken.task.register(cx.waker());
        if !self.woken.flag.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        let mut signals = Context::from_waker(&this.waker);
        if let Some(drain) = &mut this.drain
            && drain.as_mut().poll(&mut signals).is_ready()
        {
            this.drain = None;
            // The force-close token may have fired too: look again.
            this.woken.flag.store(true, Ordering::Release);
            return Poll::Ready(Signal::Drain);
        }
        if this.force_close.as_mut().poll(&mut signals).is_ready() {
            return Poll::Ready(Signal::ForceClose);
        }
        if let Some(quiet) = &mut this.quiet
            && let Some(signal) = quiet.poll_quiet(&mut signals)
        {
            this.quiet = None;
            return Poll::Ready(signal);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    /// Watching `activity` for `quiet`, with a stall timeout far off.
    fn idleness(activity: &Arc<Activity>, quiet: Duration) -> Idleness {
        Idleness {
            activity: Arc::clone(activity),
            quiet,
            stall: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn drain_then_force_close_each_wake_the_watch_once() {
        let signals = Signals::default();
        let mut watch = ShutdownWatch::new(&signals, None);
        let quiet = tokio::time::timeout(Duration::from_millis(20), &mut watch).await;
        assert!(quiet.is_err(), "nothing fired yet");

        signals.drain.cancel();
        assert_eq!((&mut watch).await, Signal::Drain);
        let quiet = tokio::time::timeout(Duration::from_millis(20), &mut watch).await;
        assert!(quiet.is_err(), "drain is answered once");

        let force_close = signals.force_close.clone();
        tokio::spawn(async move { force_close.cancel() });
        assert_eq!((&mut watch).await, Signal::ForceClose);
    }

    #[tokio::test]
    async fn both_fired_before_the_first_poll_are_both_seen() {
        let signals = Signals::default();
        signals.drain.cancel();
        signals.force_close.cancel();
        let mut watch = ShutdownWatch::new(&signals, None);
        assert_eq!((&mut watch).await, Signal::Drain);
        assert_eq!((&mut watch).await, Signal::ForceClose);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_quiet_for_the_timeout_is_signalled_and_a_busy_one_is_not() {
        let timeout = Duration::from_secs(8);
        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let mut watch = ShutdownWatch::new(&Signals::default(), Some(idleness(&activity, timeout)));
        // Nothing ever asked: quiet from the start.
        let early = tokio::time::timeout(Duration::from_millis(7_900), &mut watch).await;
        assert!(early.is_err(), "signalled before the timeout");
        assert_eq!((&mut watch).await, Signal::Quiet);
        assert!(started.elapsed() <= timeout + timeout / QUIET_LOOKS);

        // A request in flight for four timeouts keeps the connection busy.
        let mut watch = ShutdownWatch::new(&Signals::default(), Some(idleness(&activity, timeout)));
        let in_flight = activity.start();
        let busy = tokio::time::timeout(4 * timeout, &mut watch).await;
        assert!(busy.is_err(), "signalled while a request was in flight");
        drop(in_flight);
        let finished = Instant::now();
        assert_eq!((&mut watch).await, Signal::Quiet);
        let quiet_for = finished.elapsed();
        assert!(quiet_for >= timeout, "{quiet_for:?}");
        assert!(
            quiet_for <= timeout + timeout / QUIET_LOOKS,
            "{quiet_for:?}"
        );

        // The watch signals a quiet connection once.
        let again = tokio::time::timeout(4 * timeout, &mut watch).await;
        assert!(again.is_err(), "signalled twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_with_nothing_written_is_signalled_at_the_stall_timeout() {
        let timeout = Duration::from_secs(8);
        let stall = Duration::from_secs(60);
        let activity = Arc::new(Activity::default());
        let watching = Idleness {
            activity: Arc::clone(&activity),
            quiet: timeout,
            stall,
        };
        let mut watch = ShutdownWatch::new(&Signals::default(), Some(watching));
        // An answer written slowly but steadily keeps its connection.
        activity.waits();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            activity.wrote();
            activity.waits();
            let polled = futures_util::poll!(&mut watch);
            assert!(polled.is_pending(), "a slow reader was cut");
        }
        // Nothing written for the stall timeout: the reader stopped.
        let stalled_at = Instant::now();
        assert_eq!((&mut watch).await, Signal::Stalled);
        let stalled_for = stalled_at.elapsed();
        assert!(
            stalled_for >= stall.checked_sub(timeout / QUIET_LOOKS).unwrap(),
            "{stalled_for:?}"
        );
        assert!(
            stalled_for <= stall + timeout / QUIET_LOOKS,
            "{stalled_for:?}"
        );
    }

    #[tokio::test]
    async fn force_close_alone_closes() {
        let signals = Signals::default();
        let mut watch = ShutdownWatch::new(&signals, None);
        signals.force_close.cancel();
        assert_eq!((&mut watch).await, Signal::ForceClose);
    }
}
