//! `room619 serve`: loads the configuration, starts a node with the selected
//! services (`--services`, i.e. `node.services`) and serves until SIGTERM or
//! Ctrl-C, then drains gracefully. The `--config` file is watched: a valid
//! change is applied without a restart.

use std::process::ExitCode;

use room619::{
    Node,
    config::{Config, ConfigArgs},
    observability::logging,
};

use super::{EXIT_USAGE, announce, report};

/// Loads the configuration of `args` and serves; the exit status: `0` after
/// a graceful stop, `2` for an invalid configuration (an unknown service in
/// `node.services` included), `1` for any other failure.
pub(super) fn run(
    args: &ConfigArgs,
    services: impl AsyncFnOnce(&mut Config) -> room619::Result<shop::Shop>,
) -> ExitCode {
    let config = match args.load() {
        Ok(config) => config,
        Err(err) => {
            report(&format!("room619: {err}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            report(&format!("room619: cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    // Span export (telemetry.otlp_endpoint), installed before the logging
    // layers; its gRPC channel runs on the runtime.
    let telemetry = {
        let _entered = runtime.enter();
        room619::observability::tracing::Telemetry::new(&config.telemetry, &config.node.name)
    };
    match telemetry {
        Ok(Some(telemetry)) => telemetry.install(),
        Ok(None) => {}
        Err(err) => {
            report(&format!("room619: {err}"));
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if let Err(err) = logging::init(&config.log) {
        report(&format!("room619: {err}"));
        return ExitCode::from(EXIT_USAGE);
    }
    match runtime.block_on(serve(config, args, services)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == room619::ErrorKind::Config => {
            report(&format!("room619: {err}"));
            ExitCode::from(EXIT_USAGE)
        }
        Err(err) => {
            tracing::error!(error = ?err, "room619 failed");
            report(&format!("room619: {err}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: Config,
    args: &ConfigArgs,
    services: impl AsyncFnOnce(&mut Config) -> room619::Result<shop::Shop>,
) -> room619::Result<()> {
    let mut config = config;
    // A changed file is applied live (log filter, rate limits, listed
    // instances...), with the shop's own changes made again; an invalid one
    // is logged and the running one stays. Watched from here, before the
    // services open their database: an edit made meanwhile is applied.
    let mut builder = Node::builder();
    if let Some(path) = &args.config {
        builder = builder.watch_config(path, args.overrides());
    }
    let shop = services(&mut config).await?;
    builder = builder.config(config).adjust_reloads(shop.adjuster());
    let running = shop
        .services
        .into_iter()
        .fold(builder, room619::NodeBuilder::service)
        .build()?
        .start()
        .await?;
    let handle = running.handle();
    let addr = handle.local_addr();
    let admin = handle.admin_addr().unwrap_or(addr);
    let services: Vec<String> = handle
        .registry()
        .list()
        .iter()
        .map(|status| status.descriptor.to_string())
        .collect();
    announce(&format!(
        "room619 is serving {services}\n  \
         gRPC + REST  http://{addr}  (try: room619 call echo Echo '{{\"message\":\"hi\"}}' --addr {addr})\n  \
         shop API     http://{addr}/v1/products ...  (OpenAPI: http://{addr}/openapi.json)\n  \
         health       http://{admin}/health/ready  (room619 health {admin})\n  \
         registry     http://{admin}/registry  (room619 registry list --addr {admin})\n  \
         Ctrl-C stops it gracefully (twice: at once).",
        services = services.join(", ")
    ));
    running.stop_on_signal().await
}
