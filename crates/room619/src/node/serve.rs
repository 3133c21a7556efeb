//! The accept loop and per-connection serving, with the hardening limits.

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{
    sync::CancellationToken,
    task::{TaskTracker, task_tracker::TaskTrackerToken},
};

use super::{
    live::{Activity, CountingIo, LiveSplit},
    watch::{Idleness, ShutdownWatch, Signal},
};
use crate::{config::Limits, observability::metrics::ListenerMetrics};

/// How long the accept loop pauses after an accept error (e.g. out of file
/// descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long an HTTP/2 keep-alive ping may go unanswered.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// hyper's own HTTP/1 header count limit.
const HYPER_MAX_HEADERS: usize = 100;

/// How an HTTP/2 connection begins (the client preface); anything else is
/// served as HTTP/1.
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often, at most, the accept loop warns that it refuses connections.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How long a connection may stay silent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// Before its first byte.
    pub(crate) first_byte: Duration,
    /// HTTP/1: with no request started, finished or in flight (a head that
    /// never ends, an idle keep-alive connection).
    pub(crate) quiet: Duration,
    /// With an answer's write waiting and nothing written.
    pub(crate) write_stall: Duration,
    /// HTTP/2: with no stream open; zero for never.
    pub(crate) http2_idle: Duration,
    /// TCP keep-alive and user timeout ([`Limits::tcp_keep_alive`]).
    pub(crate) tcp_keep_alive: Duration,
}

impl Timeouts {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            first_byte: limits.first_byte_timeout,
            quiet: limits.header_read_timeout,
            write_stall: limits.write_stall_timeout,
            http2_idle: limits.http2_idle_timeout,
            tcp_keep_alive: limits.tcp_keep_alive,
        }
    }
}

/// The signals a listener obeys during shutdown, and what it tells the
/// shutdown back.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    /// Stop accepting; ask open connections to finish what they have.
    pub(crate) drain: CancellationToken,
    /// Close every connection now (the drain timeout passed).
    pub(crate) force_close: CancellationToken,
    /// Every accepted connection's socket until it is dropped: one upgraded
    /// and handed to a handler (a WebSocket, say) stays here after its
    /// connection task has ended, until the handler drops it.
    pub(crate) sockets: TaskTracker,
}

/// The connections a listener may hold at once
/// ([`Limits::max_connections`]), and its connection metrics.
#[derive(Clone)]
pub(crate) struct ConnectionSlots {
    free: Arc<Semaphore>,
    limit: usize,
    metrics: Option<ListenerMetrics>,
}

/// One connection's place in its listener, given back when dropped. It
/// counts among the listener's [`Signals::sockets`], so that a shutdown
/// waits for it (for at most the drain timeout) also once the connection is
/// upgraded and handed to a handler, and it hears the shutdown's
/// [`Signals::force_close`], which ends such a connection's reads and
/// writes.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    _tracked: TaskTrackerToken,
    pub(super) force_close: CancellationToken,
    open: Option<Gauge>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(open) = &self.open {
            open.dec();
        }
    }
}

impl ConnectionSlots {
    /// `limit` places (at most tokio's largest semaphore), counted in
    /// `metrics` when given.
    pub(crate) fn new(limit: usize, metrics: Option<ListenerMetrics>) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Self {
            free: Arc::new(Semaphore::new(limit)),
            limit,
            metrics,
        }
    }

    /// A place for one more connection, counted in the `signals`' sockets,
    /// or `None` (counted as refused) when they are all taken.
    fn take(&self, signals: &Signals) -> Option<Slot> {
        let Ok(permit) = Arc::clone(&self.free).try_acquire_owned() else {
            if let Some(metrics) = &self.metrics {
                metrics.refused.inc();
            }
            return None;
        };
        let open = self.metrics.as_ref().map(|metrics| metrics.open.clone());
        if let Some(open) = &open {
            open.inc();
        }
        Some(Slot {
            _permit: permit,
            _tracked: signals.sockets.token(),
            force_close: signals.force_close.clone(),
            open,
        })
    }
}

/// Warns when `max_connections` on each of `listeners` listeners adds up
/// to more than the process may have files open (Linux: the soft limit in
/// `/proc/self/limits`): `accept` would then fail before the limit refuses
/// anyone, and so would the node's own outgoing connections.
pub(crate) fn warn_if_over_open_files(max_connections: usize, listeners: usize) {
    #[cfg(target_os = "linux")]
    if let Some(open_files) = open_files_limit() {
        let wanted = u64::try_from(max_connections.saturating_mul(listeners)).unwrap_or(u64::MAX);
        if wanted > open_files {
            tracing::warn!(
                max_connections,
                listeners,
                open_files,
                "limits.max_connections is above the process's open-file limit (ulimit -n): \
                 connections would fail for want of descriptors first; raise the limit or \
                 lower limits.max_connections"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (max_connections, listeners);
}

/// The soft limit on open files, when the process has one.
#[cfg(target_os = "linux")]
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"; "unlimited" is no limit.
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Connections refused since the accept loop last warned of them.
#[derive(Default)]
struct Refusals {
    unreported: u64,
    warned_at: Option<Instant>,
}

impl Refusals {
    /// Counts one, and warns when none was reported in the last
    /// [`REFUSAL_WARNING_EVERY`], so a flood costs a log line every ten
    /// seconds and not one a connection.
    fn note(&mut self, peer: SocketAddr, limit: usize) {
        self.unreported += 1;
        let now = Instant::now();
        let due = self.warned_at.is_none_or(|at| {
            now.checked_duration_since(at)
                .is_some_and(|since| since >= REFUSAL_WARNING_EVERY)
        });
        if due {
            tracing::warn!(
                %peer,
                refused = self.unreported,
                max_connections = limit,
                "refusing connections: the listener holds limits.max_connections"
            );
            self.unreported = 0;
            self.warned_at = Some(now);
        }
    }
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
/// so that new connections are refused. A connection accepted while the
/// listener holds as many as `slots` allows is closed at once.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: LiveSplit,
    (builder, timeouts): (Arc<auto::Builder<TokioExecutor>>, Timeouts),
    slots: ConnectionSlots,
    signals: Signals,
    tracker: TaskTracker,
) {
    let mut refusals = Refusals::default();
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
        let Some(slot) = slots.take(&signals) else {
            refusals.note(peer, slots.limit);
            drop(stream);
            continue;
        };
        set_socket_options(&stream, peer, timeouts.tcp_keep_alive);
        tracker.spawn(serve_connection(
            (stream, peer, slot),
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

/// What a connection's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Http1,
    /// The whole HTTP/2 client preface.
    Http2,
    /// Nothing, or only part of the HTTP/2 preface, by the deadline.
    Silent,
    /// Closed or failed first.
    Closed,
}

/// What the connection speaks, by the first bytes it sent, left unread: HTTP/2
/// once its whole client preface has arrived, HTTP/1 as soon as the bytes
/// differ from it. While they could still begin the preface they are looked
/// at again a little later, until `deadline`: an HTTP/2 client that stops
/// inside its preface is then [`Opening::Silent`] (hyper's HTTP/2 server
/// would wait for the rest for ever).
async fn opening(stream: &TcpStream, deadline: tokio::time::Instant) -> Opening {
    /// The first waits between looks, in milliseconds (peeking again at
    /// once would find the same bytes, in a busy loop); then [`EVERY`].
    const LOOK_AGAIN: [u64; 6] = [5, 10, 20, 40, 80, 160];
    const EVERY: u64 = 250;
    let mut probe = [0_u8; HTTP2_PREFACE.len()];
    let mut looks = 0_usize;
    loop {
        // A peek that finds bytes answers even at the deadline: the
        // timeout looks at the peek first.
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut probe)).await {
            Err(_elapsed) => return Opening::Silent,
            Ok(Ok(0) | Err(_)) => return Opening::Closed,
            Ok(Ok(n)) => n,
        };
        let Some(seen) = probe.get(..n) else {
            return Opening::Closed;
        };
        if seen == HTTP2_PREFACE {
            return Opening::Http2;
        }
        if !HTTP2_PREFACE.starts_with(seen) {
            return Opening::Http1;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Opening::Silent;
        }
        let wait = Duration::from_millis(LOOK_AGAIN.get(looks).copied().unwrap_or(EVERY));
        looks = looks.saturating_add(1);
        tokio::time::sleep_until(now.checked_add(wait).unwrap_or(deadline).min(deadline)).await;
    }
}

async fn serve_connection(
    (stream, peer, slot): (TcpStream, SocketAddr, Slot),
    app: LiveSplit,
    builder: Arc<auto::Builder<TokioExecutor>>,
    timeouts: Timeouts,
    signals: Signals,
) {
    // A connection costs a task and a socket until it says something; one that
    // says nothing (or not its whole HTTP/2 preface) within the first-byte
    // timeout is closed.
    let deadline = crate::rpc::deadline::after(timeouts.first_byte);
    let opening = tokio::select! {
        biased;
        opening = self::opening(&stream, deadline) => opening,
        () = signals.drain.cancelled() => return,
    };
    let http2 = match opening {
        Opening::Http1 => false,
        Opening::Http2 => true,
        Opening::Closed => return,
        Opening::Silent => {
            tracing::debug!(timeout = ?timeouts.first_byte, "closing a connection that sent nothing, or not its whole HTTP/2 preface");
            return;
        }
    };
    // Requests are counted so that a quiet connection is closed (an HTTP/1
    // one after the header read timeout, an HTTP/2 one, a client's channel
    // between calls, after the idle timeout unless that is off), and so
    // that an answer its client stopped reading is cut.
    let quiet = if http2 {
        (!timeouts.http2_idle.is_zero()).then_some(timeouts.http2_idle)
    } else {
        Some(timeouts.quiet)
    };
    let activity = Arc::<Activity>::default();
    let idleness = Idleness {
        activity: Arc::clone(&activity),
        quiet,
        writes_count: !http2,
        stall: timeouts.write_stall,
    };
    let io = TokioIo::new(CountingIo::new(stream, activity.clone(), Some(slot)));
    let service = TowerToHyperService::new(app.for_peer(peer, activity));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut shutdown = ShutdownWatch::new(&signals, Some(idleness));
    // Whether the connection was asked to finish (HTTP/2: sent GOAWAY).
    let mut finishing = false;
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
                Signal::Drain => {
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Signal::Quiet if http2 && !finishing => {
                    // GOAWAY: the client opens no new stream here and
                    // closes once it has the answers it waits for, so a
                    // call racing the close is not lost.
                    tracing::debug!(timeout = ?quiet, "asking an idle HTTP/2 connection to close");
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Signal::Quiet => {
                    // Nothing is in flight, so closing loses nothing; a
                    // graceful shutdown would wait for a half-sent head (or,
                    // on HTTP/2, for a client that ignores GOAWAY).
                    tracing::debug!(timeout = ?quiet, http2, "closing a quiet connection");
                    return;
                }
                Signal::Stalled if http2 && !finishing => {
                    // Other streams may be moving: GOAWAY lets them finish;
                    // stalled as long again, the connection is dropped.
                    tracing::debug!(timeout = ?timeouts.write_stall, "asking an HTTP/2 connection whose client stopped reading to close");
                    finishing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Signal::Stalled => {
                    tracing::debug!(timeout = ?timeouts.write_stall, http2, "closing a connection whose client stopped reading");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_open_file_limit_is_read_from_proc() {
        let limit = open_files_limit().expect("a soft limit on open files");
        assert!(limit >= 64, "{limit}");
    }

    #[tokio::test]
    async fn an_opening_is_decided_by_the_whole_preface_or_the_first_difference() {
        use tokio::io::AsyncWriteExt as _;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = &listener;
        let open = |sent: &'static [u8], wait: Duration| async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            client.write_all(sent).await.unwrap();
            let opening = opening(&server, crate::rpc::deadline::after(wait)).await;
            (opening, client)
        };
        assert_eq!(
            open(HTTP2_PREFACE, Duration::from_secs(5)).await.0,
            Opening::Http2
        );
        assert_eq!(
            open(b"PRI * HTTP/1.1\r\n", Duration::from_secs(5)).await.0,
            Opening::Http1
        );
        assert_eq!(open(b"PO", Duration::from_secs(5)).await.0, Opening::Http1);
        let started = tokio::time::Instant::now();
        let (half, _client) = open(b"PRI * HTTP/2.0\r\n", Duration::from_millis(300)).await;
        assert_eq!(half, Opening::Silent);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
