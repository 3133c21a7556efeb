//! OpenTelemetry tracing (feature `otel`): a tracer provider exporting spans
//! with OTLP over gRPC, and the `tracing` layer that turns room619's spans
//! (and the application's) into OpenTelemetry spans.
//!
//! ```no_run
//! use room619::{config::Config, observability::{logging, tracing::Telemetry}};
//!
//! # async fn run() -> room619::Result<()> {
//! let config = Config::load()?;
//! // Inside the tokio runtime: the exporter's gRPC channel runs on it.
//! if let Some(telemetry) = Telemetry::new(&config.telemetry, &config.node.name)? {
//!     telemetry.install(); // before `logging::init`, which adds its layer
//! }
//! logging::init(&config.log)?;
//! // ... run the node; it flushes the installed provider on shutdown.
//! # Ok(()) }
//! ```

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    Resource,
    trace::{SdkTracerProvider, TracerProviderBuilder},
};
use tracing_subscriber::{Layer, registry::LookupSpan};

use self::{otlp::OtlpExporter, processor::OtlpProcessor};
use super::TelemetryConfig;
use crate::{Error, Result};

pub(crate) mod layer;
mod otlp;
mod processor;
mod sampling;

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The provider the node flushes at shutdown (the last one installed).
static INSTALLED: Mutex<Option<Telemetry>> = Mutex::new(None);

/// An OpenTelemetry tracer provider: spans batched and exported with OTLP
/// over gRPC, sampled parent-based with a ratio for new traces, resource
/// `service.name` set to the node's name.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// The provider's sampling, which the layer applies itself to spans
    /// it need not build with the SDK.
    sampling: sampling::Ratio,
}

impl Telemetry {
    /// The provider `config` describes, or `None` when
    /// `telemetry.otlp_endpoint` is unset (export off). Call it inside a
    /// tokio runtime.
    ///
    /// A sampled span is encoded as it ends and sent from a thread of its
    /// span processor's own, on the schedule of the SDK's batch processor
    /// and its variables: when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans (512)
    /// wait, `OTEL_BSP_SCHEDULE_DELAY` ms (5 000) after the last export, on
    /// [`flush`](Self::flush) and at shutdown, in requests of at most that
    /// many spans; a span that finds `OTEL_BSP_MAX_QUEUE_SIZE` spans (2 048)
    /// waiting, or is larger than a request may be (4 MiB), is dropped and
    /// counted in a warning (at most once a minute, and at shutdown). A
    /// value that is not a positive number is ignored.
    ///
    /// # Errors
    ///
    /// `Config` when the endpoint is invalid or the exporter cannot be built;
    /// `Internal` outside a tokio runtime, or when the export thread cannot
    /// be started.
    pub fn new(config: &TelemetryConfig, service_name: &str) -> Result<Option<Self>> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::internal(
                "the OTLP exporter must be made inside a tokio runtime (its channel runs there)",
            ));
        }
        let processor = OtlpProcessor::new(OtlpExporter::new(endpoint, EXPORT_TIMEOUT)?)?;
        Ok(Some(Self::build(
            SdkTracerProvider::builder().with_span_processor(processor),
            config.sampling_ratio,
            service_name,
        )))
    }

    /// A provider over any span exporter (tests, other protocols), with
    /// the SDK's batch processor.
    #[must_use]
    pub fn with_exporter(
        exporter: impl opentelemetry_sdk::trace::SpanExporter + 'static,
        sampling_ratio: f64,
        service_name: &str,
    ) -> Self {
        Self::build(
            SdkTracerProvider::builder().with_batch_exporter(exporter),
            sampling_ratio,
            service_name,
        )
    }

    fn build(builder: TracerProviderBuilder, sampling_ratio: f64, service_name: &str) -> Self {
        // Parent-based, a ratio of new traces: the SDK's
        // `ParentBased(TraceIdRatioBased)`, decided by the layer itself for
        // the spans it need not build.
        let sampling = sampling::Ratio::new(sampling_ratio);
        let provider = builder
            .with_sampler(sampling)
            .with_id_generator(sampling::Ids::default())
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        Self { provider, sampling }
    }

    /// The `tracing` layer that records spans with this provider. Spans
    /// carry their fields as attributes, except the `otel.*` fields that
    /// direct them (`otel.name`, `otel.kind`, `otel.status_code`,
    /// `otel.status_description`); not the `tracing` target (a Rust module
    /// path, no semantic-convention attribute, one more to copy, export and
    /// decode on every sampled span), the code location or the thread. An
    /// event in a sampled span becomes a span event (an `ERROR` one makes
    /// the span's status an error), `follows_from` a link. The span's
    /// OpenTelemetry context is current while it is entered, for libraries
    /// that read `opentelemetry::Context::current()`; a sampled span ends
    /// when it is last left (a server span when its answer is finished).
    ///
    /// Put it on `tracing-subscriber`'s [`Registry`](tracing_subscriber::Registry)
    /// (as [`logging::init`](super::logging::init) does): room619 reaches a
    /// span's OpenTelemetry side through the registry to continue a
    /// caller's trace and to send the trace context with outgoing calls.
    #[must_use]
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync + 'static,
    {
        layer::OtelLayer::new(self.provider.tracer("room619"), Some(self.sampling))
    }

    /// Makes this the provider [`logging::init`](super::logging::init)
    /// records spans with and a node flushes when it stops.
    pub fn install(&self) {
        *INSTALLED.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.clone());
    }

    /// Exports every finished span now. Blocks: call it from
    /// `spawn_blocking` inside a runtime.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the export failed.
    pub fn flush(&self) -> Result<()> {
        self.provider
            .force_flush()
            .map_err(|err| Error::unavailable(format!("exporting spans failed: {err}")))
    }
}

/// The OpenTelemetry context of `span`, as the layer of a [`Telemetry`]
/// records it (started now if it had not: the sampler decides): to send the
/// trace on through a client room619 does not wrap, or to read the span's
/// ids. `None` when no such layer, over `tracing-subscriber`'s
/// [`Registry`](tracing_subscriber::Registry), records the span.
///
/// ```
/// let span = tracing::info_span!("job");
/// // No subscriber records it here, so it has no context.
/// assert!(room619::observability::tracing::context(&span).is_none());
/// ```
#[must_use]
pub fn context(span: &tracing::Span) -> Option<opentelemetry::Context> {
    layer::with_span(span, |otel| otel.context().clone())
}

/// Makes `parent` the parent of `span`: a trace continued from something
/// room619 did not receive itself (a file, a queue it does not wrap). The
/// span must not have started (been entered, or asked for its
/// [`context`]): returns `false`, changing nothing, when it has or when no
/// [`Telemetry`] layer records it.
///
/// ```
/// use opentelemetry::Context;
///
/// let span = tracing::info_span!("import");
/// // No subscriber records it here: nothing to set.
/// assert!(!room619::observability::tracing::set_parent(&span, Context::new()));
/// ```
#[must_use = "`false` says the parent was not set"]
pub fn set_parent(span: &tracing::Span, parent: opentelemetry::Context) -> bool {
    layer::with_span(span, |otel| otel.set_parent(parent)) == Some(true)
}

/// The layer of the installed provider, for [`logging::init`](super::logging::init).
pub(crate) fn installed_layer<S>() -> Option<Box<dyn Layer<S> + Send + Sync + 'static>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync + 'static,
{
    let installed = INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()?;
    Some(installed.layer().boxed())
}

/// Flushes the installed provider, if any (the node does it at shutdown).
pub(crate) async fn flush_installed() {
    let installed = INSTALLED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|telemetry| telemetry.provider.clone());
    let Some(provider) = installed else {
        return;
    };
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(error = %err, "spans could not be exported at shutdown"),
        Err(err) => tracing::warn!(error = %err, "flushing spans failed"),
    }
}
