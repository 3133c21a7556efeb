//! [`Refetch`]: a JWKS URL fetched out of turn when a token names a key id
//! no loaded key has, as when the identity provider rotated its keys since
//! the last fetch.
//!
//! At most one fetch is asked for per [`MIN_INTERVAL`], so tokens with
//! made-up key ids cannot make the node hammer its identity provider. The
//! request that asks, and a request with an unknown key id that arrives
//! before that fetch is done, waits for it and is checked again; any other
//! is refused at once.
//!
//! A token's key id is read before its signature is checked, so anyone can
//! send a token that asks, and a waiting request holds a connection, an
//! in-flight slot and a load-shedding permit. The waits are bounded for that
//! reason:
//!
//! - a request waits at most [`MAX_WAIT`] (2 s), not the fetch's own 10 s
//!   timeout: against a slow identity provider the fetch goes on, the
//!   request is checked again with the keys the node has, and the requests
//!   after the fetch is done see the new keys;
//! - at most [`MAX_WAITERS`] (32) requests wait at once; one more is refused
//!   at once as any token with an unknown key id is (`401` with an
//!   `invalid_token` challenge, `UNAUTHENTICATED`): its key id is unknown
//!   now, which is no outage of the node.
//!
//! So tokens with made-up key ids hold at most [`MAX_WAITERS`] requests at a
//! time, and only while a fetch asked for is under way.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::{
    sync::{Notify, Semaphore, watch},
    time::Instant,
};

use super::AUTH_TARGET;

/// The shortest time between two fetches asked for.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// The longest a request waits for the fetch it asked for or found under
/// way; shorter than the fetch's own timeout, so a slow identity provider
/// holds requests for this long only. A key rotated in reaches clients at
/// once when the provider answers within it, and in any case with the
/// first request after the fetch is done.
const MAX_WAIT: Duration = Duration::from_secs(2);

/// The most requests waiting for a fetch at once. Enough for the clients of
/// a freshly rotated key arriving together; few beside `max_concurrent_requests`,
/// so tokens with made-up key ids cannot take the node's load-shedding
/// permits. A request past it is refused at once, as an unknown key id.
const MAX_WAITERS: usize = 32;

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
    /// [`MAX_WAITERS`] places; a waiting request holds one until its wait
    /// ends or the request is dropped.
    waiters: Arc<Semaphore>,
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
            waiters: Arc::new(Semaphore::new(MAX_WAITERS)),
        }
    }

    /// Asks for a fetch, for a token whose key id no key has. Returns what
    /// to wait for before checking the token again: a fetch started after
    /// the ask, done, or [`MAX_WAIT`] gone by. `None` (refuse the token now)
    /// when a fetch was asked for less than [`MIN_INTERVAL`] ago and is done
    /// already, or when [`MAX_WAITERS`] requests wait already (the fetch is
    /// still asked for, when it is due).
    ///
    /// The future holds the request's place among the waiters, given back
    /// when it ends or is dropped.
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
        let Ok(place) = Arc::clone(&self.waiters).try_acquire_owned() else {
            tracing::debug!(target: AUTH_TARGET, waiting = MAX_WAITERS,
                "too many requests wait for the JWKS fetch; refused without waiting");
            return None;
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
                tracing::debug!(target: AUTH_TARGET,
                    "the JWKS fetch asked for is not done in time; checking the token with the keys at hand");
            }
            // Given back here, or with the future if the request is dropped
            // while it waits.
            drop(place);
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

    /// Against a slow identity provider a request waits [`MAX_WAIT`], not
    /// the fetch's timeout; its place is free again, and the fetch is still
    /// under way for the requests after it.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_max_wait_while_the_fetch_goes_on() {
        let refetch = Refetch::new();
        let waiting = refetch.ask().expect("the first ask fetches");
        let started = Instant::now();
        waiting.await;
        let waited = started.elapsed();
        assert!(
            waited >= MAX_WAIT && waited < MAX_WAIT + Duration::from_millis(10),
            "waited {waited:?}"
        );
        assert_eq!(refetch.waiters.available_permits(), MAX_WAITERS);
        assert!(refetch.ask().is_some(), "the fetch is not done yet");
    }

    /// Tokens with made-up key ids cannot hold more than [`MAX_WAITERS`]
    /// requests (and their load-shedding permits): the 33rd is refused at
    /// once, and a waiter's place is given back when its request is dropped.
    #[tokio::test(start_paused = true)]
    async fn past_max_waiters_a_request_is_refused_at_once() {
        let refetch = Refetch::new();
        let mut waiting: Vec<_> = (0..MAX_WAITERS)
            .map(|i| {
                refetch
                    .ask()
                    .unwrap_or_else(|| panic!("waiter {i} is refused"))
            })
            .collect();
        assert!(
            refetch.ask().is_none(),
            "the 33rd waiter is refused at once"
        );
        drop(waiting.pop());
        waiting.push(refetch.ask().expect("a dropped waiter's place is free"));
        assert!(refetch.ask().is_none(), "full again");
        refetch.asked().await;
        let number = refetch.started();
        refetch.finished(number);
        let started = Instant::now();
        for waiter in waiting {
            waiter.await;
        }
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "none waited for MAX_WAIT"
        );
        assert_eq!(refetch.waiters.available_permits(), MAX_WAITERS);
    }
}
