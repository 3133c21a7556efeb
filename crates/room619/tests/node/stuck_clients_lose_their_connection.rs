//! `limits.tcp_keep_alive`: on Linux, the kernel drops a connection whose
//! peer stops reading (its receive window stays shut), so the answer being
//! written to it is let go; with the option off, the same client keeps it.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    routing::get,
};
use futures_util::stream;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpSocket,
    sync::oneshot::{self, error::TryRecvError},
};

use crate::support;

/// Tells the test when the answer's body is dropped: the node has given up
/// writing it.
struct DroppedSignal(Option<oneshot::Sender<Instant>>);

impl Drop for DroppedSignal {
    fn drop(&mut self) {
        // The test may have stopped listening.
        if let Some(sender) = self.0.take() {
            sender.send(Instant::now()).unwrap_or_default();
        }
    }
}

/// A node with `GET /endless`, an answer that never ends, under `limits`;
/// the receiver hears when the answer's body is dropped.
async fn node_with_endless_answer(
    limits: &str,
) -> (room619::RunningNode, oneshot::Receiver<Instant>) {
    let (dropped, dropped_at) = oneshot::channel();
    let signal = Arc::new(Mutex::new(Some(DroppedSignal(Some(dropped)))));
    let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
    let service = support::echo_builder()
        .route(
            "/endless",
            get(move || {
                let signal = signal.lock().unwrap().take();
                let chunk = chunk.clone();
                async move {
                    Body::from_stream(stream::repeat_with(move || {
                        let _keep = &signal;
                        Ok::<_, Infallible>(chunk.clone())
                    }))
                }
            }),
        )
        .build()
        .unwrap();
    let node = support::start_with(support::config(&format!("[limits]\n{limits}")), service).await;
    (node, dropped_at)
}

/// Asks for `/endless` with a small receive buffer, reads the status line
/// (the answer has started), and reads no more.
async fn stuck_client(node: &room619::RunningNode) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(node.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /endless HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .unwrap();
    let mut status = [0_u8; 12];
    stream.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    stream
}

/// `TCP_USER_TIMEOUT` is Linux's (and counts zero-window probing since
/// 5.11); elsewhere only keep-alive probes run, which a live peer answers.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection() {
    let (node, dropped_at) = node_with_endless_answer("tcp_keep_alive = \"1s\"").await;
    let client = stuck_client(&node).await;
    let asked = Instant::now();
    // The window shuts once both socket buffers are full (milliseconds);
    // the kernel gives up twice `tcp_keep_alive` later.
    let dropped = tokio::time::timeout(Duration::from_secs(30), dropped_at)
        .await
        .expect("the node still writes to a client that stopped reading 30 s ago")
        .unwrap();
    let after = dropped.duration_since(asked);
    assert!(
        after >= Duration::from_millis(1500),
        "dropped after {after:?}: before the user timeout (2 s) could pass"
    );
    drop(client);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_tcp_keep_alive_off_a_stuck_client_keeps_its_connection() {
    let (node, mut dropped_at) = node_with_endless_answer("tcp_keep_alive = \"0s\"").await;
    let client = stuck_client(&node).await;
    // Three times as long as the node above took to let go.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        dropped_at.try_recv(),
        Err(TryRecvError::Empty),
        "the answer was dropped with tcp_keep_alive off"
    );
    drop(client);
    node.shutdown().await.unwrap();
}
