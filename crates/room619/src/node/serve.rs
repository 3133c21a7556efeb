//! The accept loop and per-connection serving, with the hardening limits.

use std::{io, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    live::{LiveSplit, PeerSplit},
    watch::{ShutdownWatch, Signal},
};
use crate::config::Limits;

/// How long the accept loop pauses after an accept error (e.g. out of file
/// descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long an HTTP/2 keep-alive ping may go unanswered.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// hyper's own HTTP/1 header count limit.
const HYPER_MAX_HEADERS: usize = 100;

/// The signals a listener obeys during shutdown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Signals {
    /// Stop accepting; ask open connections to finish what they have.
    pub(crate) drain: CancellationToken,
    /// Close every connection now (the drain timeout passed).
    pub(crate) force_close: CancellationToken,
}

/// The hyper connection builder, configured from the limits.
pub(crate) fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
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
    first_byte_timeout: Duration,
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
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        tracker.spawn(serve_connection(
            stream,
            app.for_peer(peer),
            Arc::clone(&builder),
            first_byte_timeout,
            signals.clone(),
        ));
    }
    drop(listener);
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

async fn serve_connection(
    stream: TcpStream,
    app: PeerSplit,
    builder: Arc<auto::Builder<TokioExecutor>>,
    first_byte_timeout: Duration,
    signals: Signals,
) {
    // A connection costs a task and a socket until it says something; one that
    // says nothing within the first-byte timeout is closed.
    let mut probe = [0_u8; 1];
    let first = tokio::select! {
        biased;
        first = tokio::time::timeout(first_byte_timeout, stream.peek(&mut probe)) => first,
        () = signals.drain.cancelled() => return,
    };
    match first {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_) | Err(_)) => return,
        Err(_elapsed) => {
            tracing::debug!(timeout = ?first_byte_timeout, "closing a connection that sent nothing");
            return;
        }
    }
    let service = TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut shutdown = ShutdownWatch::new(&signals);
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
                Signal::ForceClose => {
                    tracing::debug!("closing a connection still busy at the drain timeout");
                    return;
                }
            },
        }
    }
}
