//! [`CallLog`]: how the server's calls ended, and [`Logged`], which keeps it
//! around any gRPC server.
//!
//! A call is in flight from the moment the server is called until its status
//! is sent or it is dropped unanswered. It ended *cancelled* if it was dropped
//! before its status was sent (the client reset the stream, its deadline
//! passed, its connection went away) or if its status is `CANCELLED`. Tests
//! read the log to check the server side of a case: that the server noticed a
//! cancellation, say, and left no call hanging.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tonic::{body::Body, server::NamedService};

/// The header or trailer carrying a call's status code.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The status code `CANCELLED`, as it is written in `grpc-status`.
const CANCELLED: &str = "1";

/// How the calls of a server ended; clones share one log.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    ledger: Arc<Mutex<Ledger>>,
}

/// What a [`CallLog`] keeps.
#[derive(Debug, Default)]
struct Ledger {
    /// Calls started and not ended yet.
    in_flight: usize,
    /// The method path of every call that ended cancelled, in order.
    cancelled: Vec<String>,
}

impl CallLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many calls have started and not ended yet.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.ledger().in_flight
    }

    /// The method paths (`/grpc.testing.TestService/FullDuplexCall`, say) of
    /// the calls that ended cancelled, in the order they ended.
    #[must_use]
    pub fn cancelled(&self) -> Vec<String> {
        self.ledger().cancelled.clone()
    }

    /// Starts a call to `method`: it ends when the returned value is dropped.
    fn start(&self, method: &str) -> Call {
        self.ledger().in_flight += 1;
        Call {
            log: self.clone(),
            method: method.to_owned(),
            cancelled: true,
        }
    }

    /// The ledger. Nothing can panic while holding it, and every update is a
    /// single step, so a poisoned lock still guards a consistent ledger.
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One call in flight; dropping it ends the call.
struct Call {
    log: CallLog,
    /// The method path, as the request named it.
    method: String,
    /// Whether dropping it now ends it cancelled: until its status is sent,
    /// yes; then, only if that status is `CANCELLED`.
    cancelled: bool,
}

impl Call {
    /// The call's status is sent, in `status` (its trailers, or the headers
    /// of a trailers-only response).
    fn answered(&mut self, status: &HeaderMap) {
        self.cancelled = status
            .get(GRPC_STATUS)
            .is_some_and(|code| code == CANCELLED);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut ledger = self.log.ledger();
        ledger.in_flight -= 1;
        if self.cancelled {
            ledger.cancelled.push(std::mem::take(&mut self.method));
        }
    }
}

/// Wraps a tonic server so that its calls are kept in a [`CallLog`]; the
/// gRPC service name stays the inner server's.
#[derive(Debug, Clone)]
pub(crate) struct Logged<S> {
    inner: S,
    log: CallLog,
}

impl<S> Logged<S> {
    /// Wraps `inner`, keeping its calls in `log`.
    pub(crate) fn new(inner: S, log: CallLog) -> Self {
        Self { inner, log }
    }
}

impl<S: NamedService> NamedService for Logged<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Logged<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Dropped with this future if the call is cancelled before the
        // server answers; else handed on to the response body.
        let mut call = self.log.start(request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.headers().contains_key(GRPC_STATUS) || response.body().is_end_stream() {
                // Trailers-only: the status is in the headers, nothing follows.
                call.answered(response.headers());
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    if let Some(trailers) = frame.trailers_ref() {
                        call.answered(trailers);
                    }
                    frame
                }))
            }))
        })
    }
}
