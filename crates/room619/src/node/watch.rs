//! [`ShutdownWatch`]: a connection's view of the listener's shutdown
//! signals, cheap to poll.
//!
//! A connection's task is woken many times per request (each read, write
//! and answer). Selecting on the two `cancelled()` futures beside the
//! connection polls both on every one of those wake-ups, and each poll locks
//! the token's mutex. The watch polls them only after one of them woke the
//! task: they are given a waker of their own that sets a flag and wakes the
//! task.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::serve::Signals;

/// What the listener asked of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Finish what is in flight, then close (`Signals::drain`).
    Drain,
    /// Close now (`Signals::force_close`).
    ForceClose,
}

/// Resolves to [`Signal::Drain`] once, then to [`Signal::ForceClose`].
pub(crate) struct ShutdownWatch {
    drain: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    force_close: Pin<Box<WaitForCancellationFutureOwned>>,
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

impl ShutdownWatch {
    pub(crate) fn new(signals: &Signals) -> Self {
        // Set, so the first poll registers the signals' waker.
        let woken = Arc::new(Woken {
            flag: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            drain: Some(Box::pin(signals.drain.clone().cancelled_owned())),
            force_close: Box::pin(signals.force_close.clone().cancelled_owned()),
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
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn drain_then_force_close_each_wake_the_watch_once() {
        let signals = Signals::default();
        let mut watch = ShutdownWatch::new(&signals);
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
        let mut watch = ShutdownWatch::new(&signals);
        assert_eq!((&mut watch).await, Signal::Drain);
        assert_eq!((&mut watch).await, Signal::ForceClose);
    }

    #[tokio::test]
    async fn force_close_alone_closes() {
        let signals = Signals::default();
        let mut watch = ShutdownWatch::new(&signals);
        signals.force_close.cancel();
        assert_eq!((&mut watch).await, Signal::ForceClose);
    }
}
