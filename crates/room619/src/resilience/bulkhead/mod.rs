//! A bulkhead: at most N calls in flight to one downstream, a bounded queue
//! behind them, and an immediate `RESOURCE_EXHAUSTED` beyond that, so one slow
//! dependency cannot take every task and socket of the caller.
//!
//! A call holds its slot until its response has been read: an HTTP or gRPC
//! response until its body has ended or been dropped (see
//! [`Hold`]), so a stream counts for as long as it is open.
//!
//! ```
//! use room619::resilience::bulkhead::{BulkheadLayer, BulkheadPolicy};
//!
//! let policy = BulkheadPolicy { max_concurrent: 32, max_queued: 64, ..BulkheadPolicy::default() };
//! let layer = BulkheadLayer::new("payments", policy);
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures_util::future::{BoxFuture, Either};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::Rejection;
use crate::error::BoxError;
pub use crate::rpc::body::Hold;

/// A bulkhead's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadPolicy {
    /// Calls in flight at once. Default: 256.
    pub max_concurrent: usize,
    /// Calls waiting for a slot; more are rejected at once. Default: 256.
    pub max_queued: usize,
    /// The longest a call waits in the queue for a slot; then it is
    /// rejected (`RESOURCE_EXHAUSTED`) as when the queue is full. A call
    /// with a deadline is cut at its deadline if that comes first; this
    /// bounds the wait of a call with none. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
}

impl Default for BulkheadPolicy {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_queued: 256,
            max_queue_wait: Duration::from_secs(1),
        }
    }
}

struct Shared {
    name: Arc<str>,
    policy: BulkheadPolicy,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    metrics: Option<crate::observability::metrics::ResilienceMetrics>,
}

/// Limits concurrency in front of a service; services made by one layer
/// share its slots. The service's response must implement [`Hold`] (HTTP
/// responses with axum or tonic bodies do, and `()`; implement it for a
/// response type of your own) so that it can keep its slot until read.
#[derive(Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl BulkheadLayer {
    /// A bulkhead named after the downstream it protects.
    #[must_use]
    pub fn new(name: &str, policy: BulkheadPolicy) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                slots: Arc::new(Semaphore::new(
                    policy.max_concurrent.clamp(1, Semaphore::MAX_PERMITS),
                )),
                queued: AtomicUsize::new(0),
                policy,
                metrics: None,
            }),
        }
    }

    /// The same bulkhead, its rejections counted in `metrics` (before the
    /// layer is shared).
    #[must_use]
    pub(crate) fn observed(
        mut self,
        metrics: Option<&crate::observability::metrics::Metrics>,
    ) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = metrics.map(|metrics| metrics.resilience().clone());
        }
        self
    }
}

impl fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("name", &self.shared.name)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`BulkheadLayer`].
#[derive(Clone)]
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for Bulkhead<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Hold + Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<Admitted<S::Future>, BoxFuture<'static, Result<S::Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // A free slot is taken at once; otherwise the call queues, if the
        // queue has room.
        if let Ok(permit) = Arc::clone(&self.shared.slots).try_acquire_owned() {
            return Either::Left(Admitted {
                inner: self.inner.call(request),
                permit: Some(permit),
            });
        }
        let shared = Arc::clone(&self.shared);
        let ready = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, ready);
        Either::Right(Box::pin(async move {
            let permit = {
                let queued = shared.queued.fetch_add(1, Ordering::AcqRel);
                let _leave = QueueSlot(&shared.queued);
                if queued >= shared.policy.max_queued {
                    tracing::debug!(target_service = %shared.name, "bulkhead full; rejecting");
                    if let Some(metrics) = &shared.metrics {
                        metrics.bulkhead_rejected(&shared.name);
                    }
                    return Err(Box::new(Rejection::bulkhead_full(
                        &shared.name,
                        shared.policy.max_concurrent,
                        shared.policy.max_queued,
                    )) as BoxError);
                }
                let waited = tokio::time::timeout(
                    shared.policy.max_queue_wait,
                    Arc::clone(&shared.slots).acquire_owned(),
                )
                .await;
                let Ok(acquired) = waited else {
                    tracing::debug!(target_service = %shared.name, "no bulkhead slot within max_queue_wait; rejecting");
                    if let Some(metrics) = &shared.metrics {
                        metrics.bulkhead_rejected(&shared.name);
                    }
                    return Err(Box::new(Rejection::bulkhead_waited(
                        &shared.name,
                        shared.policy.max_concurrent,
                        shared.policy.max_queue_wait,
                    )) as BoxError);
                };
                acquired.map_err(|err| Box::new(err) as BoxError)?
            };
            let response = service.call(request).await.map_err(Into::into)?;
            Ok(response.hold(permit))
        }))
    }
}

pin_project! {
    /// A call that took a free slot at once; it holds the slot until it
    /// finishes, then its response holds it (see [`Hold`]).
    pub struct Admitted<F> {
        #[pin]
        inner: F,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F> fmt::Debug for Admitted<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for Admitted<F>
where
    F: Future<Output = Result<T, E>>,
    T: Hold,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let permit = this.permit.take();
        Poll::Ready(match (result, permit) {
            (Ok(response), Some(permit)) => Ok(response.hold(permit)),
            (result, _) => result.map_err(Into::into),
        })
    }
}

/// Leaves the queue when dropped.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use bytes::Bytes;
    use http::Response;
    use http_body_util::BodyExt as _;
    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    type Sender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

    /// A bulkhead of one slot and no queue around a backend answering each
    /// call with a streamed body; the senders of the bodies come out of
    /// `streams`.
    fn one_slot() -> (
        impl Service<(), Response = Response<Body>, Error = BoxError, Future: Send> + Clone,
        tokio::sync::mpsc::UnboundedReceiver<Sender>,
    ) {
        let (streams, opened) = tokio::sync::mpsc::unbounded_channel();
        let backend = tower::service_fn(move |()| {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let sent = streams.send(tx);
            async move {
                sent.map_err(|_| "the test is gone")?;
                let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
                Ok::<_, BoxError>(Response::new(body))
            }
        });
        let policy = BulkheadPolicy {
            max_concurrent: 1,
            max_queued: 0,
            ..BulkheadPolicy::default()
        };
        (BulkheadLayer::new("feed", policy).layer(backend), opened)
    }

    #[tokio::test]
    async fn a_streamed_answer_holds_its_slot_until_its_body_ends() {
        let (bulkhead, mut opened) = one_slot();
        let mut first = bulkhead.clone().oneshot(()).await.unwrap().into_body();
        let sender = opened.recv().await.unwrap();

        let refused = bulkhead.clone().oneshot(()).await.unwrap_err();
        let refused = refused.downcast_ref::<Rejection>().unwrap();
        assert_eq!(
            refused.kind(),
            crate::resilience::RejectionKind::BulkheadFull
        );

        sender.send(Ok(Bytes::from_static(b"tick"))).await.unwrap();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "tick");
        assert!(
            bulkhead.clone().oneshot(()).await.is_err(),
            "still streaming: still in the slot"
        );

        drop(sender);
        assert!(first.frame().await.is_none(), "the stream ended");
        let second = bulkhead.clone().oneshot(()).await;
        assert!(second.is_ok(), "the ended stream left its slot");
    }

    #[tokio::test]
    async fn a_dropped_answer_leaves_its_slot() {
        let (bulkhead, _opened) = one_slot();
        let first = bulkhead.clone().oneshot(()).await.unwrap();
        assert!(bulkhead.clone().oneshot(()).await.is_err());
        drop(first);
        assert!(bulkhead.clone().oneshot(()).await.is_ok());
    }

    /// A call queued behind a slot that does not come free is rejected at
    /// `max_queue_wait`, as when the queue is full, not held for ever (a
    /// call with no deadline had no other bound).
    #[tokio::test(start_paused = true)]
    async fn a_queued_call_waits_at_most_max_queue_wait() {
        let backend = tower::service_fn(|(): ()| async {
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(Response::new(Body::empty()))
        });
        let policy = BulkheadPolicy {
            max_concurrent: 1,
            max_queued: 1,
            max_queue_wait: std::time::Duration::from_millis(100),
        };
        let bulkhead = BulkheadLayer::new("stuck", policy).layer(backend);
        let _held = tokio::spawn(bulkhead.clone().oneshot(()));
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        let refused = bulkhead.clone().oneshot(()).await.unwrap_err();
        let refused = refused.downcast_ref::<Rejection>().unwrap();
        assert_eq!(
            refused.kind(),
            crate::resilience::RejectionKind::BulkheadFull
        );
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(100));
    }
}
