#![cfg(test)]
//! The `room619` binary as a user runs it: it starts, answers gRPC and REST on
//! one port, stops on SIGTERM with status 0, and exits 2 on bad configuration.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};

const BINARY: &str = env!("CARGO_BIN_EXE_room619");

/// Kills the child if a test fails before it stops it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _ignored = self.0.wait();
    }
}

fn start() -> (Running, String) {
    start_with(&[])
}

/// Starts the binary with extra `ROOM619_*` environment settings.
fn start_with(envs: &[(&str, &str)]) -> (Running, String) {
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "binary-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env("ROOM619_APP__SHOP__DATA_DIR", data)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.trim().strip_prefix("gRPC + REST  http://") {
                let addr = rest.split_whitespace().next().unwrap().to_owned();
                tx.send(addr).unwrap();
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo printed no address");
    (Running(child), addr)
}

#[tokio::test]
async fn the_demo_serves_grpc_and_rest_on_one_port_and_stops_on_sigterm() {
    let (mut running, addr) = start();

    let ready = reqwest::get(format!("http://{addr}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");

    let rest: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/echo"))
        .json(&serde_json::json!({"message": "over rest"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["message"], "over rest");

    let mut grpc = EchoClient::connect(format!("http://{addr}")).await.unwrap();
    let reply = grpc
        .echo(EchoRequest {
            message: "over grpc".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "over grpc");
    assert_eq!(reply.node, "room619");

    let bad = reqwest::Client::new()
        .post(format!("http://{addr}/v1/echo"))
        .json(&serde_json::json!({"message": "x", "delay_ms": 999_999}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");

    let pid = running.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = wait_with_timeout(&mut running.0, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
}

/// Waits for the child without blocking the runtime, whose tasks (the gRPC
/// client's connection) must keep answering the server during its drain.
async fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_bad_config_file_exits_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("room619-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "[limits]\nmax_header_bytes = 10").unwrap();
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("limits.max_header_bytes"), "{stderr}");
}

#[test]
fn a_bad_environment_override_exits_2_naming_the_variable() {
    let output = Command::new(BINARY)
        .env("ROOM619_NODE__DRAIN_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node.drain_timeout"), "{stderr}");
    assert!(stderr.contains("ROOM619_NODE__DRAIN_TIMEOUT"), "{stderr}");
}

#[test]
fn an_unknown_service_exits_2() {
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--services", "echo,nope"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node.services"), "{stderr}");
}

/// Counts what the load of [`the_demo_drains_busy_h1_h2_and_streaming_clients_on_sigterm`]
/// saw.
#[derive(Default)]
struct Tally {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn record<T, E: std::fmt::Debug>(&self, what: &str, result: Result<T, E>) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Err(err) => self.failed.lock().unwrap().push(format!("{what}: {err:?}")),
        }
    }
}

type Load = tokio::task::JoinSet<()>;
type Flag = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// Polls readiness as a load balancer would, on its own connection, until it
/// reports `503`; a failure before that fails the test.
fn poll_readiness(load: &mut Load, addr: &str, not_ready: Flag) {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/health/ready");
    load.spawn(async move {
        for _ in 0..500 {
            match client.get(&url).send().await {
                Ok(response) if response.status() == 503 => {
                    not_ready.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                Ok(_) => {}
                Err(err) => panic!("readiness failed before it reported 503: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Short requests in a loop until readiness says `503`: 4 h1, 4 gRPC.
fn short_load(load: &mut Load, addr: &str, tally: &std::sync::Arc<Tally>, not_ready: &Flag) {
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    for worker in 0..8 {
        let (tally, not_ready, h1) = (
            std::sync::Arc::clone(tally),
            std::sync::Arc::clone(not_ready),
            h1.clone(),
        );
        let mut grpc = EchoClient::new(channel.clone());
        let url = format!("http://{addr}/v1/echo");
        load.spawn(async move {
            for _ in 0..1000 {
                if not_ready.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if worker % 2 == 0 {
                    let body = serde_json::json!({"message": "h1", "delay_ms": 50});
                    let sent = h1.post(&url).json(&body).send().await;
                    tally.record("h1", sent.and_then(reqwest::Response::error_for_status));
                } else {
                    let request = EchoRequest {
                        message: "h2".into(),
                        delay_ms: 50,
                        ..EchoRequest::default()
                    };
                    tally.record("grpc", grpc.echo(request).await);
                }
            }
        });
    }
}

/// Long calls still in flight when the drain begins (1 s after SIGTERM):
/// 2 h1, 2 gRPC, 2 server streams of 500 messages.
fn long_calls(load: &mut Load, addr: &str, tally: &std::sync::Arc<Tally>) {
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    for worker in 0..6 {
        let (tally, h1) = (std::sync::Arc::clone(tally), h1.clone());
        let mut grpc = EchoClient::new(channel.clone());
        let url = format!("http://{addr}/v1/echo");
        load.spawn(async move {
            let request = EchoRequest {
                message: "long".into(),
                delay_ms: 2000,
                repeat: 500,
                payload: vec![7; 1024],
            };
            match worker {
                0 | 1 => {
                    let body = serde_json::json!({"message": "long", "delay_ms": 2000});
                    let sent = h1.post(&url).json(&body).send().await;
                    tally.record(
                        "long h1",
                        sent.and_then(reqwest::Response::error_for_status),
                    );
                }
                2 | 3 => tally.record("long grpc", grpc.echo(request).await),
                _ => {
                    let streamed = async {
                        let mut stream = grpc.echo_stream(request).await?.into_inner();
                        let mut received = 0;
                        while stream.message().await?.is_some() {
                            received += 1;
                        }
                        Ok::<_, tonic::Status>(received)
                    }
                    .await;
                    assert!(!matches!(streamed, Ok(n) if n != 500), "{streamed:?}");
                    tally.record("stream", streamed);
                }
            }
        });
    }
}

/// SIGTERM while HTTP/1.1, HTTP/2 (gRPC) and server-streaming clients are
/// busy: readiness turns `503` first (during the shutdown delay, while the
/// node still serves), clients that stop sending when they see it (as a load
/// balancer does) have every request answered, calls in flight across the
/// drain finish, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_drains_busy_h1_h2_and_streaming_clients_on_sigterm() {
    let (mut running, addr) = start_with(&[
        ("ROOM619_NODE__SHUTDOWN_DELAY", "1s"),
        ("ROOM619_NODE__DRAIN_TIMEOUT", "20s"),
    ]);
    let tally = std::sync::Arc::new(Tally::default());
    let not_ready = Flag::default();
    let mut load = Load::new();
    poll_readiness(&mut load, &addr, std::sync::Arc::clone(&not_ready));
    short_load(&mut load, &addr, &tally, &not_ready);
    tokio::time::sleep(Duration::from_millis(500)).await;
    long_calls(&mut load, &addr, &tally);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = running.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = wait_with_timeout(&mut running.0, Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    while let Some(finished) = load.join_next().await {
        finished.unwrap();
    }

    assert!(
        not_ready.load(std::sync::atomic::Ordering::SeqCst),
        "readiness never reported 503"
    );
    let failed = tally.failed.lock().unwrap();
    assert!(failed.is_empty(), "failed in-flight requests: {failed:#?}");
    let ok = tally.ok.load(std::sync::atomic::Ordering::SeqCst);
    assert!(ok >= 6 + 8, "only {ok} requests completed");
}
