//! Prometheus metrics: one [`Metrics`] registry per node, served at
//! [`METRICS_PATH`] in the Prometheus text format (OpenMetrics when the
//! scraper asks for it), with the framework's own metrics built in and room
//! for the application's.
//!
//! # Built-in metrics
//!
//! Names follow the OpenTelemetry RPC and HTTP semantic conventions,
//! translated to Prometheus style (dots become underscores, the unit is a
//! suffix). Label values are bounded: gRPC methods are the ones the node
//! serves (others are `other`), HTTP routes are route templates (never raw
//! paths), bus subjects are the subjects subscribers declared.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `rpc_server_requests_total` | counter | `rpc_system`, `rpc_service`, `rpc_method`, `rpc_grpc_status_code` |
//! | `rpc_server_call_duration_seconds` | histogram | as above |
//! | `rpc_server_active_requests` | gauge | `rpc_system`, `rpc_service`, `rpc_method` |
//! | `http_server_requests_total` | counter | `http_request_method`, `http_route`, `http_response_status_code` |
//! | `http_server_request_duration_seconds` | histogram | as above |
//! | `http_server_active_requests` | gauge | `http_request_method`, `http_route` |
//! | `rpc_client_requests_total`, `rpc_client_call_duration_seconds` | counter, histogram | `rpc_system`, `peer_service`, `rpc_method` (`pkg.Service/Method`), `rpc_grpc_status_code` (the call's status: in the answer's head for a trailers-only error, else in its trailers, the duration then running to the end of the answer's stream; 1 when the caller dropped the answer before its end, 2 when it ended without a status, 14 with no answer) |
//! | `http_client_requests_total`, `http_client_request_duration_seconds` | counter, histogram | `peer_service`, `http_request_method`, `http_response_status_code` (0: no answer) |
//! | `room619_circuit_breaker_state` | gauge (0 closed, 1 open, 2 half-open); gone with the breaker | `breaker` (`service` or `service@address`), `protocol` (`grpc`, `http`) |
//! | `room619_circuit_breaker_transitions_total` | counter; gone with the breaker | `breaker`, `protocol`, `from`, `to` |
//! | `room619_retries_total`, `room619_retry_budget_exhausted_total` | counter | `peer_service` |
//! | `room619_hedges_total`, `room619_bulkhead_rejected_total`, `room619_fallbacks_total` | counter | `peer_service` |
//! | `room619_rate_limited_requests_total` | counter | `limiter` |
//! | `messaging_published_messages_total` | counter | `messaging_system` |
//! | `messaging_consumed_messages_total`, `messaging_redelivered_messages_total`, `messaging_dead_lettered_messages_total` | counter | `messaging_system`, `messaging_destination`, `service` |
//! | `room619_config_reloads_total` | counter | `result` (`ok`, `failed`) |
//! | `room619_server_open_connections` | gauge | `listener` (`main`, `admin`) |
//! | `room619_server_refused_connections_total` | counter (closed at once: the listener held `limits.max_connections`) | `listener` |
//! | `room619_build_info` | gauge (1) | `version`, `node` |
//!
//! # Your own metrics
//!
//! ```
//! use prometheus_client::metrics::counter::Counter;
//! use room619::observability::metrics::Metrics;
//!
//! let metrics = Metrics::new("my-node");
//! let orders: Counter = Counter::default();
//! metrics.register("shop_orders_placed", "Orders placed", orders.clone())?;
//! orders.inc();
//! assert!(metrics.render().contains("shop_orders_placed_total 1"));
//! # Ok::<(), room619::Error>(())
//! ```
//!
//! A service reaches its node's registry with
//! [`ServiceContext::metrics`](crate::ServiceContext::metrics).

mod exposition;
mod families;
pub(crate) mod kept;
pub(crate) mod labels;

use std::{
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

pub use exposition::METRICS_PATH;
pub(crate) use exposition::router;
pub(crate) use families::{
    BusMetrics, ClientMetrics, ConnectionMetrics, ListenerMetrics, ResilienceMetrics, ServerMetrics,
};
use prometheus_client::{metrics::family::Family, registry::Registry};

use self::labels::{LimiterLabels, ReloadLabels};

/// A node's metrics registry: the built-in metrics and the ones the
/// application registers. Cheap to clone; every clone is the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: RwLock<Registry>,
    /// The names the application registered: a second family under one
    /// name would make the scrape invalid.
    names: std::sync::Mutex<std::collections::HashSet<String>>,
    server: ServerMetrics,
    client: ClientMetrics,
    resilience: ResilienceMetrics,
    bus: BusMetrics,
    connections: ConnectionMetrics,
    rate_limited: Family<LimiterLabels, prometheus_client::metrics::counter::Counter>,
    config_reloads: Family<ReloadLabels, prometheus_client::metrics::counter::Counter>,
}

impl Metrics {
    /// A registry with the built-in metrics of a node called `node`.
    #[must_use]
    pub fn new(node: &str) -> Self {
        let mut registry = Registry::default();
        let server = ServerMetrics::register(&mut registry);
        let client = ClientMetrics::register(&mut registry);
        let resilience = ResilienceMetrics::register(&mut registry);
        let bus = BusMetrics::register(&mut registry);
        let connections = ConnectionMetrics::register(&mut registry);
        let rate_limited = Family::default();
        registry.register(
            "room619_rate_limited_requests",
            "Requests rejected by a rate limiter",
            rate_limited.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "room619_config_reloads",
            "Configuration reloads, by result",
            config_reloads.clone(),
        );
        families::register_build_info(&mut registry, node);
        Self {
            inner: Arc::new(Inner {
                registry: RwLock::new(registry),
                names: std::sync::Mutex::default(),
                server,
                client,
                resilience,
                bus,
                connections,
                rate_limited,
                config_reloads,
            }),
        }
    }

    /// Registers an application metric (any `prometheus-client` metric:
    /// counter, gauge, histogram, family) under `name`; keep a clone to
    /// update it. A counter's name gets `_total` appended.
    ///
    /// `prometheus-client` writes label values and `help` as they are: a
    /// value holding a quote, a backslash or a newline makes the whole
    /// scrape invalid, so keep such values (raw user input, say) out of
    /// labels, as the unbounded values they usually are.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` for a name Prometheus cannot read (it must match
    /// `[a-zA-Z_][a-zA-Z0-9_]*`) or one under room619's own `room619_`
    /// prefix; `AlreadyExists` for a name registered before (a service
    /// added again registering in its start hook, say): a second family of
    /// one name would make the whole scrape invalid, so keep the first
    /// metric (a clone of it) instead.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) -> crate::Result<()> {
        let readable = name
            .bytes()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !readable {
            return Err(crate::Error::invalid_argument(format!(
                "`{name}` is not a metric name Prometheus reads: use letters, digits and `_`, \
                 not starting with a digit"
            )));
        }
        if name.starts_with("room619_") {
            return Err(crate::Error::invalid_argument(format!(
                "`{name}`: the `room619_` prefix is the framework's own"
            )));
        }
        let mut names = self
            .inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !names.insert(name.to_owned()) {
            return Err(crate::Error::already_exists(format!(
                "a metric named `{name}` is registered already: keep a clone of the first"
            )));
        }
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
        Ok(())
    }

    /// Counts a request a rate limiter rejected (`room619_rate_limited_requests_total`).
    /// `limiter` names the limiter (a service or route template, never a
    /// client id), to keep the label bounded.
    pub fn record_rate_limited(&self, limiter: &str) {
        self.inner
            .rate_limited
            .get_or_create(&LimiterLabels {
                limiter: limiter.to_owned(),
            })
            .inc();
    }

    /// Counts a configuration reload (`room619_config_reloads_total`), by
    /// whether it applied (`ok`) or was refused (`failed`).
    pub fn record_config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.inner
            .config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        exposition::prometheus_text(&self.render_openmetrics())
    }

    /// Every metric in the OpenMetrics text format (1.0.0), `# EOF` included.
    #[must_use]
    pub fn render_openmetrics(&self) -> String {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(8 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %err, "metrics could not be encoded");
        }
        out
    }

    pub(crate) fn server(&self) -> &ServerMetrics {
        &self.inner.server
    }

    pub(crate) fn client(&self) -> &ClientMetrics {
        &self.inner.client
    }

    pub(crate) fn resilience(&self) -> &ResilienceMetrics {
        &self.inner.resilience
    }

    pub(crate) fn bus(&self) -> &BusMetrics {
        &self.inner.bus
    }

    pub(crate) fn connections(&self) -> &ConnectionMetrics {
        &self.inner.connections
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
