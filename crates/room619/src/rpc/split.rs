//! [`ProtocolSplit`]: sends gRPC requests to tonic and the rest to axum.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll, ready},
};

use axum::{Router, body::Body, response::Response, routing::future::RouteFuture};
use http::{
    Extensions, HeaderValue, Method, Request,
    header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING},
};
use http_body::Body as _;
use pin_project_lite::pin_project;

use super::client::PeerAddr;
use crate::node::fast::{FastFuture, FastRoutes};

/// A tower service over two axum routers: gRPC requests (by content type) go
/// to `grpc`, all others to `http`.
///
/// ```
/// use axum::{Router, routing::get};
/// use room619::rpc::ProtocolSplit;
///
/// let split = ProtocolSplit::new(Router::new(), Router::new().route("/", get(|| async { "hi" })));
/// ```
#[derive(Clone, Debug)]
pub struct ProtocolSplit {
    grpc: Router,
    http: Router,
    /// A node's hosted HTTP routes, each with its layers as one unboxed
    /// stack; tried before `http` (see [`FastRoutes`]).
    fast: Option<Arc<FastRoutes>>,
    peer: Option<SocketAddr>,
}

impl ProtocolSplit {
    /// Splits between a router of tonic routes and one of HTTP routes.
    #[must_use]
    pub fn new(grpc: Router, http: Router) -> Self {
        // `with_state` turns every handler into its finished route once, as
        // `axum::serve` does; a router called as a service without it
        // rebuilds each handler's route, layers and all, on every request
        // (about ten allocations).
        Self {
            grpc: grpc.with_state(()),
            http: http.with_state(()),
            fast: None,
            peer: None,
        }
    }

    /// A node's split: its hosted HTTP routes are served through `fast`
    /// when a request's path matches one, through `http` otherwise.
    pub(crate) fn with_fast(grpc: Router, http: Router, fast: FastRoutes) -> Self {
        Self {
            fast: Some(Arc::new(fast)),
            ..Self::new(grpc, http)
        }
    }

    /// The same split for one connection: each request carries the peer's
    /// address as a [`PeerAddr`] extension.
    #[must_use]
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Self {
            grpc: self.grpc.clone(),
            http: self.http.clone(),
            fast: self.fast.clone(),
            peer: Some(peer),
        }
    }
}

impl ProtocolSplit {
    /// Serves one request of a connection from `peer`, cloning only the
    /// router (or route) that answers it.
    pub(crate) fn call_from<B>(&self, peer: SocketAddr, mut request: Request<B>) -> SplitFuture
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        arrived_from(&mut request, peer);
        if is_grpc(&request) {
            return SplitFuture::routed(tower::Service::call(&mut self.grpc.clone(), request));
        }
        self.call_http(request)
    }

    /// Serves an HTTP request: through its hosted route's stack when it has
    /// one, through the HTTP router otherwise.
    fn call_http<B>(&self, request: Request<B>) -> SplitFuture
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        if let Some(route) = self
            .fast
            .as_deref()
            .and_then(|fast| fast.find(request.uri().path()))
        {
            let method = Finish::of(request.method());
            return SplitFuture {
                inner: Inner::Fast {
                    inner: FastRoutes::call(route, request.map(Body::new)),
                    method,
                },
            };
        }
        SplitFuture::routed(tower::Service::call(&mut self.http.clone(), request))
    }
}

pin_project! {
    /// The response future of [`ProtocolSplit`].
    pub struct SplitFuture {
        #[pin]
        inner: Inner,
    }
}

pin_project! {
    #[project = Projected]
    enum Inner {
        Routed { #[pin] inner: RouteFuture<Infallible> },
        // Finished as axum finishes a router's answer (see `Finish`).
        Fast { #[pin] inner: FastFuture, method: Finish },
    }
}

impl SplitFuture {
    fn routed(inner: RouteFuture<Infallible>) -> Self {
        Self {
            inner: Inner::Routed { inner },
        }
    }
}

impl Future for SplitFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            Projected::Routed { inner } => inner.poll(cx),
            Projected::Fast { inner, method } => {
                let Ok(mut response) = ready!(inner.poll(cx));
                method.finish(&mut response);
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// What axum's router does to every answer after its route's layers (its
/// top-level `RouteFuture`), for the answers of a hosted route's stack,
/// whose layers run outside the router: a `HEAD` answer loses its body
/// (hyper drops it on HTTP/1, not on HTTP/2), keeping its length as
/// `Content-Length`; a successful `CONNECT` answer has neither. (Other
/// answers get their `Content-Length` from hyper.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Head,
    Connect,
    Other,
}

impl Finish {
    fn of(method: &Method) -> Self {
        if *method == Method::HEAD {
            Self::Head
        } else if *method == Method::CONNECT {
            Self::Connect
        } else {
            Self::Other
        }
    }

    fn finish(self, response: &mut Response) {
        match self {
            Self::Other => {}
            Self::Head => {
                if !response.headers().contains_key(CONTENT_LENGTH)
                    && let Some(size) = response.body().size_hint().exact()
                {
                    response
                        .headers_mut()
                        .insert(CONTENT_LENGTH, HeaderValue::from(size));
                }
                *response.body_mut() = Body::empty();
            }
            Self::Connect => {
                let headers = response.headers();
                if response.status().is_success()
                    && (headers.contains_key(CONTENT_LENGTH)
                        || headers.contains_key(TRANSFER_ENCODING)
                        || response.body().size_hint().lower() != 0)
                {
                    *response.body_mut() = Body::empty();
                }
            }
        }
    }
}

/// Gives a request that arrived from `peer` its [`PeerAddr`], in an
/// extension map made with room for what the request collects on its way
/// in: the peer, its id, axum's matched path and path parameters, the body
/// limit, the service's context, the principal... Grown from empty, the map
/// is allocated three times (for 3, 7 and 14 entries), its entries moved
/// each time.
fn arrived_from<B>(request: &mut Request<B>, peer: SocketAddr) {
    let extensions = request.extensions_mut();
    if extensions.is_empty() {
        *extensions = ROOMY.clone();
    }
    extensions.insert(PeerAddr(peer));
}

/// An empty extension map with room for 14 entries (cloned with its room).
static ROOMY: LazyLock<Extensions> = LazyLock::new(|| {
    /// Distinct types to fill the map with, once.
    #[derive(Clone, Copy)]
    struct Slot<const N: usize>;
    macro_rules! grow {
        ($extensions:ident, $($n:literal)*) => {
            $( $extensions.insert(Slot::<$n>); )*
            $( $extensions.remove::<Slot<$n>>(); )*
        };
    }
    let mut extensions = Extensions::new();
    // Eight entries outgrow room for 7; removing them keeps the room.
    grow!(extensions, 0 1 2 3 4 5 6 7);
    extensions
});

/// Whether a request is gRPC: its content type is `application/grpc`,
/// optionally followed by `+<codec>` or parameters. gRPC-Web is not gRPC here.
///
/// ```
/// use room619::rpc::is_grpc;
///
/// let req = http::Request::builder().header("content-type", "application/grpc+proto").body(()).unwrap();
/// assert!(is_grpc(&req));
/// let req = http::Request::builder().header("content-type", "application/grpc-web").body(()).unwrap();
/// assert!(!is_grpc(&req));
/// ```
#[must_use]
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.as_bytes().strip_prefix(b"application/grpc"))
        .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
}

impl<B> tower::Service<Request<B>> for ProtocolSplit
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = SplitFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(peer) = self.peer {
            arrived_from(&mut request, peer);
        }
        if is_grpc(&request) {
            SplitFuture::routed(self.grpc.call(request))
        } else {
            self.call_http(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_its_peer_and_keeps_what_it_already_carried() {
        let peer = SocketAddr::from(([192, 0, 2, 7], 4711));
        let mut bare = Request::new(());
        arrived_from(&mut bare, peer);
        assert_eq!(bare.extensions().get::<PeerAddr>(), Some(&PeerAddr(peer)));
        assert_eq!(bare.extensions().len(), 1, "the room holds no entries");

        let mut carrying = Request::new(());
        carrying.extensions_mut().insert("upgrade");
        arrived_from(&mut carrying, peer);
        assert_eq!(carrying.extensions().get::<&str>(), Some(&"upgrade"));
        assert_eq!(carrying.extensions().len(), 2);
    }

    #[test]
    fn answers_are_finished_as_axum_finishes_them() {
        let answer = || Response::new(Body::from("problem"));
        let finished = |method: Method| {
            let mut response = answer();
            Finish::of(&method).finish(&mut response);
            response
        };
        let get = finished(Method::GET);
        assert!(
            !get.headers().contains_key(CONTENT_LENGTH),
            "hyper's to set"
        );
        assert_eq!(get.body().size_hint().exact(), Some(7));

        let head = finished(Method::HEAD);
        assert_eq!(
            head.headers()[CONTENT_LENGTH],
            "7",
            "the length of GET's body"
        );
        assert!(head.body().is_end_stream());

        let mut declared = answer();
        declared
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        Finish::Head.finish(&mut declared);
        assert_eq!(declared.headers()[CONTENT_LENGTH], "99");

        let connect = finished(Method::CONNECT);
        assert!(connect.body().is_end_stream());
        assert!(!connect.headers().contains_key(CONTENT_LENGTH));
    }
}
