//! [`LiveSplit`]: what a listener serves, swappable while it runs, so
//! services can be added and removed without touching the listener.
//!
//! Each request loads the current [`ProtocolSplit`] (one atomic load) and is
//! served by it to the end; a swap affects only requests that arrive later,
//! so in-flight requests to a removed service finish.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use axum::{response::Response, routing::future::RouteFuture};
use http::Request;

use crate::rpc::ProtocolSplit;

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

    /// The service of one connection from `peer`.
    pub(crate) fn for_peer(&self, peer: SocketAddr) -> PeerSplit {
        PeerSplit {
            current: Arc::clone(&self.current),
            peer,
        }
    }
}

/// The service of one connection: the current routes, with the peer's address.
#[derive(Clone)]
pub(crate) struct PeerSplit {
    current: Arc<ArcSwap<ProtocolSplit>>,
    peer: SocketAddr,
}

impl<B> tower::Service<Request<B>> for PeerSplit
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.current.load().call_from(self.peer, request)
    }
}
