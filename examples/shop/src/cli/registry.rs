//! `room619 registry list`: what a node knows of services, read from its
//! `GET /registry` endpoint: the services it hosts (name, version, state,
//! gRPC services) and every instance its discovery backend knows (with NATS
//! discovery, every instance of the whole system), with its health.

use std::{collections::BTreeMap, process::ExitCode, time::Duration};

use serde::Deserialize;

use super::{Failure, announce, parse_duration, target};

#[derive(Debug, clap::Subcommand)]
pub(super) enum RegistryCommand {
    /// Lists the services, versions, instances and their status a node
    /// knows; a table, or the node's JSON with `--json`.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    room619 registry list\n  \
    room619 registry list --addr 127.0.0.1:9090 --json | jq '.discovery.instances[].address'")]
pub(super) struct ListArgs {
    /// The node: `host:port` of its admin listener when it has one, of its
    /// main listener otherwise.
    #[arg(long, value_name = "ADDR", default_value = target::DEFAULT_ADDR)]
    addr: String,
    /// Print the node's JSON answer as it is, for scripts.
    #[arg(long)]
    json: bool,
    /// A bearer token, for a proxy of your own that guards the endpoint
    /// (room619 serves `/registry` without one, like health and metrics).
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Give up after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

/// The answer of `GET /registry`.
#[derive(Debug, Deserialize)]
struct Registry {
    node: String,
    phase: String,
    #[serde(default)]
    hosted: Vec<Hosted>,
    discovery: Option<Discovery>,
}

#[derive(Debug, Deserialize)]
struct Hosted {
    name: String,
    version: String,
    state: String,
    #[serde(default)]
    grpc: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    backend: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    instances: Vec<Instance>,
}

#[derive(Debug, Deserialize)]
struct Instance {
    id: String,
    name: String,
    version: String,
    address: String,
    health: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Runs the command.
pub(super) async fn run(command: RegistryCommand) -> Result<ExitCode, Failure> {
    let RegistryCommand::List(args) = command;
    let url = target::base_url(&args.addr)?;
    let registry_url = format!("{url}{}", room619::node::REGISTRY_PATH);
    let mut request = target::http(args.timeout)?.get(&registry_url);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let answer = request
        .send()
        .await
        .map_err(|err| target::unreachable(&url, &err))?;
    let status = answer.status();
    let body = answer
        .text()
        .await
        .map_err(|err| target::unreachable(&url, &err))?;
    if status != 200 {
        let hint = match status.as_u16() {
            401 | 403 => " (something in front of the node wants credentials: pass --token)",
            404 => " (with an admin listener, ask its address)",
            _ => "",
        };
        return Err(Failure::Failed(format!(
            "{registry_url} answered {status}{hint}: {}",
            body.trim()
        )));
    }
    if args.json {
        announce(body.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let registry: Registry = serde_json::from_str(&body).map_err(|err| {
        Failure::Failed(format!("{registry_url} answered an unexpected body: {err}"))
    })?;
    announce(&table(&registry));
    Ok(ExitCode::SUCCESS)
}

/// The human view: the node, its services, the instances it knows.
fn table(registry: &Registry) -> String {
    let discovery = registry.discovery.as_ref().map_or_else(String::new, |d| {
        let reason = d
            .reason
            .as_ref()
            .map_or_else(String::new, |reason| format!(" ({reason})"));
        format!(", discovery {}: {}{reason}", d.backend, d.status)
    });
    let mut out = format!("node {} ({}){discovery}", registry.node, registry.phase);
    out.push_str("\n\n");
    let hosted: Vec<Vec<String>> = registry
        .hosted
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.version.clone(),
                s.state.clone(),
                s.grpc.join(" "),
            ]
        })
        .collect();
    out.push_str(&columns(&["HOSTED", "VERSION", "STATE", "GRPC"], &hosted));
    let instances: Vec<Vec<String>> = registry
        .discovery
        .iter()
        .flat_map(|d| &d.instances)
        .map(|i| {
            let node = i.metadata.get("node").cloned().unwrap_or_default();
            vec![
                i.name.clone(),
                i.version.clone(),
                i.address.clone(),
                i.health.replace('_', " "),
                node,
                i.id.clone(),
            ]
        })
        .collect();
    out.push('\n');
    if instances.is_empty() {
        out.push_str("no instances known");
    } else {
        out.push_str(&columns(
            &[
                "SERVICE", "VERSION", "ADDRESS", "STATUS", "NODE", "INSTANCE",
            ],
            &instances,
        ));
    }
    out.trim_end().to_owned()
}

/// `rows` under `header`, each column as wide as its widest cell.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_hosted_services_and_instances() {
        let registry: Registry = serde_json::from_value(serde_json::json!({
            "node": "shop-1",
            "phase": "running",
            "hosted": [{"name": "echo", "version": "1.0.0", "state": "running", "grpc": ["shop.echo.v1.Echo"]}],
            "discovery": {
                "backend": "nats",
                "status": "degraded",
                "reason": "no connection",
                "instances": [
                    {"id": "a1", "name": "echo", "version": "1.0.0", "address": "10.0.0.5:8080",
                     "protocols": ["grpc", "http"], "metadata": {"node": "shop-1"}, "health": "serving"},
                    {"id": "b2", "name": "products", "version": "1.2.0", "address": "10.0.0.6:8080",
                     "protocols": ["grpc", "http"], "metadata": {}, "health": "not_serving"}
                ]
            }
        }))
        .unwrap();
        let table = table(&registry);
        assert_eq!(
            table,
            "node shop-1 (running), discovery nats: degraded (no connection)\n\
             \n\
             HOSTED  VERSION  STATE    GRPC\n\
             echo    1.0.0    running  shop.echo.v1.Echo\n\
             \n\
             SERVICE   VERSION  ADDRESS        STATUS       NODE    INSTANCE\n\
             echo      1.0.0    10.0.0.5:8080  serving      shop-1  a1\n\
             products  1.2.0    10.0.0.6:8080  not serving          b2"
        );
    }
}
