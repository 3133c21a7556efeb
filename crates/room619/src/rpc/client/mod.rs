//! Clients of other services: typed gRPC clients and REST clients, resolved
//! by service name and semver requirement.
//!
//! A [`ServiceContext`](crate::ServiceContext) (or a
//! [`NodeHandle`](crate::NodeHandle)) hands them out:
//!
//! ```no_run
//! use room619::rpc::client::RpcChannel;
//! use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
//!
//! # async fn demo(ctx: room619::ServiceContext) -> room619::Result<()> {
//! // `EchoClient<RpcChannel>` implements `GrpcClient` (see `grpc_client!`).
//! let mut echo = ctx.client::<EchoClient<RpcChannel>>("echo", "^1")?;
//! // Any generated client works through its constructor, too:
//! let mut same = EchoClient::new(ctx.channel("echo", "^1")?);
//! let reply = echo.echo(EchoRequest { message: "hi".into(), ..Default::default() }).await?;
//! # Ok(()) }
//! ```
//!
//! Resolution: a service hosted on the same node whose version matches is
//! called **in-process** (the node's own router, no socket); otherwise the
//! serving instances the node's [discovery](crate::discovery) knows whose
//! name and version match are called over the network, balanced by power of
//! two choices; the balancer follows the discovery watch, adding instances
//! that appear and dropping those that go away or stop serving. Channels are
//! cached per name and requirement, so asking again is cheap.

pub(crate) mod balance;
mod channel;
mod follow;
mod http;
mod observed;
mod resolve;

pub use channel::RpcChannel;
pub use http::HttpClient;
pub(crate) use resolve::{Clients, Colocation, LocalRouters};

/// Request extension marking a call made in-process by a colocated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colocated;

/// Calls the node's own `router` with `request`, as a colocated client
/// does: a fresh request for the callee, as over the network (none of the
/// caller's extensions, such as a forwarded request's path parameters,
/// principal or peer; [`Colocated`] instead). The callee runs on the
/// caller's task, so its panic, in its handler or later in its answer's
/// stream, fails the call with `INTERNAL` (as a callee's across the
/// network fails its stream) and does not unwind into the caller.
async fn call_colocated<B>(
    router: axum::Router,
    mut request: ::http::Request<B>,
    target: std::sync::Arc<str>,
) -> Result<::http::Response<crate::rpc::body::Unwinding<axum::body::Body>>, crate::error::BoxError>
where
    B: ::http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::error::BoxError>,
{
    use futures_util::FutureExt as _;
    use tower::ServiceExt as _;

    *request.extensions_mut() = ::http::Extensions::new();
    request.extensions_mut().insert(Colocated);
    let response = std::panic::AssertUnwindSafe(router.oneshot(request))
        .catch_unwind()
        .await
        .map_err(|_panic| crate::rpc::body::panicked(&target))??;
    Ok(response.map(|body| crate::rpc::body::Unwinding::new(body, target)))
}

/// Request extension with the address of the peer a request came from
/// (absent for in-process calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// A typed gRPC client that can be made from an [`RpcChannel`], so that
/// `ctx.client::<FooClient<RpcChannel>>(..)` works. Implement it for
/// tonic-generated clients with [`grpc_client!`](crate::grpc_client).
pub trait GrpcClient: Sized {
    /// The client over `channel`.
    fn from_channel(channel: RpcChannel) -> Self;
}

/// Implements [`GrpcClient`] for tonic-generated clients, given their paths
/// (in the crate that defines them, because of Rust's orphan rule).
///
/// ```
/// # mod echo { pub struct EchoClient<T>(T); impl<T> EchoClient<T> { pub fn new(inner: T) -> Self { Self(inner) } } }
/// // In the crate that holds tonic's generated `echo::EchoClient`:
/// room619::grpc_client!(echo::EchoClient);
///
/// # async fn demo(ctx: room619::ServiceContext) -> room619::Result<()> {
/// use room619::rpc::client::RpcChannel;
/// let client = ctx.client::<echo::EchoClient<RpcChannel>>("echo", "^1")?;
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! grpc_client {
    ($($($segment:ident)::+),+ $(,)?) => {
        $(
            impl $crate::rpc::client::GrpcClient for $($segment)::+<$crate::rpc::client::RpcChannel> {
                fn from_channel(channel: $crate::rpc::client::RpcChannel) -> Self {
                    Self::new(channel)
                }
            }
        )+
    };
}
