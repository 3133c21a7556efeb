//! [`HttpClient`]: calls a REST service by name, in-process or balanced.

use std::{
    borrow::Cow,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, header,
    uri::{Authority, Scheme},
};
use http_body_util::{BodyExt as _, Limited};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde::{Serialize, de::DeserializeOwned};
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::Colocation;
use crate::{
    Error, ErrorKind, Result,
    error::{BoxError, Problem},
    observability::{client::ClientObserver, metrics::Metrics},
    rpc::deadline::{Deadline, HTTP_TIMEOUT, encode_timeout, parse_timeout},
};

/// The largest answer body the JSON helpers read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The remote stack, as for gRPC: bulkhead → service breaker → retry →
/// p2c balance → instance breakers → pooled hyper clients.
pub(crate) type RemoteHttp =
    tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// A client of one REST service, resolved by name and version like
/// [`RpcChannel`](super::RpcChannel): in-process when the service is
/// colocated, balanced over its instances otherwise, with the current
/// deadline sent as `x-request-timeout`.
///
/// ```no_run
/// # async fn demo(ctx: room619::ServiceContext) -> room619::Result<()> {
/// #[derive(serde::Deserialize)]
/// struct Product { name: String }
///
/// let products = ctx.http_client("products", "^1")?;
/// let product: Product = products.get_json("/v1/products/42").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    target: Arc<str>,
    transport: Transport,
    observer: ClientObserver,
}

#[derive(Clone)]
enum Transport {
    Local(Colocation<HttpClient>),
    Remote(RemoteHttp),
}

impl HttpClient {
    pub(crate) fn local(target: &str, colocation: Colocation<Self>) -> Self {
        Self::new(target, Transport::Local(colocation))
    }

    pub(crate) fn remote(target: &str, service: RemoteHttp) -> Self {
        Self::new(target, Transport::Remote(service))
    }

    fn new(target: &str, transport: Transport) -> Self {
        let target: Arc<str> = target.into();
        Self {
            observer: ClientObserver::new(&target, None),
            target,
            transport,
        }
    }

    /// The same client, counting its requests in `metrics`.
    pub(crate) fn observed(mut self, metrics: Option<&Metrics>) -> Self {
        self.observer = ClientObserver::new(&self.target, metrics);
        self
    }

    /// Whether requests stay in this process.
    #[must_use]
    pub fn is_colocated(&self) -> bool {
        matches!(*self.transport(), Transport::Local(_))
    }

    /// What a request goes through now: a colocated client follows the
    /// node, as [`RpcChannel`](super::RpcChannel) does; when services were
    /// added or removed it is resolved again, and once its service left the
    /// node its requests go to another instance.
    fn transport(&self) -> Cow<'_, Transport> {
        if let Transport::Local(local) = &self.transport
            && let Some(fresh) = local.moved(&self.target, |clients, requirement| {
                clients.http(&self.target, requirement)
            })
        {
            return Cow::Owned(fresh.transport);
        }
        Cow::Borrowed(&self.transport)
    }

    /// Sends a request whose URI is a path (and query), such as `/v1/users?page=2`.
    ///
    /// # Errors
    ///
    /// `DeadlineExceeded` when the current deadline passed (before sending, or
    /// while waiting), `Unavailable` when no instance is known or reachable.
    /// Error statuses from the service are answers, not errors, here.
    pub async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>> {
        // A timeout the request states itself counts when it is the tighter.
        let own = request
            .headers()
            .get(HTTP_TIMEOUT)
            .and_then(|value| parse_timeout(value.as_bytes()).ok())
            .map(Deadline::after);
        // A request forwarded whole (from a task with no deadline of its
        // own) keeps the one it arrived with, not its header read anew.
        let carried = request.extensions().get::<Deadline>().copied();
        let deadline = Deadline::earliest(Deadline::earliest(Deadline::current(), carried), own);
        if let Some(deadline) = deadline {
            if deadline.is_expired() {
                return Err(Error::deadline_exceeded(format!(
                    "deadline passed before calling `{}`; the request was not sent",
                    self.target
                )));
            }
            request
                .headers_mut()
                .insert(HTTP_TIMEOUT, encode_timeout(deadline.remaining()));
        }
        let method = request.method().clone();
        let transport = self.transport();
        let kind = if matches!(*transport, Transport::Local(_)) {
            "in-process"
        } else {
            "remote"
        };
        let span = self
            .observer
            .http_span(&method, kind, request.headers_mut());
        let started = std::time::Instant::now();
        let call: BoxFuture<'static, Result<Response<Body>, BoxError>> = match &*transport {
            Transport::Local(local) => {
                let call =
                    super::call_colocated(local.http().clone(), request, Arc::clone(&self.target));
                Box::pin(async move { Ok(call.await?.map(Body::new)) })
            }
            Transport::Remote(service) => {
                // For the retry and hedge layers (see `RpcChannel`).
                if let Some(deadline) = deadline {
                    request.extensions_mut().insert(deadline);
                }
                Box::pin(service.clone().oneshot(request))
            }
        };
        let call = call.instrument(span.clone());
        let result = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.instant(), call).await,
            None => Ok(call.await),
        };
        let status = match &result {
            Ok(Ok(response)) => response.status().as_u16(),
            _ => 0,
        };
        self.observer
            .http_done(&span, &method, status, started.elapsed());
        let result = result.map_err(|_elapsed| {
            Error::deadline_exceeded(format!("deadline passed while calling `{}`", self.target))
        })?;
        result.map_err(|err| {
            if deadline.is_some_and(Deadline::is_expired) {
                // Past the deadline, any failure is the deadline's (as for
                // `RpcChannel`): an upstream closing at its own timeout.
                return Error::deadline_exceeded(format!(
                    "deadline passed while calling `{}`: {err}",
                    self.target
                ))
                .with_source(err);
            }
            let kind = crate::resilience::status_in(&err)
                .map_or(ErrorKind::Unavailable, ErrorKind::from_grpc_code);
            Error::new(kind, format!("calling `{}` failed: {err}", self.target)).with_source(err)
        })
    }

    /// `GET path`, decoding a JSON answer.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); an error status becomes an [`Error`] of the
    /// matching kind with the problem's `detail`; an undecodable answer is
    /// `Internal`.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let request = build(Method::GET, path, Body::empty(), None)?;
        self.json(request).await
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    ///
    /// # Errors
    ///
    /// As [`get_json`](Self::get_json); `InvalidArgument` if `body` cannot be
    /// serialized.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(body)
            .map_err(|err| Error::invalid_argument(format!("cannot encode the request: {err}")))?;
        let json = HeaderValue::from_static("application/json");
        let request = build(Method::POST, path, Body::from(bytes), Some(json))?;
        self.json(request).await
    }

    async fn json<T: DeserializeOwned>(&self, request: Request<Body>) -> Result<T> {
        let response = self.send(request).await?;
        let status = response.status();
        let read = Limited::new(response.into_body(), MAX_ANSWER).collect();
        // The deadline bounds the whole call, the answer's body included.
        let read = match Deadline::current() {
            Some(deadline) => tokio::time::timeout_at(deadline.instant(), read)
                .await
                .map_err(|_elapsed| {
                    Error::deadline_exceeded(format!(
                        "deadline passed while reading the answer of `{}`",
                        self.target
                    ))
                })?,
            None => read.await,
        };
        let bytes = read
            .map_err(|err| {
                Error::unavailable(format!(
                    "reading the answer of `{}` failed: {err}",
                    self.target
                ))
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(answer_error(status, &bytes));
        }
        // A success with no body (`204 No Content`, a bare `202`) reads as
        // JSON `null`: `()`, `Option::None`.
        let bytes = if bytes.is_empty() {
            bytes::Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|err| {
            Error::internal(format!(
                "`{}` answered JSON that does not decode: {err}",
                self.target
            ))
        })
    }
}

fn build(
    method: Method,
    path: &str,
    body: Body,
    content_type: Option<HeaderValue>,
) -> Result<Request<Body>> {
    let uri: Uri = path
        .parse()
        .map_err(|err| Error::invalid_argument(format!("`{path}` is not a valid path: {err}")))?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::ACCEPT, "application/json")
        .body(body)
        .map_err(|err| Error::invalid_argument(format!("cannot build the request: {err}")))?;
    if let Some(content_type) = content_type {
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    Ok(request)
}

/// The error an error answer stands for, with the problem's detail if any.
fn answer_error(status: StatusCode, body: &[u8]) -> Error {
    let detail = serde_json::from_slice::<Problem>(body).map_or_else(
        |_| format!("answered {status}"),
        |problem| problem.detail.into_owned(),
    );
    Error::new(ErrorKind::from_http_status(status), detail)
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("target", &self.target)
            .field("colocated", &self.is_colocated())
            .finish_non_exhaustive()
    }
}

/// One remote instance: a pooled hyper client aimed at one address.
#[derive(Clone)]
pub(crate) struct HttpInstance {
    client: Client<HttpConnector, Body>,
    authority: Authority,
}

impl HttpInstance {
    pub(crate) fn new(client: Client<HttpConnector, Body>, authority: Authority) -> Self {
        Self { client, authority }
    }
}

impl tower::Service<Request<Body>> for HttpInstance {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        // The instance is called over HTTP/1.1 (hyper refuses to send an
        // HTTP/2 request on it, such as one a gateway forwards as it came),
        // with the `Host` of the instance's address, which hyper sets from
        // the URI: a `Host` in the request (a forwarded one's, say) names
        // another server.
        parts.version = http::Version::HTTP_11;
        parts.headers.remove(http::header::HOST);
        let client = self.client.clone();
        Box::pin(async move {
            parts.uri = Uri::from_parts(uri)?;
            let response = client.request(Request::from_parts(parts, body)).await?;
            Ok(response.map(Body::new))
        })
    }
}
