//! [`LiveSplit`]: what a listener serves, swappable while it runs, so
//! services can be added and removed without touching the listener.
//!
//! Each request loads the current [`ProtocolSplit`] (one atomic load) and is
//! served by it to the end; a swap affects only requests that arrive later,
//! so in-flight requests to a removed service finish.
//!
//! On an HTTP/1 connection each request is also counted in the connection's
//! [`Activity`] (started, and finished when its answer's body is sent or
//! dropped), which the connection's watch reads to close a connection that
//! has gone quiet: see [`ShutdownWatch`](super::watch::ShutdownWatch).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::rpc::{ProtocolSplit, SplitFuture};

/// The current routes of a listener; clones share them.
#[derive(Clone)]
pub(crate) struct LiveSplit {
    current: Arc<ArcSwap<ProtocolSplit>>,
}

impl LiveSplit {
    pub(crate) fn new(split: ProtocolSplit) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(split)),
        }
    }

    /// Serves `split` from the next request on.
    pub(crate) fn store(&self, split: ProtocolSplit) {
        self.current.store(Arc::new(split));
    }

    /// The service of one connection from `peer`; its requests are counted
    /// in `activity` when there is one.
    pub(crate) fn for_peer(&self, peer: SocketAddr, activity: Option<Arc<Activity>>) -> PeerSplit {
        PeerSplit {
            current: Arc::clone(&self.current),
            peer,
            activity,
        }
    }
}

/// The requests of one connection so far: how many started and how many
/// finished. Both only grow; the connection is quiet while they are equal
/// and do not move.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// `(started, finished)` now.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Relaxed),
            self.finished.load(Ordering::Relaxed),
        )
    }

    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// One request in flight; counted finished when dropped (with its answer's
/// body, or with the request when it is abandoned unanswered).
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The service of one connection: the current routes, with the peer's address.
#[derive(Clone)]
pub(crate) struct PeerSplit {
    current: Arc<ArcSwap<ProtocolSplit>>,
    peer: SocketAddr,
    activity: Option<Arc<Activity>>,
}

impl<B> tower::Service<Request<B>> for PeerSplit
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Counted<SplitFuture>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Counted {
            in_flight: self.activity.as_ref().map(Activity::start),
            inner: self.current.load().call_from(self.peer, request),
        }
    }
}

pin_project! {
    /// The answer of a connection's request; hands the request's
    /// [`InFlight`] on to the answer's body.
    pub(crate) struct Counted<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<CountedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| CountedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

pin_project! {
    /// An answer's body; its request is finished when it is dropped.
    pub(crate) struct CountedBody {
        #[pin]
        body: Body,
        _in_flight: Option<InFlight>,
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use super::*;

    #[tokio::test]
    async fn a_request_is_finished_once_its_answers_body_is_dropped() {
        let activity = Arc::new(Activity::default());
        let counted = Counted {
            in_flight: Some(activity.start()),
            inner: ready(Ok::<_, Infallible>(Response::new(Body::from("hi")))),
        };
        assert_eq!(activity.counts(), (1, 0));
        let Ok(response) = counted.await;
        assert_eq!(activity.counts(), (1, 0), "its body is still to be sent");
        drop(response);
        assert_eq!(activity.counts(), (1, 1));
    }

    #[test]
    fn a_request_abandoned_unanswered_is_finished() {
        let activity = Arc::new(Activity::default());
        let counted = Counted {
            in_flight: Some(activity.start()),
            inner: pending::<Result<Response<Body>, Infallible>>(),
        };
        assert_eq!(activity.counts(), (1, 0));
        drop(counted);
        assert_eq!(activity.counts(), (1, 1));
    }
}
