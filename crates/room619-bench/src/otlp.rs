//! An OTLP trace receiver for the observability benchmarks: a tonic server
//! of the collector's `TraceService` (from the official `opentelemetry-proto`
//! definitions) that counts the spans exported to it, and the subscriber an
//! observed node's threads run.
//!
//! The receiver shares the machine with the node under test, so what it
//! does per span is charged to the node's throughput. By default it decodes
//! the request's envelope only (`ResourceSpans` and `ScopeSpans`, each span
//! kept as its undecoded bytes), as a collector forwarding spans would;
//! [`Receiver::decoding`] decodes every span into `opentelemetry-proto`'s
//! messages, which costs about as much per span as the node's whole export.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use room619::observability::{TelemetryConfig, logging, tracing::Telemetry};
use tonic::{
    body::Body,
    codegen::{BoxFuture, Service},
    server::{Grpc, NamedService, UnaryService},
};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _};

use crate::BoxError;

/// The collector's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP receiver: counts the spans exported to it.
#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<AtomicU64>,
    /// Whether every span is decoded, not just the envelope.
    decode: bool,
}

impl Receiver {
    /// A receiver that decodes every span it is sent into
    /// `opentelemetry-proto`'s messages.
    #[must_use]
    pub fn decoding() -> Self {
        Self {
            decode: true,
            ..Self::default()
        }
    }

    /// The spans received so far.
    #[must_use]
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    fn add(&self, spans: usize) {
        self.spans
            .fetch_add(u64::try_from(spans).unwrap_or(u64::MAX), Ordering::Relaxed);
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
        let mut server = tonic::transport::Server::builder();
        if self.decode {
            let router = server.add_service(TraceServiceServer::new(self));
            tokio::spawn(router.serve_with_incoming(incoming));
        } else {
            let router = server.add_service(CountingServer(self));
            tokio::spawn(router.serve_with_incoming(incoming));
        }
        Ok(format!("http://{addr}"))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(
            request
                .into_inner()
                .resource_spans
                .iter()
                .flat_map(|resource| &resource.scope_spans)
                .map(|scope| scope.spans.len())
                .sum(),
        );
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// `ExportTraceServiceRequest`, down to each span's bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceEnvelope>,
}

/// `ResourceSpans` without its resource.
#[derive(Clone, PartialEq, prost::Message)]
struct ResourceEnvelope {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeEnvelope>,
}

/// `ScopeSpans` without its scope; each span undecoded.
#[derive(Clone, PartialEq, prost::Message)]
struct ScopeEnvelope {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
}

/// The `TraceService` of a receiver that decodes envelopes only.
#[derive(Clone)]
struct CountingServer(Receiver);

impl NamedService for CountingServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl UnaryService<Envelope> for CountingServer {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Envelope>) -> Self::Future {
        self.0.add(
            request
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|resource| &resource.scope_spans)
                .map(|scope| scope.spans.len())
                .sum(),
        );
        std::future::ready(Ok(tonic::Response::new(
            ExportTraceServiceResponse::default(),
        )))
    }
}

impl Service<http::Request<Body>> for CountingServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if request.uri().path() != EXPORT_PATH {
                return Ok(
                    tonic::Status::unimplemented(request.uri().path().to_owned()).into_http(),
                );
            }
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<
                ExportTraceServiceResponse,
                Envelope,
            >::default());
            Ok(grpc.unary(service, request).await)
        })
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
