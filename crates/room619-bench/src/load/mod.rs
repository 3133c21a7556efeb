//! Load: `concurrency` callers for a fixed time, closed or open loop. Every
//! latency goes into an HDR histogram (nanoseconds, 3 significant digits).
//!
//! - **Closed loop** (no [`LoadSpec::rate`]): each caller sends its next
//!   request as soon as the previous answer is in. At saturation the
//!   latencies are mostly queueing (concurrency over throughput), and a
//!   stall of the server delays requests that are then never sent, so it
//!   barely shows (coordinated omission).
//! - **Open loop** (`rate` requests per second, all callers together): the
//!   requests are sent on a fixed schedule and timed from their slot in it,
//!   not from when they went out; a request whose caller was still busy at
//!   its slot counts as *late*. The slots are released by a thread of their
//!   own ([`PACER_THREAD`]), as the `pace` module describes.
//!
//! - [`grpc_unary`]: unary `Echo` calls over `connections` HTTP/2
//!   connections (tonic channels), callers spread over them round-robin.
//! - [`rest_json`]: `POST /v1/echo` with a JSON body over one HTTP/1.1
//!   keep-alive connection per caller (hyper's client connection, the
//!   thinnest client there is), so `concurrency` requests are in flight.
//!
//! An answer that is not a success, does not echo what was sent or takes
//! longer than [`LoadSpec::timeout`] counts as an error and its latency is
//! not recorded.

mod caller;
mod pace;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use shop_proto::echo::v1::echo_client::EchoClient;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use self::{
    caller::{Call, Caller},
    pace::Pace,
};
use crate::{BoxError, echo::EchoMessage};

/// The name of the thread that releases the slots of an open-loop run.
pub const PACER_THREAD: &str = "bench-pacer";

/// The default of [`LoadSpec::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to send, how hard and for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// How long callers keep sending (an open-loop run sends the requests
    /// scheduled in this time, for at most as long again if it falls behind).
    pub duration: Duration,
    /// How many callers there are, so how many requests are in flight at
    /// most (one per caller).
    pub concurrency: usize,
    /// How many HTTP/2 connections the gRPC callers share (REST always uses
    /// one connection per caller).
    pub connections: usize,
    /// The message echoed.
    pub message: String,
    /// The `authorization` header every request carries, if any.
    pub authorization: Option<String>,
    /// `None`: closed loop. `Some(n)`: open loop, `n` requests per second
    /// in total on a fixed schedule.
    pub rate: Option<u32>,
    /// How long one request may take before it counts as an error.
    pub timeout: Duration,
}

impl LoadSpec {
    /// A closed-loop spec with no `authorization` and the default timeout
    /// (10 s).
    #[must_use]
    pub fn closed(
        duration: Duration,
        concurrency: usize,
        connections: usize,
        message: &str,
    ) -> Self {
        Self {
            duration,
            concurrency,
            connections,
            message: message.to_owned(),
            authorization: None,
            rate: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The outcome of one load run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Latencies of the successful requests, in nanoseconds: from each
    /// request's slot in the schedule in an open-loop run, from when it was
    /// sent in a closed-loop one.
    pub latencies: Histogram<u64>,
    /// Open loop: how long after its slot each request that was not late
    /// was sent, in nanoseconds (1 when before; empty in a closed loop):
    /// how punctual the pacing itself was. (A late request waited for its
    /// caller, and that wait is in its latency.)
    pub send_lag: Histogram<u64>,
    /// Requests that failed, were answered wrongly or timed out.
    pub errors: u64,
    /// Open loop: requests whose caller was still busy when their slot
    /// came (sent as soon as it was free, timed from the slot).
    pub late: u64,
    /// Open loop: requests of the schedule never sent, because the target
    /// was still behind when twice the duration had passed.
    pub unsent: u64,
    /// From the first request sent to the last answer received.
    pub elapsed: Duration,
    /// The offered rate of an open-loop run (`None`: closed loop).
    pub rate: Option<u32>,
    /// The CPU time of the open-loop pacer's thread over the run, in
    /// nanoseconds, when read (it has ended by the time the run returns,
    /// so it is gone from `/proc/self/task`).
    pub pacer_cpu_nanos: Option<u64>,
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

    /// Requests answered, successfully or not.
    #[must_use]
    pub fn answered(&self) -> u64 {
        self.latencies.len() + self.errors
    }
}

/// Drives unary `shop.echo.v1.Echo/Echo` calls against `addr`.
///
/// # Errors
///
/// If a connection cannot be opened before the run starts, or the run's
/// duration is out of range. Failed calls during the run are counted, not
/// returned.
pub async fn grpc_unary(addr: SocketAddr, spec: &LoadSpec) -> Result<Measurement, BoxError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut channels: Vec<Channel> = Vec::with_capacity(spec.connections.max(1));
    for _ in 0..spec.connections.max(1) {
        channels.push(endpoint.connect().await?);
    }
    let callers = (0..spec.concurrency.max(1)).map(|index| {
        let client = EchoClient::new(channels[index % channels.len()].clone());
        let message = spec.message.clone();
        move |call, pace| caller::grpc(client, message, call, pace)
    });
    run(spec, callers).await
}

/// Drives `POST /v1/echo` JSON requests against `addr`.
///
/// # Errors
///
/// If a connection cannot be opened before the run starts, or the run's
/// duration is out of range. Failed requests during the run are counted
/// (and the connection reopened), not returned.
pub async fn rest_json(addr: SocketAddr, spec: &LoadSpec) -> Result<Measurement, BoxError> {
    let body = Bytes::from(serde_json::to_vec(&EchoMessage {
        message: spec.message.clone(),
    })?);
    let mut senders = Vec::with_capacity(spec.concurrency.max(1));
    for _ in 0..spec.concurrency.max(1) {
        senders.push(caller::connect_http1(addr).await?);
    }
    let callers = senders.into_iter().map(|sender| {
        let body = body.clone();
        move |call, pace| caller::rest(addr, sender, body, call, pace)
    });
    run(spec, callers).await
}

/// Starts every caller at once, each with its turns from now, and merges
/// what they measured.
async fn run<C, F>(
    spec: &LoadSpec,
    callers: impl Iterator<Item = C>,
) -> Result<Measurement, BoxError>
where
    C: FnOnce(Call, Pace) -> F,
    F: Future<Output = Result<Caller, BoxError>> + Send + 'static,
{
    let call = Call {
        authorization: spec.authorization.clone(),
        timeout: spec.timeout,
    };
    let start = Instant::now();
    let (paces, pacer_thread) = pace::plan(start, spec.duration, spec.rate, spec.concurrency)?;
    let mut tasks = JoinSet::new();
    for (caller, pace) in callers.zip(paces) {
        tasks.spawn(caller(call.clone(), pace));
    }
    let mut total = Caller::new()?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(&joined??)?;
    }
    let elapsed = start.elapsed();
    let (dropped, pacer_cpu_nanos) = match pacer_thread {
        Some(thread) => thread.finish().await?,
        None => (0, None),
    };
    Ok(Measurement {
        latencies: total.latencies,
        send_lag: total.send_lag,
        errors: total.errors,
        late: total.late,
        unsent: total.unsent + dropped,
        elapsed,
        rate: spec.rate,
        pacer_cpu_nanos,
    })
}

/// A count as a float without the lossy `as` cast: exact below 2^53, which
/// request counts and nanosecond latencies here never reach.
#[must_use]
pub fn as_f64(value: u64) -> f64 {
    let high = u32::try_from(value >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(value & u64::from(u32::MAX)).unwrap_or(u32::MAX);
    f64::from(high).mul_add(4_294_967_296.0, f64::from(low))
}
