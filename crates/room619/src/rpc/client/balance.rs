//! Power-of-two-choices balancing over a set of instances that can change.
//!
//! Each instance's service is wrapped in [`PendingRequests`] so its load is
//! the number of calls in flight; tower's p2c [`Balance`] picks the less loaded
//! of two random ready instances for every call. The balancer is shared by
//! every clone behind a mutex that is held only while an instance is picked
//! and the call is started, never while it runs; so, unlike tower's `Buffer`,
//! a call needs no hop to a worker task.

use std::{
    convert::Infallible,
    fmt,
    future::poll_fn,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::{
    Service,
    balance::p2c::Balance,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
};

use crate::error::BoxError;

/// How often a call waiting for a ready instance looks again by itself.
const RECHECK: Duration = Duration::from_millis(20);

type Changes<S> = mpsc::UnboundedSender<Result<Change<String, PendingRequests<S>>, Infallible>>;
type Discovered<S> =
    UnboundedReceiverStream<Result<Change<String, PendingRequests<S>>, Infallible>>;

/// A cloneable, balanced service over the instances of one target.
pub(crate) struct Balanced<S, Req> {
    balance: Arc<Mutex<Balance<Discovered<S>, Req>>>,
    changes: Changes<S>,
    instances: Arc<AtomicUsize>,
}

impl<S, Req> Balanced<S, Req>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
{
    /// Balances over `instances` (key, service).
    pub(crate) fn new(instances: impl IntoIterator<Item = (String, S)>) -> Self {
        let (changes, rx) = mpsc::unbounded_channel();
        let balanced = Self {
            balance: Arc::new(Mutex::new(Balance::new(UnboundedReceiverStream::new(rx)))),
            changes,
            instances: Arc::new(AtomicUsize::new(0)),
        };
        for (key, service) in instances {
            balanced.insert(key, service);
        }
        balanced
    }

    /// Drops the instance under `key`; calls it already took finish.
    pub(crate) fn remove(&self, key: String) {
        if self.changes.send(Ok(Change::Remove(key))).is_ok() {
            self.instances.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds (or replaces) the instance under `key`.
    pub(crate) fn insert(&self, key: String, service: S) {
        let service = PendingRequests::new(service, CompleteOnResponse::default());
        if self.changes.send(Ok(Change::Insert(key, service))).is_ok() {
            self.instances.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S, Req> Balanced<S, Req> {
    /// How many instances it balances over.
    pub(crate) fn len(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }
}

impl<S, Req> Service<Req> for Balanced<S, Req>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An instance is picked (and waited for) inside the call, under the
        // lock, so that no other clone can take the picked one in between.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let balance = Arc::clone(&self.balance);
        Box::pin(async move {
            let mut request = Some(request);
            // The balancer keeps only the last waiter's waker; while no
            // instance is ready (every breaker open), each waiter also looks
            // again on its own every `RECHECK` (a timer made only then).
            let mut recheck = None;
            let response = poll_fn(|cx| {
                let mut balance = balance.lock().unwrap_or_else(PoisonError::into_inner);
                match balance.poll_ready(cx) {
                    Poll::Pending => {
                        drop(balance);
                        let recheck =
                            recheck.get_or_insert_with(|| Box::pin(tokio::time::sleep(RECHECK)));
                        while recheck.poll_unpin(cx).is_ready() {
                            recheck
                                .as_mut()
                                .reset(tokio::time::Instant::now() + RECHECK);
                        }
                        Poll::Pending
                    }
                    Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                    Poll::Ready(Ok(())) => match request.take() {
                        Some(request) => Poll::Ready(Ok(balance.call(request))),
                        None => Poll::Ready(Err("the request was already sent".into())),
                    },
                }
            })
            .await?;
            response.await
        })
    }
}

impl<S, Req> Clone for Balanced<S, Req> {
    fn clone(&self) -> Self {
        Self {
            balance: Arc::clone(&self.balance),
            changes: self.changes.clone(),
            instances: Arc::clone(&self.instances),
        }
    }
}

impl<S, Req> fmt::Debug for Balanced<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("instances", &self.len())
            .finish_non_exhaustive()
    }
}
