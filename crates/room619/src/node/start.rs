//! Starting a node: hooks and subscribers in order, listeners, registration,
//! and the [`RunningNode`](super::RunningNode) it becomes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};

use super::{
    app::{self, Hosted},
    dynamic::{self, Hosting},
    handle::{NodeHandle, RunningNode},
    health::{Phase, Readiness},
    live::LiveSplit,
    reload::{self, ReloadSource},
    serve::Signals,
    stop::{Stop, stop_services},
    wiring,
};
use crate::{
    Error, Result,
    bus::{MessageBus, Subscribers},
    config::{Config, LiveConfig},
    service::{Registry, ServiceState},
};

pub(super) async fn start(
    config: Arc<Config>,
    registry: Registry,
    listener: TcpListener,
    admin: Option<TcpListener>,
    reload: Option<ReloadSource>,
) -> Result<RunningNode> {
    let live_config = LiveConfig::from_shared(Arc::clone(&config));
    let bus = MessageBus::connect_as(&config.bus, &config.node.name).await?;
    let (metrics, observed) = wiring::metrics(&config, &bus);
    let shutdown = CancellationToken::new();
    // The services' stop signal: it fires when the node drains, after
    // `node.shutdown_delay`, during which they still serve as usual.
    let draining = CancellationToken::new();
    let (discovery, discovery_shutdown, clients) =
        wiring::connect_clients(&config, observed.clone()).await?;
    // A start that fails from here ends what it began (discovery's watcher
    // and heartbeat, the reload follower, key refreshes, subscribers): both
    // tokens are cancelled on the way out unless the start completes.
    let on_failure =
        [&shutdown, &draining, &discovery_shutdown].map(|token| token.clone().drop_guard());
    let hosted = wiring::host_all(&registry, &live_config, &draining, &clients, &bus, &metrics);
    let assembled = app::assemble(&config, &registry, &hosted, &metrics, None)?;
    clients.set_local(assembled.local);
    let readiness = assembled.readiness;
    readiness.set_grpc_names(assembled.grpc_names);
    readiness.set_discovery(Arc::clone(&discovery));
    readiness.set_phase(Phase::Starting).await;
    assembled.middleware.start(&shutdown).await?;
    let targets = reload::Targets {
        live: live_config.clone(),
        discovery: Arc::clone(&discovery),
        rate_limiter: assembled.middleware.rate_limiter(),
        clients: clients.clone(),
        metrics: observed.clone(),
    };
    wiring::follow_changes(reload, targets, &shutdown);

    let subscribers = Subscribers::new(shutdown.child_token());
    start_services(&registry, &hosted, &bus, &config, &subscribers).await?;

    let local_addr = listener.local_addr()?;
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let signals = Signals::default();
    let tracker = TaskTracker::new();
    let live = LiveSplit::new(assembled.main);
    wiring::spawn_listeners(
        &config,
        (listener, live.clone()),
        admin.zip(assembled.admin),
        (&signals, observed.as_ref()),
        &tracker,
    );
    readiness.set_phase(Phase::Running).await;
    // The gRPC health service follows the services' checks from here on.
    readiness.spawn_checks(shutdown.clone());
    let advertised = dynamic::advertised(&config, local_addr);
    let instances = match dynamic::register(&config, discovery.as_ref(), &hosted, &advertised).await
    {
        Ok(instances) => instances,
        Err(err) => {
            undo_serving(
                &readiness,
                (&signals, &tracker),
                ([&shutdown, &draining], &discovery_shutdown),
                &registry,
                (&hosted, config.node.drain_timeout),
            )
            .await;
            return Err(err);
        }
    };
    wiring::announce(&config, local_addr, admin_addr, hosted.len());

    let hosting = Arc::new(Hosting {
        config: Arc::clone(&config),
        live_config,
        registry: registry.clone(),
        hosted: Mutex::new(hosted),
        instances: Mutex::new(instances),
        live,
        readiness: readiness.clone(),
        middleware: assembled.middleware.clone(),
        shed: assembled.shed,
        metrics: metrics.clone(),
        clients: clients.clone(),
        discovery: Arc::clone(&discovery),
        bus: bus.clone(),
        shutdown: shutdown.clone(),
        draining,
        advertised,
        changing: tokio::sync::Mutex::new(()),
    });
    let handle = NodeHandle::new(local_addr, admin_addr, Arc::clone(&hosting));
    let stop = Stop {
        hosting,
        discovery_shutdown,
        config,
        registry,
        readiness,
        signals,
        tracker,
        subscribers,
        bus,
    };
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        stop.run().await
    });
    drop(on_failure.map(DropGuard::disarm));
    Ok(RunningNode { handle, task })
}

/// Runs the start hooks in order, then subscribes the subscribers; on a
/// failure, stops what was started and returns the error.
async fn start_services(
    registry: &Registry,
    hosted: &[Hosted],
    bus: &MessageBus,
    config: &Config,
    subscribers: &Subscribers,
) -> Result<()> {
    let timeout = config.node.drain_timeout;
    for (index, host) in hosted.iter().enumerate() {
        registry.set_state(host.ctx.descriptor(), ServiceState::Starting);
        if let Err(err) = run_start_hooks(host, config.node.start_timeout).await {
            tracing::error!(service = %host.ctx.descriptor(), error = ?err, "start hook failed");
            registry.set_state(host.ctx.descriptor(), ServiceState::Failed);
            undo_start(registry, &hosted[..index], timeout).await;
            return Err(err);
        }
        registry.set_state(host.ctx.descriptor(), ServiceState::Running);
    }
    if let Err(err) = start_subscribers(bus, config, hosted, subscribers).await {
        tracing::error!(error = ?err, "a subscriber could not start");
        subscribers.drain(timeout).await;
        undo_start(registry, hosted, timeout).await;
        return Err(err);
    }
    Ok(())
}

/// Runs the start hooks of `host`, bounded by `timeout` (`node.start_timeout`);
/// one that panics fails like one that errs. When they fail, what undoes
/// them (a built service's paired stop hooks, run on a task of their own
/// when the start was cut short) has ended, or had `timeout` more, by the
/// time this returns: before the services started earlier are stopped, and
/// before a caller may try again.
pub(super) async fn run_start_hooks(host: &Hosted, timeout: Duration) -> Result<()> {
    let outcome = start_within(host, timeout).await;
    if outcome.is_err() {
        let undoing = host.ctx.undoing();
        undoing.close();
        if tokio::time::timeout(timeout, undoing.wait()).await.is_err() {
            tracing::warn!(service = %host.ctx.descriptor(), ?timeout, "undoing the failed start took too long; going on without it");
        }
    }
    outcome
}

async fn start_within(host: &Hosted, timeout: Duration) -> Result<()> {
    let descriptor = host.ctx.descriptor();
    // Called inside the guard: a `start` that panics while making its
    // future fails like one whose future panics.
    let start = async { host.service.start(host.ctx.clone()).await };
    let started = std::panic::AssertUnwindSafe(start).catch_unwind();
    match tokio::time::timeout(timeout, started).await {
        Ok(Ok(started)) => started,
        Ok(Err(_)) => Err(Error::internal(format!(
            "the start hook of {descriptor} panicked"
        ))),
        Err(_) => Err(Error::deadline_exceeded(format!(
            "the start hooks of {descriptor} took longer than node.start_timeout ({timeout:?})"
        ))),
    }
}

/// Undoes a start that failed once serving, in the order of a shutdown:
/// not ready; the services' long-running work and the node's background
/// work told to end (`background`); no longer accepting, the requests
/// already taken finished (for at most `timeout`); services stopped;
/// discovery's work ended last, since stopping services may call out.
async fn undo_serving(
    readiness: &Readiness,
    (signals, tracker): (&Signals, &TaskTracker),
    (background, discovery_shutdown): ([&CancellationToken; 2], &CancellationToken),
    registry: &Registry,
    (started, timeout): (&[Hosted], Duration),
) {
    readiness.set_phase(Phase::Stopped).await;
    for token in background {
        token.cancel();
    }
    super::stop::drain_connections(signals, tracker, timeout).await;
    undo_start(registry, started, timeout).await;
    discovery_shutdown.cancel();
}

/// Stops the services started before a failed start, in reverse.
async fn undo_start(registry: &Registry, started: &[Hosted], timeout: Duration) {
    if let Err(err) = stop_services(registry, started.iter().rev(), timeout).await {
        tracing::error!(error = ?err, "stopping after a failed start also failed");
    }
}

/// Subscribes the declared subscribers of every hosted service, in order.
async fn start_subscribers(
    bus: &MessageBus,
    config: &Config,
    hosted: &[Hosted],
    subscribers: &Subscribers,
) -> Result<()> {
    // A durable consumer is one per name on the bus: a second service
    // declaring the same name would take over (and refilter) the first's.
    let mut durables = std::collections::HashMap::new();
    for host in hosted {
        for subscriber in host.service.subscribers() {
            if let Some(durable) = subscriber.durable_name() {
                let service = host.ctx.descriptor().to_string();
                if let Some(first) = durables.insert(durable.to_owned(), service.clone()) {
                    return Err(crate::Error::invalid_argument(format!(
                        "durable consumer `{durable}` is declared by both {first} and {service}; \
                         each needs a name of its own"
                    )));
                }
            }
        }
    }
    for host in hosted {
        for subscriber in host.service.subscribers() {
            let (spec, handler) = subscriber.bind(host.ctx.clone(), &config.bus);
            subscribers.start(bus, spec, handler).await?;
        }
    }
    Ok(())
}
