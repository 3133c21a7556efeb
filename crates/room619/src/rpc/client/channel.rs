//! [`RpcChannel`]: the transport under every typed gRPC client.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::{Request, Response, uri::PathAndQuery};
use tonic::{Status, body::Body};
use tower::util::BoxCloneSyncService;
use tracing::Instrument as _;

use super::{
    Colocation,
    observed::{ObservedBody, Pending},
};
use crate::{
    error::BoxError,
    observability::{
        client::{ClientObserver, GRPC_UNAVAILABLE},
        metrics::Metrics,
    },
    rpc::{
        deadline::{Deadline, GRPC_TIMEOUT, encode_timeout, parse_timeout},
        grpc::{GRPC_UNKNOWN, status_of},
    },
};

/// The remote stack: bulkhead → service breaker → retry → p2c balance →
/// instance breakers → tonic channels.
pub(crate) type RemoteGrpc = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// The channel a typed tonic client (`FooClient<RpcChannel>`) sends through.
///
/// Where the target service is hosted on the same node, a call goes
/// **in-process**: the node's gRPC router is called directly, with no socket
/// and no HTTP/2 framing (the request carries the [`Colocated`](super::Colocated) extension).
/// Otherwise it goes to the service's instances over HTTP/2, balanced by
/// power of two choices over the calls each has in flight. Either way the
/// call carries the remaining time of the [current deadline](Deadline::current)
/// (or the caller's own `grpc-timeout`, whichever is earlier) and fails with
/// `DEADLINE_EXCEEDED`, unsent, when that has already passed.
///
/// A colocated channel follows the node: when services are added or
/// removed it is resolved again, so once its service leaves the node its
/// calls go to another instance, and come back in process if it returns.
pub struct RpcChannel {
    target: Arc<str>,
    transport: Transport,
    observer: ClientObserver,
    /// The channel resolved again that `poll_ready` made ready, for `call`
    /// (a colocated channel whose node changed its routers).
    ready: Option<Box<RpcChannel>>,
}

impl Clone for RpcChannel {
    /// A clone is not ready (tower's contract), so it has nothing of
    /// `poll_ready`'s.
    fn clone(&self) -> Self {
        Self {
            target: Arc::clone(&self.target),
            transport: self.transport.clone(),
            observer: self.observer.clone(),
            ready: None,
        }
    }
}

#[derive(Clone)]
enum Transport {
    Local(Colocation<RpcChannel>),
    Remote {
        service: RemoteGrpc,
        instances: usize,
    },
}

impl RpcChannel {
    pub(crate) fn local(target: &str, colocation: Colocation<Self>) -> Self {
        Self::new(target, Transport::Local(colocation))
    }

    pub(crate) fn remote(target: &str, service: RemoteGrpc, instances: usize) -> Self {
        Self::new(target, Transport::Remote { service, instances })
    }

    fn new(target: &str, transport: Transport) -> Self {
        let target: Arc<str> = target.into();
        Self {
            observer: ClientObserver::new(&target, None),
            target,
            transport,
            ready: None,
        }
    }

    /// The same channel, counting its calls in `metrics`.
    pub(crate) fn observed(mut self, metrics: Option<&Metrics>) -> Self {
        self.observer = ClientObserver::new(&self.target, metrics);
        self
    }

    /// The name of the service it reaches.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether calls stay in this process.
    #[must_use]
    pub fn is_colocated(&self) -> bool {
        match self.moved() {
            Some(fresh) => fresh.is_colocated(),
            None => matches!(self.transport, Transport::Local(_)),
        }
    }

    /// The channel resolved again, when this one is colocated through
    /// routers the node no longer serves with (services were added or
    /// removed) and resolving again works; `None` otherwise.
    fn moved(&self) -> Option<Self> {
        let Transport::Local(local) = &self.transport else {
            return None;
        };
        local.moved(&self.target, |clients, requirement| {
            clients.channel(&self.target, requirement)
        })
    }
}

impl fmt::Debug for RpcChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.transport {
            Transport::Local(_) => "in-process".to_owned(),
            Transport::Remote { instances, .. } => format!("remote ({instances} instances)"),
        };
        f.debug_struct("RpcChannel")
            .field("target", &self.target)
            .field("transport", &transport)
            .finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for RpcChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_none() {
            self.ready = self.moved().map(Box::new);
        }
        if let Some(ready) = &mut self.ready {
            let polled = ready.poll_ready(cx);
            if matches!(polled, Poll::Ready(Err(_))) {
                // Not kept: the next call resolves again.
                self.ready = None;
            }
            return polled;
        }
        match &mut self.transport {
            Transport::Local(_) => Poll::Ready(Ok(())),
            // The layers around the balancer are ready at once: readiness of
            // the remote instances is awaited inside the call, where the
            // deadline bounds it. Polling them here lets the call go to this
            // very service, with no clone.
            Transport::Remote { service, .. } => service.poll_ready(cx),
        }
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if let Some(mut ready) = self.ready.take() {
            return ready.call(request);
        }
        let stated = request
            .headers()
            .get(&GRPC_TIMEOUT)
            .and_then(|value| parse_timeout(value.as_bytes()).ok())
            .map(Deadline::after);
        // A request forwarded whole (from a task with no deadline of its
        // own) keeps the one it arrived with, not its header read anew.
        let carried = request.extensions().get::<Deadline>().copied();
        let deadline = Deadline::earliest(Deadline::earliest(Deadline::current(), carried), stated);
        if let Some(deadline) = deadline {
            if deadline.is_expired() {
                let status = Status::deadline_exceeded(format!(
                    "deadline passed before calling `{}`; the call was not sent",
                    self.target
                ));
                return Box::pin(std::future::ready(Err(status.into())));
            }
            request
                .headers_mut()
                .insert(GRPC_TIMEOUT, encode_timeout(deadline.remaining()));
        }
        // A clone of the path shares its bytes (tonic's are static).
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let span = self.observer.grpc_span(
            path.path(),
            if matches!(self.transport, Transport::Local(_)) {
                "in-process"
            } else {
                "remote"
            },
            request.headers_mut(),
        );
        let target = Arc::clone(&self.target);
        let call: BoxFuture<'static, Result<Response<Body>, BoxError>> = match &mut self.transport {
            Transport::Local(local) => {
                let call =
                    super::call_colocated(local.grpc().clone(), request, Arc::clone(&target));
                Box::pin(async move { Ok(call.await?.map(Body::new)) })
            }
            // Made ready by `poll_ready`.
            Transport::Remote { service, .. } => {
                // For the retry and hedge layers, which send the header
                // again with the time left at each attempt.
                if let Some(deadline) = deadline {
                    request.extensions_mut().insert(deadline);
                }
                service.call(request)
            }
        };
        let bounded = async move {
            let Some(deadline) = deadline else {
                return call.await;
            };
            let expired = || -> BoxError {
                Status::deadline_exceeded(format!("deadline passed while calling `{target}`"))
                    .into()
            };
            match tokio::time::timeout_at(deadline.instant(), call).await {
                // The transport enforces `grpc-timeout` too and reports it
                // as its own error; past the deadline, any failure is the
                // deadline's.
                Ok(Err(_)) if deadline.is_expired() => Err(expired()),
                Ok(result) => result,
                Err(_elapsed) => Err(expired()),
            }
        };
        // Observed with its deadline: a call cut by it is recorded (as
        // `DEADLINE_EXCEEDED`) like any other.
        Box::pin(observed(bounded, self.observer.clone(), path, span.clone()).instrument(span))
    }
}

/// Records the call's outcome: the status an error answer carries in its
/// head (trailers-only), the error's code when there was no answer, and
/// otherwise the status in the answer's trailers, when its body ends (see
/// [`ObservedBody`]).
async fn observed(
    call: impl Future<Output = Result<Response<Body>, BoxError>>,
    observer: ClientObserver,
    path: PathAndQuery,
    span: tracing::Span,
) -> Result<Response<Body>, BoxError> {
    let started = std::time::Instant::now();
    let pending = |observer, path, span| Pending {
        observer,
        path,
        span,
        started,
    };
    match call.await {
        Ok(response) => {
            match status_of(response.headers()) {
                Some(code) => pending(observer, path, span).done(code),
                // No status in the head, and no body to bring one.
                None if http_body::Body::is_end_stream(response.body()) => {
                    pending(observer, path, span).done(GRPC_UNKNOWN);
                }
                None => {
                    let pending = pending(observer, path, span);
                    return Ok(response.map(|body| Body::new(ObservedBody::new(body, pending))));
                }
            }
            Ok(response)
        }
        Err(err) => {
            let code =
                crate::resilience::status_in(&err).map_or(GRPC_UNAVAILABLE, |code| code as i32);
            pending(observer, path, span).done(code);
            Err(err)
        }
    }
}
