//! Structured logging with `tracing`: JSON for pipelines, pretty for people.

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::{
    Error, Result,
    config::{LogConfig, LogFormat},
};

/// Installs the global `tracing` subscriber: the filter is `RUST_LOG` when set,
/// `log.level` otherwise; the format is `log.format` (`auto` picks pretty on a
/// terminal and JSON elsewhere). Logs go to standard error.
///
/// ```
/// room619::observability::logging::init(&room619::config::LogConfig::default()).ok();
/// tracing::info!("hello");
/// ```
///
/// # Errors
///
/// `Config` when the filter does not parse; `Internal` when a global
/// subscriber is already installed.
pub fn init(config: &LogConfig) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.trim().is_empty() => filter,
        _ => config.level.clone(),
    };
    let filter = EnvFilter::builder()
        .parse(&filter)
        .map_err(|err| Error::config(format!("invalid log filter `{filter}`: {err}")))?;
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
    installed.map_err(|err| {
        Error::internal("a global tracing subscriber is already installed").with_source(err)
    })
}
