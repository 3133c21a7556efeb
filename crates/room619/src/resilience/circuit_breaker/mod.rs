//! A circuit breaker: stop calling a backend that keeps failing, probe it
//! after a while, resume when it answers again.
//!
//! - **Closed**: calls flow and their outcomes fill a sliding window (the last
//!   N calls, or the calls of the last T). Once the window holds at least
//!   `minimum_calls`, the first time the failure rate reaches `failure_rate`
//!   or the slow-call rate reaches `slow_call_rate` the breaker **opens**; so
//!   it does after `consecutive_failures` failures in a row (when non-zero).
//! - **Open**: calls are rejected at once with `UNAVAILABLE` ("circuit breaker
//!   … is open") without touching the wire, for `open_duration`.
//! - **Half-open**: up to `half_open_probes` calls go through; one failure (or
//!   slow call) reopens, all probes succeeding close it again.
//!
//! What counts as a failure is a [`FailurePolicy`]. A call that never
//! finishes counts too: one cut at its attempt's timeout (the retry layer
//! above marks each attempt with its [`AttemptDeadline`]) is a failure, and
//! so is one cut at its caller's deadline (the [`Deadline`] in its
//! extensions) when `DEADLINE_EXCEEDED` is one; one dropped after running
//! for `slow_call_duration` is a slow call; so a hung instance trips its
//! breaker. A call dropped sooner (its caller gave up, another hedge
//! answered) counts for nothing. A half-open breaker whose probes are all
//! out, one of them for `slow_call_duration`, reopens: a hung probe is a
//! slow one.
//!
//! Running out of the caller's time blames the backend only when the caller
//! gave it time enough: a call whose deadline left it less than
//! [`DEADLINE_FLOOR`] (100 ms), or less than `slow_call_duration` if that is
//! shorter, when it was admitted, then cut at that deadline, or answered
//! `DEADLINE_EXCEEDED` or 504, or failed once the deadline had passed,
//! counts for nothing, neither success nor failure (a probe's slot is given
//! back). Else a caller running late (an upstream that slowed, leaving its
//! handlers a few milliseconds) would open the breaker of a healthy backend
//! for every caller.
//!
//! A breaker in front of a whole service rejects calls ([`Mode::Reject`]). A
//! breaker per instance under a balancer instead reports itself *not ready*
//! while open, or half-open with every probe out ([`Mode::Unready`]), so the
//! balancer sends traffic elsewhere.
//!
//! ```
//! use room619::resilience::circuit_breaker::{BreakerPolicy, CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//!
//! let layer = CircuitBreakerLayer::new("users", BreakerPolicy::default());
//! # let svc = tower::service_fn(|_: http::Request<()>| async { Ok::<_, room619::error::BoxError>(http::Response::new(())) });
//! let guarded = ServiceBuilder::new().layer(layer).service(svc);
//! ```

mod future;
mod layer;
mod state;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use future::Bounds;
pub use future::ResponseFuture;

/// The least time a caller's deadline must leave a call for the call to be
/// blamed on the backend when it runs out of it: a caller that sends a call
/// with a few milliseconds left (an upstream running late) says nothing of
/// the backend, while a backend that hangs is still caught by callers
/// giving it the usual tenths of a second and more.
pub const DEADLINE_FLOOR: Duration = Duration::from_millis(100);
use http::Request;
pub use layer::CircuitBreakerLayer;
use serde::{Deserialize, Serialize};
pub use state::{Breaker, BreakerState, Permit, Transition};
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::{FailurePolicy, Rejection, retry::AttemptDeadline};
use crate::{
    error::BoxError,
    observability::metrics::{ResilienceMetrics, labels::BreakerLabels},
    rpc::deadline::Deadline,
};

/// The window a breaker counts outcomes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The last N calls.
    Count(u32),
    /// The calls of the last span of time.
    Time(#[serde(with = "humantime_serde")] Duration),
}

/// A breaker's settings; the defaults are safe for most backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// The sliding window. Default: the last 100 calls.
    pub window: Window,
    /// Calls the window must hold before rates count. Default: 20.
    pub minimum_calls: u32,
    /// Failure rate (0–1) that opens the breaker. Default: 0.5.
    pub failure_rate: f64,
    /// Slow-call rate (0–1) that opens the breaker. Default: 1.0 (only when
    /// every call is slow).
    pub slow_call_rate: f64,
    /// A call at least this long is slow. Default: `5s`. A call whose
    /// caller's deadline left it less than this (or less than 100 ms, if
    /// this is longer) counts for nothing when it runs out of that time (see
    /// the [module](crate::resilience::circuit_breaker)).
    #[serde(with = "humantime_serde")]
    pub slow_call_duration: Duration,
    /// Failures in a row that open the breaker regardless of rates; 0 turns
    /// the rule off. Default: 0.
    pub consecutive_failures: u32,
    /// How long it stays open before probing. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Probe calls allowed while half-open. Default: 3.
    pub half_open_probes: u32,
    /// Which outcomes are failures.
    pub failures: FailurePolicy,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window: Window::Count(100),
            minimum_calls: 20,
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_duration: Duration::from_secs(5),
            consecutive_failures: 0,
            open_duration: Duration::from_secs(10),
            half_open_probes: 3,
            failures: FailurePolicy::default(),
        }
    }
}

/// What an open breaker does to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reject calls with `UNAVAILABLE`.
    Reject,
    /// Report not ready (for a balancer to pick another instance); a call
    /// that still arrives is rejected.
    Unready,
}

/// The breaker's state, shared by every clone of the service.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) breaker: Mutex<Breaker>,
    pub(crate) failures: FailurePolicy,
    /// Whether `DEADLINE_EXCEEDED` is a failure, and so is a call cut at
    /// its caller's deadline.
    pub(crate) counts_deadlines: bool,
    /// A call given less time than this by its caller's deadline is not
    /// blamed for running out of it: the policy's `slow_call_duration`, at
    /// most [`DEADLINE_FLOOR`].
    pub(crate) deadline_floor: Duration,
    pub(crate) metrics: Option<Observed>,
}

/// Where a breaker shows its state; its series go with it.
pub(crate) struct Observed {
    pub(crate) metrics: ResilienceMetrics,
    pub(crate) labels: BreakerLabels,
}

impl Observed {
    pub(crate) fn new(metrics: ResilienceMetrics, labels: BreakerLabels) -> Self {
        metrics.breaker_created(&labels);
        Self { metrics, labels }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.metrics.breaker_dropped(&self.labels);
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn report(&self, transition: Option<Transition>) {
        if let Some(Transition { from, to }) = transition {
            if let Some(Observed { metrics, labels }) = &self.metrics {
                metrics.breaker_transition(labels, from, to);
            }
            if to == BreakerState::Open {
                tracing::warn!(target_service = %self.name, ?from, ?to, "circuit breaker opened");
            } else {
                tracing::info!(target_service = %self.name, ?from, ?to, "circuit breaker changed state");
            }
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
    mode: Mode,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            mode: self.mode,
            sleep: None,
        }
    }
}

impl<S> CircuitBreaker<S> {
    /// The breaker's current state.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.shared.lock().state(Instant::now())
    }

    /// Whether it is open (rejects every call) now.
    pub(crate) fn is_open(&self) -> bool {
        self.shared.lock().open_until(Instant::now()).is_some()
    }
}

impl<S, B, ResB> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = http::Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.mode == Mode::Unready {
            let next = self.shared.lock().next_admission(Instant::now());
            if let Some(until) = next {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if sleep.deadline() != until {
                    sleep.as_mut().reset(until);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            self.sleep = None;
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // One reading of the clock for the admission, the deadline's
        // judgement and the call's start.
        let now = Instant::now();
        let (permit, transition) = self.shared.lock().try_acquire(now);
        self.shared.report(transition);
        if let Some(permit) = permit {
            let attempt = request
                .extensions()
                .get::<AttemptDeadline>()
                .map(AttemptDeadline::instant);
            // room619's clients drop a call at its caller's deadline: cut
            // there, it is the backend not answering in time, as a
            // `DEADLINE_EXCEEDED` answer would be; unless the caller left it
            // less time than a backend may take without being slow.
            let deadline = request.extensions().get::<Deadline>().map(|deadline| {
                let left = deadline.instant().saturating_duration_since(now);
                (deadline.instant(), left < self.shared.deadline_floor)
            });
            ResponseFuture::admitted(
                self.inner.call(request),
                permit,
                now,
                Bounds { attempt, deadline },
                Arc::clone(&self.shared),
            )
        } else {
            tracing::debug!(target_service = %self.shared.name, "circuit breaker rejected a call");
            ResponseFuture::rejected(Rejection::breaker_open(&self.shared.name))
        }
    }
}

impl<S> fmt::Debug for CircuitBreaker<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}
