//! Power-of-two-choices balancing over a set of instances that can change.
//!
//! Each instance's service is wrapped in [`PendingRequests`] so its load is
//! the number of calls in flight; tower's p2c [`Balance`] picks the less loaded
//! of two random ready instances for every call. A [`Buffer`] in front makes
//! the whole cloneable.

use std::{
    convert::Infallible,
    fmt,
    task::{Context, Poll},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower::{
    Service,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
    util::BoxService,
};

use crate::error::BoxError;

/// Calls that may wait for a ready instance at once, per balanced target.
const BUFFER: usize = 1024;

type Changes<S> = mpsc::UnboundedSender<Result<Change<String, PendingRequests<S>>, Infallible>>;

/// A cloneable, balanced service over the instances of one target.
pub(crate) struct Balanced<S, Req, Res> {
    service: Buffer<Req, BoxFuture<'static, Result<Res, BoxError>>>,
    changes: Changes<S>,
    instances: Arc<AtomicUsize>,
}

impl<S, Req, Res> Balanced<S, Req, Res>
where
    S: Service<Req, Response = Res> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
    Res: Send + 'static,
{
    /// Balances over `instances` (key, service); must run inside a runtime.
    pub(crate) fn new(instances: impl IntoIterator<Item = (String, S)>) -> Self {
        let (changes, rx) = mpsc::unbounded_channel();
        let balance = Balance::new(UnboundedReceiverStream::new(rx));
        let service = Buffer::new(BoxService::new(balance), BUFFER);
        let balanced = Self {
            service,
            changes,
            instances: Arc::new(AtomicUsize::new(0)),
        };
        for (key, service) in instances {
            balanced.insert(key, service);
        }
        balanced
    }

    /// Adds (or replaces) the instance under `key`.
    pub(crate) fn insert(&self, key: String, service: S) {
        let service = PendingRequests::new(service, CompleteOnResponse::default());
        if self.changes.send(Ok(Change::Insert(key, service))).is_ok() {
            self.instances.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S, Req: Send + 'static, Res: Send + 'static> Balanced<S, Req, Res> {
    /// How many instances it balances over.
    pub(crate) fn len(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }

}

impl<S, Req: Send + 'static, Res: Send + 'static> Service<Req> for Balanced<S, Req, Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = tower::buffer::future::ResponseFuture<BoxFuture<'static, Result<Res, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.service.call(request)
    }
}

impl<S, Req: Send + 'static, Res: Send + 'static> Clone for Balanced<S, Req, Res> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            changes: self.changes.clone(),
            instances: Arc::clone(&self.instances),
        }
    }
}

impl<S, Req: Send + 'static, Res: Send + 'static> fmt::Debug for Balanced<S, Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("instances", &self.len())
            .finish_non_exhaustive()
    }
}
