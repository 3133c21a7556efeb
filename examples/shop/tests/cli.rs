#![cfg(test)]
//! The `room619` command line as an operator runs it, against real nodes
//! (the same binary, `room619 serve`): `health`, `call`, `registry list`, and
//! what they exit with. Exit status: 0 success, 1 failed, 2 bad arguments.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_room619");

/// An HS256 key and a token it signed (`sub` cli-test, expiring in 2100).
const JWT_SECRET: &str = "a-cli-test-secret-of-at-least-32-bytes";
const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImNsaSJ9.\
                     eyJzdWIiOiJjbGktdGVzdCIsImV4cCI6NDEwMjQ0NDgwMH0.\
                     WZyrG9Ko0VnypfaJuSWqtfWuzhdsOV_GGgNMAHt46P4";
/// An API key and its SHA-256.
const API_KEY: &str = "cli-test-api-key";
const API_KEY_SHA256: &str = "4689136064bcd8cdd79e0311f7f279ca773d6c896bac091086f541c3786bc53e";

/// Numbers the nodes' data directories.
static NODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A `room619 serve` process; killed if a test fails before it stops it.
struct Node {
    child: Child,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
    }
}

/// Starts `room619 serve` on a free port with `args` and `envs` (only the
/// echo service unless `args` say `--services`, with its own data
/// directory); returns once it printed its address.
fn serve(args: &[&str], envs: &[(&str, &str)]) -> Node {
    let only_echo: &[&str] = if args.contains(&"--services") {
        &[]
    } else {
        &["--services", "echo"]
    };
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{}-{}",
        std::process::id(),
        NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(only_echo)
        .args(args)
        .env("ROOM619_APP__SHOP__DATA_DIR", data)
        .env_remove("RUST_LOG")
        .env_remove("ROOM619_CONFIG")
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
        .expect("the node printed no address");
    Node { child, addr }
}

/// Runs `room619 <args>` to the end.
fn room619(args: &[&str]) -> Output {
    room619_with_stdin(args, "")
}

fn room619_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .env_remove("ROOM619_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit status, showing both outputs when it differs.
#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A local address nothing listens on.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A file in a fresh temporary directory holding `text`.
fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "room619-cli-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn health_says_serving_and_exits_0_for_a_ready_node() {
    let node = serve(&[], &[]);
    let http = room619(&["health", &node.addr]);
    assert_exit(&http, 0);
    let text = stdout(&http);
    assert!(text.starts_with("SERVING\n"), "{text}");
    assert!(text.contains("echo 1.0.0  running  healthy"), "{text}");

    let one = room619(&["health", &node.addr, "--service", "echo"]);
    assert_exit(&one, 0);

    for service in ["", "echo", "shop.echo.v1.Echo"] {
        let grpc = room619(&["health", &node.addr, "--grpc", "--service", service]);
        assert_exit(&grpc, 0);
        assert_eq!(stdout(&grpc), "SERVING\n");
    }
    let url = room619(&["health", &format!("http://{}", node.addr), "--grpc"]);
    assert_exit(&url, 0);
}

#[test]
fn health_exits_1_for_an_unknown_service_an_unreachable_or_a_silent_node() {
    let node = serve(&[], &[]);
    let unknown = room619(&["health", &node.addr, "--service", "nope"]);
    assert_exit(&unknown, 1);
    assert!(
        stdout(&unknown).starts_with("NOT_SERVING"),
        "{}",
        stdout(&unknown)
    );
    assert!(
        stdout(&unknown).contains("it has: echo"),
        "{}",
        stdout(&unknown)
    );
    let unknown = room619(&["health", &node.addr, "--grpc", "--service", "no.such.Svc"]);
    assert_exit(&unknown, 1);
    assert!(
        stdout(&unknown).starts_with("NOT_SERVING"),
        "{}",
        stdout(&unknown)
    );

    let closed = closed_port();
    for grpc in [false, true] {
        let mut args = vec!["health", closed.as_str()];
        if grpc {
            args.push("--grpc");
        }
        let unreachable = room619(&args);
        assert_exit(&unreachable, 1);
        assert_eq!(stdout(&unreachable), "NOT_SERVING\n");
        assert!(
            stderr(&unreachable).contains("cannot reach"),
            "{}",
            stderr(&unreachable)
        );
    }

    // Accepts connections (the kernel's backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let timed_out = room619(&["health", &silent_addr, "--timeout", "300ms"]);
    assert_exit(&timed_out, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[tokio::test]
async fn health_exits_1_while_the_node_drains() {
    let node = serve(&[], &[("ROOM619_NODE__SHUTDOWN_DELAY", "10s")]);
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Readiness turns 503 at once; the node keeps answering during the delay.
    let deadline = Instant::now() + Duration::from_secs(5);
    let draining = loop {
        let output = room619(&["health", &node.addr]);
        if output.status.code() == Some(1) || Instant::now() > deadline {
            break output;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_exit(&draining, 1);
    let text = stdout(&draining);
    assert!(text.starts_with("NOT_SERVING\n"), "{text}");
    assert!(text.contains("draining"), "{text}");
    let grpc = room619(&["health", &node.addr, "--grpc"]);
    assert_exit(&grpc, 1);
    assert_eq!(stdout(&grpc), "NOT_SERVING\n");
}

#[test]
fn health_exits_2_on_bad_arguments() {
    for args in [
        vec!["health"],
        vec!["health", "not-an-address"],
        vec!["health", "https://127.0.0.1:8080"],
        vec!["health", "127.0.0.1:8080", "--timeout", "soon"],
        vec!["health", "127.0.0.1:8080", "--timeout", "0s"],
    ] {
        let output = room619(&args);
        assert_exit(&output, 2);
        assert!(!stderr(&output).is_empty(), "{args:?}");
    }
}

#[test]
fn call_turns_json_into_a_grpc_call_and_the_answer_into_json() {
    let node = serve(&[], &[]);
    let addr = ["--addr", node.addr.as_str()];
    for service in ["echo", "shop.echo.v1.Echo"] {
        let output = room619(
            &[
                &["call", service, "Echo", r#"{"message": "hi"}"#],
                &addr[..],
            ]
            .concat(),
        );
        assert_exit(&output, 0);
        let answer: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"message": "hi", "node": "room619"})
        );
    }

    // A server stream: one JSON document per message; bytes as base64.
    let streamed = room619(
        &[
            &[
                "call",
                "echo",
                "EchoStream",
                r#"{"message": "s", "repeat": 3, "payload": "AQID"}"#,
            ],
            &addr[..],
        ]
        .concat(),
    );
    assert_exit(&streamed, 0);
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout(&streamed))
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(answers.len(), 3);
    assert!(
        answers.iter().all(|a| a["payload"] == "AQID"),
        "{answers:?}"
    );

    // A client stream from standard input: an array of requests.
    let collected = room619_with_stdin(
        &[&["call", "echo", "EchoCollect", "-"], &addr[..]].concat(),
        r#"[{"message": "a"}, {"message": "b"}]"#,
    );
    assert_exit(&collected, 0);
    let answer: serde_json::Value = serde_json::from_str(&stdout(&collected)).unwrap();
    assert_eq!(answer["message"], "a b");
}

#[test]
fn call_exits_2_naming_what_is_wrong_with_the_request() {
    let node = serve(&[], &[]);
    let call = |service: &str, method: &str, json: &str| {
        room619(&["call", service, method, json, "--addr", &node.addr])
    };
    let wrong_type = call("echo", "Echo", r#"{"message": "hi", "repeat": "many"}"#);
    assert_exit(&wrong_type, 2);
    assert!(
        stderr(&wrong_type).contains("field `repeat`"),
        "{}",
        stderr(&wrong_type)
    );
    assert!(stdout(&wrong_type).is_empty());

    let unknown_field = call("echo", "Echo", r#"{"mesage": "hi"}"#);
    assert_exit(&unknown_field, 2);
    assert!(
        stderr(&unknown_field).contains("mesage"),
        "{}",
        stderr(&unknown_field)
    );

    let not_json = call("echo", "Echo", "{message: hi}");
    assert_exit(&not_json, 2);
    assert!(
        stderr(&not_json).contains("not valid JSON"),
        "{}",
        stderr(&not_json)
    );

    let not_an_object = call("echo", "Echo", "[1]");
    assert_exit(&not_an_object, 2);

    let unknown_method = call("echo", "Shout", "{}");
    assert_exit(&unknown_method, 2);
    let text = stderr(&unknown_method);
    assert!(
        text.contains("no method `Shout`") && text.contains("EchoStream"),
        "{text}"
    );

    let unknown_service = call("nope", "Echo", "{}");
    assert_exit(&unknown_service, 2);
    assert!(
        stderr(&unknown_service).contains("shop.echo.v1.Echo"),
        "{}",
        stderr(&unknown_service)
    );

    let bad_header = room619(&[
        "call", "echo", "Echo", "{}", "--addr", &node.addr, "-H", "novalue",
    ]);
    assert_exit(&bad_header, 2);
}

#[test]
fn call_prints_the_grpc_code_and_message_and_exits_1() {
    let node = serve(&[], &[]);
    let refused = room619(&[
        "call",
        "echo",
        "Echo",
        r#"{"delay_ms": 999999}"#,
        "--addr",
        &node.addr,
    ]);
    assert_exit(&refused, 1);
    assert!(
        stderr(&refused).contains("INVALID_ARGUMENT: delay_ms must be at most 60000"),
        "{}",
        stderr(&refused)
    );

    let started = Instant::now();
    let late = room619(&[
        "call",
        "echo",
        "Echo",
        r#"{"delay_ms": 5000}"#,
        "--addr",
        &node.addr,
        "--timeout",
        "500ms",
    ]);
    assert_exit(&late, 1);
    assert!(
        stderr(&late).contains("DEADLINE_EXCEEDED"),
        "{}",
        stderr(&late)
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    let unreachable = room619(&["call", "echo", "Echo", "{}", "--addr", &closed_port()]);
    assert_exit(&unreachable, 1);
    assert!(
        stderr(&unreachable).contains("cannot reach"),
        "{}",
        stderr(&unreachable)
    );
}

#[test]
fn call_and_registry_list_send_the_token_and_headers_a_secured_node_needs() {
    let config = temp_file(
        "auth.toml",
        &format!(
            "[[auth.keys]]\nkid = \"cli\"\nalgorithm = \"HS256\"\nsecret = \"{JWT_SECRET}\"\n\
             [[auth.api_keys]]\nname = \"cli\"\nsha256 = \"{API_KEY_SHA256}\"\n"
        ),
    );
    let node = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--services",
            "echo,users",
        ],
        &[],
    );
    let call = |extra: &[&str]| {
        room619(
            &[
                &[
                    "call",
                    "users.v1.Users",
                    "ListUsers",
                    r#"{"page_size": 5}"#,
                    "--addr",
                    &node.addr,
                ],
                extra,
            ]
            .concat(),
        )
    };
    let anonymous = call(&[]);
    assert_exit(&anonymous, 1);
    assert!(
        stderr(&anonymous).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&anonymous)
    );
    assert_exit(&call(&["--token", TOKEN]), 0);
    assert_exit(&call(&["--header", &format!("x-api-key={API_KEY}")]), 0);
    assert_exit(&call(&["--token", "not-a-jwt"]), 1);

    // Like health and metrics, the registry is an operator's endpoint:
    // public, and off the public port once `node.admin_listen` is set.
    assert_exit(&room619(&["registry", "list", "--addr", &node.addr]), 0);
    assert_exit(
        &room619(&["registry", "list", "--addr", &node.addr, "--token", TOKEN]),
        0,
    );
}

#[test]
fn registry_list_shows_the_hosted_services_and_the_instances_discovery_knows() {
    let node = serve(&[], &[("ROOM619_NODE__NAME", "shop-1")]);
    let table = room619(&["registry", "list", "--addr", &node.addr]);
    assert_exit(&table, 0);
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "node shop-1 (running), discovery local: ok",
        "{text}"
    );
    assert!(
        lines[2].starts_with("HOSTED  VERSION  STATE    GRPC"),
        "{text}"
    );
    assert_eq!(
        lines[3], "echo    1.0.0    running  shop.echo.v1.Echo",
        "{text}"
    );
    assert!(lines[5].starts_with("SERVICE  VERSION  ADDRESS"), "{text}");
    assert!(
        lines[6].starts_with(&format!("echo     1.0.0    {}  serving  shop-1", node.addr)),
        "{text}"
    );

    let json = room619(&["registry", "list", "--addr", &node.addr, "--json"]);
    assert_exit(&json, 0);
    let body: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(body["hosted"][0]["name"], "echo");
    assert_eq!(body["discovery"]["instances"][0]["address"], node.addr);

    let unreachable = room619(&["registry", "list", "--addr", &closed_port()]);
    assert_exit(&unreachable, 1);
    assert_exit(&room619(&["registry", "list", "--addr", "nowhere"]), 2);
    assert_exit(&room619(&["registry", "lists"]), 2);
}

#[test]
fn serve_with_an_unknown_service_exits_2_naming_the_known_ones() {
    let output = room619(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--services",
        "echo,nope",
    ]);
    assert_exit(&output, 2);
    let text = stderr(&output);
    assert!(text.contains("node.services"), "{text}");
    assert!(
        text.contains("no service called `nope` (known: echo, auth, users, products, gateway)"),
        "{text}"
    );
}

#[test]
fn help_documents_every_command() {
    let help = room619(&["--help"]);
    assert_exit(&help, 0);
    let text = stdout(&help);
    for command in ["serve", "health", "call", "registry"] {
        assert!(
            text.contains(&format!("  {command}  ")) || text.contains(&format!("  {command} ")),
            "{text}"
        );
    }
    let registry = room619(&["registry", "--help"]);
    assert!(stdout(&registry).contains("list"), "{}", stdout(&registry));
}

#[tokio::test]
async fn serve_applies_a_changed_config_file_without_a_restart() {
    let listed = |address: &str| {
        format!(
            "[node]\nconfig_poll_interval = \"100ms\"\n\
             [[discovery.instances]]\nname = \"users\"\nversion = \"1.0.0\"\naddress = \"{address}\"\n"
        )
    };
    let config = temp_file("live.toml", &listed("10.0.0.1:8080"));
    let node = serve(&["--config", config.to_str().unwrap()], &[]);
    let users_address = || {
        let output = room619(&["registry", "list", "--addr", &node.addr, "--json"]);
        let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        body["discovery"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "users")
            .map(|i| i["address"].as_str().unwrap().to_owned())
    };
    assert_eq!(users_address().as_deref(), Some("10.0.0.1:8080"));

    std::fs::write(&config, listed("10.0.0.2:8080")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while users_address().as_deref() != Some("10.0.0.2:8080") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(users_address().as_deref(), Some("10.0.0.2:8080"));

    // A broken edit is refused; the node keeps the last good configuration.
    std::fs::write(&config, "[node]\nconfig_poll_interval = \"soon\"\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(users_address().as_deref(), Some("10.0.0.2:8080"));
    assert_exit(&room619(&["health", &node.addr]), 0);
}

/// The shop adds rate limits of its own when the file sets none (the
/// gateway's sign-up and login: 10 a minute, a burst of 10, per client IP).
/// A reload of the file must keep them: it loads the file again, and the
/// shop makes its changes again.
#[tokio::test]
async fn a_reload_keeps_the_shops_own_rate_limits() {
    let listed = |address: &str| {
        format!(
            "[node]\nconfig_poll_interval = \"100ms\"\n\
             [[discovery.instances]]\nname = \"users\"\nversion = \"9.0.0\"\naddress = \"{address}\"\n"
        )
    };
    let config = temp_file("limits.toml", &listed("10.0.0.1:8080"));
    let node = serve(
        &[
            "--config",
            config.to_str().unwrap(),
            "--services",
            "auth,gateway",
        ],
        &[],
    );
    std::fs::write(&config, listed("10.0.0.2:8080")).unwrap();
    let reloaded = || {
        let output = room619(&["registry", "list", "--addr", &node.addr, "--json"]);
        String::from_utf8_lossy(&output.stdout).contains("10.0.0.2:8080")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reloaded() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded(), "the edit was never applied");

    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let response = client
            .post(format!("http://{}/v1/auth/login", node.addr))
            .json(&serde_json::json!({"email": "a@b.c", "password": "wrong password"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses.first(), Some(&401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}
