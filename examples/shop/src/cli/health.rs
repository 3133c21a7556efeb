//! `room619 health <addr>`: is a node (or one of its services) serving?
//!
//! Over HTTP it reads `GET /health/ready` (the readiness report: each
//! service's state and health); with `--grpc` it asks the standard gRPC
//! health service. The first line printed is `SERVING` or `NOT_SERVING`
//! (then why, on standard error, when the node could not be asked).

use std::{process::ExitCode, time::Duration};

use serde::Deserialize;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{EXIT_FAILED, Failure, announce, parse_duration, target};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    room619 health 127.0.0.1:8080\n  \
    room619 health 127.0.0.1:8080 --service users\n  \
    room619 health 127.0.0.1:8080 --grpc --service users.v1.Users")]
pub(super) struct HealthArgs {
    /// The node: `host:port` of its main listener (or of its admin listener,
    /// without `--grpc`, when it has one).
    #[arg(value_name = "ADDR")]
    addr: String,
    /// Check one service: its room619 name (`users`) or, with `--grpc`, a
    /// gRPC service name (`users.v1.Users`) too. Default: the whole node.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Ask the gRPC health service (`grpc.health.v1.Health/Check`) instead
    /// of `GET /health/ready`.
    #[arg(long)]
    grpc: bool,
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration,
        help = "Give up (NOT_SERVING, exit 1) after this long"
    )]
    timeout: Duration,
}

/// The parts of `/health/ready` the command reads.
#[derive(Debug, Deserialize)]
struct Readiness {
    status: String,
    node: String,
    phase: String,
    #[serde(default)]
    services: Vec<ServiceReadiness>,
}

#[derive(Debug, Deserialize)]
struct ServiceReadiness {
    name: String,
    version: String,
    state: String,
    #[serde(default)]
    health: Option<ServiceHealth>,
}

#[derive(Debug, Deserialize)]
struct ServiceHealth {
    status: String,
    #[serde(default)]
    detail: Option<String>,
}

impl ServiceReadiness {
    fn is_serving(&self) -> bool {
        self.state == "running"
            && self
                .health
                .as_ref()
                .is_some_and(|health| health.status != "unhealthy")
    }

    fn line(&self) -> String {
        let health = self
            .health
            .as_ref()
            .map_or_else(String::new, |health| match &health.detail {
                Some(detail) => format!("  {} ({detail})", health.status),
                None => format!("  {}", health.status),
            });
        format!("  {} {}  {}{health}", self.name, self.version, self.state)
    }
}

/// Runs the check; exit 0 when serving, 1 when not.
pub(super) async fn run(args: HealthArgs) -> Result<ExitCode, Failure> {
    let url = target::base_url(&args.addr)?;
    let checked = if args.grpc {
        grpc(&url, args.service.as_deref(), args.timeout).await
    } else {
        http(&url, args.service.as_deref(), args.timeout).await
    };
    let serving = checked.inspect_err(|_| announce("NOT_SERVING"))?;
    Ok(if serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// `GET /health/ready`: prints the status, then each service's state.
async fn http(url: &str, service: Option<&str>, timeout: Duration) -> Result<bool, Failure> {
    let ready_url = format!("{url}{}", room619::node::READY_PATH);
    let answer = target::http(timeout)?
        .get(&ready_url)
        .send()
        .await
        .map_err(|err| target::unreachable(url, &err))?;
    let status = answer.status();
    if status != 200 && status != 503 {
        return Err(Failure::Failed(format!(
            "{ready_url} answered {status}: is this a room619 node (or its admin listener)?"
        )));
    }
    let report: Readiness = answer.json().await.map_err(|err| {
        Failure::Failed(format!("{ready_url} answered an unexpected body: {err}"))
    })?;
    let serving = match service {
        None => report.status == "ready",
        Some(name) => {
            let Some(found) = report.services.iter().find(|s| s.name == name) else {
                let known: Vec<&str> = report.services.iter().map(|s| s.name.as_str()).collect();
                announce(&format!(
                    "NOT_SERVING\n  node {} has no service `{name}` (it has: {})",
                    report.node,
                    known.join(", ")
                ));
                return Ok(false);
            };
            found.is_serving()
        }
    };
    let mut lines = vec![
        if serving { "SERVING" } else { "NOT_SERVING" }.to_owned(),
        format!(
            "  node {} ({}, {})",
            report.node, report.phase, report.status
        ),
    ];
    lines.extend(
        report
            .services
            .iter()
            .filter(|s| service.is_none_or(|name| s.name == name))
            .map(ServiceReadiness::line),
    );
    announce(&lines.join("\n"));
    Ok(serving)
}

/// `grpc.health.v1.Health/Check`: prints the serving status.
async fn grpc(url: &str, service: Option<&str>, timeout: Duration) -> Result<bool, Failure> {
    let channel = target::channel(url, timeout).await?;
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.unwrap_or_default().to_owned(),
    });
    request.set_timeout(timeout);
    let checked = tokio::time::timeout(timeout, client.check(request))
        .await
        .map_err(|_| {
            Failure::Failed(format!(
                "{url}: no health answer within {}",
                humantime::format_duration(timeout)
            ))
        })?;
    match checked {
        Ok(answer) => {
            let status = answer.into_inner().status();
            announce(status.as_str_name());
            Ok(status == ServingStatus::Serving)
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            announce(&format!(
                "NOT_SERVING\n  {url} does not know `{}`: {}",
                service.unwrap_or_default(),
                status.message()
            ));
            Ok(false)
        }
        Err(status) => Err(Failure::Failed(format!(
            "{url}: health check failed: {}: {}",
            super::call::code_name(status.code()),
            status.message()
        ))),
    }
}
