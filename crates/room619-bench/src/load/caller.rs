//! One caller: its loop of requests, gRPC or REST, and what it measured.

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
use tokio::net::TcpStream;
use tonic::transport::Channel;

use super::pace::{Pace, Turn};
use crate::{BoxError, echo::REST_PATH};

/// The longest latency the histograms hold (a minute, in nanoseconds).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What one caller (or all of them, merged) measured.
pub(crate) struct Caller {
    /// Latencies of the successful requests, from their turn's `due`.
    pub(crate) latencies: Histogram<u64>,
    /// How long after its slot each scheduled request that was not late
    /// was sent.
    pub(crate) send_lag: Histogram<u64>,
    pub(crate) errors: u64,
    pub(crate) late: u64,
    pub(crate) unsent: u64,
}

impl Caller {
    pub(crate) fn new() -> Result<Self, BoxError> {
        Ok(Self {
            latencies: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?,
            send_lag: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)?,
            errors: 0,
            late: 0,
            unsent: 0,
        })
    }

    /// Adds what `other` measured.
    pub(crate) fn merge(&mut self, other: &Caller) -> Result<(), BoxError> {
        self.latencies.add(&other.latencies)?;
        self.send_lag.add(&other.send_lag)?;
        self.errors += other.errors;
        self.late += other.late;
        self.unsent += other.unsent;
        Ok(())
    }

    /// Notes that the request of `turn` is being sent now; returns the
    /// instant its latency is measured from: its slot, or now if that is
    /// earlier (the pacer releases slots a little early).
    fn sending(&mut self, turn: Turn) -> Instant {
        let now = Instant::now();
        if turn.late {
            self.late += 1;
        }
        // A late request's lag is its caller's previous request, already
        // in the latencies; the on-time ones' is the pacing's own.
        if turn.scheduled && !turn.late {
            let lag = now.saturating_duration_since(turn.due).as_nanos();
            self.send_lag
                .saturating_record(u64::try_from(lag).unwrap_or(u64::MAX).max(1));
        }
        turn.due.min(now)
    }

    /// Records the outcome of a request timed from `from`.
    fn record(&mut self, from: Instant, ok: bool) {
        if ok {
            self.latencies.saturating_record(nanos_since(from));
        } else {
            self.errors += 1;
        }
    }
}

/// Nanoseconds from `since` to now, at least 1 (the histograms' lowest).
fn nanos_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What every request of a run carries.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) authorization: Option<String>,
    /// How long a request may take before it counts as an error.
    pub(crate) timeout: Duration,
}

pub(crate) async fn grpc(
    mut client: EchoClient<Channel>,
    message: String,
    call: Call,
    mut pace: Pace,
) -> Result<Caller, BoxError> {
    let mut caller = Caller::new()?;
    let authorization: Option<tonic::metadata::MetadataValue<_>> =
        call.authorization.map(|value| value.parse()).transpose()?;
    while let Some(turn) = pace.next().await {
        let mut request = tonic::Request::new(EchoRequest {
            message: message.clone(),
            ..EchoRequest::default()
        });
        if let Some(value) = &authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        let from = caller.sending(turn);
        // A timeout drops the call, which resets its stream.
        let answer = tokio::time::timeout(call.timeout, client.echo(request)).await;
        let ok = matches!(answer, Ok(Ok(response)) if response.get_ref().message == message);
        caller.record(from, ok);
    }
    caller.unsent = pace.unsent();
    Ok(caller)
}

pub(crate) async fn rest(
    addr: SocketAddr,
    mut sender: http1::SendRequest<Full<Bytes>>,
    body: Bytes,
    call: Call,
    mut pace: Pace,
) -> Result<Caller, BoxError> {
    let mut caller = Caller::new()?;
    let host = addr.to_string();
    let authorization = call
        .authorization
        .map(|v| header::HeaderValue::from_str(&v))
        .transpose()?;
    while let Some(turn) = pace.next().await {
        let from = caller.sending(turn);
        let answer = tokio::time::timeout(
            call.timeout,
            post_json(&mut sender, &host, authorization.as_ref(), body.clone()),
        )
        .await;
        let ok = matches!(answer, Ok(Ok(answer)) if answer == body);
        caller.record(from, ok);
        // After a failure or a timeout the connection's state is unknown.
        if !ok || sender.is_closed() {
            sender = connect_http1(addr).await?;
        }
    }
    caller.unsent = pace.unsent();
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
pub(crate) async fn connect_http1(
    addr: SocketAddr,
) -> Result<http1::SendRequest<Full<Bytes>>, BoxError> {
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
