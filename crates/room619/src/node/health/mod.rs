//! Liveness and readiness: `GET /health/live`, `GET /health/ready` and the
//! standard gRPC health service, all driven by the node's [`Phase`] and the
//! services' health checks.
//!
//! The gRPC health service gives the verdict of `/health/ready`: `""` is
//! `SERVING` when the node is ready, and each name of a service (its
//! room619 name, the names of its gRPC services) when that service runs and
//! its checks and dependencies pass. The checks run when the node starts
//! running, when a service is added or removed, for `/health/ready` calls,
//! and every `CHECK_INTERVAL` (5 s) in between; only a status that changes
//! is published, so `Watch` streams see changes only. A check that panics
//! fails, as one that overruns its timeout does.
//!
//! `/health/ready` is public and may be asked often (every probe, every
//! load balancer): calls that arrive while a round of checks runs for it
//! (the background rounds are apart, and may run beside it) wait for that
//! round and share its answer, and an answer is given again
//! for `READY_CACHE_AGE` (1 s) unless the phase or the services have
//! changed since, so the checks (a database's, say) run about once a second
//! however often readiness is asked.
//!
//! Once the node drains, open `Watch` streams end ([`grpc`]), after the
//! `NOT_SERVING` of the shutdown: they do not hold it up.

mod grpc;
mod report;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use http::StatusCode;
use serde::Serialize;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

pub(crate) use grpc::GrpcHealthServer;

use self::report::ReadinessReport;
use crate::{
    discovery::Discovery,
    service::{Registry, ServiceDescriptor, ServiceState},
};

/// The path of the liveness endpoint.
pub const LIVE_PATH: &str = "/health/live";
/// The path of the readiness endpoint.
pub const READY_PATH: &str = "/health/ready";
/// How long the node waits, after a round of checks has ended, before it
/// checks again for the gRPC health service (one round at a time: a round
/// lasts at most 6 s, its checks' timeouts).
const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a `/health/ready` answer is given again, from when its round
/// of checks began, unless the phase or the services change meanwhile.
const READY_CACHE_AGE: Duration = Duration::from_secs(1);

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

/// A name the gRPC health service answers for besides `""` (a hosted gRPC
/// service's, or a room619 service's own), and the service behind it.
pub(crate) type GrpcName = (String, ServiceDescriptor);

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
    grpc_names: std::sync::Mutex<Vec<GrpcName>>,
    /// What the gRPC health service was told; held while telling it, so
    /// verdicts are published one at a time.
    published: tokio::sync::Mutex<Published>,
    /// Numbers the verdicts in the order they began (from 1), so an older
    /// one finishing late does not overwrite a newer one.
    rounds: AtomicU64,
    /// The node's discovery, whose status readiness reports.
    discovery: OnceLock<Arc<dyn Discovery>>,
    /// Cancelled once the node drains: the gRPC health service's `Watch`
    /// streams end.
    watches_end: CancellationToken,
    /// The last `/health/ready` answer; held while a round of checks runs
    /// for it, so that the calls arriving meanwhile wait for it.
    answered: tokio::sync::Mutex<Option<Answered>>,
    /// Counts the changes of phase and of services: an answer from before
    /// one is not given again.
    changes: AtomicU64,
}

/// A `/health/ready` answer, given again while it is fresh.
struct Answered {
    /// When its round of checks began.
    began: Instant,
    /// When its round ended: the calls that arrived before, while it ran,
    /// share it whatever its age.
    ended: Instant,
    /// [`Inner::changes`] when its round began.
    changes: u64,
    ready: bool,
    report: ReadinessReport,
}

/// The statuses the gRPC health service holds, as this node set them.
#[derive(Default)]
struct Published {
    statuses: HashMap<String, ServingStatus>,
    /// The newest verdict published.
    round: u64,
}

/// What one round of checks (or a phase other than running) tells the gRPC
/// health service.
struct Verdict {
    /// Its number: see `Inner::rounds`.
    round: u64,
    /// The phase it was made in.
    phase: Phase,
    /// Whether the node is ready (as `/health/ready` answers).
    ready: bool,
    /// Whether each service serves: `None` for one being added or removed
    /// on a running node, which is left out, as from readiness.
    services: Vec<(ServiceDescriptor, Option<bool>)>,
}

impl Verdict {
    /// The status of a name whose services are `owners` (one name may stand
    /// for several major versions): `SERVING` when one of them serves and
    /// none that counts does not. A service no longer known does not serve.
    fn status<'a>(&self, owners: impl Iterator<Item = &'a ServiceDescriptor>) -> ServingStatus {
        let mut serving = false;
        for owner in owners {
            let known = self.services.iter().find(|(service, _)| service == owner);
            match known.map_or(Some(false), |(_, serves)| *serves) {
                Some(true) => serving = true,
                Some(false) => return ServingStatus::NotServing,
                None => {}
            }
        }
        if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}

impl Readiness {
    /// Readiness for `node`'s `registry`; its gRPC health service
    /// ([`grpc_service`](Self::grpc_service)) answers for `""` only until
    /// [`set_grpc_names`](Self::set_grpc_names).
    pub(crate) fn new(node: String, registry: Registry) -> Self {
        Self {
            inner: Arc::new(Inner {
                node,
                phase: watch::Sender::new(Phase::Starting),
                registry,
                grpc: HealthReporter::new(),
                grpc_names: std::sync::Mutex::new(Vec::new()),
                published: tokio::sync::Mutex::new(Published::default()),
                rounds: AtomicU64::new(0),
                discovery: OnceLock::new(),
                watches_end: CancellationToken::new(),
                answered: tokio::sync::Mutex::new(None),
                changes: AtomicU64::new(0),
            }),
        }
    }

    /// The gRPC health service (`grpc.health.v1.Health`) answering what
    /// this readiness publishes, whose `Watch` streams end with
    /// [`end_watches`](Self::end_watches).
    pub(crate) fn grpc_service(&self) -> GrpcHealthServer {
        grpc::server(self.inner.grpc.clone(), self.inner.watches_end.clone())
    }

    /// Ends the open `Watch` streams of the gRPC health service (and those
    /// begun later, after their first status), once what they wait for has
    /// been published: the node drains, and they must not hold up its
    /// connections.
    pub(crate) fn end_watches(&self) {
        self.inner.watches_end.cancel();
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

    /// Moves to `phase` and tells the gRPC health service: while running,
    /// the services' states at once (a running service taken to serve), then
    /// the verdict of a round of checks run beside, so a slow check holds
    /// up neither a start nor `add_service`; `NOT_SERVING` for every name
    /// otherwise. Once stopped, `Watch` streams end.
    pub(crate) async fn set_phase(&self, phase: Phase) {
        self.inner.phase.send_replace(phase);
        // `refresh` comes here too: services were added or removed.
        self.inner.changes.fetch_add(1, Ordering::SeqCst);
        if phase == Phase::Running {
            self.publish(&self.by_states()).await;
            let readiness = self.clone();
            tokio::spawn(async move { readiness.check().await });
        } else {
            let verdict = Verdict {
                round: self.next_round(),
                phase,
                ready: false,
                services: Vec::new(),
            };
            self.publish(&verdict).await;
            if phase == Phase::Stopped {
                self.end_watches();
            }
        }
    }

    /// Replaces the names the gRPC health service answers for; names no
    /// longer served answer `NOT_SERVING`. Call [`refresh`](Self::refresh)
    /// after, to publish the statuses of new names.
    pub(crate) fn set_grpc_names(&self, names: Vec<GrpcName>) {
        let old = std::mem::replace(&mut *self.grpc_names_lock(), names);
        let current: HashSet<String> = self.grpc_names().into_iter().map(|(n, _)| n).collect();
        if old.iter().any(|(name, _)| !current.contains(name)) {
            let readiness = self.clone();
            tokio::spawn(async move { readiness.publish_gone().await });
        }
    }

    /// Publishes the current phase's statuses for every name again (while
    /// running, from a round of checks run now).
    pub(crate) async fn refresh(&self) {
        self.set_phase(self.phase()).await;
    }

    /// Runs a round of checks every `CHECK_INTERVAL`, one at a time, and
    /// tells the gRPC health service what changed, until `shutdown`.
    pub(crate) fn spawn_checks(&self, shutdown: CancellationToken) {
        let readiness = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(CHECK_INTERVAL) => {}
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = readiness.check() => {}
                }
            }
        });
    }

    /// Runs a round of checks and tells the gRPC health service its verdict.
    async fn check(&self) {
        let (verdict, _) = self.report().await;
        self.publish(&verdict).await;
    }

    /// A number for a verdict begun now.
    fn next_round(&self) -> u64 {
        self.inner.rounds.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn grpc_names_lock(&self) -> std::sync::MutexGuard<'_, Vec<GrpcName>> {
        self.inner
            .grpc_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The names the gRPC health service answers for now.
    fn grpc_names(&self) -> Vec<GrpcName> {
        self.grpc_names_lock().clone()
    }

    /// Tells the gRPC health service `verdict`: `""` and each name, and
    /// `NOT_SERVING` for names no longer served. A stale verdict is
    /// dropped: one made in a phase the node has left (the change of phase
    /// publishes its own), or older than one published already.
    async fn publish(&self, verdict: &Verdict) {
        let mut published = self.inner.published.lock().await;
        if verdict.round <= published.round || verdict.phase != self.phase() {
            return;
        }
        published.round = verdict.round;
        let names = self.grpc_names();
        let overall = if verdict.ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let mut statuses = vec![(String::new(), overall)];
        let mut seen: HashSet<&str> = HashSet::new();
        for (name, _) in &names {
            if seen.insert(name.as_str()) {
                let owners = names
                    .iter()
                    .filter(|(other, _)| other == name)
                    .map(|(_, owner)| owner);
                statuses.push((name.clone(), verdict.status(owners)));
            }
        }
        statuses.extend(
            published
                .statuses
                .keys()
                .filter(|name| !name.is_empty() && !seen.contains(name.as_str()))
                .map(|name| (name.clone(), ServingStatus::NotServing)),
        );
        self.send(&mut published, statuses).await;
    }

    /// Tells the gRPC health service that the names no longer served are
    /// `NOT_SERVING`.
    async fn publish_gone(&self) {
        let mut published = self.inner.published.lock().await;
        let current: HashSet<String> = self.grpc_names().into_iter().map(|(n, _)| n).collect();
        let gone: Vec<_> = published
            .statuses
            .keys()
            .filter(|name| !name.is_empty() && !current.contains(*name))
            .map(|name| (name.clone(), ServingStatus::NotServing))
            .collect();
        self.send(&mut published, gone).await;
    }

    /// Sets each of `statuses` that differs from what was published.
    async fn send(&self, published: &mut Published, statuses: Vec<(String, ServingStatus)>) {
        for (name, status) in statuses {
            if published.statuses.get(&name) != Some(&status) {
                self.inner.grpc.set_service_status(&name, status).await;
                // Recorded once set: a call dropped half way is set again.
                published.statuses.insert(name, status);
            }
        }
    }

    /// A verdict from the services' states alone, before their checks run:
    /// a running service is taken to serve (the round that follows says).
    fn by_states(&self) -> Verdict {
        let round = self.next_round();
        let phase = self.phase();
        let services: Vec<_> = self
            .inner
            .registry
            .snapshot()
            .into_iter()
            .map(|(_, status)| (status.descriptor, serves(status.state, phase, true)))
            .collect();
        let ready =
            phase == Phase::Running && services.iter().all(|(_, serves)| serves.unwrap_or(true));
        Verdict {
            round,
            phase,
            ready,
            services,
        }
    }

    /// The answer of `/health/ready`: whether the node is ready, and the
    /// report. One round of checks at a time: the calls that arrive while
    /// it runs wait for it and share its answer; so do those of the next
    /// [`READY_CACHE_AGE`] from when it began, unless the phase or the
    /// services change meanwhile. Otherwise a round runs, and its verdict
    /// is published (the gRPC health service gives the same answer).
    async fn answer(&self) -> (bool, ReadinessReport) {
        let arrived = Instant::now();
        let mut answered = self.inner.answered.lock().await;
        let changes = self.inner.changes.load(Ordering::SeqCst);
        if let Some(last) = answered.as_ref()
            && last.changes == changes
            && (last.ended >= arrived || last.began.elapsed() < READY_CACHE_AGE)
        {
            return (last.ready, last.report.clone());
        }
        let began = Instant::now();
        let (verdict, report) = self.report().await;
        self.publish(&verdict).await;
        *answered = Some(Answered {
            began,
            ended: Instant::now(),
            changes,
            ready: verdict.ready,
            report: report.clone(),
        });
        (verdict.ready, report)
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

/// Whether a service in `state` serves, on a node in `phase`, its checks
/// `healthy`: `None` for one being added or removed on a running node
/// (`add_service`, `remove_service`), which takes no traffic yet, or no
/// more, and is left out (the others keep the node in rotation).
fn serves(state: ServiceState, phase: Phase, healthy: bool) -> Option<bool> {
    match state {
        ServiceState::Running => Some(healthy),
        ServiceState::Registered | ServiceState::Starting | ServiceState::Stopping => {
            (phase != Phase::Running).then_some(false)
        }
        ServiceState::Stopped | ServiceState::Failed => Some(false),
    }
}

async fn live(State(readiness): State<Readiness>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "live",
        "node": readiness.inner.node,
        "phase": readiness.phase(),
    }))
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let (ready, report) = readiness.answer().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
