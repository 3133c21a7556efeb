//! Liveness and readiness: `GET /health/live`, `GET /health/ready` and the
//! standard gRPC health service, all driven by the node's [`Phase`].

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use futures_util::future::join_all;
use http::StatusCode;
use serde::Serialize;
use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    discovery::{Discovery, DiscoveryStatus},
    service::{DependencyHealth, Health, Registry, ServiceState},
};

/// The path of the liveness endpoint.
pub const LIVE_PATH: &str = "/health/live";
/// The path of the readiness endpoint.
pub const READY_PATH: &str = "/health/ready";
/// A health check that takes longer than this counts as failing.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than one check all of a service's dependency checks may
/// take (each of a built service's is bounded by `HEALTH_CHECK_TIMEOUT`;
/// they run together).
const DEPENDENCIES_GRACE: Duration = Duration::from_secs(1);

/// Where the node is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Binding and running start hooks; not ready.
    Starting,
    /// Serving; ready when every service is running and healthy (one being
    /// added or removed at run time is left out).
    Running,
    /// Shutting down: not ready, finishing in-flight work.
    Draining,
    /// Stopped.
    Stopped,
}

/// The node's readiness, shared by the HTTP endpoints, the gRPC health
/// service and the lifecycle.
#[derive(Clone)]
pub(crate) struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    phase: watch::Sender<Phase>,
    registry: Registry,
    grpc: HealthReporter,
    /// The names the gRPC health service answers for, besides `""`.
    grpc_names: std::sync::Mutex<Vec<String>>,
    /// The node's discovery, whose status readiness reports.
    discovery: OnceLock<Arc<dyn Discovery>>,
}

impl Readiness {
    pub(crate) fn new(
        node: String,
        registry: Registry,
        grpc: HealthReporter,
        grpc_names: Vec<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                phase: watch::Sender::new(Phase::Starting),
                registry,
                grpc,
                grpc_names: std::sync::Mutex::new(grpc_names),
                discovery: OnceLock::new(),
            }),
        }
    }

    /// Reports `discovery`'s status with readiness (set once, at start).
    pub(crate) fn set_discovery(&self, discovery: Arc<dyn Discovery>) {
        if self.inner.discovery.set(discovery).is_err() {
            tracing::debug!("readiness already reports a discovery");
        }
    }

    /// The node's name.
    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    /// The services the node hosts.
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The node's discovery, once started.
    pub(crate) fn discovery(&self) -> Option<&Arc<dyn Discovery>> {
        self.inner.discovery.get()
    }

    pub(crate) fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Moves to `phase` and tells the gRPC health service: `SERVING` while
    /// running, `NOT_SERVING` otherwise.
    pub(crate) async fn set_phase(&self, phase: Phase) {
        self.inner.phase.send_replace(phase);
        let status = if phase == Phase::Running {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.inner.grpc.set_service_status("", status).await;
        let names = self
            .inner
            .grpc_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for name in &names {
            self.inner.grpc.set_service_status(name, status).await;
        }
    }

    /// The reporter behind the gRPC health service.
    pub(crate) fn reporter(&self) -> HealthReporter {
        self.inner.grpc.clone()
    }

    /// Replaces the names the gRPC health service answers for; names no
    /// longer served answer `NOT_SERVING`. Call [`refresh`](Self::refresh)
    /// after, to publish the statuses of new names.
    pub(crate) fn set_grpc_names(&self, names: Vec<String>) {
        let old = std::mem::replace(
            &mut *self
                .inner
                .grpc_names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            names,
        );
        let current = self
            .inner
            .grpc_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let reporter = self.inner.grpc.clone();
        let gone: Vec<String> = old.into_iter().filter(|n| !current.contains(n)).collect();
        if !gone.is_empty() {
            tokio::spawn(async move {
                for name in gone {
                    reporter
                        .set_service_status(&name, ServingStatus::NotServing)
                        .await;
                }
            });
        }
    }

    /// Publishes the current phase's status for every name again.
    pub(crate) async fn refresh(&self) {
        self.set_phase(self.phase()).await;
    }

    /// Checks every service and reports whether the node is ready.
    async fn report(&self) -> (bool, ReadinessReport) {
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
                let own = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, service.health());
                // Bounded here too: a `Service` of the application's own
                // may check its dependencies without a timeout.
                let others = tokio::time::timeout(
                    HEALTH_CHECK_TIMEOUT + DEPENDENCIES_GRACE,
                    service.dependencies(),
                );
                let (health, dependencies) = futures_util::join!(own, others);
                let health = health.unwrap_or_else(|_| {
                    Health::Unhealthy(format!(
                        "health check timed out after {HEALTH_CHECK_TIMEOUT:?}"
                    ))
                });
                let dependencies = dependencies.unwrap_or_else(|_| {
                    vec![DependencyHealth {
                        name: "dependencies".to_owned(),
                        health: Health::Unhealthy(format!(
                            "the dependency checks took longer than {:?}",
                            HEALTH_CHECK_TIMEOUT + DEPENDENCIES_GRACE
                        )),
                    }]
                });
                Some((health, dependencies))
            });
        let healths = join_all(checks).await;
        let mut ready = phase == Phase::Running;
        let mut degraded = false;
        let services = statuses
            .into_iter()
            .zip(healths)
            .map(|(status, checked)| {
                let (health, dependencies) = checked.unzip();
                let dependencies = dependencies.unwrap_or_default();
                let all = health.iter().chain(dependencies.iter().map(|d| &d.health));
                degraded |= all.clone().any(|h| matches!(h, Health::Degraded(_)));
                ready &= match status.state {
                    ServiceState::Running => {
                        health.is_some() && all.into_iter().all(Health::is_serving)
                    }
                    // On a running node, a service being added or removed
                    // (`add_service`, `remove_service`) takes no traffic
                    // yet, or no more: the others keep the node in rotation.
                    ServiceState::Registered | ServiceState::Starting | ServiceState::Stopping => {
                        phase == Phase::Running
                    }
                    ServiceState::Stopped | ServiceState::Failed => false,
                };
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
        (ready, report)
    }

    /// The admin routes: `/health/live`, `/health/ready` and `/registry`.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route(LIVE_PATH, get(live))
            .route(READY_PATH, get(ready))
            .route(super::registry::REGISTRY_PATH, get(super::registry::list))
            .with_state(self.clone())
    }
}

#[derive(Serialize)]
struct ReadinessReport {
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

#[derive(Serialize)]
struct DiscoveryReport {
    backend: &'static str,
    #[serde(flatten)]
    status: DiscoveryStatus,
}

#[derive(Serialize)]
struct ServiceReport {
    name: String,
    version: String,
    state: ServiceState,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<Health>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<DependencyHealth>,
}

async fn live(State(readiness): State<Readiness>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "live",
        "node": readiness.inner.node,
        "phase": readiness.phase(),
    }))
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, report) = readiness.report().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
