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
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("RUST_LOG")
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
