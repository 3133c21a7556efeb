//! Closed-loop load: `concurrency` callers, each sending its next request as
//! soon as the previous answer is in, for a fixed time. Every latency goes
//! into an HDR histogram (nanoseconds, 3 significant digits).
//!
//! - [`grpc_unary`]: unary `Echo` calls over `connections` HTTP/2
//!   connections (tonic channels), callers spread over them round-robin.
//! - [`rest_json`]: `POST /v1/echo` with a JSON body over one HTTP/1.1
//!   keep-alive connection per caller (hyper's client connection, the
//!   thinnest client there is), so `concurrency` requests are in flight.
//!
//! An answer that is not a success, or does not echo what was sent, counts
//! as an error and its latency is not recorded.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tokio::{net::TcpStream, task::JoinSet};
use tonic::transport::{Channel, Endpoint};

use crate::{
    BoxError,
    echo::{EchoMessage, REST_PATH},
};

/// The longest latency the histogram holds (a minute, in nanoseconds).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What to send, how hard and for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// How long callers keep sending.
    pub duration: Duration,
    /// How many requests are in flight at once (one per caller).
    pub concurrency: usize,
    /// How many HTTP/2 connections the gRPC callers share (REST always uses
    /// one connection per caller).
    pub connections: usize,
    /// The message echoed.
    pub message: String,
    /// The `authorization` header every request carries, if any.
    pub authorization: Option<String>,
}

/// The outcome of one load run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Latencies of the successful requests, in nanoseconds.
    pub latencies: Histogram<u64>,
    /// Requests that failed or were answered wrongly.
    pub errors: u64,
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
}

impl Measurement {
    /// Successful requests per second.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            as_f64(self.latencies.len()) / secs
        } else {
            0.0
        }
    }

    /// The latency at `quantile` (0.0 to 1.0), in microseconds.
    #[must_use]
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        as_f64(self.latencies.value_at_quantile(quantile)) / 1_000.0
    }
}

/// Drives unary `shop.echo.v1.Echo/Echo` calls against `addr`.
///
/// # Errors
///
/// If a connection cannot be opened before the run starts. Failed calls
/// during the run are counted, not returned.
pub async fn grpc_unary(addr: SocketAddr, spec: &LoadSpec) -> Result<Measurement, BoxError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut channels: Vec<Channel> = Vec::with_capacity(spec.connections.max(1));
    for _ in 0..spec.connections.max(1) {
        channels.push(endpoint.connect().await?);
    }
    let callers = (0..spec.concurrency.max(1)).map(|index| {
        let client = EchoClient::new(channels[index % channels.len()].clone());
        let message = spec.message.clone();
        let authorization = spec.authorization.clone();
        move |deadline| grpc_caller(client, message, authorization, deadline)
    });
    run(spec.duration, callers).await
}

/// Drives `POST /v1/echo` JSON requests against `addr`.
///
/// # Errors
///
/// If a connection cannot be opened before the run starts. Failed requests
/// during the run are counted (and the connection reopened), not returned.
pub async fn rest_json(addr: SocketAddr, spec: &LoadSpec) -> Result<Measurement, BoxError> {
    let body = Bytes::from(serde_json::to_vec(&EchoMessage {
        message: spec.message.clone(),
    })?);
    let mut senders = Vec::with_capacity(spec.concurrency.max(1));
    for _ in 0..spec.concurrency.max(1) {
        senders.push(connect_http1(addr).await?);
    }
    let callers = senders.into_iter().map(|sender| {
        let body = body.clone();
        let authorization = spec.authorization.clone();
        move |deadline| rest_caller(addr, sender, body, authorization, deadline)
    });
    run(spec.duration, callers).await
}

/// Starts every caller at once, each until `duration` from now, and merges
/// what they measured.
async fn run<C, F>(
    duration: Duration,
    callers: impl Iterator<Item = C>,
) -> Result<Measurement, BoxError>
where
    C: FnOnce(Instant) -> F,
    F: Future<Output = Result<Caller, BoxError>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for caller in callers {
        tasks.spawn(caller(deadline));
    }
    let mut total = Caller::new()?;
    while let Some(joined) = tasks.join_next().await {
        let caller = joined??;
        total.latencies.add(&caller.latencies)?;
        total.errors += caller.errors;
    }
    Ok(Measurement {
        latencies: total.latencies,
        errors: total.errors,
        elapsed: start.elapsed(),
    })
}

/// What one caller measured.
struct Caller {
    latencies: Histogram<u64>,
    errors: u64,
}

impl Caller {
    fn new() -> Result<Self, BoxError> {
        Ok(Self {
            latencies: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?,
            errors: 0,
        })
    }

    /// Records the outcome of a request sent at `sent`.
    fn record(&mut self, sent: Instant, ok: bool) {
        if ok {
            let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.latencies.saturating_record(nanos.max(1));
        } else {
            self.errors += 1;
        }
    }
}

async fn grpc_caller(
    mut client: EchoClient<Channel>,
    message: String,
    authorization: Option<String>,
    deadline: Instant,
) -> Result<Caller, BoxError> {
    let mut caller = Caller::new()?;
    let authorization: Option<tonic::metadata::MetadataValue<_>> =
        authorization.map(|value| value.parse()).transpose()?;
    while Instant::now() < deadline {
        let mut request = tonic::Request::new(EchoRequest {
            message: message.clone(),
            ..EchoRequest::default()
        });
        if let Some(value) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        let sent = Instant::now();
        let answer = client.echo(request).await;
        let ok = answer.is_ok_and(|response| response.get_ref().message == message);
        caller.record(sent, ok);
    }
    Ok(caller)
}

async fn rest_caller(
    addr: SocketAddr,
    mut sender: http1::SendRequest<Full<Bytes>>,
    body: Bytes,
    authorization: Option<String>,
    deadline: Instant,
) -> Result<Caller, BoxError> {
    let mut caller = Caller::new()?;
    let host = addr.to_string();
    let authorization = authorization
        .map(|v| header::HeaderValue::from_str(&v))
        .transpose()?;
    while Instant::now() < deadline {
        let sent = Instant::now();
        let ok = match post_json(&mut sender, &host, authorization.as_ref(), body.clone()).await {
            Ok(answer) => answer == body,
            Err(_) => false,
        };
        caller.record(sent, ok);
        if !ok || sender.is_closed() {
            sender = connect_http1(addr).await?;
        }
    }
    Ok(caller)
}

/// Sends one `POST /v1/echo` and reads the whole answer.
async fn post_json(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    host: &str,
    authorization: Option<&header::HeaderValue>,
    body: Bytes,
) -> Result<Bytes, BoxError> {
    sender.ready().await?;
    let mut request = Request::post(REST_PATH)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, value.clone());
    }
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()).into());
    }
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Opens an HTTP/1.1 keep-alive connection; its I/O runs as a task.
async fn connect_http1(addr: SocketAddr) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "benchmark connection ended with an error");
        }
    });
    Ok(sender)
}

/// A count as a float without the lossy `as` cast: exact below 2^53, which
/// request counts and nanosecond latencies here never reach.
pub(crate) fn as_f64(value: u64) -> f64 {
    let high = u32::try_from(value >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(value & u64::from(u32::MAX)).unwrap_or(u32::MAX);
    f64::from(high).mul_add(4_294_967_296.0, f64::from(low))
}
