//! Load shedding: a per-node limit on concurrent requests that answers at once
//! when full instead of queueing.
//!
//! [`LoadShedLayer`] holds one permit per request in flight, from the moment
//! the request arrives until its response body has been sent (or dropped), so
//! a server stream counts for as long as it runs. When every permit is taken
//! the request is refused on the spot, before any of it is read:
//!
//! - gRPC (`content-type: application/grpc*`): a trailers-only answer, HTTP
//!   `200` with `grpc-status: 14` (`UNAVAILABLE`, as the HTTP side's `503`:
//!   a transient refusal that clients retry elsewhere, unlike a quota's
//!   `RESOURCE_EXHAUSTED`) and a `grpc-message`;
//! - HTTP: `503 Service Unavailable` as `application/problem+json`, with
//!   `Retry-After: 1`.
//!
//! Queueing under overload only moves the wait into the server, where it costs
//! memory and makes every request late; a fast refusal lets the client retry
//! elsewhere or back off. Health checks (`/health/*` and
//! `grpc.health.v1.Health`) are never shed: a node that is busy is still
//! alive, and its readiness must stay observable.
//!
//! On a node the layer sits outside the deadline, auth and rate-limit layers
//! and inside request ids and tracing, so refusals are still traced and
//! counted (`limits.max_concurrent_requests`).
//!
//! ```
//! use room619::rpc::shed::LoadShedLayer;
//!
//! let shed = LoadShedLayer::new(1024);
//! let router: axum::Router = axum::Router::new().layer(shed.clone());
//! assert_eq!(shed.in_flight(), 0);
//! ```

mod future;
mod layer;
#[cfg(test)]
mod tests;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use axum::{body::Body, response::IntoResponse};
pub use future::ShedFuture;
use http::{HeaderValue, Request, Response, header};
pub use layer::LoadShedLayer;
use tower::Service;

use crate::{Error, rpc::is_grpc};

/// Paths that are never shed.
const EXEMPT_PREFIXES: [&str; 2] = ["/health/", "/grpc.health.v1.Health/"];

/// The service made by [`LoadShedLayer`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Permits>,
}

/// The count of requests in flight against the limit. Nothing ever waits
/// for a permit (a request is admitted or refused on the spot), so a counter
/// does what a semaphore would, without its waiter list's lock on every
/// release.
#[derive(Debug)]
struct Permits {
    in_flight: AtomicUsize,
    limit: usize,
}

impl Permits {
    fn new(limit: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            limit,
        }
    }

    /// A permit, or `None` when `limit` requests hold one.
    fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.in_flight
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |held| {
                (held < self.limit).then_some(held + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(self)))
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// One admitted request's place; given back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<Permits>);

/// A response body holding its request's [`Permit`]: the request counts as
/// in flight until the body has ended or been dropped.
pub type PermitBody = crate::rpc::body::HoldingBody<Body, Permit>;

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl<S, B> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<PermitBody>;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if EXEMPT_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return ShedFuture::admitted(self.inner.call(request), None);
        }
        let Some(permit) = self.permits.try_acquire() else {
            let limit = self.permits.limit;
            tracing::debug!(
                limit,
                path,
                "shedding a request: node at its concurrency limit"
            );
            return ShedFuture::refused(refusal(&request, limit));
        };
        ShedFuture::admitted(self.inner.call(request), Some(permit))
    }
}

/// The immediate answer to a request that found every permit taken.
fn refusal<B>(request: &Request<B>, limit: usize) -> Response<Body> {
    let message =
        format!("the node is serving its limit of {limit} concurrent requests; retry later");
    if is_grpc(request) {
        return tonic::Status::unavailable(message).into_http::<Body>();
    }
    let mut response = Error::unavailable(message).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
