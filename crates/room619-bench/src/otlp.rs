//! An OTLP trace receiver for the observability benchmarks: a tonic
//! `TraceService` (from the official `opentelemetry-proto` definitions) that
//! counts the spans exported to it, and the subscriber an observed node's
//! threads run.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use room619::observability::{TelemetryConfig, logging, tracing::Telemetry};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _};

use crate::BoxError;

/// The OTLP receiver: counts the spans exported to it.
#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<AtomicU64>,
}

impl Receiver {
    /// The spans received so far.
    #[must_use]
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Serves the receiver on `127.0.0.1:0` (on the current runtime); returns
    /// its URL.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    pub async fn serve(self) -> Result<String, BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self))
                .serve_with_incoming(incoming),
        );
        Ok(format!("http://{addr}"))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.spans
            .fetch_add(u64::try_from(spans).unwrap_or(u64::MAX), Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// What an observed node's threads run besides metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// The JSON log layer (`info`, to a sink).
    pub logs: bool,
    /// The OpenTelemetry layer.
    pub otel: bool,
}

/// The provider exporting to `endpoint` with parent-based `ratio` sampling.
/// Call it inside a tokio runtime.
///
/// # Errors
///
/// When the exporter cannot be built.
pub fn telemetry(endpoint: &str, ratio: f64) -> Result<Telemetry, BoxError> {
    let config = TelemetryConfig {
        otlp_endpoint: Some(endpoint.to_owned()),
        sampling_ratio: ratio,
        ..TelemetryConfig::default()
    };
    Telemetry::new(&config, "bench")?.ok_or_else(|| "no OTLP endpoint".into())
}

/// The subscriber of an observed node: `EnvFilter("info")`, the
/// OpenTelemetry layer of `telemetry` and the JSON log layer writing to a
/// sink, as `layers` says; `None` when neither is on.
#[must_use]
pub fn subscriber(layers: Layers, telemetry: &Telemetry) -> Option<tracing::Dispatch> {
    if !layers.logs && !layers.otel {
        return None;
    }
    Some(tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(layers.otel.then(|| telemetry.layer()))
            .with(layers.logs.then(|| logging::json_layer(std::io::sink))),
    ))
}
