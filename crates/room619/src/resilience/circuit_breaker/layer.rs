//! [`CircuitBreakerLayer`].

use std::sync::{Arc, Mutex};

use tower::Layer;

use crate::observability::metrics::{Metrics, ResilienceMetrics, labels::BreakerLabels};

use super::{Breaker, BreakerPolicy, CircuitBreaker, Mode, Observed, Shared};

/// Puts a circuit breaker in front of a service. Every service this layer
/// makes gets a breaker of its own; clones of that service share it.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    name: Arc<str>,
    policy: BreakerPolicy,
    mode: Mode,
    metrics: Option<(ResilienceMetrics, &'static str)>,
}

impl CircuitBreakerLayer {
    /// A breaker named after what it guards (used in errors and logs), that
    /// rejects calls while open.
    #[must_use]
    pub fn new(name: &str, policy: BreakerPolicy) -> Self {
        Self {
            name: name.into(),
            policy,
            mode: Mode::Reject,
            metrics: None,
        }
    }

    /// The same breaker, showing its state and transitions in `metrics`,
    /// labelled with the `protocol` of its calls (`grpc`, `http`).
    #[must_use]
    pub(crate) fn observed(mut self, metrics: Option<&Metrics>, protocol: &'static str) -> Self {
        self.metrics = metrics.map(|metrics| (metrics.resilience().clone(), protocol));
        self
    }

    /// The same breaker, reporting not ready while open instead (for
    /// instances under a balancer).
    #[must_use]
    pub fn unready_while_open(mut self) -> Self {
        self.mode = Mode::Unready;
        self
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let metrics = self.metrics.as_ref().map(|(metrics, protocol)| {
            let labels = BreakerLabels {
                breaker: Arc::clone(&self.name),
                protocol,
            };
            Observed::new(metrics.clone(), labels)
        });
        CircuitBreaker {
            inner,
            shared: Arc::new(Shared {
                name: Arc::clone(&self.name),
                failures: self.policy.failures.clone(),
                counts_deadlines: self
                    .policy
                    .failures
                    .is_failure_code(tonic::Code::DeadlineExceeded),
                deadline_floor: self.policy.slow_call_duration.min(super::DEADLINE_FLOOR),
                breaker: Mutex::new(Breaker::new(self.policy.clone())),
                metrics,
            }),
            mode: self.mode,
            sleep: None,
        }
    }
}
