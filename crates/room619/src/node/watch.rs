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
//! The watch also tells when a connection has been quiet for its timeout:
//! no request started or finished, none in flight and nothing written (the
//! connection's [`Activity`]). On HTTP/1 that is hyper's
//! `header_read_timeout` (a head trickled for ever is cut; an idle
//! keep-alive connection is closed) without its cost: hyper arms a timer
//! for every request head and drops it when the head is read, about 2.5k
//! instructions a request (docs/PERFORMANCE.md). On HTTP/2 it is the idle
//! timeout hyper's server does not have. The watch has one timer per
//! connection, looked at every quarter of the shorter of the quiet and
//! write stall timeouts.

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

/// How many looks the shorter of the quiet and stall timeouts is divided
/// into: a connection is closed between its timeout and a quarter of the
/// shorter one after it went quiet (or stalled).
const LOOKS: u32 = 4;

/// The shortest time between looks (tokio's timer counts milliseconds).
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// What the listener asked of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Finish what is in flight, then close (`Signals::drain`).
    Drain,
    /// Close now (`Signals::force_close`).
    ForceClose,
    /// The connection has been quiet for its timeout (HTTP/1: the header
    /// read timeout; HTTP/2: the idle timeout): nothing is in flight (it is
    /// idle, or a head never ended). Signalled again each time it stays
    /// quiet as long again.
    Quiet,
    /// Answers have waited to be sent, with none moving, for the write
    /// stall timeout (a write for room in the socket, an HTTP/2 answer for
    /// room in its stream): the client stopped reading. On HTTP/2,
    /// signalled again each time it stays so as long again.
    Stalled,
}

/// Resolves to [`Signal::Drain`] once, then to [`Signal::ForceClose`]; to
/// [`Signal::Quiet`] or [`Signal::Stalled`] when it watches the
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
    /// How many such looks make the connection quiet; `None`: never.
    quiet_limit: Option<u32>,
    /// Whether a write keeps the connection from being quiet.
    writes_count: bool,
    /// Looks in a row that found answers waiting to be sent and none moving.
    stalled_looks: u32,
    /// How many such looks close the connection.
    stall_limit: u32,
}

impl QuietWatch {
    fn new(idleness: Idleness) -> Self {
        let shorter = idleness
            .quiet
            .map_or(idleness.stall, |quiet| quiet.min(idleness.stall));
        // tokio's timer counts whole milliseconds.
        let period = (shorter / LOOKS).max(MIN_PERIOD);
        let looks = |timeout: Duration| {
            let looks = timeout.as_nanos().div_ceil(period.as_nanos());
            u32::try_from(looks).unwrap_or(u32::MAX).max(1)
        };
        Self {
            activity: idleness.activity,
            period,
            sleep: Box::pin(tokio::time::sleep(period)),
            seen: Counts::default(),
            quiet_looks: 0,
            quiet_limit: idleness.quiet.map(looks),
            writes_count: idleness.writes_count,
            stalled_looks: 0,
            stall_limit: looks(idleness.stall),
        }
    }

    /// Whether the connection has now been quiet for `quiet_limit` looks,
    /// or its writing stalled for `stall_limit` looks; the count starts
    /// again after each signal.
    fn poll_quiet(&mut self, cx: &mut Context<'_>) -> Option<Signal> {
        let mut signal = None;
        while self.sleep.as_mut().poll(cx).is_ready() {
            let counts = self.activity.counts();
            let still = if self.writes_count {
                counts == self.seen
            } else {
                counts.same_requests(self.seen)
            };
            let quiet = still && counts.idle();
            let stalled = counts.stalled_since(self.seen);
            self.seen = counts;
            self.quiet_looks = if quiet { self.quiet_looks + 1 } else { 0 };
            self.stalled_looks = if stalled { self.stalled_looks + 1 } else { 0 };
            if self
                .quiet_limit
                .is_some_and(|limit| self.quiet_looks >= limit)
            {
                self.quiet_looks = 0;
                signal = Some(Signal::Quiet);
            } else if self.stalled_looks >= self.stall_limit {
                self.stalled_looks = 0;
                signal = Some(Signal::Stalled);
            }
            // Polled again at the top of the loop, so the new deadline
            // registers the watch's waker.
            self.sleep
                .as_mut()
                .reset(crate::rpc::deadline::after(self.period));
        }
        signal
    }
}

/// What a connection's watch looks for: its [`Activity`], quiet for
/// `quiet` (HTTP/1: the header read timeout; HTTP/2: the idle timeout, or
/// `None` when that is off), or its answers stalled for `stall` (the write
/// stall timeout).
pub(crate) struct Idleness {
    pub(crate) activity: Arc<Activity>,
    pub(crate) quiet: Option<Duration>,
    /// Whether a write keeps the connection from being quiet: on HTTP/1 an
    /// answer is still being sent; on HTTP/2 only streams count, so that
    /// PINGs (the node's keep-alive or the client's) do not keep an idle
    /// connection open.
    pub(crate) writes_count: bool,
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
            quiet: idleness.map(QuietWatch::new),
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
            quiet: Some(quiet),
            writes_count: true,
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
        assert!(started.elapsed() <= timeout + timeout / LOOKS);

        // A request in flight for four timeouts keeps the connection busy.
        let mut watch = ShutdownWatch::new(&Signals::default(), Some(idleness(&activity, timeout)));
        let in_flight = activity.start(false);
        let busy = tokio::time::timeout(4 * timeout, &mut watch).await;
        assert!(busy.is_err(), "signalled while a request was in flight");
        drop(in_flight);
        let finished = Instant::now();
        assert_eq!((&mut watch).await, Signal::Quiet);
        let quiet_for = finished.elapsed();
        assert!(quiet_for >= timeout, "{quiet_for:?}");
        assert!(quiet_for <= timeout + timeout / LOOKS, "{quiet_for:?}");

        // Signalled again only once it stays quiet as long again.
        let again_at = Instant::now();
        let early = tokio::time::timeout(
            timeout.checked_sub(Duration::from_millis(100)).unwrap(),
            &mut watch,
        )
        .await;
        assert!(early.is_err(), "signalled again too soon");
        assert_eq!((&mut watch).await, Signal::Quiet);
        let again_after = again_at.elapsed();
        assert!(again_after >= timeout, "{again_after:?}");
        assert!(again_after <= timeout + timeout / LOOKS, "{again_after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_with_nothing_written_is_signalled_at_the_stall_timeout() {
        let timeout = Duration::from_secs(8);
        let stall = Duration::from_secs(60);
        let activity = Arc::new(Activity::default());
        let watching = Idleness {
            activity: Arc::clone(&activity),
            quiet: Some(timeout),
            writes_count: true,
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
            stalled_for >= stall.checked_sub(timeout / LOOKS).unwrap(),
            "{stalled_for:?}"
        );
        assert!(stalled_for <= stall + timeout / LOOKS, "{stalled_for:?}");
    }

    /// HTTP/2's defaults: idle for five minutes, stalled for one; looked at
    /// every quarter of the shorter.
    #[tokio::test(start_paused = true)]
    async fn a_long_quiet_timeout_is_looked_at_every_quarter_of_the_stall_timeout() {
        let quiet = Duration::from_secs(300);
        let stall = Duration::from_secs(60);
        let activity = Arc::new(Activity::default());
        let watching = || Idleness {
            activity: Arc::clone(&activity),
            quiet: Some(quiet),
            writes_count: false,
            stall,
        };
        let started = Instant::now();
        let mut watch = ShutdownWatch::new(&Signals::default(), Some(watching()));
        // PINGs answered every 10 s are writes, not streams: still idle.
        let pinging = async {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                activity.wrote();
            }
        };
        let signal = tokio::select! {
            signal = &mut watch => signal,
            () = pinging => unreachable!(),
        };
        assert_eq!(signal, Signal::Quiet);
        let idle_for = started.elapsed();
        assert!(idle_for >= quiet, "{idle_for:?}");
        assert!(idle_for <= quiet + stall / LOOKS, "{idle_for:?}");

        // A stream open as long keeps it; its answer waiting for room in
        // the stream as long is a stall.
        let mut watch = ShutdownWatch::new(&Signals::default(), Some(watching()));
        let mut stream = activity.start(true);
        let busy = tokio::time::timeout(2 * quiet, &mut watch).await;
        assert!(busy.is_err(), "signalled while a stream was open");
        stream.polled(true);
        let held_at = Instant::now();
        assert_eq!((&mut watch).await, Signal::Stalled);
        let held_for = held_at.elapsed();
        assert!(
            held_for >= stall.checked_sub(stall / LOOKS).unwrap(),
            "{held_for:?}"
        );
        assert!(held_for <= stall + stall / LOOKS, "{held_for:?}");
        drop(stream);

        let mut watch = ShutdownWatch::new(&Signals::default(), Some(watching()));
        let stalled_at = Instant::now();
        activity.waits();
        assert_eq!((&mut watch).await, Signal::Stalled);
        let stalled_for = stalled_at.elapsed();
        assert!(stalled_for >= stall, "{stalled_for:?}");
        assert!(stalled_for <= stall + stall / LOOKS, "{stalled_for:?}");
    }

    #[tokio::test]
    async fn force_close_alone_closes() {
        let signals = Signals::default();
        let mut watch = ShutdownWatch::new(&signals, None);
        signals.force_close.cancel();
        assert_eq!((&mut watch).await, Signal::ForceClose);
    }
}
