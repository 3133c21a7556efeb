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
    /// `http://localhost:4317` (plain HTTP/2: export does not speak TLS, so
    /// send to a collector agent beside the node); unset turns export off
    /// (trace context is still propagated). Used by
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
                uri.scheme() != Some(&http::uri::Scheme::HTTP) || uri.authority().is_none()
            })
        {
            return Err((
                "otlp_endpoint".to_owned(),
                format!(
                    "`{endpoint}` is not an http:// URL such as http://collector:4317 \
                     (export does not speak TLS: send to a collector agent beside the node)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TelemetryConfig;

    fn with_endpoint(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(endpoint.to_owned()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn plain_http_endpoints_are_accepted() {
        for endpoint in ["http://otel-collector:4317", "http://127.0.0.1:4317/"] {
            assert_eq!(with_endpoint(endpoint).validate(), Ok(()), "{endpoint}");
        }
        assert_eq!(TelemetryConfig::default().validate(), Ok(()));
    }

    #[test]
    fn other_endpoints_are_refused_by_name() {
        for endpoint in [
            "https://otel-collector:4317",
            "otel-collector:4317",
            "grpc://otel-collector:4317",
            "http://",
            "not a url",
        ] {
            let (key, why) = with_endpoint(endpoint)
                .validate()
                .err()
                .unwrap_or_else(|| panic!("`{endpoint}` was accepted"));
            assert_eq!(key, "otlp_endpoint");
            assert!(why.contains(endpoint) && why.contains("http://"), "{why}");
        }
    }

    #[test]
    fn sampling_ratios_outside_zero_to_one_are_refused() {
        for ratio in [-0.1, 1.5, f64::NAN] {
            let config = TelemetryConfig {
                sampling_ratio: ratio,
                ..TelemetryConfig::default()
            };
            let (key, _) = config
                .validate()
                .err()
                .unwrap_or_else(|| panic!("{ratio} was accepted"));
            assert_eq!(key, "sampling_ratio");
        }
    }
}
