//! What `RpcChannel` and `HttpClient` record about each call: a client span
//! whose trace context goes out with the request, and the client metrics.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use http::{HeaderMap, Method};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
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

/// Most (method, status code) pairs of one peer whose metrics are kept at
/// hand; calls with others look their metrics up by label set each time.
const MAX_KEPT: usize = 32;
/// Most peers whose metrics are kept at hand.
const MAX_PEERS: usize = 1024;

/// The observer of one client (one target service).
#[derive(Clone, Debug)]
pub(crate) struct ClientObserver {
    metrics: Option<ClientMetrics>,
    peer: Arc<str>,
    /// The metrics of the calls made to the peer so far, shared by every
    /// client of the peer: a call finds its counter and histogram here by
    /// comparing a few strings, instead of hashing a label set twice.
    kept: Arc<KeptCalls>,
}

/// The counters and histograms of the calls made to one peer, by path and
/// status code.
#[derive(Debug, Default)]
pub(crate) struct KeptCalls(RwLock<Vec<Kept>>);

/// The counter and histogram of the calls to one path ending with one code.
#[derive(Debug)]
struct Kept {
    path: Box<str>,
    code: i32,
    requests: Counter,
    duration: Histogram,
}

impl KeptCalls {
    /// Counts a call in the kept metrics of `path` and `code`, if there are.
    fn record(&self, path: &str, code: i32, seconds: f64) -> bool {
        let kept = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let Some(found) = kept
            .iter()
            .find(|kept| kept.code == code && *kept.path == *path)
        else {
            return false;
        };
        found.requests.inc();
        found.duration.observe(seconds);
        true
    }

    fn keep(&self, path: &str, code: i32, requests: Counter, duration: Histogram) {
        let mut kept = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < MAX_KEPT
            && !kept
                .iter()
                .any(|kept| kept.code == code && *kept.path == *path)
        {
            kept.push(Kept {
                path: path.into(),
                code,
                requests,
                duration,
            });
        }
    }
}

/// The kept metrics of every peer, shared by a node's clients.
#[derive(Debug, Default)]
pub(crate) struct KeptByPeer(Mutex<HashMap<Arc<str>, Arc<KeptCalls>>>);

impl KeptByPeer {
    /// The kept metrics of `peer` (unshared ones past [`MAX_PEERS`] peers).
    fn of(&self, peer: &Arc<str>) -> Arc<KeptCalls> {
        let mut peers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = peers.get(peer) {
            return Arc::clone(kept);
        }
        let kept = Arc::default();
        if peers.len() < MAX_PEERS {
            peers.insert(Arc::clone(peer), Arc::clone(&kept));
        }
        kept
    }
}

impl ClientObserver {
    pub(crate) fn new(peer: &Arc<str>, metrics: Option<&Metrics>) -> Self {
        let metrics = metrics.map(|metrics| metrics.client().clone());
        Self {
            kept: metrics
                .as_ref()
                .map_or_else(Arc::default, |metrics| metrics.kept.of(peer)),
            metrics,
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
            peer.service = &*self.peer,
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
            peer.service = &*self.peer,
            transport,
        );
        trace_context::inject_http(&span, headers);
        span
    }

    /// Records a finished gRPC call.
    pub(crate) fn grpc_done(&self, span: &Span, path: &str, code: i32, elapsed: Duration) {
        trace_context::set_attribute(span, "rpc.grpc.status_code", code.into());
        if code != 0 {
            let name = crate::resilience::code_name(code.into());
            trace_context::set_error(span, name.into());
        }
        let Some(metrics) = &self.metrics else {
            return;
        };
        let seconds = elapsed.as_secs_f64();
        if self.kept.record(path, code, seconds) {
            return;
        }
        let name = path.strip_prefix('/').unwrap_or(path);
        let (requests, duration) = metrics.grpc(&RpcClientLabels {
            rpc_system: "grpc",
            peer_service: Arc::clone(&self.peer),
            rpc_method: metrics.methods.get(name),
            rpc_grpc_status_code: code,
        });
        requests.inc();
        duration.observe(seconds);
        self.kept.keep(path, code, requests, duration);
    }

    /// Records a finished HTTP request; `status` 0 means no answer.
    pub(crate) fn http_done(&self, span: &Span, method: &Method, status: u16, elapsed: Duration) {
        if status != 0 {
            trace_context::set_attribute(span, "http.response.status_code", status.into());
        }
        // No answer, or a 4xx / 5xx one: a failed call, for its caller.
        if status == 0 {
            trace_context::set_error(span, "_OTHER".into());
        } else if status >= 400 {
            trace_context::set_error(span, status.to_string().into());
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
