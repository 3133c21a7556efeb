//! Label sets of the built-in metrics, and the interner that keeps label
//! values shared (an `Arc<str>` clone per request, no allocation).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use std::fmt;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};

/// The value used for anything outside the bounded set of label values.
pub(crate) const OTHER: &str = "other";
/// Most distinct values an [`Interner`] keeps; later ones become [`OTHER`].
const MAX_INTERNED: usize = 1024;

/// Server gRPC calls: `rpc_system`, `rpc_service`, `rpc_method`,
/// `rpc_grpc_status_code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct RpcLabels {
    pub(crate) route: RpcRouteLabels,
    pub(crate) code: i32,
}

impl EncodeLabelSet for RpcLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        self.route.encode(encoder)?;
        ("rpc_grpc_status_code", self.code).encode(encoder.encode_label())
    }
}

/// gRPC calls in flight: `rpc_system`, `rpc_service`, `rpc_method`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct RpcRouteLabels {
    pub(crate) system: &'static str,
    pub(crate) service: Arc<str>,
    pub(crate) method: Arc<str>,
}

impl EncodeLabelSet for RpcRouteLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        ("rpc_system", self.system).encode(encoder.encode_label())?;
        ("rpc_service", &*self.service).encode(encoder.encode_label())?;
        ("rpc_method", &*self.method).encode(encoder.encode_label())
    }
}

/// Server HTTP requests: `http_request_method`, `http_route`,
/// `http_response_status_code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct HttpLabels {
    pub(crate) route: HttpRouteLabels,
    pub(crate) status: u16,
}

impl EncodeLabelSet for HttpLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        self.route.encode(encoder)?;
        ("http_response_status_code", self.status).encode(encoder.encode_label())
    }
}

/// Server HTTP requests in flight.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpRouteLabels {
    pub(crate) http_request_method: &'static str,
    pub(crate) http_route: Arc<str>,
}

/// Client gRPC calls.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcClientLabels {
    pub(crate) rpc_system: &'static str,
    pub(crate) peer_service: Arc<str>,
    pub(crate) rpc_method: Arc<str>,
    pub(crate) rpc_grpc_status_code: i32,
}

/// Client HTTP requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpClientLabels {
    pub(crate) peer_service: Arc<str>,
    pub(crate) http_request_method: &'static str,
    pub(crate) http_response_status_code: u16,
}

/// One circuit breaker: what it guards and the protocol of its calls (a
/// service's gRPC and HTTP clients have breakers of their own).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BreakerLabels {
    pub(crate) breaker: Arc<str>,
    pub(crate) protocol: &'static str,
}

/// A breaker's change of state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransitionLabels {
    pub(crate) breaker: Arc<str>,
    pub(crate) protocol: &'static str,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
}

/// A downstream service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabels {
    pub(crate) peer_service: Arc<str>,
}

/// A listener: `main`, or `admin` for the admin listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    pub(crate) listener: &'static str,
}

/// A bus backend.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BusSystemLabels {
    pub(crate) messaging_system: &'static str,
}

/// One subscriber: its backend, declared subject and service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BusLabels {
    pub(crate) messaging_system: &'static str,
    pub(crate) messaging_destination: Arc<str>,
    pub(crate) service: Arc<str>,
}

/// A rate limiter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimiterLabels {
    pub(crate) limiter: String,
}

/// A configuration reload's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    pub(crate) result: &'static str,
}

/// The build.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub(crate) version: &'static str,
    pub(crate) node: String,
}

/// The HTTP method as a bounded label value (`_OTHER` for extension methods,
/// as the OpenTelemetry conventions say).
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(method)]
}

/// Every value of the `http.request.method` label, by [`method_index`].
pub(crate) const METHOD_LABELS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

/// Where `method`'s label is in [`METHOD_LABELS`].
pub(crate) fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        http::Method::CONNECT => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

/// Shares label values: the first request with a value allocates it, later
/// ones clone an `Arc`. Holds at most [`MAX_INTERNED`] values; past that,
/// new values map to [`OTHER`] so a flood of distinct values cannot grow
/// memory or label cardinality.
#[derive(Debug)]
pub(crate) struct Interner {
    values: RwLock<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            values: RwLock::new(HashMap::new()),
            other: Arc::from(OTHER),
        }
    }
}

impl Interner {
    /// The shared value for `value`.
    pub(crate) fn get(&self, value: &str) -> Arc<str> {
        if let Some(found) = self
            .values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
        {
            return Arc::clone(found);
        }
        let mut values = self.values.write().unwrap_or_else(PoisonError::into_inner);
        if values.len() >= MAX_INTERNED {
            return Arc::clone(&self.other);
        }
        Arc::clone(
            values
                .entry(value.into())
                .or_insert_with(|| Arc::from(value)),
        )
    }

    /// The value for "anything else".
    pub(crate) fn other(&self) -> Arc<str> {
        Arc::clone(&self.other)
    }
}
