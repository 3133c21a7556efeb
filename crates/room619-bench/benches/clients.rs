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
//! Run: `cargo bench -p room619-bench --bench clients`.

use std::{hint::black_box, io::Write as _, process::ExitCode, time::Duration};

use criterion::Criterion;
use room619::{RunningNode, config::InstanceConfig, rpc::client::RpcChannel};
use room619_bench::{BoxError, servers};
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

fn bench(c: &mut Criterion, runtime: &Runtime, setup: &Setup) {
    let mut group = c.benchmark_group("unary_echo");
    group.measurement_time(Duration::from_secs(5));
    let clients: [(&str, &EchoClient<RpcChannel>); 2] = [
        ("colocated", &setup.colocated),
        ("remote_stack", &setup.remote_stack),
    ];
    for (name, client) in clients {
        group.bench_function(name, |b| {
            b.to_async(runtime).iter(|| {
                let mut client = client.clone();
                async move { black_box(client.echo(request()).await) }
            });
        });
    }
    group.bench_function("bare_channel", |b| {
        b.to_async(runtime).iter(|| {
            let mut client = setup.bare.clone();
            async move { black_box(client.echo(request()).await) }
        });
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
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &runtime, &setup);
    criterion.final_summary();
    match runtime.block_on(setup.stop()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &BoxError) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    if writeln!(stderr, "clients bench: {err}").is_err() {
        return ExitCode::from(2);
    }
    ExitCode::FAILURE
}
