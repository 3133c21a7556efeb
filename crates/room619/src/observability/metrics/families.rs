//! The built-in metric families, grouped by who records them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::kept::KeptMetrics;
use super::labels::{
    BreakerLabels, BuildLabels, BusLabels, BusSystemLabels, HttpClientLabels, HttpLabels,
    HttpRouteLabels, Interner, ListenerLabels, PeerLabels, RpcClientLabels, RpcLabels,
    RpcRouteLabels, TransitionLabels,
};
use crate::{observability::client::KeptByPeer, resilience::circuit_breaker::BreakerState};

/// Latency buckets in seconds: the OpenTelemetry default for durations.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(|| Histogram::new(BUCKETS))
}

/// What the server layers record.
#[derive(Debug, Clone)]
pub(crate) struct ServerMetrics {
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Histograms<RpcLabels>,
    rpc_active: Family<RpcRouteLabels, Gauge>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<HttpLabels>,
    http_active: Family<HttpRouteLabels, Gauge>,
    pub(crate) routes: Arc<Interner>,
}

impl ServerMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rpc_requests: Family::default(),
            rpc_duration: histograms(),
            rpc_active: Family::default(),
            http_requests: Family::default(),
            http_duration: histograms(),
            http_active: Family::default(),
            routes: Arc::default(),
        };
        registry.register(
            "rpc_server_requests",
            "gRPC calls served, by method and status code",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "rpc_server_call_duration_seconds",
            "Duration of gRPC calls served, until the last response byte",
            metrics.rpc_duration.clone(),
        );
        registry.register(
            "rpc_server_active_requests",
            "gRPC calls being served",
            metrics.rpc_active.clone(),
        );
        registry.register(
            "http_server_requests",
            "HTTP requests served, by route template and status code",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests served, until the response head",
            metrics.http_duration.clone(),
        );
        registry.register(
            "http_server_active_requests",
            "HTTP requests being served",
            metrics.http_active.clone(),
        );
        metrics
    }

    /// A gRPC call of `route` started; `kept` holds the route's handles.
    pub(crate) fn grpc_started(&self, route: &RpcRouteLabels, kept: &KeptMetrics) {
        kept.active(|| self.rpc_active.get_or_create(route).clone())
            .inc();
    }

    /// A gRPC call of `route` ended with `code` after `elapsed`.
    pub(crate) fn grpc_finished(
        &self,
        route: &RpcRouteLabels,
        kept: &KeptMetrics,
        code: i32,
        elapsed: Duration,
    ) {
        kept.active(|| self.rpc_active.get_or_create(route).clone())
            .dec();
        let find = || {
            let labels = RpcLabels {
                route: route.clone(),
                code,
            };
            (
                self.rpc_requests.get_or_create(&labels).clone(),
                self.rpc_duration.get_or_create(&labels).clone(),
            )
        };
        kept.finished(code, elapsed, find);
    }

    /// An HTTP request of `route` started; `kept` holds the route's handles.
    pub(crate) fn http_started(&self, route: &HttpRouteLabels, kept: &KeptMetrics) {
        kept.active(|| self.http_active.get_or_create(route).clone())
            .inc();
    }

    /// An HTTP request of `route` was answered with `status` after `elapsed`.
    pub(crate) fn http_finished(
        &self,
        route: &HttpRouteLabels,
        kept: &KeptMetrics,
        status: u16,
        elapsed: Duration,
    ) {
        kept.active(|| self.http_active.get_or_create(route).clone())
            .dec();
        let find = || {
            let labels = HttpLabels {
                route: route.clone(),
                status,
            };
            (
                self.http_requests.get_or_create(&labels).clone(),
                self.http_duration.get_or_create(&labels).clone(),
            )
        };
        kept.finished(i32::from(status), elapsed, find);
    }
}

/// What `RpcChannel` and `HttpClient` record.
#[derive(Debug, Clone)]
pub(crate) struct ClientMetrics {
    rpc_requests: Family<RpcClientLabels, Counter>,
    rpc_duration: Histograms<RpcClientLabels>,
    http_requests: Family<HttpClientLabels, Counter>,
    http_duration: Histograms<HttpClientLabels>,
    pub(crate) methods: Arc<Interner>,
    /// The metrics of each peer's calls, kept at hand by its clients.
    pub(crate) kept: Arc<KeptByPeer>,
}

impl ClientMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            rpc_requests: Family::default(),
            rpc_duration: histograms(),
            http_requests: Family::default(),
            http_duration: histograms(),
            methods: Arc::default(),
            kept: Arc::default(),
        };
        registry.register(
            "rpc_client_requests",
            "gRPC calls made, by peer service, method and status code",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "rpc_client_call_duration_seconds",
            "Duration of gRPC calls made, until the response head",
            metrics.rpc_duration.clone(),
        );
        registry.register(
            "http_client_requests",
            "HTTP requests made, by peer service and status code",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_client_request_duration_seconds",
            "Duration of HTTP requests made, until the response head",
            metrics.http_duration.clone(),
        );
        metrics
    }

    /// The counter and histogram of gRPC calls with `labels` (handles to the
    /// registered ones, to be kept and used for later calls alike).
    pub(crate) fn grpc(&self, labels: &RpcClientLabels) -> (Counter, Histogram) {
        (
            self.rpc_requests.get_or_create(labels).clone(),
            self.rpc_duration.get_or_create(labels).clone(),
        )
    }

    pub(crate) fn http(&self, labels: &HttpClientLabels, elapsed: Duration) {
        self.http_requests.get_or_create(labels).inc();
        self.http_duration
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// What circuit breakers, retries, hedges and bulkheads record.
#[derive(Debug, Clone)]
pub(crate) struct ResilienceMetrics {
    breaker_state: Family<BreakerLabels, Gauge>,
    /// How many live breakers show in each `breaker_state` series (a client
    /// made before a reload and one made after share a name); the series
    /// goes when the last one is dropped (an instance that left discovery).
    live_breakers: Arc<Mutex<HashMap<BreakerLabels, usize>>>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    retries: Family<PeerLabels, Counter>,
    budget_exhausted: Family<PeerLabels, Counter>,
    hedges: Family<PeerLabels, Counter>,
    bulkhead_rejected: Family<PeerLabels, Counter>,
    fallbacks: Family<PeerLabels, Counter>,
}

impl ResilienceMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            breaker_state: Family::default(),
            live_breakers: Arc::default(),
            breaker_transitions: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            hedges: Family::default(),
            bulkhead_rejected: Family::default(),
            fallbacks: Family::default(),
        };
        registry.register(
            "room619_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "room619_circuit_breaker_transitions",
            "Circuit breaker changes of state",
            metrics.breaker_transitions.clone(),
        );
        registry.register(
            "room619_retries",
            "Calls sent again after a retryable failure",
            metrics.retries.clone(),
        );
        registry.register(
            "room619_retry_budget_exhausted",
            "Retries not sent because the retry budget was spent",
            metrics.budget_exhausted.clone(),
        );
        registry.register(
            "room619_hedges",
            "Second attempts sent for slow idempotent reads",
            metrics.hedges.clone(),
        );
        registry.register(
            "room619_bulkhead_rejected",
            "Calls refused at once because the bulkhead was full",
            metrics.bulkhead_rejected.clone(),
        );
        registry.register(
            "room619_fallbacks",
            "Failed calls answered with the caller's fallback instead",
            metrics.fallbacks.clone(),
        );
        metrics
    }

    /// A breaker exists (closed); the state gauge of its name and protocol
    /// shows it.
    pub(crate) fn breaker_created(&self, breaker: &BreakerLabels) {
        let mut live = self
            .live_breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The newest breaker is the one calls go through (a restarted
        // instance on the same address, a client made after a reload): the
        // series shows its state, not that of the one it replaces.
        self.breaker_state.get_or_create(breaker).set(0);
        *live.entry(breaker.clone()).or_default() += 1;
    }

    /// A breaker is gone: the last of its name and protocol takes its series
    /// (state and transitions) with it.
    pub(crate) fn breaker_dropped(&self, breaker: &BreakerLabels) {
        let mut live = self
            .live_breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(count) = live.get_mut(breaker) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        live.remove(breaker);
        self.breaker_state.remove(breaker);
        let states = [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ];
        for from in states {
            for to in states {
                self.breaker_transitions
                    .remove(&transition(breaker, from, to));
            }
        }
    }

    pub(crate) fn breaker_transition(
        &self,
        breaker: &BreakerLabels,
        from: BreakerState,
        to: BreakerState,
    ) {
        self.breaker_state
            .get_or_create(breaker)
            .set(state_value(to));
        self.breaker_transitions
            .get_or_create(&transition(breaker, from, to))
            .inc();
    }

    pub(crate) fn retry(&self, peer: &Arc<str>) {
        Self::count(&self.retries, peer);
    }

    pub(crate) fn budget_exhausted(&self, peer: &Arc<str>) {
        Self::count(&self.budget_exhausted, peer);
    }

    pub(crate) fn hedge(&self, peer: &Arc<str>) {
        Self::count(&self.hedges, peer);
    }

    pub(crate) fn bulkhead_rejected(&self, peer: &Arc<str>) {
        Self::count(&self.bulkhead_rejected, peer);
    }

    pub(crate) fn fallback(&self, peer: &Arc<str>) {
        Self::count(&self.fallbacks, peer);
    }

    fn count(family: &Family<PeerLabels, Counter>, peer: &Arc<str>) {
        family
            .get_or_create(&PeerLabels {
                peer_service: Arc::clone(peer),
            })
            .inc();
    }
}

fn transition(breaker: &BreakerLabels, from: BreakerState, to: BreakerState) -> TransitionLabels {
    TransitionLabels {
        breaker: Arc::clone(&breaker.breaker),
        protocol: breaker.protocol,
        from: state_name(from),
        to: state_name(to),
    }
}

fn state_value(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// What the message bus records.
#[derive(Debug, Clone)]
pub(crate) struct BusMetrics {
    published: Family<BusSystemLabels, Counter>,
    consumed: Family<BusLabels, Counter>,
    redelivered: Family<BusLabels, Counter>,
    dead_lettered: Family<BusLabels, Counter>,
}

impl BusMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            published: Family::default(),
            consumed: Family::default(),
            redelivered: Family::default(),
            dead_lettered: Family::default(),
        };
        registry.register(
            "messaging_published_messages",
            "Messages published to the bus",
            metrics.published.clone(),
        );
        registry.register(
            "messaging_consumed_messages",
            "Messages a subscriber handled successfully",
            metrics.consumed.clone(),
        );
        registry.register(
            "messaging_redelivered_messages",
            "Messages delivered again after a failed handler",
            metrics.redelivered.clone(),
        );
        registry.register(
            "messaging_dead_lettered_messages",
            "Messages given up and sent to the dead letters",
            metrics.dead_lettered.clone(),
        );
        metrics
    }

    pub(crate) fn published(&self, system: &'static str) {
        self.published
            .get_or_create(&BusSystemLabels {
                messaging_system: system,
            })
            .inc();
    }

    pub(crate) fn consumed(&self, labels: &BusLabels) {
        self.consumed.get_or_create(labels).inc();
    }

    pub(crate) fn redelivered(&self, labels: &BusLabels) {
        self.redelivered.get_or_create(labels).inc();
    }

    pub(crate) fn dead_lettered(&self, labels: &BusLabels) {
        self.dead_lettered.get_or_create(labels).inc();
    }
}

/// What the listeners record about their connections.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    open: Family<ListenerLabels, Gauge>,
    refused: Family<ListenerLabels, Counter>,
}

/// One listener's connection gauge and refusal counter.
#[derive(Debug, Clone)]
pub(crate) struct ListenerMetrics {
    pub(crate) open: Gauge,
    pub(crate) refused: Counter,
}

impl ConnectionMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            open: Family::default(),
            refused: Family::default(),
        };
        registry.register(
            "room619_server_open_connections",
            "Connections a listener holds",
            metrics.open.clone(),
        );
        registry.register(
            "room619_server_refused_connections",
            "Connections closed as soon as accepted: the listener held limits.max_connections",
            metrics.refused.clone(),
        );
        metrics
    }

    /// The gauge and counter of `listener` (`main` or `admin`).
    pub(crate) fn listener(&self, listener: &'static str) -> ListenerMetrics {
        let labels = ListenerLabels { listener };
        ListenerMetrics {
            open: self.open.get_or_create(&labels).clone(),
            refused: self.refused.get_or_create(&labels).clone(),
        }
    }
}

pub(super) fn register_build_info(registry: &mut Registry, node: &str) {
    let info: Family<BuildLabels, Gauge> = Family::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION"),
        node: node.to_owned(),
    })
    .set(1);
    registry.register("room619_build_info", "room619 version and node name", info);
}
