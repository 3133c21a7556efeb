//! Logs, metrics, traces and health.
//!
//! - [`logging`]: the `tracing` subscriber (JSON or pretty, filtered).
//!
//! Metrics and OpenTelemetry tracing come with the observability issue;
//! liveness and readiness are served by the [`node`](crate::node).

pub mod logging;
