//! [`DependencyHealth`]: the named health of something a service depends on
//! (a database, NATS, a cache), checked whenever readiness is asked and
//! every few seconds for gRPC health.

use std::{sync::Arc, time::Duration};

use futures_util::future::{BoxFuture, join_all};
use serde::Serialize;

use super::Health;

/// A dependency check that takes longer than this counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A dependency's check, as [`ServiceBuilder::dependency`](super::ServiceBuilder::dependency) takes it.
pub(crate) type DependencyCheck = Arc<dyn Fn() -> BoxFuture<'static, Health> + Send + Sync>;

/// One dependency's name and health, as the readiness answer lists it:
/// `{"name": "postgres", "status": "degraded", "detail": "..."}`.
/// A degraded dependency keeps the node ready; an unhealthy (failing) one
/// makes readiness answer `503`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DependencyHealth {
    /// The name the service gave the dependency.
    pub name: String,
    /// What its check reported.
    #[serde(flatten)]
    pub health: Health,
}

impl DependencyHealth {
    /// A dependency's report.
    #[must_use]
    pub fn new(name: impl Into<String>, health: Health) -> Self {
        Self {
            name: name.into(),
            health,
        }
    }
}

/// Runs every check at once, each bounded by [`CHECK_TIMEOUT`].
pub(crate) fn check_all(
    checks: &[(String, DependencyCheck)],
) -> BoxFuture<'static, Vec<DependencyHealth>> {
    let checks: Vec<(String, BoxFuture<'static, Health>)> = checks
        .iter()
        .map(|(name, check)| (name.clone(), check()))
        .collect();
    Box::pin(join_all(checks.into_iter().map(
        |(name, check)| async move {
            let health = tokio::time::timeout(CHECK_TIMEOUT, check)
                .await
                .unwrap_or_else(|_| {
                    Health::Unhealthy(format!("check timed out after {CHECK_TIMEOUT:?}"))
                });
            DependencyHealth { name, health }
        },
    )))
}
