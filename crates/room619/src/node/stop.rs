//! Stopping a node: not ready, deregistered, drained, stop hooks in reverse.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt as _;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    app::Hosted,
    dynamic::Hosting,
    health::{Phase, Readiness},
    serve::Signals,
};
use crate::{
    Error, Result,
    bus::{MessageBus, Subscribers},
    config::Config,
    service::{Registry, ServiceState},
};

/// What the shutdown sequence needs.
pub(super) struct Stop {
    /// The hosted services and their registrations (withdrawn before draining).
    pub(super) hosting: Arc<Hosting>,
    pub(super) discovery_shutdown: CancellationToken,
    pub(super) config: Arc<Config>,
    pub(super) registry: Registry,
    pub(super) readiness: Readiness,
    pub(super) signals: Signals,
    pub(super) tracker: TaskTracker,
    pub(super) subscribers: Subscribers,
    pub(super) bus: MessageBus,
}

impl Stop {
    pub(super) async fn run(self) -> Result<()> {
        let node = &self.config.node;
        tracing::info!(node = %node.name, "shutting down: not ready");
        self.readiness.set_phase(Phase::Draining).await;
        // No service is added or removed from here on.
        let _no_more_changes = self.hosting.changing.lock().await;
        self.hosting.withdraw(&self.hosting.instances()).await;
        let hosted = self.hosting.hosted();
        for host in &hosted {
            self.registry
                .set_state(host.ctx.descriptor(), ServiceState::Stopping);
        }
        if !node.shutdown_delay.is_zero() {
            tokio::time::sleep(node.shutdown_delay).await;
        }
        tracing::info!("no longer accepting connections or messages; draining in-flight work");
        // The services' long-running work (streams, loops) ends from here,
        // and so do the gRPC health `Watch` streams (`NOT_SERVING` was
        // sent): open, they would hold their connections to the drain
        // timeout.
        self.hosting.draining.cancel();
        self.readiness.end_watches();
        tokio::join!(
            drain_connections(&self.signals, &self.tracker, node.drain_timeout),
            self.subscribers.drain(node.drain_timeout)
        );
        let result = stop_services(&self.registry, hosted.iter().rev(), node.drain_timeout).await;
        // NATS holds a flush until it has reconnected, which it may never.
        match tokio::time::timeout(node.drain_timeout, self.bus.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = ?err, "the message bus could not flush"),
            Err(_) => tracing::warn!(
                timeout = ?node.drain_timeout,
                "the message bus did not flush within the drain timeout; messages published \
                 since the connection was lost are not sent"
            ),
        }
        self.discovery_shutdown.cancel();
        #[cfg(feature = "otel")]
        crate::observability::tracing::flush_installed().await;
        self.readiness.set_phase(Phase::Stopped).await;
        tracing::info!(node = %node.name, "node stopped");
        result
    }
}

/// How long the sockets of upgraded connections are waited for once the
/// drain timeout passed and their reads and writes fail: they belong to
/// their handlers, which the node cannot make drop them.
const UPGRADED_GRACE: Duration = Duration::from_secs(1);

/// Stops accepting and lets open connections (the `tracker`'s tasks, and
/// the sockets of connections upgraded and handed to handlers) finish, for
/// at most `timeout`, then closes the node's own and makes every read and
/// write of an upgraded one fail. Upgraded connections still open then are
/// waited for [`UPGRADED_GRACE`] more (at most `timeout`), then left to
/// their handlers.
pub(super) async fn drain_connections(signals: &Signals, tracker: &TaskTracker, timeout: Duration) {
    signals.drain.cancel();
    tracker.close();
    signals.sockets.close();
    let drained = tokio::time::timeout(timeout, async {
        tracker.wait().await;
        signals.sockets.wait().await;
    })
    .await;
    if drained.is_ok() {
        return;
    }
    tracing::warn!(
        ?timeout,
        open = signals.sockets.len(),
        "drain timeout passed; closing the connections still open"
    );
    signals.force_close.cancel();
    // The node's own connections close at once.
    tracker.wait().await;
    let grace = UPGRADED_GRACE.min(timeout);
    if tokio::time::timeout(grace, signals.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = signals.sockets.len(),
            "upgraded connections (WebSockets, say) are still open after the drain timeout; \
             their reads and writes fail, and they close when their handlers drop them \
             (end them on `ServiceContext::shutdown_signal`)"
        );
    }
}

/// Runs stop hooks in the given order, each bounded by `timeout`; every hook
/// runs even when an earlier one fails or panics, and the first error is
/// returned.
pub(super) async fn stop_services<'a>(
    registry: &Registry,
    hosted: impl Iterator<Item = &'a Hosted>,
    timeout: Duration,
) -> Result<()> {
    let mut first_error = None;
    for host in hosted {
        let descriptor = host.ctx.descriptor();
        match stop_within(host, timeout).await {
            Ok(()) => registry.set_state(descriptor, ServiceState::Stopped),
            Err(err) => {
                tracing::error!(service = %descriptor, error = ?err, "stop hook failed");
                registry.set_state(descriptor, ServiceState::Failed);
                first_error.get_or_insert(err);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs the stop hook of `host`, bounded by `timeout`: one that panics
/// (making its future or running it) fails with `Internal`, one that
/// overruns with `DeadlineExceeded`; what comes after it (the other stop
/// hooks, the bus's flush, leaving the registry) still runs.
pub(super) async fn stop_within(host: &Hosted, timeout: Duration) -> Result<()> {
    let descriptor = host.ctx.descriptor();
    let stop = async { host.service.stop(host.ctx.clone()).await };
    match tokio::time::timeout(timeout, AssertUnwindSafe(stop).catch_unwind()).await {
        Ok(Ok(stopped)) => stopped,
        Ok(Err(_)) => Err(Error::internal(format!(
            "the stop hook of {descriptor} panicked"
        ))),
        Err(_) => Err(Error::deadline_exceeded(format!(
            "stop hook of {descriptor} took longer than {timeout:?}"
        ))),
    }
}
