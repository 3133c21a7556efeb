//! [`Subscribers`]: the subscriber loops of a node, started after the start
//! hooks and drained on shutdown.

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    MessageBus,
    subscriber::{Handler, Spec, run},
};
use crate::{Error, Result};

/// The subscribers of a node: started after the start hooks; they stop
/// taking messages as soon as `stop` is cancelled (the node's shutdown
/// signal: no `shutdown_delay`, which is for load balancers) and are drained
/// by [`drain`](Self::drain).
pub(crate) struct Subscribers {
    stop: CancellationToken,
    force: CancellationToken,
    tracker: TaskTracker,
}

impl Subscribers {
    pub(crate) fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Subscribes (so messages published once this returns are delivered)
    /// and starts the loop.
    ///
    /// # Errors
    ///
    /// As [`MessageBus::subscribe`], or the durable consumer cannot be made.
    pub(crate) async fn start(&self, bus: &MessageBus, spec: Spec, handler: Handler) -> Result<()> {
        let source = bus.open(&spec).await.map_err(|err| {
            Error::new(
                err.kind(),
                format!(
                    "service `{}` cannot subscribe to `{}`: {}",
                    spec.owner,
                    spec.subject,
                    err.message()
                ),
            )
            .with_source(err)
        })?;
        tracing::debug!(owner = %spec.owner, subject = %spec.subject, mode = ?spec.mode, "subscribed");
        self.tracker.spawn(run(
            bus.clone(),
            source,
            Arc::new(spec),
            handler,
            self.stop.clone(),
            self.force.clone(),
        ));
        Ok(())
    }

    /// Stops taking messages, waits for the handlers in flight for at most
    /// `timeout`, then aborts the rest.
    pub(crate) async fn drain(&self, timeout: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            self.force.cancel();
            self.tracker.wait().await;
        }
    }
}
