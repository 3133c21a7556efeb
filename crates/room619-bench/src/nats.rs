//! A `nats-server` of the benchmarks' own, on a free port (`$NATS_SERVER`,
//! else `nats-server` on the `PATH`, else Debian's `/usr/sbin/nats-server`).

use std::{
    io::Write as _,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::BoxError;

/// Numbers the servers' stores.
static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A `nats-server -js` on a free port; killed, and its store removed, on drop.
pub struct NatsServer {
    child: Child,
    url: String,
    store: PathBuf,
}

impl NatsServer {
    /// Starts it with JetStream and a store in a temporary directory.
    ///
    /// # Errors
    ///
    /// When no free port can be found or the binary cannot be started.
    pub fn start() -> Result<Self, BoxError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // One store per server, should a process start several.
        let store = std::env::temp_dir().join(format!(
            "room619-bench-nats-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&store)?;
        let binary = std::env::var_os("NATS_SERVER")
            .map(PathBuf::from)
            .or_else(|| {
                let path = std::env::var_os("PATH")?;
                std::env::split_paths(&path)
                    .map(|dir| dir.join("nats-server"))
                    .find(|candidate| candidate.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
        let child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| {
                format!(
                    "cannot start {} (apt-get install nats-server): {err}",
                    binary.display()
                )
            })?;
        Ok(Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            store,
        })
    }

    /// Its URL, `nats://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects, retrying while the server starts.
    ///
    /// # Errors
    ///
    /// When the server does not accept a connection within 10 s.
    pub async fn client(&self) -> Result<async_nats::Client, BoxError> {
        let started = Instant::now();
        loop {
            match async_nats::connect(self.url.as_str()).await {
                Ok(client) => return Ok(client),
                Err(err) if started.elapsed() > Duration::from_secs(10) => return Err(err.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Best effort: the process may have died already; the store is temporary.
        if self.child.kill().is_ok()
            && self.child.wait().is_ok()
            && let Err(err) = std::fs::remove_dir_all(&self.store)
        {
            let mut stderr = std::io::stderr().lock();
            if writeln!(stderr, "cannot remove {}: {err}", self.store.display()).is_err() {
                // Nowhere left to report it.
            }
        }
    }
}
