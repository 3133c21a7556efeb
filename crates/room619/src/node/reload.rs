//! Configuration hot reload: the config file is polled; a valid change is
//! published on the node's [`LiveConfig`] and applied live (the log filter,
//! the listed discovery instances, the rate limits, the resilience policies
//! of clients made after the reload); an invalid one is logged
//! with its key and counted (`room619_config_reloads_total{result="failed"}`),
//! and the running configuration stays.
//!
//! What is bound at start (listen addresses, the bus and discovery
//! backends, services) needs a restart to change; a reload that changes it
//! is applied for the rest and logs a warning. `RUST_LOG`, when set at start,
//! keeps winning over `log.level`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ConfigLoader, LiveConfig, Overrides},
    discovery::Discovery,
    middleware::rate_limit::RateLimiter,
    observability::{logging, metrics::Metrics},
    rpc::client::Clients,
};

/// What a reload changes besides the [`LiveConfig`], and where it is counted.
pub(super) struct Targets {
    pub(super) live: LiveConfig,
    pub(super) discovery: Arc<dyn Discovery>,
    pub(super) rate_limiter: Arc<RateLimiter>,
    pub(super) clients: Clients,
    pub(super) metrics: Option<Metrics>,
}

/// Where the configuration is reloaded from: the file (watched) plus the
/// process environment plus `overrides`, the same sources as at start.
#[derive(Debug, Clone)]
pub(crate) struct ReloadSource {
    pub(crate) path: PathBuf,
    pub(crate) overrides: Overrides,
}

/// Starts polling the file every `node.config_poll_interval`, until
/// `shutdown`; changes are measured against the file as it is now.
pub(super) async fn spawn(source: ReloadSource, targets: Targets, shutdown: CancellationToken) {
    let first = tokio::fs::read(&source.path).await.ok();
    tokio::spawn(run(source, first, targets, shutdown));
}

async fn run(
    source: ReloadSource,
    mut last: Option<Vec<u8>>,
    targets: Targets,
    shutdown: CancellationToken,
) {
    let live = &targets.live;
    loop {
        let interval = live.current().node.config_poll_interval;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval.max(Duration::from_millis(10))) => {}
        }
        let now = tokio::fs::read(&source.path).await.ok();
        if now == last {
            continue;
        }
        last = now;
        let loaded = ConfigLoader::new()
            .file(&source.path)
            .overrides(source.overrides.clone())
            .load();
        let applied = match loaded {
            Ok(config) => {
                if let Err(err) = targets.rate_limiter.update(&config.rate_limit) {
                    tracing::warn!(error = ?err, "the rate limits could not change");
                }
                if config.resilience != live.current().resilience {
                    targets.clients.set_resilience(config.resilience.clone());
                    tracing::info!(
                        "resilience policies changed; clients made from now on use them"
                    );
                }
                apply(live, targets.discovery.as_ref(), config);
                true
            }
            Err(err) => {
                live.reject(&err.with_source_name(source.path.display().to_string()));
                false
            }
        };
        if let Some(metrics) = &targets.metrics {
            metrics.record_config_reload(applied);
        }
    }
}

/// Applies what can change live, then publishes the new configuration.
fn apply(live: &LiveConfig, discovery: &dyn Discovery, config: Config) {
    let old = live.current();
    if config.log.level != old.log.level {
        if logging::filter_from_env() {
            tracing::info!("log.level changed, but RUST_LOG is set and wins; keeping the filter");
        } else if let Err(err) = logging::set_filter(&config.log.level) {
            tracing::warn!(error = ?err, "the log filter could not change");
        }
    }
    if config.discovery.instances != old.discovery.instances {
        discovery.reload(&config.discovery);
    }
    let needs_restart = [
        ("node.listen", old.node.listen != config.node.listen),
        (
            "node.admin_listen",
            old.node.admin_listen != config.node.admin_listen,
        ),
        ("node.services", old.node.services != config.node.services),
        (
            "discovery.backend",
            old.discovery.backend != config.discovery.backend,
        ),
        (
            "discovery.nats",
            old.discovery.nats != config.discovery.nats,
        ),
        ("bus", old.bus != config.bus),
    ];
    for (key, _) in needs_restart.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(key, "this change takes effect at the next restart");
    }
    tracing::info!("configuration reloaded");
    live.publish(config);
}
