//! Serving the registry: `GET /metrics` in the Prometheus text format, or
//! OpenMetrics when the scraper's `Accept` asks for it.

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use http::{HeaderMap, HeaderValue, header};

use super::Metrics;

/// The path of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route serving `metrics` at [`METRICS_PATH`].
pub(crate) fn router(metrics: Metrics) -> Router {
    Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Metrics>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_TEXT),
            )],
            metrics.render_openmetrics(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_TEXT),
            )],
            metrics.render(),
        )
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families are
/// named with their `_total` suffix, `# UNIT` and `# EOF` lines go, and the
/// types Prometheus text lacks become `untyped` (`info` becomes a gauge).
pub(super) fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(pending) = help.replace(rest) {
                push_help(&mut out, pending, "");
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some(pending) = help.take() {
                push_help(&mut out, pending, suffix);
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        out.push_str(without_exemplar(line));
        out.push('\n');
    }
    if let Some(pending) = help {
        push_help(&mut out, pending, "");
    }
    out
}

/// A sample line without its OpenMetrics exemplar (` # {labels} value
/// [timestamp]`, always last), which Prometheus text 0.0.4 has no room for.
fn without_exemplar(line: &str) -> &str {
    line.rfind(" # {")
        .filter(|&at| {
            let exemplar = &line[at + 3..];
            exemplar.rfind("} ").is_some_and(|end| {
                exemplar[end + 2..]
                    .split(' ')
                    .all(|number| number.parse::<f64>().is_ok())
            })
        })
        .map_or(line, |at| &line[..at])
}

/// Writes `# HELP name<suffix> text`.
fn push_help(out: &mut String, help: &str, suffix: &str) {
    let (name, text) = help.split_once(' ').unwrap_or((help, ""));
    out.push_str("# HELP ");
    out.push_str(name);
    out.push_str(suffix);
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}
