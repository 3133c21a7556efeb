//! Retries: exponential backoff with full jitter, only where safe, within a
//! budget and the deadline.
//!
//! A call is retried only when
//!
//! - it is **idempotent**: its gRPC method is listed in
//!   [`RetryPolicy::idempotent`] (as `/package.Service/Method`, or
//!   `/package.Service/*` for all of a service), or it is a non-gRPC
//!   `GET`, `HEAD`, `PUT`, `DELETE` or `OPTIONS`;
//! - its request body was at most [`RetryPolicy::max_buffered_body`] bytes (it
//!   is buffered to be sent again; a larger one goes out once, streamed) and
//!   complete: a client- or bidi-streaming call whose stream is still open
//!   (waiting on the answers) goes out at once and once;
//! - the outcome is **retryable**: a gRPC code in [`RetryPolicy::retryable_codes`]
//!   (default `UNAVAILABLE`), an HTTP status in [`RetryPolicy::retryable_http`]
//!   (default 502, 503, 504), a transport error, or an attempt cut by
//!   [`RetryPolicy::attempt_timeout`];
//! - the **budget** allows it: retries may add at most `ratio` of the calls of
//!   the last `ttl`, plus `min_per_second` (default 20 % + 10/s, as Finagle and
//!   Linkerd do), so a failing backend never sees a retry storm;
//! - the **deadline** leaves time for the backoff and another attempt.
//!
//! The n-th retry waits a random time in `[0, min(max_backoff, initial_backoff × 2ⁿ⁻¹))`.
//! Each attempt may have its own timeout ([`RetryPolicy::attempt_timeout`]).
//!
//! ```
//! use room619::resilience::retry::{RetryLayer, RetryPolicy};
//!
//! let policy = RetryPolicy {
//!     idempotent: vec!["/shop.echo.v1.Echo/Echo".into()],
//!     ..RetryPolicy::default()
//! };
//! let layer = RetryLayer::new("echo", policy);
//! ```

mod body;
mod layer;
#[cfg(test)]
mod tests;
pub(crate) mod throttle;

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

pub use body::ReplayBody;
pub(crate) use body::Replayable;
use futures_util::{
    TryFutureExt as _,
    future::{BoxFuture, Either, ErrInto},
};
use http::{Method, Request, Response};
pub use layer::RetryLayer;
use serde::{Deserialize, Serialize};
use throttle::Throttle;
use tokio::time::Instant;
use tower::{Service, ServiceExt as _, retry::budget::Budget as _};

use super::{Rejection, RejectionKind, budget::TpsBudget, code_from_name, status_in};
use crate::{
    error::BoxError,
    rpc::deadline::{Deadline, GRPC_TIMEOUT, HTTP_TIMEOUT, encode_timeout},
};

/// The least time a retry (or a hedge) is sent with, after its backoff:
/// with less left before the deadline, the call ends with the last
/// attempt's outcome.
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_millis(10);
/// How often a layer warns at most that its retry budget is exhausted (during
/// an outage it is, on every failed call).
const EXHAUSTED_WARNING_EVERY: Duration = Duration::from_secs(10);

/// When and how calls are retried; the defaults are safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off. Default: 3.
    pub max_attempts: u32,
    /// The first backoff's upper bound. Default: `25ms`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The cap on any backoff. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A timeout for each attempt, within the overall deadline. Default: none.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Option<Duration>,
    /// gRPC methods safe to retry: `/package.Service/Method`,
    /// `/package.Service/*`, or `*` for every method. Default: none. Any
    /// other pattern (one without the leading `/`) is a configuration
    /// error.
    pub idempotent: Vec<String>,
    /// gRPC codes worth retrying, by name. Default: `UNAVAILABLE`.
    pub retryable_codes: Vec<String>,
    /// HTTP statuses worth retrying. Default: 502, 503, 504.
    pub retryable_http: Vec<u16>,
    /// The largest request body buffered for a retry. Default: 64 KiB.
    pub max_buffered_body: usize,
    /// The retry budget.
    pub budget: BudgetPolicy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            attempt_timeout: None,
            idempotent: Vec::new(),
            retryable_codes: vec!["UNAVAILABLE".to_owned()],
            retryable_http: vec![502, 503, 504],
            max_buffered_body: 64 * 1024,
            budget: BudgetPolicy::default(),
        }
    }
}

/// How many retries the budget allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetPolicy {
    /// How long a call counts towards the budget. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Retries allowed per second regardless of traffic. Default: 10.
    pub min_per_second: u32,
    /// Retries allowed as a share of calls (0–1000). Default: 0.2.
    pub ratio: f32,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_second: 10,
            ratio: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Whether a request may be sent more than once.
    #[must_use]
    pub fn is_idempotent<B>(&self, request: &Request<B>) -> bool {
        if crate::rpc::is_grpc(request) {
            let path = request.uri().path();
            return self
                .idempotent
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == pattern,
                });
        }
        matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        )
    }

    /// Whether an outcome is worth another attempt.
    #[must_use]
    pub fn is_retryable<B>(&self, result: &Result<Response<B>, BoxError>) -> bool {
        let code_retryable = |code: tonic::Code| {
            self.retryable_codes
                .iter()
                .any(|name| code_from_name(name) == Some(code))
        };
        match result {
            Ok(response) => match response.headers().get(crate::rpc::grpc::GRPC_STATUS) {
                Some(status) => status
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse::<i32>().ok())
                    .is_some_and(|code| code_retryable(tonic::Code::from_i32(code))),
                None => self.retryable_http.contains(&response.status().as_u16()),
            },
            // An attempt cut by its own timeout is retried: the overall
            // deadline, checked before each retry, may still leave time. A
            // breaker that is open (the service's, or every instance's) is
            // not: it rejects again at once, and each such retry would spend
            // the budget the real ones need once it half-opens. No instance
            // at all is retried: a discovery gap (the one replica being
            // replaced) may close within the backoff.
            Err(error) => match error.downcast_ref::<Rejection>().map(Rejection::kind) {
                Some(RejectionKind::AttemptTimeout) => true,
                Some(RejectionKind::BreakerOpen) => false,
                _ => status_in(error).is_none_or(code_retryable),
            },
        }
    }

    /// The backoff before retry number `retry` (1-based): full jitter.
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

struct Shared {
    name: Arc<str>,
    policy: RetryPolicy,
    budget: TpsBudget,
    /// When the budget's exhaustion is logged.
    exhausted: Throttle,
    metrics: Option<crate::observability::metrics::ResilienceMetrics>,
}

/// The service made by [`RetryLayer`].
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.shared.name)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: ReplayBody,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future =
        Either<ErrInto<S::Future, BoxError>, BoxFuture<'static, Result<Response<ResB>, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        self.shared.budget.deposit();
        let policy = &self.shared.policy;
        if policy.attempt_timeout.is_none()
            && (policy.max_attempts <= 1 || !policy.is_idempotent(&request))
        {
            // Sent once: no buffering, no task of its own; with the time
            // left now, after the wait for a bulkhead slot.
            restate_timeout(&mut request, None);
            return Either::Left(self.inner.call(request).err_into());
        }
        // The ready service takes the first attempt; a clone takes the rest.
        let ready = self.inner.clone();
        let first = std::mem::replace(&mut self.inner, ready);
        Either::Right(Box::pin(run(first, request, Arc::clone(&self.shared))))
    }
}

async fn run<S, B, ResB>(
    mut service: S,
    request: Request<B>,
    shared: Arc<Shared>,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>> + Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: ReplayBody,
{
    let policy = &shared.policy;
    if policy.max_attempts <= 1 || !policy.is_idempotent(&request) {
        return attempt(&mut service, request, &shared).await;
    }
    let request = match Replayable::read(request, policy.max_buffered_body).await? {
        Ok(request) => request,
        Err(streamed) => {
            tracing::debug!(target_service = %shared.name, "request body too large, or a stream still open: sent once");
            return attempt(&mut service, streamed, &shared).await;
        }
    };
    let mut result = attempt(&mut service, request.request(), &shared).await;
    for retry in 1..policy.max_attempts {
        if !policy.is_retryable(&result) {
            break;
        }
        let backoff = policy.backoff(retry);
        // Time for the backoff and a little for the attempt, which the
        // deadline cuts short if it must (not a whole `attempt_timeout`:
        // deadlines shrink down a chain of calls, and the hops deep in it
        // would never retry).
        let needed = backoff.saturating_add(MIN_ATTEMPT);
        let deadline = Deadline::earliest(Deadline::current(), request.deadline());
        if deadline.is_some_and(|deadline| deadline.remaining() <= needed) {
            tracing::debug!(target_service = %shared.name, "no time left for a retry");
            break;
        }
        if !shared.budget.withdraw() {
            if let Some(metrics) = &shared.metrics {
                metrics.budget_exhausted(&shared.name);
            }
            if let Some(suppressed) = shared.exhausted.admit(Instant::now()) {
                tracing::warn!(
                    target_service = %shared.name,
                    suppressed_since_last_warning = suppressed,
                    "retry budget exhausted; not retrying"
                );
            }
            break;
        }
        tracing::debug!(target_service = %shared.name, retry, ?backoff, "retrying");
        if let Some(metrics) = &shared.metrics {
            metrics.retry(&shared.name);
        }
        tokio::time::sleep(backoff).await;
        service.ready().await.map_err(Into::into)?;
        result = attempt(&mut service, request.request(), &shared).await;
    }
    result
}

/// One attempt, bounded by the attempt timeout (and by the deadline, which
/// the transport enforces). The request carries the instant it is cut at
/// ([`AttemptDeadline`]), so that an instance's breaker below counts the cut
/// as a failure of that instance.
async fn attempt<S, B, ResB>(
    service: &mut S,
    mut request: Request<B>,
    shared: &Shared,
) -> Result<Response<ResB>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    let Some(timeout) = shared.policy.attempt_timeout else {
        restate_timeout(&mut request, None);
        return service.call(request).await.map_err(Into::into);
    };
    // At most a year away: later would overflow the clock.
    let cut_at = Instant::now() + timeout.min(Duration::from_secs(365 * 24 * 60 * 60));
    request.extensions_mut().insert(AttemptDeadline(cut_at));
    restate_timeout(&mut request, Some(timeout));
    match tokio::time::timeout_at(cut_at, service.call(request)).await {
        Ok(result) => result.map_err(Into::into),
        Err(_elapsed) => Err(Box::new(Rejection::attempt_timeout(&shared.name, timeout))),
    }
}

/// Tells the server of an attempt the time it has: what is left of the
/// call's deadline (kept in the request's extensions by room619's clients),
/// at most `attempt`. A retry or a hedge sent later than the first attempt
/// must not carry the first attempt's `grpc-timeout` / `x-request-timeout`:
/// the server would work on after the caller gave up.
pub(crate) fn restate_timeout<B>(request: &mut Request<B>, attempt: Option<Duration>) {
    let Some(deadline) = request.extensions().get::<Deadline>().copied() else {
        return;
    };
    let left = deadline.remaining();
    let left = attempt.map_or(left, |attempt| attempt.min(left));
    for name in [GRPC_TIMEOUT, HTTP_TIMEOUT] {
        if let Some(value) = request.headers_mut().get_mut(&name) {
            *value = encode_timeout(left);
        }
    }
}

/// When an attempt is cut by [`RetryPolicy::attempt_timeout`], carried in
/// the attempt's request extensions. A circuit breaker under the retry
/// layer (the per-instance breakers of a client) records a call it sees
/// dropped at or after this instant as failed: the attempt timed out on
/// its instance.
///
/// ```
/// use room619::resilience::retry::AttemptDeadline;
/// use tokio::time::{Duration, Instant};
///
/// let cut_at = Instant::now() + Duration::from_secs(1);
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(AttemptDeadline::at(cut_at));
/// assert_eq!(
///     request.extensions().get::<AttemptDeadline>().map(AttemptDeadline::instant),
///     Some(cut_at)
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptDeadline(Instant);

impl AttemptDeadline {
    /// An attempt cut at `instant`.
    #[must_use]
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The instant the attempt is cut at.
    #[must_use]
    pub fn instant(&self) -> Instant {
        self.0
    }
}
