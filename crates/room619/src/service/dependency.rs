//! [`DependencyHealth`]: the named health of something a service depends on
//! (a database, NATS, a cache), checked whenever readiness is asked and
//! every few seconds for gRPC health.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::{
    FutureExt as _,
    future::{BoxFuture, join_all},
};
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

/// Runs every check at once, each bounded by [`CHECK_TIMEOUT`]; one that
/// panics (making its future or running it) is failing, and the others are
/// reported as usual.
pub(crate) fn check_all(
    checks: &[(String, DependencyCheck)],
) -> BoxFuture<'static, Vec<DependencyHealth>> {
    let checks = checks.to_vec();
    Box::pin(join_all(checks.into_iter().map(
        |(name, check)| async move {
            let checked = AssertUnwindSafe(async move { check().await }).catch_unwind();
            let health = match tokio::time::timeout(CHECK_TIMEOUT, checked).await {
                Ok(Ok(health)) => health,
                Ok(Err(_)) => Health::Unhealthy("dependency check panicked".to_owned()),
                Err(_) => Health::Unhealthy(format!("check timed out after {CHECK_TIMEOUT:?}")),
            };
            DependencyHealth { name, health }
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(health: fn() -> Health) -> DependencyCheck {
        Arc::new(move || Box::pin(async move { health() }))
    }

    #[tokio::test]
    async fn a_panicking_check_fails_and_the_others_are_still_reported() {
        let panics_making: DependencyCheck =
            Arc::new(|| -> BoxFuture<'static, Health> { panic!("a bug making the check") });
        let checks = [
            ("postgres".to_owned(), check(|| Health::Healthy)),
            ("cache".to_owned(), check(|| panic!("a bug in the check"))),
            ("nats".to_owned(), panics_making),
        ];
        let reports = check_all(&checks).await;
        assert_eq!(
            reports[0],
            DependencyHealth::new("postgres", Health::Healthy)
        );
        for report in &reports[1..] {
            assert_eq!(
                report.health,
                Health::Unhealthy("dependency check panicked".to_owned()),
                "{}",
                report.name
            );
        }
        assert_eq!(reports.len(), 3);
    }
}
