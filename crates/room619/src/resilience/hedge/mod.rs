//! Hedging: a second attempt at a slow idempotent read, after a latency
//! percentile; whichever answers first wins.
//!
//! A call is hedged only when
//!
//! - it is listed: its gRPC method matches [`HedgePolicy::methods`]
//!   (`/package.Service/Method` or `/package.Service/*`), or it is an HTTP
//!   `GET` / `HEAD` and [`HedgePolicy::http_reads`] is on — hedge reads only:
//!   both attempts may reach a backend;
//! - its body was at most [`HedgePolicy::max_buffered_body`] bytes;
//! - at least [`HedgePolicy::min_samples`] latencies of hedged methods are
//!   known; the delay is then their [`HedgePolicy::percentile`] (default p95),
//!   within [`HedgePolicy::min_delay`] and [`HedgePolicy::max_delay`];
//! - the hedge budget allows it: hedges may add at most
//!   [`HedgePolicy::max_ratio`] (default 10 %) of hedged calls, so a slow
//!   backend never sees its load doubled;
//! - the deadline, if any (the earlier of the task's and the one room619's
//!   clients keep in the request), leaves more than the least time a retry
//!   is sent with (10 ms).
//!
//! The first usable answer wins and the other attempt is cancelled; a
//! failure (a transport error, `UNAVAILABLE`, `RESOURCE_EXHAUSTED` or a 5xx)
//! waits for the other attempt. Under room619's balancer each attempt picks
//! its own instance, so the hedge usually goes elsewhere.
//!
//! ```
//! use room619::resilience::hedge::{HedgeLayer, HedgePolicy};
//!
//! let policy = HedgePolicy {
//!     methods: vec!["/users.v1.Users/GetUser".into()],
//!     ..HedgePolicy::default()
//! };
//! let layer = HedgeLayer::new("users", policy);
//! ```

mod latency;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    pin::pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use latency::LatencyWindow;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt as _, retry::budget::Budget as _};

use super::{
    budget::{TpsBudget, tps_budget},
    retry::{MIN_ATTEMPT, ReplayBody, Replayable},
};
use crate::{error::BoxError, rpc::deadline::Deadline};

/// Which calls are hedged and when; hedging is off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgePolicy {
    /// gRPC methods to hedge: `/package.Service/Method` or
    /// `/package.Service/*`. Default: none.
    pub methods: Vec<String>,
    /// Hedge HTTP `GET` and `HEAD` requests. Default: `false`.
    pub http_reads: bool,
    /// The latency percentile after which the hedge goes out, in (0, 1).
    /// Default: 0.95.
    pub percentile: f64,
    /// Latencies needed before any call is hedged. Default: 20.
    pub min_samples: usize,
    /// The shortest hedge delay. Default: `5ms`.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// The longest hedge delay. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Hedges allowed as a share of hedged calls, over 10 s (0–1000).
    /// Default: 0.1.
    pub max_ratio: f32,
    /// The largest request body buffered to be sent twice. Default: 64 KiB.
    pub max_buffered_body: usize,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            methods: Vec::new(),
            http_reads: false,
            percentile: 0.95,
            min_samples: 20,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1),
            max_ratio: 0.1,
            max_buffered_body: 64 * 1024,
        }
    }
}

impl HedgePolicy {
    /// Whether any call is hedged at all.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.http_reads || !self.methods.is_empty()
    }

    /// Whether `request` may be hedged.
    #[must_use]
    pub fn hedges<B>(&self, request: &Request<B>) -> bool {
        if crate::rpc::is_grpc(request) {
            let path = request.uri().path();
            return self
                .methods
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == pattern,
                });
        }
        self.http_reads && matches!(*request.method(), Method::GET | Method::HEAD)
    }

    /// Checks the values; the error names the field and the problem.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.percentile > 0.0 && self.percentile < 1.0) {
            return Err((
                "percentile",
                format!("must be in (0, 1) (got {})", self.percentile),
            ));
        }
        if self.max_delay < self.min_delay {
            return Err(("max_delay", "must be at least min_delay".to_owned()));
        }
        if !(0.0..=1000.0).contains(&self.max_ratio) {
            return Err((
                "max_ratio",
                format!("must be in [0, 1000] (got {})", self.max_ratio),
            ));
        }
        Ok(())
    }
}

/// Hedges calls as [`HedgePolicy`] says. Services made by one layer share one
/// latency window and one hedge budget.
#[derive(Clone)]
pub struct HedgeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    policy: HedgePolicy,
    latencies: LatencyWindow,
    budget: TpsBudget,
    metrics: Option<crate::observability::metrics::ResilienceMetrics>,
}

impl HedgeLayer {
    /// Hedges calls to `name` (used in logs) under `policy`.
    #[must_use]
    pub fn new(name: &str, policy: HedgePolicy) -> Self {
        let latencies = LatencyWindow::new(
            policy.percentile,
            policy.min_samples,
            policy.min_delay,
            policy.max_delay,
        );
        let budget = tps_budget(Duration::from_secs(10), 0, policy.max_ratio);
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                policy,
                latencies,
                budget,
                metrics: None,
            }),
        }
    }

    /// The same hedging, counted in `metrics` (before the layer is shared).
    #[must_use]
    pub(crate) fn observed(
        mut self,
        metrics: Option<&crate::observability::metrics::Metrics>,
    ) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = metrics.map(|metrics| metrics.resilience().clone());
        }
        self
    }
}

impl fmt::Debug for HedgeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("name", &self.shared.name)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`HedgeLayer`].
pub struct Hedge<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Hedge<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB> Service<Request<B>> for Hedge<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: ReplayBody,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ResB>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let ready = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, ready);
        if !self.shared.policy.hedges(&request) {
            let call = first.call(request);
            return Box::pin(async move { call.await.map_err(Into::into) });
        }
        let second = self.inner.clone();
        Box::pin(run(first, second, request, Arc::clone(&self.shared)))
    }
}

/// Which attempt answered first.
enum First {
    Original,
    Hedge,
}

async fn run<S, B, ResB>(
    mut first: S,
    mut second: S,
    request: Request<B>,
    shared: Arc<Shared>,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody,
{
    let request = match Replayable::read(request, shared.policy.max_buffered_body).await? {
        Ok(request) => request,
        Err(streamed) => return first.call(streamed).await.map_err(Into::into),
    };
    shared.budget.deposit();
    let started = Instant::now();
    let mut original = pin!(first.call(request.request()));
    let Some(delay) = shared.latencies.delay() else {
        let result = original.await.map_err(Into::into);
        shared.latencies.record(started.elapsed());
        return result;
    };
    tokio::select! {
        biased;
        result = &mut original => {
            shared.latencies.record(started.elapsed());
            return result.map_err(Into::into);
        }
        () = tokio::time::sleep(delay) => {}
    }
    // As a retry: a hedge with next to no time left would only load the
    // backend with a call cut at once.
    let deadline = Deadline::earliest(Deadline::current(), request.deadline());
    if deadline.is_some_and(|deadline| deadline.remaining() <= MIN_ATTEMPT)
        || !shared.budget.withdraw()
    {
        tracing::debug!(target_service = %shared.name, "no hedge: budget or deadline exhausted");
        let result = original.await.map_err(Into::into);
        shared.latencies.record(started.elapsed());
        return result;
    }
    tracing::debug!(target_service = %shared.name, ?delay, "hedging a slow call");
    if let Some(metrics) = &shared.metrics {
        metrics.hedge(&shared.name);
    }
    let mut hedge = pin!(async {
        second.ready().await.map_err(Into::into)?;
        let mut hedged = request.request();
        // Sent later than the original: it has less time left.
        crate::resilience::retry::restate_timeout(&mut hedged, None);
        second.call(hedged).await.map_err(Into::into)
    });
    let (result, answered) = tokio::select! {
        result = &mut original => (result.map_err(Into::into), First::Original),
        result = &mut hedge => (result, First::Hedge),
    };
    shared.latencies.record(started.elapsed());
    if usable(&result) {
        return result;
    }
    let other = match answered {
        First::Original => hedge.await,
        First::Hedge => original.await.map_err(Into::into),
    };
    if usable(&other) { other } else { result }
}

/// Whether an answer is worth returning rather than waiting for the other
/// attempt: not a transport error, a 5xx, or a trailers-only gRPC
/// `UNAVAILABLE` / `RESOURCE_EXHAUSTED`.
fn usable<B>(result: &Result<Response<B>, BoxError>) -> bool {
    match result {
        Ok(response) => {
            !response.status().is_server_error()
                && response
                    .headers()
                    .get(crate::rpc::grpc::GRPC_STATUS)
                    .is_none_or(|code| code != "14" && code != "8")
        }
        Err(_) => false,
    }
}
