//! Logs, metrics, traces and health.
//!
//! - [`logging`]: the `tracing` subscriber (JSON or pretty, filtered), with
//!   the OpenTelemetry layer when a [`tracing::Telemetry`] is installed.
//! - [`metrics`]: the node's Prometheus registry, served at `/metrics`.
//! - [`tracing`] (feature `otel`): OpenTelemetry spans exported over OTLP/gRPC.
//! - [`redact`]: credential headers hidden and control characters escaped
//!   for values you log.
//!
//! Every request a node serves is observed by one layer per protocol: it
//! takes (or makes) the `x-request-id`, continues the caller's W3C trace
//! context (`traceparent`, `tracestate`, `baggage`), opens a server span with
//! the OpenTelemetry semantic attributes, and counts and times the request.
//! Outgoing calls (`RpcChannel`, `HttpClient`) and bus messages carry the
//! trace context on. Liveness and readiness are served by the
//! [`node`](crate::node).

pub(crate) mod client;
mod config;
mod json_fields;
mod json_log;
pub mod logging;
pub mod metrics;
pub mod redact;
pub(crate) mod request_scope;
pub(crate) mod server;
#[cfg(test)]
mod test_lines;
pub(crate) mod trace_context;
#[cfg(feature = "otel")]
pub mod tracing;

pub use config::TelemetryConfig;
