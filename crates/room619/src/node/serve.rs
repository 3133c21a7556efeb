//! The accept loop and per-connection serving, with the hardening limits.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    live::{Activity, CountingIo, LiveSplit},
    watch::{Idleness, ShutdownWatch, Signal},
};
use crate::config::Limits;

/// How long the accept loop pauses after an accept error (e.g. out of file
/// descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long an HTTP/2 keep-alive ping may go unanswered.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// hyper's own HTTP/1 header count limit.
const HYPER_MAX_HEADERS: usize = 100;

/// How an HTTP/2 connection begins (the client preface); anything else is
/// served as HTTP/1.
const HTTP2_PREFACE_START: &[u8; 4] = b"PRI ";

/// How long a connection may stay silent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// Before its first byte.
    pub(crate) first_byte: Duration,
    /// HTTP/1: with no request started, finished or in flight (a head that
    /// never ends, an idle keep-alive connection).
    pub(crate) quiet: Duration,
    /// HTTP/1: with an answer's write waiting and nothing written.
    pub(crate) write_stall: Duration,
    /// TCP keep-alive and user timeout ([`Limits::tcp_keep_alive`]).
    pub(crate) tcp_keep_alive: Duration,
}

impl Timeouts {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            first_byte: limits.first_byte_timeout,
            quiet: limits.header_read_timeout,
            write_stall: limits.write_stall_timeout,
            tcp_keep_alive: limits.tcp_keep_alive,
        }
    }
}

/// The signals a listener obeys during shutdown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    /// Stop accepting; ask open connections to finish what they have.
    pub(crate) drain: CancellationToken,
    /// Close every connection now (the drain timeout passed).
    pub(crate) force_close: CancellationToken,
}

/// The hyper connection builder, configured from the limits. HTTP/1 has no
/// timer: hyper's header read timeout arms one for every request head; the
/// connection's [`ShutdownWatch`] enforces `header_read_timeout` instead.
pub(crate) fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    if limits.http1_max_headers != HYPER_MAX_HEADERS {
        // hyper keeps up to 100 headers on the stack; any other count costs a
        // heap allocation per request, so it is only set when it differs.
        builder.http1().max_headers(limits.http1_max_headers);
    }
    let keep_alive =
        (!limits.http2_keep_alive_interval.is_zero()).then_some(limits.http2_keep_alive_interval);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_size)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.http2_max_local_error_reset_streams)
        .max_send_buf_size(limits.http2_max_send_buf_size)
        .keep_alive_interval(keep_alive)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    builder
}

/// Accepts connections until `signals.drain` fires, then drops the listener
/// so that new connections are refused.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: LiveSplit,
    builder: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    signals: Signals,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = signals.drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed; pausing");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        set_socket_options(&stream, peer, timeouts.tcp_keep_alive);
        tracker.spawn(serve_connection(
            (stream, peer),
            app.clone(),
            Arc::clone(&builder),
            timeouts,
            signals.clone(),
        ));
    }
    drop(listener);
}

/// Sets an accepted connection's socket options: `TCP_NODELAY` (an answer
/// is written whole and must not wait for the peer's ACK of the last one),
/// and unless `keep_alive` is zero, TCP keep-alive ([`keep_alive_probes`])
/// and, on Linux, `TCP_USER_TIMEOUT` of twice `keep_alive`: data left
/// unacknowledged, or a receive window left shut, for that long drops the
/// connection. The kernel finds dead and stuck peers this way at no cost per
/// request. An option that cannot be set is logged, and the connection
/// served anyway.
fn set_socket_options(stream: &TcpStream, peer: SocketAddr, keep_alive: Duration) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
    }
    if keep_alive.is_zero() {
        return;
    }
    let socket = socket2::SockRef::from(stream);
    if let Err(err) = socket.set_tcp_keepalive(&keep_alive_probes(keep_alive)) {
        tracing::debug!(%peer, error = %err, "cannot set TCP keep-alive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(err) = socket.set_tcp_user_timeout(Some(keep_alive.saturating_mul(2))) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Keep-alive probes after `idle` of silence, then, where the platform lets
/// the interval and the count be set (socket2's list), every quarter of it
/// (at least a second), four times; elsewhere as often as the system says.
fn keep_alive_probes(idle: Duration) -> socket2::TcpKeepalive {
    let probes = socket2::TcpKeepalive::new().with_time(idle);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "dragonfly",
        target_os = "illumos",
        target_os = "windows",
    ))]
    let probes = {
        /// Probes left unanswered before the kernel drops the connection.
        const PROBES: u32 = 4;
        probes
            .with_interval((idle / 4).max(Duration::from_secs(1)))
            .with_retries(PROBES)
    };
    probes
}

/// Errors that concern one connection only; the loop goes on at once.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Whether the connection speaks HTTP/2 (it begins with the client
/// preface), by the first bytes it sent, left unread; `None` when it closed
/// or failed first. A first segment shorter than [`HTTP2_PREFACE_START`]
/// that could still begin it (`P`, `PR`, `PRI`) is looked at again a little
/// later, so that HTTP/2 split early is not served as HTTP/1.
async fn is_http2(stream: &TcpStream) -> Option<bool> {
    /// The waits between looks at a short first segment (peeking again at
    /// once would find the same bytes, in a busy loop): about a third of a
    /// second in all, after which the guess is HTTP/1 (which only decides
    /// the connection's quiet watch: hyper reads the preface itself).
    const LOOK_AGAIN: [u64; 6] = [5, 10, 20, 40, 80, 160];
    let mut probe = [0_u8; HTTP2_PREFACE_START.len()];
    let mut waits = LOOK_AGAIN.iter();
    loop {
        let n = stream.peek(&mut probe).await.ok().filter(|&n| n > 0)?;
        let decided = n == probe.len() || !HTTP2_PREFACE_START.starts_with(&probe[..n]);
        match waits.next() {
            Some(&ms) if !decided => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => return Some(probe[..n] == *HTTP2_PREFACE_START),
        }
    }
}

async fn serve_connection(
    (stream, peer): (TcpStream, SocketAddr),
    app: LiveSplit,
    builder: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    signals: Signals,
) {
    // A connection costs a task and a socket until it says something; one that
    // says nothing within the first-byte timeout is closed.
    let first = tokio::select! {
        biased;
        first = tokio::time::timeout(timeouts.first_byte, is_http2(&stream)) => first,
        () = signals.drain.cancelled() => return,
    };
    let http2 = match first {
        Ok(Some(http2)) => http2,
        Ok(None) => return,
        Err(_elapsed) => {
            tracing::debug!(timeout = ?timeouts.first_byte, "closing a connection that sent nothing");
            return;
        }
    };
    // HTTP/1 requests are counted so that a quiet connection is closed;
    // HTTP/2 has stream limits (and TCP keep-alive finds dead peers), and an idle
    // HTTP/2 connection (a client's channel between calls) stays open.
    let activity = (!http2).then(Arc::<Activity>::default);
    let idleness = activity.as_ref().map(|activity| Idleness {
        activity: Arc::clone(activity),
        quiet: timeouts.quiet,
        stall: timeouts.write_stall,
    });
    let io = TokioIo::new(CountingIo::new(stream, activity.clone()));
    let service = TowerToHyperService::new(app.for_peer(peer, activity));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut shutdown = ShutdownWatch::new(&signals, idleness);
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            signal = &mut shutdown => match signal {
                Signal::Drain => conn.as_mut().graceful_shutdown(),
                Signal::Quiet => {
                    // Nothing is in flight, so closing loses nothing; a
                    // graceful shutdown would wait for a half-sent head.
                    tracing::debug!(timeout = ?timeouts.quiet, "closing a quiet HTTP/1 connection");
                    return;
                }
                Signal::Stalled => {
                    tracing::debug!(timeout = ?timeouts.write_stall, "closing an HTTP/1 connection whose client stopped reading");
                    return;
                }
                Signal::ForceClose => {
                    tracing::debug!("closing a connection still busy at the drain timeout");
                    return;
                }
            },
        }
    }
}
