//! Structured logging with `tracing`: JSON for pipelines, pretty for people.

use std::{
    io::IsTerminal as _,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tracing_subscriber::{
    EnvFilter, Registry, fmt, layer::SubscriberExt as _, reload, util::SubscriberInitExt as _,
};

use crate::{
    Error, Result,
    config::{LogConfig, LogFormat},
};

/// Installs the global `tracing` subscriber: the filter is `RUST_LOG` when set,
/// `log.level` otherwise; the format is `log.format` (`auto` picks pretty on a
/// terminal and JSON elsewhere). Logs go to standard error. With feature
/// `otel`, spans also go to the provider
/// [`Telemetry::install`](super::tracing::Telemetry::install) installed.
///
/// ```
/// room619::observability::logging::init(&room619::config::LogConfig::default()).ok();
/// tracing::info!("hello");
/// ```
///
/// # Errors
///
/// `Config` when the filter does not parse; `Internal` when a global
/// subscriber is already installed.
pub fn init(config: &LogConfig) -> Result<()> {
    let (filter, from_env) = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.trim().is_empty() => (filter, true),
        _ => (config.level.clone(), false),
    };
    let filter = EnvFilter::builder()
        .parse(&filter)
        .map_err(|err| Error::config(format!("invalid log filter `{filter}`: {err}")))?;
    let (filter, handle) = reload::Layer::new(filter);
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(telemetry_layer());
    let installed = if json {
        registry.with(json_layer(std::io::stderr)).try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .event_format(super::request_scope::WithRequestScope::text())
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
    installed.map_err(|err| {
        Error::internal("a global tracing subscriber is already installed").with_source(err)
    })?;
    FILTER_FROM_ENV.store(from_env, Ordering::Relaxed);
    if FILTER.set(handle).is_err() {
        tracing::debug!("the log filter handle was already set");
    }
    Ok(())
}

/// The handle that swaps the filter of the subscriber [`init`] installed.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// Whether the filter came from `RUST_LOG` (which config reloads leave alone).
static FILTER_FROM_ENV: AtomicBool = AtomicBool::new(false);

/// Replaces the log filter of the subscriber [`init`] installed, at once
/// (configuration hot reload calls it when `log.level` changes).
///
/// ```
/// use room619::observability::logging;
///
/// logging::init(&room619::config::LogConfig::default()).ok();
/// logging::set_filter("room619=debug,info").unwrap();
/// assert!(logging::set_filter("room619=loud").is_err());
/// ```
///
/// # Errors
///
/// `Config` when the filter does not parse; `Internal` when [`init`] did not
/// install the subscriber.
pub fn set_filter(filter: &str) -> Result<()> {
    let parsed = EnvFilter::builder()
        .parse(filter)
        .map_err(|err| Error::config(format!("invalid log filter `{filter}`: {err}")))?;
    let handle = FILTER.get().ok_or_else(|| {
        Error::internal("the log filter cannot change: room619's logging::init did not run")
    })?;
    handle
        .reload(parsed)
        .map_err(|err| Error::internal("cannot replace the log filter").with_source(err))
}

/// Whether the filter [`init`] installed came from `RUST_LOG`; `RUST_LOG`
/// wins over `log.level`, at start and on every reload.
#[must_use]
pub fn filter_from_env() -> bool {
    FILTER_FROM_ENV.load(Ordering::Relaxed)
}

/// The OpenTelemetry layer of the installed provider, if any.
fn telemetry_layer<S>() -> Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync + 'static>>
where
    S: tracing::Subscriber
        + for<'span> tracing_subscriber::registry::LookupSpan<'span>
        + Send
        + Sync
        + 'static,
{
    #[cfg(feature = "otel")]
    return super::tracing::installed_layer();
    #[cfg(not(feature = "otel"))]
    None
}

/// The JSON log layer [`init`] installs, writing to `writer`: one object a
/// line (control characters escaped) with `timestamp` (RFC 3339, UTC),
/// `level`, the event's fields at the top level, `target`, and the current
/// span's fields and `name` under `span`; inside a request (or a bus
/// message's processing), also at the top level, its `service`, `method`
/// and `request_id`, and with feature `otel` and a provider installed, the
/// request span's `trace_id` and `span_id` — in child spans too. The pretty
/// format ends each such line with the same as `key=value` pairs.
///
/// It keeps nothing for a span without fields (a request span has none) and
/// writes each line in one pass: see `docs/PERFORMANCE.md`.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(room619::observability::logging::json_layer(std::io::sink));
/// tracing::subscriber::with_default(subscriber, || tracing::info!(answer = 42, "logged"));
/// ```
pub fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'writer> fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    super::json_log::JsonLog::new(writer)
}
