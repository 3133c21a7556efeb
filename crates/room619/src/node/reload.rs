//! Configuration hot reload: the config file is polled; a valid change is
//! published on the node's [`LiveConfig`] and applied live (the log filter,
//! the listed discovery instances, the rate limits, the resilience policies
//! of clients made after the reload); an invalid one is logged
//! with its key and counted (`room619_config_reloads_total{result="failed"}`),
//! and the running configuration stays. A file that sets no key (empty, or
//! only blanks and comments: truncated, being written) is refused too, not
//! taken for the defaults.
//!
//! Everything else is read at start (the `node` section but its poll
//! interval, `limits`, `auth`, `bus`, `http`, `telemetry`, the discovery
//! backend and its settings, the rate limiter's backend): a reload that
//! changes it is applied for the rest and logs a warning naming the section
//! ("takes effect at the next restart"); a removed API key, say, keeps
//! working until then. `RUST_LOG`, when set at start,
//! keeps winning over `log.level`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ConfigError, ConfigLoader, LiveConfig, Overrides},
    discovery::Discovery,
    middleware::rate_limit::RateLimiter,
    observability::{logging, metrics::Metrics},
    rpc::client::Clients,
};

/// How long a changed file must stay the same before it is loaded.
const SETTLE: Duration = Duration::from_millis(50);

/// What a reload changes besides the [`LiveConfig`], and where it is counted.
pub(super) struct Targets {
    pub(super) live: LiveConfig,
    pub(super) discovery: Arc<dyn Discovery>,
    pub(super) rate_limiter: Arc<RateLimiter>,
    pub(super) clients: Clients,
    pub(super) metrics: Option<Metrics>,
}

/// Where the configuration is reloaded from: the file (watched) plus the
/// process environment plus `overrides`, the same sources as at start, then
/// `adjust`.
#[derive(Debug, Clone)]
pub(crate) struct ReloadSource {
    pub(crate) path: PathBuf,
    pub(crate) overrides: Overrides,
    /// The file as it was when the watch was asked for (`None`: unreadable):
    /// what changes are measured against.
    pub(crate) baseline: Option<Vec<u8>>,
    pub(crate) adjust: Option<Adjust>,
}

/// The application's own changes to a loaded configuration
/// ([`NodeBuilder::adjust_reloads`](super::NodeBuilder::adjust_reloads)).
#[derive(Clone)]
pub(crate) struct Adjust(Arc<dyn Fn(&mut Config) + Send + Sync>);

impl Adjust {
    pub(crate) fn new(adjust: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        Self(Arc::new(adjust))
    }
}

impl std::fmt::Debug for Adjust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Adjust(..)")
    }
}

/// Starts polling the file every `node.config_poll_interval`, until
/// `shutdown`; the first change is measured against the source's baseline.
pub(super) fn spawn(source: ReloadSource, targets: Targets, shutdown: CancellationToken) {
    tokio::spawn(run(source, targets, shutdown));
}

async fn run(mut source: ReloadSource, targets: Targets, shutdown: CancellationToken) {
    let mut last = source.baseline.take();
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
        // A file being written in place (an editor saving, `cat >`, `scp`)
        // can be read half written: it is loaded once two reads agree, and
        // from the bytes read, not from a third read.
        tokio::time::sleep(SETTLE).await;
        if tokio::fs::read(&source.path).await.ok() != now {
            continue;
        }
        last.clone_from(&now);
        let sources = ConfigLoader::new().overrides(source.overrides.clone());
        let loaded = match now.as_deref().map(std::str::from_utf8) {
            // Unreadable: the loader says why.
            None => sources.file(&source.path).load(),
            Some(Ok(text)) if says_nothing(text) => Err(ConfigError::new(
                "",
                "the file sets nothing (empty, truncated, or only blanks and comments); \
                 it is not taken to mean the defaults",
            )),
            Some(Ok(text)) => sources.toml_str(text).load(),
            Some(Err(err)) => Err(ConfigError::new(
                "",
                format!("the file is not UTF-8: {err}"),
            )),
        }
        .and_then(|mut config| match &source.adjust {
            Some(Adjust(adjust)) => {
                adjust(&mut config);
                config.validate().map(|()| config)
            }
            None => Ok(config),
        })
        .map_err(|err| err.with_source_name(source.path.display().to_string()))
        // Validation checked the rate-limit rules as the limiter's table
        // holds them; should the table still refuse them, nothing of the
        // file applies.
        .and_then(|config| {
            targets
                .rate_limiter
                .update(&config.rate_limit)
                .map(|()| config)
                .map_err(|err| {
                    ConfigError::new("rate_limit.rules", err.message().to_owned())
                        .with_source_name(source.path.display().to_string())
                })
        });
        let applied = match loaded {
            Ok(config) => {
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
                live.reject(&err);
                false
            }
        };
        if let Some(metrics) = &targets.metrics {
            metrics.record_config_reload(applied);
        }
    }
}

/// Whether `text` is TOML that sets no key: empty, or only whitespace and
/// comments (a file truncated, or being written). Reloaded, it would put
/// every setting back to its default live: rate limits and listed instances
/// would vanish. TOML that does not parse is for the loader to report.
fn says_nothing(text: &str) -> bool {
    use figment::{
        Provider as _,
        providers::{Format as _, Toml},
        value::Dict,
    };
    Toml::string(text)
        .data()
        .is_ok_and(|profiles| profiles.values().all(Dict::is_empty))
}

/// The sections (or keys) that differ between `old` and `new` and are read
/// only at start: everything but the log level, the listed discovery
/// instances, the rate-limit rules and trusted proxies, the resilience
/// policies, the poll interval and the application's own sections (which
/// [`LiveConfig`] hands to whoever watches it).
fn restart_bound(old: &Config, new: &Config) -> Vec<&'static str> {
    let node = crate::config::NodeConfig {
        config_poll_interval: new.node.config_poll_interval,
        ..old.node.clone()
    };
    let log = crate::config::LogConfig {
        level: new.log.level.clone(),
        ..old.log.clone()
    };
    let discovery = crate::config::DiscoveryConfig {
        instances: new.discovery.instances.clone(),
        ..old.discovery.clone()
    };
    let rate_limit = crate::middleware::rate_limit::RateLimitConfig {
        rules: new.rate_limit.rules.clone(),
        trusted_proxies: new.rate_limit.trusted_proxies.clone(),
        forwarded_header: new.rate_limit.forwarded_header,
        ..old.rate_limit.clone()
    };
    [
        ("node", node != new.node),
        ("limits", old.limits != new.limits),
        ("log.format", log != new.log),
        ("discovery", discovery != new.discovery),
        ("bus", old.bus != new.bus),
        ("auth", old.auth != new.auth),
        ("rate_limit.backend", rate_limit != new.rate_limit),
        ("telemetry", old.telemetry != new.telemetry),
        ("http", old.http != new.http),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
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
    for key in restart_bound(&old, &config) {
        tracing::warn!(
            key,
            "this setting is read at start: the change takes effect at the next restart"
        );
    }
    tracing::info!("configuration reloaded");
    live.publish(config);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{restart_bound, says_nothing};
    use crate::config::Config;

    #[test]
    fn only_a_file_that_sets_no_key_says_nothing() {
        for nothing in [
            "",
            "  \n\t\n",
            "# all commented out\n# [node]\n",
            "\r\n# x\r\n",
        ] {
            assert!(says_nothing(nothing), "{nothing:?}");
        }
        for something in ["[node]\nname = \"x\"\n", "[node]\n", "[node\n"] {
            assert!(!says_nothing(something), "{something:?}");
        }
    }

    #[test]
    fn every_setting_read_at_start_is_named_and_live_ones_are_not() {
        let old = Config::default();
        let mut live = old.clone();
        live.log.level = "debug".into();
        live.node.config_poll_interval = Duration::from_millis(250);
        live.rate_limit.trusted_proxies = vec!["10.0.0.0/8".into()];
        live.rate_limit.forwarded_header =
            crate::middleware::rate_limit::ForwardedHeader::Forwarded;
        live.resilience.defaults.retry.max_attempts = 5;
        live.app.insert("shop".into(), serde_json::json!({"x": 1}));
        assert!(
            restart_bound(&old, &live).is_empty(),
            "{:?}",
            restart_bound(&old, &live)
        );

        let mut bound = live.clone();
        bound.node.drain_timeout = Duration::from_secs(1);
        bound.limits.max_header_bytes += 1;
        bound.auth.issuer = Some("https://issuer.example".into());
        bound.http.compression = !bound.http.compression;
        bound.telemetry.metrics = !bound.telemetry.metrics;
        bound.rate_limit.redis_prefix = "other".into();
        bound.discovery.backend = crate::discovery::DiscoveryBackend::Static;
        assert_eq!(
            restart_bound(&live, &bound),
            [
                "node",
                "limits",
                "discovery",
                "auth",
                "rate_limit.backend",
                "telemetry",
                "http"
            ]
        );
    }
}
