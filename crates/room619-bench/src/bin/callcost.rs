//! `callcost`: drives one target with one request at a time for a while and
//! prints how many requests it made, so that `scripts/callcost` can run it
//! under `valgrind --tool=callgrind` twice (a short and a long run) and take
//! the **instructions per request** from the difference.
//!
//! Instruction counts do not depend on what else the machine is doing, so
//! the ratios they give (room619 / bare) hold on a shared, noisy machine
//! where throughput ratios swing by ±15 %. What they count, and so what a
//! ratio is a ratio of:
//!
//! - the client and the server together: both run in this process, so a
//!   target's figure is the client's instructions plus the server's. The
//!   client's share is about the same on both sides of a ratio (the
//!   `client-*` targets aside, where the client is what differs), which
//!   pulls the ratio towards 1: the server's own overhead, its
//!   instructions over bare's, is larger than the ratio shows. The
//!   difference room619 − bare is what the node adds, plus what the client
//!   does with what the node adds (the `x-request-id` header it parses);
//! - user-space work only: the kernel's (loopback TCP, about the same on
//!   both sides) is left out, which pushes the ratio away from 1 compared
//!   with one of whole CPU time.
//!
//! So the ratio is neither an upper nor a lower bound of the server's
//! overhead in CPU time; it is a steady measure of instructions executed,
//! client and server together.
//!
//! ```sh
//! scripts/callcost                 # every pair, the table of docs/PERFORMANCE.md
//! cargo run --release -p room619-bench --bin callcost -- --target grpc-room619 --millis 500
//! ```

use std::{io::Write as _, net::SocketAddr, process::ExitCode, time::Duration};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use room619::{
    bus::{BusBackend, BusConfig, MessageBus, OutgoingMessage},
    config::InstanceConfig,
    rpc::client::RpcChannel,
};
use room619_bench::{
    BoxError,
    chain::{self, ChainAlgorithm},
    load::{self, LoadSpec},
    nats::NatsServer,
    otlp,
    servers::{self, Server},
};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tokio::time::Instant;
use tonic::transport::Channel;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Unary gRPC echo, tonic client, bare tonic server.
    GrpcBare,
    /// Unary gRPC echo, tonic client, room619 node (defaults).
    GrpcRoom619,
    /// As `grpc-room619` with `telemetry.metrics = false`.
    GrpcRoom619NoMetrics,
    /// As `grpc-room619` with JWT (HS256) auth and a rate limit.
    GrpcChain,
    /// As `grpc-room619` with observability fully on: a subscriber with
    /// the JSON log layer (to a sink) and the OpenTelemetry layer exporting
    /// over OTLP/gRPC to a receiver in this process, sampling 10 %.
    GrpcObs01,
    /// As `grpc-obs01`, sampling 100 %.
    GrpcObs10,
    /// REST JSON echo, hyper HTTP/1.1 client, bare axum server.
    RestBare,
    /// REST JSON echo, hyper HTTP/1.1 client, room619 node (defaults).
    RestRoom619,
    /// As `rest-room619` with `telemetry.metrics = false`.
    RestRoom619NoMetrics,
    /// As `rest-room619` with JWT (HS256) auth and a rate limit.
    RestChain,
    /// As `grpc-obs01`, REST JSON.
    RestObs01,
    /// As `grpc-obs10`, REST JSON.
    RestObs10,
    /// A bare tonic `Channel` calling a room619 node.
    ClientBare,
    /// room619's remote client stack (bulkhead, breakers, retry, p2c)
    /// calling the same room619 node.
    ClientStack,
    /// NATS core publishes with raw `async-nats` (a flush every 100); the
    /// server is another process, so only the client's work is counted.
    NatsRaw,
    /// The same publishes through room619's bus (`bus.backend = "nats"`).
    NatsBus,
}

/// Drives one target and prints the number of requests made.
#[derive(Debug, Parser)]
#[command(name = "callcost", about)]
struct Cli {
    /// The target.
    #[arg(long, value_enum)]
    target: Target,
    /// How long to send, in milliseconds (1 to 3600000), after a warm-up
    /// that is not counted: 50 ms of requests for the server targets
    /// (`grpc-*`, `rest-*`), 20 calls for `client-*`, 1 000 messages for
    /// `nats-*`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    millis: u64,
    /// For the `*-obs*` targets: the in-process OTLP receiver decodes every
    /// span, not just the request's envelope (see `room619_bench::otlp`).
    #[arg(long)]
    decoding_receiver: bool,
    /// TOML added to the room619 node's configuration, for every target
    /// served by a room619 node: what a setting costs, e.g.
    /// `--node-config $'[limits]\nhttp2_keep_alive_interval = "20s"'`.
    #[arg(long, default_value = "")]
    node_config: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into()),
    };
    let receiver = if cli.decoding_receiver {
        otlp::Receiver::decoding()
    } else {
        otlp::Receiver::default()
    };
    match runtime.block_on(drive(
        cli.target,
        Duration::from_millis(cli.millis),
        receiver,
        &cli.node_config,
    )) {
        Ok(requests) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "requests={requests}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

/// The warm-up of the server targets: requests for this long, not counted.
const WARMUP: Duration = Duration::from_millis(50);

/// The instant `duration` from now.
fn deadline(duration: Duration) -> Result<Instant, BoxError> {
    Instant::now()
        .checked_add(duration)
        .ok_or_else(|| "the duration is out of range".into())
}

async fn drive(
    target: Target,
    duration: Duration,
    receiver: otlp::Receiver,
    node_config: &str,
) -> Result<u64, BoxError> {
    let hs256 = chain::config(ChainAlgorithm::Hs256);
    let (server, authorization) = match target {
        Target::GrpcBare => (servers::bare_tonic().await?, None),
        Target::RestBare => (servers::bare_axum().await?, None),
        Target::GrpcRoom619 | Target::RestRoom619 => {
            (servers::room619_with(node_config).await?, None)
        }
        Target::GrpcRoom619NoMetrics | Target::RestRoom619NoMetrics => (
            servers::room619_with(&format!("[telemetry]\nmetrics = false\n{node_config}")).await?,
            None,
        ),
        Target::GrpcObs01 | Target::RestObs01 => {
            (observed(0.1, receiver, node_config).await?, None)
        }
        Target::GrpcObs10 | Target::RestObs10 => {
            (observed(1.0, receiver, node_config).await?, None)
        }
        Target::GrpcChain | Target::RestChain => (
            servers::room619_with(&format!("{hs256}{node_config}")).await?,
            Some(chain::authorization(ChainAlgorithm::Hs256)?),
        ),
        Target::ClientBare | Target::ClientStack => return clients(target, duration).await,
        Target::NatsRaw | Target::NatsBus => return publishes(target, duration).await,
    };
    let spec = |duration| LoadSpec {
        authorization: authorization.clone(),
        ..LoadSpec::closed(duration, 1, 1, "callcost")
    };
    let grpc = matches!(
        target,
        Target::GrpcBare
            | Target::GrpcRoom619
            | Target::GrpcRoom619NoMetrics
            | Target::GrpcChain
            | Target::GrpcObs01
            | Target::GrpcObs10
    );
    let run = |duration| {
        let spec = spec(duration);
        let addr = server.addr();
        async move {
            if grpc {
                load::grpc_unary(addr, &spec).await
            } else {
                load::rest_json(addr, &spec).await
            }
        }
    };
    let warmup = run(WARMUP).await?;
    let measured = run(duration).await?;
    stop(server).await?;
    let errors = warmup.errors + measured.errors;
    if errors > 0 {
        return Err(format!("{errors} requests failed or timed out (warm-up included)").into());
    }
    Ok(measured.latencies.len())
}

/// A room619 node with observability fully on, sampling `ratio`: the
/// process's global subscriber logs and traces, the spans go to a receiver
/// in this process.
async fn observed(
    ratio: f64,
    receiver: otlp::Receiver,
    node_config: &str,
) -> Result<Server, BoxError> {
    let endpoint = receiver.serve().await?;
    let telemetry = otlp::telemetry(&endpoint, ratio)?;
    let layers = otlp::Layers {
        logs: true,
        otel: true,
    };
    if let Some(dispatch) = otlp::subscriber(layers, &telemetry) {
        tracing::dispatcher::set_global_default(dispatch)?;
    }
    // The provider exports for as long as the process lives.
    std::mem::forget(telemetry);
    servers::room619_with(node_config).await
}

async fn stop(server: Server) -> Result<(), BoxError> {
    server.stop().await
}

/// A room619 node hosting the bench echo service, and one hosting nothing
/// whose discovery lists the first (a caller with a remote client stack).
async fn clients(target: Target, duration: Duration) -> Result<u64, BoxError> {
    let server = servers::node("server", Vec::new(), true).await?;
    let addr = server.local_addr();
    let caller = servers::node(
        "caller",
        vec![InstanceConfig {
            name: "echo".into(),
            version: "1.0.0".into(),
            address: addr.to_string(),
        }],
        false,
    )
    .await?;
    let requests = if target == Target::ClientStack {
        let client = caller
            .handle()
            .client::<EchoClient<RpcChannel>>("echo", "^1")?;
        calls(client, duration).await?
    } else {
        calls(EchoClient::new(channel(addr).await?), duration).await?
    };
    caller.shutdown().await?;
    server.shutdown().await?;
    Ok(requests)
}

/// Messages published to a `nats-server` of its own, raw or through the bus;
/// "requests" are messages here.
async fn publishes(target: Target, duration: Duration) -> Result<u64, BoxError> {
    const PAYLOAD: &[u8] = b"{\"order\":42,\"status\":\"placed\"}";
    let server = NatsServer::start()?;
    let raw = server.client().await?;
    let bus = MessageBus::connect(&BusConfig {
        backend: BusBackend::Nats,
        url: server.url().to_owned(),
        ..BusConfig::default()
    })
    .await?;
    let batch = async |count: u64| -> Result<(), BoxError> {
        for _ in 0..count {
            if target == Target::NatsRaw {
                raw.publish("callcost.orders", Bytes::from_static(PAYLOAD))
                    .await?;
            } else {
                let message = OutgoingMessage::new("callcost.orders", Bytes::from_static(PAYLOAD));
                bus.publish_message(message).await?;
            }
        }
        if target == Target::NatsRaw {
            raw.flush().await?;
        } else {
            bus.flush().await?;
        }
        Ok(())
    };
    batch(1_000).await?;
    let deadline = deadline(duration)?;
    let mut made = 0;
    while Instant::now() < deadline {
        batch(100).await?;
        made += 100;
    }
    Ok(made)
}

async fn channel(addr: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Warm-up calls, then calls for `duration`; how many of those there were.
async fn calls<T>(mut client: EchoClient<T>, duration: Duration) -> Result<u64, BoxError>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error: Into<BoxError> + Send,
{
    let request = || EchoRequest {
        message: "callcost".into(),
        ..EchoRequest::default()
    };
    for _ in 0..20 {
        client.echo(request()).await?;
    }
    let deadline = deadline(duration)?;
    let mut made = 0;
    while Instant::now() < deadline {
        client.echo(request()).await?;
        made += 1;
    }
    Ok(made)
}

fn fail(err: &BoxError) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "callcost: {err}").is_err() {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}
