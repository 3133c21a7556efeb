//! Graceful degradation: a fallback answer when a dependency is unavailable,
//! overloaded or too slow, chosen per call by the caller.
//!
//! A fallback applies to the failures that say "not now" rather than "no":
//! `UNAVAILABLE` (breaker open, no instance, connection lost),
//! `RESOURCE_EXHAUSTED` (bulkhead full) and `DEADLINE_EXCEEDED`. Other errors
//! (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) pass through unchanged.
//!
//! ```
//! use room619::resilience::fallback::Degrade as _;
//! use tonic::Status;
//!
//! let recommendations: Result<Vec<String>, Status> = Err(Status::unavailable("breaker open"));
//! // Show no recommendations rather than fail the whole page.
//! let shown = recommendations.or_fallback(Vec::new());
//! assert_eq!(shown.unwrap(), Vec::<String>::new());
//!
//! let missing: Result<Vec<String>, Status> = Err(Status::not_found("no such user"));
//! assert!(missing.or_fallback(Vec::new()).is_err());
//! ```
//!
//! Inside a service, [`ServiceContext::fallbacks`](crate::ServiceContext::fallbacks)
//! gives a [`Fallbacks`] that also counts every fallback used in
//! `room619_fallbacks_total{peer_service}`, so degraded answers show on a
//! dashboard rather than only in logs.

use std::sync::Arc;

use tonic::{Code, Status};

use crate::{Error, ErrorKind, observability::metrics::ResilienceMetrics};

/// Whether a failure is one a fallback may hide.
pub trait Degradable {
    /// `true` for unavailable, overloaded and timed-out calls.
    fn is_degradable(&self) -> bool;
}

impl Degradable for Status {
    fn is_degradable(&self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        )
    }
}

impl Degradable for Error {
    fn is_degradable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::ResourceExhausted | ErrorKind::DeadlineExceeded
        )
    }
}

/// Fallbacks on a call's result.
pub trait Degrade<T, E> {
    /// `value` instead of a degradable failure.
    ///
    /// # Errors
    ///
    /// Failures that are not degradable, unchanged.
    fn or_fallback(self, value: T) -> Result<T, E>;

    /// The closure's answer instead of a degradable failure (it sees the
    /// failure, e.g. to log it).
    ///
    /// # Errors
    ///
    /// Failures that are not degradable, unchanged.
    fn or_fallback_with(self, fallback: impl FnOnce(&E) -> T) -> Result<T, E>;
}

impl<T, E: Degradable> Degrade<T, E> for Result<T, E> {
    fn or_fallback(self, value: T) -> Result<T, E> {
        self.or_fallback_with(|_| value)
    }

    fn or_fallback_with(self, fallback: impl FnOnce(&E) -> T) -> Result<T, E> {
        match self {
            Err(error) if error.is_degradable() => {
                tracing::info!("dependency degraded; using the fallback");
                Ok(fallback(&error))
            }
            other => other,
        }
    }
}

/// Fallbacks for the calls to one downstream service, logged and counted in
/// the node's `room619_fallbacks_total{peer_service}`.
///
/// ```
/// # async fn demo(ctx: room619::ServiceContext) {
/// use tonic::Status;
///
/// let recommendations = ctx.fallbacks("recommendations");
/// let fetched: Result<Vec<String>, Status> = Err(Status::unavailable("breaker open"));
/// let shown = recommendations.or(fetched, Vec::new()); // counted
/// assert!(shown.unwrap().is_empty());
/// # }
/// ```
#[derive(Clone)]
pub struct Fallbacks {
    peer: Arc<str>,
    metrics: Option<ResilienceMetrics>,
}

impl std::fmt::Debug for Fallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallbacks")
            .field("peer_service", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Fallbacks {
    /// Fallbacks for calls to `peer_service`, logged but not counted (outside
    /// a node; a service uses [`ServiceContext::fallbacks`](crate::ServiceContext::fallbacks)).
    #[must_use]
    pub fn new(peer_service: &str) -> Self {
        Self {
            peer: Arc::from(peer_service),
            metrics: None,
        }
    }

    pub(crate) fn counted(peer_service: &str, metrics: ResilienceMetrics) -> Self {
        Self {
            peer: Arc::from(peer_service),
            metrics: Some(metrics),
        }
    }

    /// `value` instead of a degradable failure of `result`.
    ///
    /// # Errors
    ///
    /// Failures that are not degradable, unchanged.
    pub fn or<T, E: Degradable>(&self, result: Result<T, E>, value: T) -> Result<T, E> {
        self.or_with(result, |_| value)
    }

    /// The closure's answer instead of a degradable failure of `result`.
    ///
    /// # Errors
    ///
    /// Failures that are not degradable, unchanged.
    pub fn or_with<T, E: Degradable>(
        &self,
        result: Result<T, E>,
        fallback: impl FnOnce(&E) -> T,
    ) -> Result<T, E> {
        match result {
            Err(error) if error.is_degradable() => {
                tracing::info!(peer_service = %self.peer, "dependency degraded; using the fallback");
                if let Some(metrics) = &self.metrics {
                    metrics.fallback(&self.peer);
                }
                Ok(fallback(&error))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    use super::Fallbacks;
    use crate::observability::metrics::Metrics;

    #[test]
    fn a_used_fallback_is_counted_per_peer_and_others_are_not() {
        let metrics = Metrics::new("node");
        let pricing = Fallbacks::counted("pricing", metrics.resilience().clone());
        let degraded: Result<u64, Status> = Err(Status::unavailable("breaker open"));
        assert_eq!(pricing.or(degraded, 0).ok(), Some(0));
        let refused: Result<u64, Status> = Err(Status::invalid_argument("bad id"));
        assert!(pricing.or(refused, 0).is_err());
        let fine: Result<u64, Status> = Ok(7);
        assert_eq!(pricing.or_with(fine, |_| 0).ok(), Some(7));
        let slow: Result<u64, Status> = Err(Status::deadline_exceeded("slow"));
        assert_eq!(pricing.or_with(slow, |_| 1).ok(), Some(1));

        let text = metrics.render();
        assert!(
            text.contains("room619_fallbacks_total{peer_service=\"pricing\"} 2"),
            "{text}"
        );
    }
}
