//! Waiting for the process's stop signals.

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM: the signals that stop a
/// node. [`Node::run`](super::Node::run) and
/// [`RunningNode::stop_on_signal`](super::RunningNode::stop_on_signal) wait
/// for it (and for a second one, which cuts the shutdown short); a binary
/// that stops its node its own way can too:
///
/// ```no_run
/// # async fn demo(running: room619::RunningNode) -> room619::Result<()> {
/// let handle = running.handle();
/// tokio::spawn(async move {
///     room619::node::shutdown_signal().await;
///     handle.shutdown();
/// });
/// running.wait().await
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
