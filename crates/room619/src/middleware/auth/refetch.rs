//! [`Refetch`]: a JWKS URL fetched out of turn when a token names a key id
//! no loaded key has, as when the identity provider rotated its keys since
//! the last fetch.
//!
//! At most one fetch is asked for per [`MIN_INTERVAL`], so tokens with
//! made-up key ids cannot make the node hammer its identity provider. The
//! request that asks, and every request with an unknown key id that arrives
//! before that fetch is done, waits for it (at most [`MAX_WAIT`]) and is
//! checked again; any other is refused at once.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use super::AUTH_TARGET;

/// The shortest time between two fetches asked for.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// The longest a request waits for the fetch: the fetch's own timeout.
const MAX_WAIT: Duration = super::jwks::FETCH_TIMEOUT;

/// Shared by the authenticator, which asks for fetches, and the JWKS task,
/// which makes them.
#[derive(Debug)]
pub(crate) struct Refetch {
    /// Wakes the JWKS task.
    wake: Notify,
    /// How many fetches the JWKS task has started.
    started: AtomicU64,
    /// The number of the last fetch the JWKS task finished (loaded or not).
    finished: watch::Sender<u64>,
    /// The last fetch asked for.
    asked: Mutex<Option<Asked>>,
}

#[derive(Debug, Clone, Copy)]
struct Asked {
    at: Instant,
    /// The number of the first fetch started after it was asked for.
    fetch: u64,
}

impl Refetch {
    pub(crate) fn new() -> Self {
        Self {
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
            asked: Mutex::new(None),
        }
    }

    /// Asks for a fetch, for a token whose key id no key has. Returns what
    /// to wait for before checking the token again: a fetch started after
    /// the ask, done. `None` (refuse the token now) when a fetch was asked
    /// for less than [`MIN_INTERVAL`] ago and is done already.
    pub(crate) fn ask(&self) -> Option<BoxFuture<'static, ()>> {
        let now = Instant::now();
        let fetch = {
            let mut asked = self.asked.lock().ok()?;
            let previous = *asked;
            match previous {
                Some(last) if now.saturating_duration_since(last.at) < MIN_INTERVAL => {
                    if *self.finished.borrow() >= last.fetch {
                        return None;
                    }
                    last.fetch
                }
                _ => {
                    let fetch = self.started.load(Ordering::Acquire) + 1;
                    *asked = Some(Asked { at: now, fetch });
                    self.wake.notify_one();
                    fetch
                }
            }
        };
        let mut finished = self.finished.subscribe();
        Some(Box::pin(async move {
            let done = async {
                loop {
                    let last = *finished.borrow_and_update();
                    if last >= fetch || finished.changed().await.is_err() {
                        return;
                    }
                }
            };
            if tokio::time::timeout(MAX_WAIT, done).await.is_err() {
                tracing::debug!(target: AUTH_TARGET, "the JWKS fetch asked for is not done in time");
            }
        }))
    }

    /// Resolves when a fetch is asked for (at once if one was asked for
    /// since the last call).
    pub(crate) async fn asked(&self) {
        self.wake.notified().await;
    }

    /// Marks a fetch started; returns its number, for
    /// [`finished`](Self::finished).
    pub(crate) fn started(&self) -> u64 {
        self.started.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Marks the fetch `number` done, loaded or not: the requests waiting
    /// for it check their token again.
    pub(crate) fn finished(&self, number: u64) {
        self.finished
            .send_modify(|last| *last = (*last).max(number));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_fetch_is_asked_for_per_interval_and_waited_for() {
        let refetch = Refetch::new();
        let first = refetch.ask().expect("the first ask fetches");
        // Before the fetch is done, another unknown key id waits for it too.
        let second = refetch.ask().expect("a fetch under way is waited for");
        refetch.asked().await;
        let number = refetch.started();
        refetch.finished(number);
        first.await;
        second.await;
        assert!(refetch.ask().is_none(), "done, and asked for just now");
        tokio::time::advance(MIN_INTERVAL).await;
        assert!(refetch.ask().is_some(), "another interval, another fetch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_never_finishes_is_waited_for_a_bounded_time() {
        let refetch = Refetch::new();
        let waiting = refetch.ask().expect("the first ask fetches");
        let started = Instant::now();
        waiting.await;
        assert!(started.elapsed() >= MAX_WAIT);
    }
}
