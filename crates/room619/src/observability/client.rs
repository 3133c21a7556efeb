//! What `RpcChannel` and `HttpClient` record about each call: a client span
//! whose trace context goes out with the request, and the client metrics.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, Method};
use tracing::Span;

use super::{
    metrics::{
        ClientMetrics, Metrics,
        labels::{HttpClientLabels, RpcClientLabels, method_label},
    },
    trace_context,
};

/// `UNAVAILABLE`: a call that failed without an answer.
pub(crate) const GRPC_UNAVAILABLE: i32 = 14;

/// The observer of one client (one target service).
#[derive(Clone, Debug)]
pub(crate) struct ClientObserver {
    metrics: Option<ClientMetrics>,
    peer: Arc<str>,
}

impl ClientObserver {
    pub(crate) fn new(peer: &Arc<str>, metrics: Option<&Metrics>) -> Self {
        Self {
            metrics: metrics.map(|metrics| metrics.client().clone()),
            peer: Arc::clone(peer),
        }
    }

    /// The span of a gRPC call to `path` (`/pkg.Service/Method`); its trace
    /// context is written into `headers`.
    pub(crate) fn grpc_span(&self, path: &str, transport: &str, headers: &mut HeaderMap) -> Span {
        let name = path.strip_prefix('/').unwrap_or(path);
        let (service, method) = name.split_once('/').unwrap_or((name, ""));
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = name,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            peer.service = %self.peer,
            transport,
        );
        trace_context::inject_http(&span, headers);
        span
    }

    /// The span of an HTTP request; its trace context goes into `headers`.
    pub(crate) fn http_span(
        &self,
        method: &Method,
        transport: &str,
        headers: &mut HeaderMap,
    ) -> Span {
        let span = tracing::info_span!(
            "http.client",
            otel.name = method_label(method),
            otel.kind = "client",
            http.request.method = method_label(method),
            peer.service = %self.peer,
            transport,
        );
        trace_context::inject_http(&span, headers);
        span
    }

    /// Records a finished gRPC call.
    pub(crate) fn grpc_done(&self, span: &Span, path: &str, code: i32, elapsed: Duration) {
        trace_context::set_attribute(span, "rpc.grpc.status_code", code.into());
        if let Some(metrics) = &self.metrics {
            let name = path.strip_prefix('/').unwrap_or(path);
            metrics.grpc(
                &RpcClientLabels {
                    rpc_system: "grpc",
                    peer_service: Arc::clone(&self.peer),
                    rpc_method: metrics.methods.get(name),
                    rpc_grpc_status_code: code,
                },
                elapsed,
            );
        }
    }

    /// Records a finished HTTP request; `status` 0 means no answer.
    pub(crate) fn http_done(&self, span: &Span, method: &Method, status: u16, elapsed: Duration) {
        if status != 0 {
            trace_context::set_attribute(span, "http.response.status_code", status.into());
        }
        if let Some(metrics) = &self.metrics {
            metrics.http(
                &HttpClientLabels {
                    peer_service: Arc::clone(&self.peer),
                    http_request_method: method_label(method),
                    http_response_status_code: status,
                },
                elapsed,
            );
        }
    }
}
