//! [`RetryLayer`].

use std::sync::Arc;

use tower::Layer;

use super::{EXHAUSTED_WARNING_EVERY, Retry, RetryPolicy, Shared, Throttle};

/// Retries calls as [`RetryPolicy`] allows. Services made by one layer share
/// one retry budget.
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// Retries calls to `name` (used in logs) under `policy`.
    #[must_use]
    pub fn new(name: &str, policy: RetryPolicy) -> Self {
        let budget = &policy.budget;
        let budget =
            super::super::budget::tps_budget(budget.ttl, budget.min_per_second, budget.ratio);
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                policy,
                budget,
                exhausted: Throttle::new(EXHAUSTED_WARNING_EVERY),
                metrics: None,
            }),
        }
    }

    /// The same retries, counted in `metrics` (before the layer is shared).
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

impl std::fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
