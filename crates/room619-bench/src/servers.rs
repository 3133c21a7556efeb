//! The three targets, each started on `127.0.0.1:0` in the current runtime:
//! a bare tonic server, a bare axum server and a room619 node serving both
//! protocols on one port.
//!
//! Every target serves the same handlers ([`crate::echo`]) and sets
//! `TCP_NODELAY` on accepted connections (room619 and tonic do it by default;
//! for bare axum it is set here), so what differs is the serving stack only.

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use axum::{Router, routing::post, serve::ListenerExt as _};
use room619::{
    Node, RunningNode, ServiceBuilder,
    config::{ConfigLoader, InstanceConfig, Limits},
};
use shop_proto::echo::v1::echo_server::EchoServer;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{
    BoxError,
    echo::{BenchEcho, REST_PATH, echo_json},
};

/// The loopback address with port 0: every target binds here.
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// The longest a target may take to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The room619 node's configuration: port 0, everything else at its defaults
/// (the hardening limits included: they are part of what is measured).
const NODE_CONFIG: &str =
    "[node]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n";

/// A running target: its address and the means to stop it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), BoxError>>,
}

impl Server {
    /// The address the target listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the target to stop and waits (at most 10 s) until it has.
    ///
    /// # Errors
    ///
    /// The target's own error, or a timeout or join error if it did not stop
    /// cleanly.
    pub async fn stop(self) -> Result<(), BoxError> {
        self.stop.cancel();
        tokio::time::timeout(STOP_TIMEOUT, self.task)
            .await
            .map_err(|_elapsed| format!("the server on {} did not stop in time", self.addr))??
    }

    /// Runs `serve` (which must end once `stop` is cancelled) as a task.
    fn spawn<F>(addr: SocketAddr, stop: CancellationToken, serve: F) -> Self
    where
        F: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Self {
            addr,
            stop,
            task: tokio::spawn(serve),
        }
    }
}

/// The HTTP/2 streams a client may have open at once on one connection to
/// a target: room619's default `limits.http2_max_concurrent_streams` (256),
/// which the bare tonic server is given too (tonic sets no limit).
#[must_use]
pub fn max_concurrent_streams() -> u32 {
    Limits::default().http2_max_concurrent_streams
}

/// Starts a bare tonic server: `Server::builder().add_service(EchoServer)`,
/// tonic's defaults otherwise, except for the streams a connection may
/// have open at once: room619's default
/// ([`max_concurrent_streams`]), so both servers refuse the same load.
///
/// # Errors
///
/// If the listener cannot be bound.
pub async fn bare_tonic() -> Result<Server, BoxError> {
    let listener = TcpListener::bind(LOOPBACK).await?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(max_concurrent_streams())
        .add_service(EchoServer::new(BenchEcho));
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    Ok(Server::spawn(addr, stop, async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(BoxError::from)
    }))
}

/// Starts a bare axum server: `axum::serve` of a router with
/// `POST /v1/echo`, axum's defaults otherwise.
///
/// # Errors
///
/// If the listener cannot be bound.
pub async fn bare_axum() -> Result<Server, BoxError> {
    let listener = TcpListener::bind(LOOPBACK).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let app = Router::new().route(REST_PATH, post(echo_json));
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    Ok(Server::spawn(addr, stop, async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(BoxError::from)
    }))
}

/// Starts a room619 node hosting one service, `echo`, with the gRPC echo and
/// `POST /v1/echo` on the node's one port; the node's default configuration
/// otherwise (health, reflection, limits and middlewares included).
///
/// # Errors
///
/// If the configuration, the service or the node cannot be built, or the
/// node cannot start.
pub async fn room619() -> Result<Server, BoxError> {
    room619_with("").await
}

/// A room619 node as [`room619()`] with `extra` TOML configuration (such as
/// [`chain::config`](crate::chain::config)).
///
/// # Errors
///
/// As [`room619()`], and if `extra` is not a valid configuration.
pub async fn room619_with(extra: &str) -> Result<Server, BoxError> {
    let config = ConfigLoader::new()
        .toml_str(format!("{NODE_CONFIG}{extra}"))
        .without_env()
        .load()?;
    let service = ServiceBuilder::new("echo", "1.0.0")?
        .grpc(EchoServer::new(BenchEcho))
        // As every service of the shop example: reflection, and metric
        // labels and span names per method.
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .route(REST_PATH, post(echo_json))
        .build()?;
    let running = Node::builder()
        .config(config)
        .service(service)
        .build()?
        .start()
        .await?;
    let addr = running.local_addr();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    Ok(Server::spawn(addr, stop, async move {
        shutdown.cancelled().await;
        running.shutdown().await.map_err(BoxError::from)
    }))
}

/// A room619 node named `name` whose discovery lists `instances`, hosting
/// the gRPC echo service when `echo` (else a caller hosting nothing), for the
/// client benchmarks.
///
/// # Errors
///
/// If the configuration, the service or the node cannot be built, or the
/// node cannot start.
pub async fn node(
    name: &str,
    instances: Vec<InstanceConfig>,
    echo: bool,
) -> Result<RunningNode, BoxError> {
    let mut config = ConfigLoader::new()
        .toml_str(format!(
            "[node]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n"
        ))
        .without_env()
        .load()?;
    config.discovery.instances = instances;
    let mut builder = Node::builder().config(config);
    if echo {
        builder = builder.service(
            ServiceBuilder::new("echo", "1.0.0")?
                .grpc(EchoServer::new(BenchEcho))
                .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
                .build()?,
        );
    }
    Ok(builder.build()?.start().await?)
}
