//! Criterion benchmarks of room619's clients, one unary echo call each:
//!
//! - `colocated` vs `bare_channel`: the same call to a service on the same
//!   node, in-process (what `ctx.client` picks for a colocated service) and
//!   over loopback gRPC with a plain tonic channel. Target: the colocated
//!   time at least 20× lower.
//! - `remote_stack` vs `bare_channel`: room619's full remote client stack
//!   (bulkhead, service and instance breakers, retry, p2c balance, deadline)
//!   and a bare tonic `Channel`, to the same server. Target: at most 3 %
//!   slower.
//!
//! A call that fails (or answers with another message) is counted; the
//! bench then exits with an error naming it, since its time is not that of
//! a call.
//!
//! Run: `cargo bench -p room619-bench --bench clients`.

use std::{hint::black_box, io::Write as _, process::ExitCode, time::Duration};

use criterion::Criterion;
use room619::{RunningNode, config::InstanceConfig, rpc::client::RpcChannel};
use room619_bench::{BoxError, failures::Failures, servers};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

struct Setup {
    server: RunningNode,
    caller: RunningNode,
    colocated: EchoClient<RpcChannel>,
    remote_stack: EchoClient<RpcChannel>,
    bare: EchoClient<Channel>,
}

impl Setup {
    async fn start() -> Result<Self, BoxError> {
        let server = servers::node("server", Vec::new(), true).await?;
        let addr = server.local_addr();
        let instance = InstanceConfig {
            name: "echo".into(),
            version: "1.0.0".into(),
            address: addr.to_string(),
        };
        let caller = servers::node("caller", vec![instance], false).await?;
        let colocated = server
            .handle()
            .client::<EchoClient<RpcChannel>>("echo", "^1")?;
        let remote_stack = caller
            .handle()
            .client::<EchoClient<RpcChannel>>("echo", "^1")?;
        let bare = EchoClient::new(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
        let mut setup = Self {
            server,
            caller,
            colocated,
            remote_stack,
            bare,
        };
        // Every path must work before it is measured.
        setup.colocated.echo(request()).await?;
        setup.remote_stack.echo(request()).await?;
        setup.bare.echo(request()).await?;
        Ok(setup)
    }

    async fn stop(self) -> Result<(), BoxError> {
        self.caller.shutdown().await?;
        self.server.shutdown().await?;
        Ok(())
    }
}

fn request() -> EchoRequest {
    EchoRequest {
        message: "bench".into(),
        ..EchoRequest::default()
    }
}

/// One timed call: its answer must echo the request, or it counts as a
/// failure of `bench`.
async fn echo<T>(bench: &'static str, mut client: EchoClient<T>, failures: &Failures)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::transport::Body>::Error: Into<BoxError> + Send,
{
    let sent = request();
    let answer = failures.check(bench, client.echo(sent.clone()).await);
    if let Some(answer) = black_box(answer)
        && answer.get_ref().message != sent.message
    {
        failures.fail(bench, &"the answer did not echo the request");
    }
}

fn bench(c: &mut Criterion, runtime: &Runtime, setup: &Setup, failures: &Failures) {
    let mut group = c.benchmark_group("unary_echo");
    group.measurement_time(Duration::from_secs(5));
    let clients: [(&'static str, &EchoClient<RpcChannel>); 2] = [
        ("unary_echo/colocated", &setup.colocated),
        ("unary_echo/remote_stack", &setup.remote_stack),
    ];
    for (bench, client) in clients {
        let name = bench.trim_start_matches("unary_echo/");
        group.bench_function(name, |b| {
            b.to_async(runtime)
                .iter(|| echo(bench, client.clone(), failures));
        });
    }
    group.bench_function("bare_channel", |b| {
        b.to_async(runtime)
            .iter(|| echo("unary_echo/bare_channel", setup.bare.clone(), failures));
    });
    group.finish();
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&err.into()),
    };
    let setup = match runtime.block_on(Setup::start()) {
        Ok(setup) => setup,
        Err(err) => return fail(&err),
    };
    let failures = Failures::default();
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &runtime, &setup, &failures);
    criterion.final_summary();
    if let Err(err) = runtime.block_on(setup.stop()) {
        return fail(&err);
    }
    match failures.verdict() {
        Ok(()) => ExitCode::SUCCESS,
        Err(verdict) => fail(&verdict.into()),
    }
}

fn fail(err: &BoxError) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "clients bench: {err}").is_err() {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}
