//! The parts [`start`](super::handle) wires together: discovery and the
//! clients over it, the hosted services with their contexts, the listeners.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    app::Hosted,
    live::LiveSplit,
    reload::{self, ReloadSource},
    serve::{self, ConnectionSlots, Signals},
};
use crate::{
    Result,
    bus::MessageBus,
    config::{Config, LiveConfig},
    discovery::{self, Discovery},
    observability::metrics::Metrics,
    rpc::client::Clients,
    service::{Registry, ServiceContext},
};

/// The node's metrics registry, and the same when `telemetry.metrics` is on
/// (the bus counts into it then).
pub(super) fn metrics(config: &Config, bus: &MessageBus) -> (Metrics, Option<Metrics>) {
    let metrics = Metrics::new(&config.node.name);
    if !config.telemetry.metrics {
        return (metrics, None);
    }
    bus.observe(metrics.bus().clone());
    let observed = metrics.clone();
    (metrics, Some(observed))
}

/// Counts rate-limited requests, and when the configuration file is
/// watched, starts reloading it into `targets` until `shutdown`.
pub(super) fn follow_changes(
    reload: Option<ReloadSource>,
    targets: reload::Targets,
    shutdown: &CancellationToken,
) {
    if let Some(metrics) = targets.metrics.clone() {
        (targets.rate_limiter).on_limited(move |name| metrics.record_rate_limited(name));
    }
    if let Some(source) = reload {
        reload::spawn(source, targets, shutdown.clone());
    }
}

/// Logs that the node serves, and where.
pub(super) fn announce(
    config: &Config,
    local_addr: std::net::SocketAddr,
    admin_addr: Option<std::net::SocketAddr>,
    services: usize,
) {
    tracing::info!(
        node = %config.node.name,
        %local_addr,
        admin_addr = ?admin_addr,
        services,
        "node serving gRPC and HTTP"
    );
}

/// The registered services, each with its context.
pub(super) fn host_all(
    registry: &Registry,
    live_config: &LiveConfig,
    draining: &CancellationToken,
    clients: &Clients,
    bus: &MessageBus,
    metrics: &Metrics,
) -> Vec<Hosted> {
    registry
        .snapshot()
        .into_iter()
        .map(|(service, status)| Hosted {
            ctx: ServiceContext::new(
                status.descriptor,
                live_config.clone(),
                registry.clone(),
                draining,
                clients.clone(),
                bus.clone(),
                metrics.clone(),
            ),
            service,
        })
        .collect()
}

/// Starts accepting on the main listener and, when it has its own, the
/// admin listener; their connections are counted in `metrics` when given.
pub(super) fn spawn_listeners(
    config: &Config,
    (listener, live): (TcpListener, LiveSplit),
    admin: Option<(TcpListener, crate::rpc::ProtocolSplit)>,
    (signals, metrics): (&Signals, Option<&Metrics>),
    tracker: &TaskTracker,
) {
    let builder = Arc::new(serve::connection_builder(&config.limits));
    let timeouts = serve::Timeouts::new(&config.limits);
    serve::warn_if_over_open_files(
        config.limits.max_connections,
        1 + usize::from(admin.is_some()),
    );
    let slots = |listener| {
        let metrics = metrics.map(|metrics| metrics.connections().listener(listener));
        ConnectionSlots::new(config.limits.max_connections, metrics)
    };
    tracker.spawn(serve::accept_loop(
        listener,
        live,
        (Arc::clone(&builder), timeouts),
        slots("main"),
        signals.clone(),
        tracker.clone(),
    ));
    if let Some((admin, app)) = admin {
        tracker.spawn(serve::accept_loop(
            admin,
            LiveSplit::new(app),
            (builder, timeouts),
            slots("admin"),
            signals.clone(),
            tracker.clone(),
        ));
    }
}

/// Connects discovery and makes the clients that resolve through it. The
/// token stops discovery's background work; it outlives the drain, since
/// stopping services may still call out.
pub(super) async fn connect_clients(
    config: &Config,
    metrics: Option<Metrics>,
) -> Result<(Arc<dyn Discovery>, CancellationToken, Clients)> {
    let shutdown = CancellationToken::new();
    let discovery =
        discovery::connect(&config.discovery, &config.node.name, shutdown.clone()).await?;
    let clients = Clients::new(
        Arc::clone(&discovery),
        config.resilience.clone(),
        shutdown.clone(),
    )
    .observed(metrics);
    Ok((discovery, shutdown, clients))
}
