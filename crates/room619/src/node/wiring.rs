//! The parts [`start`](super::handle) wires together: discovery and the
//! clients over it, the hosted services with their contexts, the listeners.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    app::Hosted,
    live::LiveSplit,
    serve::{self, Signals},
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

/// The registered services, each with its context.
pub(super) fn host_all(
    registry: &Registry,
    live_config: &LiveConfig,
    shutdown: &CancellationToken,
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
                shutdown.clone(),
                clients.clone(),
                bus.clone(),
                metrics.clone(),
            ),
            service,
        })
        .collect()
}

/// Starts accepting on the main listener and, when it has its own, the
/// admin listener.
pub(super) fn spawn_listeners(
    config: &Config,
    (listener, live): (TcpListener, LiveSplit),
    admin: Option<(TcpListener, crate::rpc::ProtocolSplit)>,
    signals: &Signals,
    tracker: &TaskTracker,
) {
    let builder = Arc::new(serve::connection_builder(&config.limits));
    let first_byte = config.limits.first_byte_timeout;
    tracker.spawn(serve::accept_loop(
        listener,
        live,
        Arc::clone(&builder),
        first_byte,
        signals.clone(),
        tracker.clone(),
    ));
    if let Some((admin, app)) = admin {
        tracker.spawn(serve::accept_loop(
            admin,
            LiveSplit::new(app),
            builder,
            first_byte,
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
    registry: &Registry,
    metrics: Option<Metrics>,
) -> Result<(Arc<dyn Discovery>, CancellationToken, Clients)> {
    let shutdown = CancellationToken::new();
    let discovery =
        discovery::connect(&config.discovery, &config.node.name, shutdown.clone()).await?;
    let clients = Clients::new(
        registry.clone(),
        Arc::clone(&discovery),
        config.resilience.clone(),
        shutdown.clone(),
    )
    .observed(metrics);
    Ok((discovery, shutdown, clients))
}
