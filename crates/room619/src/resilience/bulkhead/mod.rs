//! A bulkhead: at most N calls in flight to one downstream, a bounded queue
//! behind them, and an immediate `RESOURCE_EXHAUSTED` beyond that, so one slow
//! dependency cannot take every task and socket of the caller.
//!
//! ```
//! use room619::resilience::bulkhead::{BulkheadLayer, BulkheadPolicy};
//!
//! let layer = BulkheadLayer::new("payments", BulkheadPolicy { max_concurrent: 32, max_queued: 64 });
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
};

use futures_util::future::{BoxFuture, Either};
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::Rejection;
use crate::error::BoxError;

/// A bulkhead's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadPolicy {
    /// Calls in flight at once. Default: 256.
    pub max_concurrent: usize,
    /// Calls waiting for a slot; more are rejected at once. Default: 256.
    pub max_queued: usize,
}

impl Default for BulkheadPolicy {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_queued: 256,
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
/// share its slots.
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
    S::Response: Send + 'static,
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
            let _permit = {
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
                Arc::clone(&shared.slots)
                    .acquire_owned()
                    .await
                    .map_err(|err| Box::new(err) as BoxError)?
            };
            service.call(request).await.map_err(Into::into)
        }))
    }
}

pin_project! {
    /// A call that took a free slot at once; it holds the slot until it
    /// finishes.
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
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(result.map_err(Into::into))
    }
}

/// Leaves the queue when dropped.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
