//! [`TelemetryConfig`]: the `[telemetry]` section.

use serde::{Deserialize, Serialize};

/// Metrics and OpenTelemetry tracing settings.
///
/// ```toml
/// [telemetry]
/// metrics = true
/// otlp_endpoint = "http://otel-collector:4317"
/// sampling_ratio = 0.1
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Whether requests are measured and `/metrics` is served (on the admin
    /// listener when there is one). Default: `true`.
    pub metrics: bool,
    /// Where spans are exported with OTLP over gRPC, such as
    /// `http://localhost:4317`; unset turns export off (trace context is
    /// still propagated). Used by
    /// [`Telemetry::new`](crate::observability::tracing::Telemetry::new).
    /// Default: unset.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded, from `0.0` to `1.0`; a request that
    /// arrives with a trace context follows its caller's decision
    /// (parent-based sampling). Default: `1.0`.
    pub sampling_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            otlp_endpoint: None,
            sampling_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// Checks the values; the error names the key (relative to `telemetry`).
    ///
    /// # Errors
    ///
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err((
                "sampling_ratio".to_owned(),
                format!("must be between 0.0 and 1.0 (got {})", self.sampling_ratio),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && endpoint.parse::<http::Uri>().map_or(true, |uri| {
                uri.scheme().is_none() || uri.authority().is_none()
            })
        {
            return Err((
                "otlp_endpoint".to_owned(),
                format!("`{endpoint}` is not a URL such as http://collector:4317"),
            ));
        }
        Ok(())
    }
}
