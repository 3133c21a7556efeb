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
/// `log.level` otherwise (it picks the events that are logged; room619's
/// request spans, which carry the trace and log context, are recorded at
/// every level); the format is `log.format` (`auto` picks pretty on a
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
    let filter = RequestSpans(filter);
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

/// A log filter that lets room619's request spans through whatever level it
/// sets (`rpc.server`, `http.server`, `rpc.client`, `http.client`,
/// `bus.process`): they carry a request's trace context and its log context
/// (service, method, request id, trace and span ids). The filter decides
/// which events are logged; it must not decide, as a side effect, that a
/// `warn` line in a handler has no request context, that no span is
/// exported, or that the trace stops at this node.
struct RequestSpans<L>(L);

/// Whether `metadata` is one of room619's request spans.
fn is_request_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span()
        && metadata.target().starts_with("room619::")
        && matches!(
            metadata.name(),
            "rpc.server" | "http.server" | "rpc.client" | "http.client" | "bus.process"
        )
}

impl<S: tracing::Subscriber, L: tracing_subscriber::Layer<S>> tracing_subscriber::Layer<S>
    for RequestSpans<L>
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Asked first all the same: it keeps what it needs of every callsite.
        let interest = self.0.register_callsite(metadata);
        if is_request_span(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            interest
        }
    }

    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        is_request_span(metadata) || self.0.enabled(metadata, ctx)
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        // The request spans are `INFO`: a lower hint would turn them off
        // before any callsite is asked.
        self.0
            .max_level_hint()
            .map(|level| level.max(tracing::level_filters::LevelFilter::INFO))
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(
        &self,
        old: &tracing::span::Id,
        new: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_id_change(old, new, ctx);
    }
}

/// [`init`]'s filter as a layer over `filter`, for the tests.
#[cfg(test)]
pub(crate) fn log_filter<S: tracing::Subscriber>(
    filter: EnvFilter,
) -> impl tracing_subscriber::Layer<S> {
    RequestSpans(filter)
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
