//! One round of checks: every running service's health and dependency
//! checks, run at once, each bounded in time and guarded against panics,
//! and the readiness report and gRPC health verdict they make.

use std::{future::Future, panic::AssertUnwindSafe, time::Duration};

use futures_util::{FutureExt as _, future::join_all};
use serde::Serialize;

use super::{Phase, Readiness, Verdict, serves};
use crate::{
    discovery::DiscoveryStatus,
    service::{DependencyHealth, Health, ServiceState},
};

/// A health check that takes longer than this counts as failing.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than one check all of a service's dependency checks may
/// take (each of a built service's is bounded by `HEALTH_CHECK_TIMEOUT`;
/// they run together).
const DEPENDENCIES_GRACE: Duration = Duration::from_secs(1);

/// The answer of `/health/ready`.
#[derive(Clone, Serialize)]
pub(super) struct ReadinessReport {
    status: &'static str,
    /// A service or dependency is degraded (still ready).
    degraded: bool,
    node: String,
    phase: Phase,
    services: Vec<ServiceReport>,
    /// Degraded discovery answers from the last known instances; the node
    /// stays ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery: Option<DiscoveryReport>,
}

#[derive(Clone, Serialize)]
struct DiscoveryReport {
    backend: &'static str,
    #[serde(flatten)]
    status: DiscoveryStatus,
}

#[derive(Clone, Serialize)]
struct ServiceReport {
    name: String,
    version: String,
    state: ServiceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<Health>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<DependencyHealth>,
}

impl Readiness {
    /// Checks every service and reports whether the node is ready, and
    /// whether each service serves.
    pub(super) async fn report(&self) -> (Verdict, ReadinessReport) {
        let round = self.next_round();
        let phase = self.phase();
        let (services, statuses): (Vec<_>, Vec<_>) =
            self.inner.registry.snapshot().into_iter().unzip();
        let checks = services
            .iter()
            .zip(&statuses)
            .map(|(service, status)| async move {
                if phase != Phase::Running || status.state != ServiceState::Running {
                    return None;
                }
                // Made inside the guard: a check that panics while making
                // its future fails like one that panics running it.
                let own = tokio::time::timeout(
                    HEALTH_CHECK_TIMEOUT,
                    unless_it_panics(async { service.health().await }),
                );
                // Bounded here too: a `Service` of the application's own
                // may check its dependencies without a timeout.
                let others = tokio::time::timeout(
                    HEALTH_CHECK_TIMEOUT + DEPENDENCIES_GRACE,
                    unless_it_panics(async { service.dependencies().await }),
                );
                let (health, dependencies) = futures_util::join!(own, others);
                let health = match health {
                    Ok(Some(health)) => health,
                    Ok(None) => Health::Unhealthy("health check panicked".to_owned()),
                    Err(_) => Health::Unhealthy(format!(
                        "health check timed out after {HEALTH_CHECK_TIMEOUT:?}"
                    )),
                };
                let dependencies = match dependencies {
                    Ok(Some(dependencies)) => dependencies,
                    Ok(None) => failing("the dependency checks panicked".to_owned()),
                    Err(_) => failing(format!(
                        "the dependency checks took longer than {:?}",
                        HEALTH_CHECK_TIMEOUT + DEPENDENCIES_GRACE
                    )),
                };
                Some((health, dependencies))
            });
        let healths = join_all(checks).await;
        let mut ready = phase == Phase::Running;
        let mut degraded = false;
        let mut serving = Vec::with_capacity(statuses.len());
        let services = statuses
            .into_iter()
            .zip(healths)
            .map(|(status, checked)| {
                let (health, dependencies) = checked.unzip();
                let dependencies = dependencies.unwrap_or_default();
                let all = health.iter().chain(dependencies.iter().map(|d| &d.health));
                degraded |= all.clone().any(|h| matches!(h, Health::Degraded(_)));
                let passing = health.is_some() && all.into_iter().all(Health::is_serving);
                let serves = serves(status.state, phase, passing);
                ready &= serves.unwrap_or(true);
                serving.push((status.descriptor.clone(), serves));
                ServiceReport {
                    name: status.descriptor.name().to_owned(),
                    version: status.descriptor.version().to_string(),
                    state: status.state,
                    health,
                    dependencies,
                }
            })
            .collect();
        let discovery = self.inner.discovery.get().map(|discovery| DiscoveryReport {
            backend: discovery.backend(),
            status: discovery.status(),
        });
        let report = ReadinessReport {
            status: if ready { "ready" } else { "not_ready" },
            degraded,
            node: self.inner.node.clone(),
            phase,
            services,
            discovery,
        };
        let verdict = Verdict {
            round,
            phase,
            ready,
            services: serving,
        };
        (verdict, report)
    }
}

/// What `check` answers, or `None` when it panics: a check's bug fails the
/// check, and neither the round (the background checks stop for good) nor
/// the `/health/ready` answer (its connection reset).
async fn unless_it_panics<T>(check: impl Future<Output = T>) -> Option<T> {
    AssertUnwindSafe(check).catch_unwind().await.ok()
}

/// The dependencies of a service whose checks did not answer: one failing
/// entry saying why.
fn failing(why: String) -> Vec<DependencyHealth> {
    vec![DependencyHealth {
        name: "dependencies".to_owned(),
        health: Health::Unhealthy(why),
    }]
}
