//! A real `nats-server -js` per test: a free port on 127.0.0.1, a store in a
//! temporary directory, kill -9 and a restart on the same port and store.
//!
//! The binary is `$NATS_SERVER`, else `nats-server` on the `PATH`, else
//! `/usr/sbin/nats-server` (Debian's package, which `scripts/test` installs).
//! A missing binary fails the test with that explanation; it never skips.

use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use room619::config::Config;
use tokio::{io::AsyncReadExt as _, net::TcpStream};

/// A running `nats-server` with JetStream; killed and its store removed on drop.
pub struct NatsServer {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store; returns once it
    /// accepts clients with JetStream on.
    pub async fn start() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let store = std::env::temp_dir().join(format!(
            "room619-nats-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&store).unwrap();
        let port = {
            let probe = StdListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut server = Self {
            port,
            store,
            child: None,
        };
        server.restart().await;
        server
    }

    /// Where clients connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (no shutdown of any kind).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Empties the store (after [`kill`]), so the next start is a server
    /// that lost all its data.
    pub fn wipe_store(&self) {
        assert!(self.child.is_none(), "the server is still running");
        std::fs::remove_dir_all(&self.store).unwrap();
        std::fs::create_dir_all(&self.store).unwrap();
    }

    /// Starts the server again on the same port and store (after [`kill`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let child = Command::new(binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .arg("-l")
            .arg(self.store.join("server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary().display()));
        self.child = Some(child);
        let ready = tokio::time::timeout(Duration::from_secs(10), self.wait_ready()).await;
        assert!(
            ready.is_ok(),
            "nats-server on port {} did not become ready; see {}",
            self.port,
            self.store.join("server.log").display()
        );
    }

    /// Waits until the server greets with JetStream enabled.
    async fn wait_ready(&self) {
        loop {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await {
                let mut greeting = vec![0; 4096];
                if let Ok(Ok(read)) =
                    tokio::time::timeout(Duration::from_secs(1), stream.read(&mut greeting)).await
                    && String::from_utf8_lossy(&greeting[..read]).contains("\"jetstream\":true")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A raw `async-nats` client, to inspect what the bus did.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.unwrap()
    }

    /// A raw JetStream context, to inspect streams and consumers.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// A node configuration using this server with `backend` (`nats` or
    /// `jetstream`), plus `extra` TOML (inside `[bus]` or after it).
    pub fn config(&self, backend: &str, extra: &str) -> Config {
        super::config(&format!(
            "[bus]\nbackend = \"{backend}\"\nurl = \"{}\"\n{extra}",
            self.url()
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        // Best effort: a leftover temp directory is harmless.
        if let Err(err) = std::fs::remove_dir_all(&self.store) {
            eprintln!("cannot remove {}: {err}", self.store.display());
        }
    }
}

/// The nats-server binary, or a failed test saying how to get one.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
        ])
        .find(|path| Path::is_file(path));
    on_path.unwrap_or_else(|| {
        panic!(
            "nats-server not found (set NATS_SERVER, or `apt-get install nats-server`; scripts/test installs it)"
        )
    })
}
