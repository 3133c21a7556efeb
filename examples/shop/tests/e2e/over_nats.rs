//! The shop as separate processes (`docs/MULTI_PROCESS.md`): the example
//! configuration of each process is valid, and nodes sharing a real
//! `nats-server` see each other: `room619 registry list` on one node lists
//! the instances of both, and `room619 call` reaches either.
//!
//! The nats-server binary is `$NATS_SERVER`, else `nats-server` on the
//! `PATH`, else `/usr/sbin/nats-server` (Debian's package, which
//! `scripts/test` installs); without one the test fails, it never skips.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use room619::{config::ConfigLoader, discovery::DiscoveryBackend};

use crate::binary::BINARY;

/// The processes of `docs/MULTI_PROCESS.md`: config file, service, port.
const PROCESSES: [(&str, &str, u16); 4] = [
    ("auth.toml", "auth", 8081),
    ("users.toml", "users", 8082),
    ("products.toml", "products", 8083),
    ("gateway.toml", "gateway", 8080),
];

/// A child process, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _ignored = self.0.wait();
    }
}

#[test]
fn each_example_process_config_is_valid_and_runs_one_service_over_nats() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for (file, service, port) in PROCESSES {
        let config = ConfigLoader::new()
            .file(dir.join(file))
            .without_env()
            .load()
            .unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(config.node.services, [service], "{file}");
        assert_eq!(config.node.name, service, "{file}");
        assert_eq!(config.node.listen.port(), port, "{file}");
        assert_eq!(config.discovery.backend, DiscoveryBackend::Nats, "{file}");
        assert!(config.bus.streams.contains_key("USERS"), "{file}");
        let shop = &config.app["shop"];
        assert!(shop["data_dir"].is_string(), "{file}: [app.shop] data_dir");
        let jwks = config
            .auth
            .jwks
            .as_ref()
            .and_then(|jwks| jwks.url.as_deref());
        if service == "auth" {
            assert!(jwks.is_none(), "the auth node trusts its own keys");
        } else {
            assert_eq!(
                jwks,
                Some("http://127.0.0.1:8081/.well-known/jwks.json"),
                "{file}"
            );
        }
    }
}

#[tokio::test]
async fn nodes_sharing_nats_see_each_other_in_registry_list_and_calls_reach_both() {
    let nats = NatsServer::start().await;
    let (_a, a) = serve("shop-a", &nats.url());
    let (_b, b) = serve("shop-b", &nats.url());

    // Each node learns the other's instance from the NATS key-value bucket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let registry = loop {
        let output = room619(&["registry", "list", "--addr", &a, "--json"]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        if body["discovery"]["instances"].as_array().map(Vec::len) == Some(2)
            || Instant::now() > deadline
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(registry["discovery"]["backend"], "nats");
    let mut seen: Vec<(String, String)> = registry["discovery"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["node"].as_str().unwrap().to_owned(),
                i["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("shop-a".to_owned(), a.clone()),
            ("shop-b".to_owned(), b.clone())
        ]
    );

    let table = room619(&["registry", "list", "--addr", &a]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("discovery nats: ok"), "{text}");
    assert!(text.contains(&b) && text.contains("shop-b"), "{text}");

    for (addr, node) in [(&a, "shop-a"), (&b, "shop-b")] {
        let output = room619(&["call", "echo", "Echo", r#"{"message":"x"}"#, "--addr", addr]);
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(answer["node"], node);
    }
}

/// `room619 serve` of the echo service named `name`, with NATS discovery
/// and bus at `nats`.
fn serve(name: &str, nats: &str) -> (Running, String) {
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--services", "echo"])
        .env_remove("RUST_LOG")
        .env_remove("ROOM619_CONFIG")
        .env("ROOM619_NODE__NAME", name)
        .env("ROOM619_DISCOVERY__BACKEND", "nats")
        .env("ROOM619_DISCOVERY__NATS__URL", nats)
        .env("ROOM619_BUS__BACKEND", "jetstream")
        .env("ROOM619_BUS__URL", nats)
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
                tx.send(rest.split_whitespace().next().unwrap().to_owned())
                    .unwrap();
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the node printed no address");
    (Running(child), addr)
}

fn room619(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("ROOM619_CONFIG")
        .output()
        .unwrap()
}

/// A `nats-server -js` on a free port with a store in a temporary directory.
pub struct NatsServer {
    port: u16,
    store: PathBuf,
    child: Child,
}

impl NatsServer {
    pub async fn start() -> Self {
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        // One store per server: tests of this binary run at once.
        let store = std::env::temp_dir().join(format!(
            "room619-shop-nats-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&store).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(nats_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { port, store, child };
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Waits until the server greets with JetStream on.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                let mut greeting = vec![0; 4096];
                if let Ok(read) = stream.read(&mut greeting)
                    && String::from_utf8_lossy(&greeting[..read]).contains("\"jetstream\":true")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nats-server on port {} did not become ready", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ignored = self.child.kill();
        let _ignored = self.child.wait();
        let _ignored = std::fs::remove_dir_all(&self.store);
    }
}

/// The nats-server binary, or a failed test saying how to get one.
fn nats_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
        ])
        .find(|path| path.is_file())
        .expect("no nats-server: install Debian's `nats-server` package (scripts/test does) or set NATS_SERVER")
}
