//! A listener holds at most `limits.max_connections`; an HTTP/2 connection
//! that never finishes its preface is closed at the first-byte timeout, and
//! one left idle is sent GOAWAY at the idle timeout, then dropped if its
//! client ignores that.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{self, raw};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];
const PING: u8 = 6;
const GOAWAY: u8 = 7;

/// One HTTP/2 frame's type, flags and payload length, or `None` once the
/// server closed.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, usize)> {
    let mut head = [0_u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0_u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], len))
}

/// A HEADERS frame asking `GET path` on stream 1, the whole request (HPACK
/// without Huffman: `:method GET` and `:scheme http` from the static
/// table, `:path` and `:authority` as literals).
fn get_frame(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 1, b't']);
    // END_STREAM | END_HEADERS.
    let mut frame = vec![0, 0, u8::try_from(block.len()).unwrap(), 1, 0x5, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    frame
}

/// Reads frames, acknowledging the server's SETTINGS, until it closes or
/// `limit` passes; the frames' types and the DATA bytes received, or
/// `None` when the connection stayed open.
async fn frames_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, usize)> {
    let mut kinds = Vec::new();
    let mut data = 0;
    tokio::time::timeout(limit, async {
        while let Some((kind, flags, len)) = read_frame(stream).await {
            match (kind, flags) {
                (0, _) => data += len,
                (4, 0) => stream.write_all(&SETTINGS_ACK).await.unwrap(),
                _ => {}
            }
            kinds.push(kind);
        }
    })
    .await
    .ok()?;
    Some((kinds, data))
}

#[tokio::test]
async fn an_http2_preface_that_stops_halfway_is_closed_at_the_first_byte_timeout() {
    let node = support::start(support::config("[limits]\nfirst_byte_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    let started = Instant::now();
    stream.write_all(&PREFACE[..16]).await.unwrap();
    let exchange = raw::read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(exchange.closed, "a half preface held its connection");
    assert!(exchange.received.is_empty(), "{}", exchange.text());
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    node.shutdown().await.unwrap();

    // A whole preface in pieces, within the timeout, is served.
    let node = support::start(support::config("[limits]\nfirst_byte_timeout = \"3s\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for piece in PREFACE.chunks(5) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stream.write_all(&SETTINGS).await.unwrap();
    let (kind, ..) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut stream))
        .await
        .expect("the node answered")
        .expect("the node kept the connection");
    assert_eq!(kind, 4, "not an HTTP/2 SETTINGS frame");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_http2_connection_is_sent_goaway_then_dropped_if_it_stays() {
    let node = support::start(support::config("[limits]\nhttp2_idle_timeout = \"400ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&SETTINGS).await.unwrap();
    let mut last_frame = Instant::now();
    let goaway_at = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut stream))
            .await
            .expect("no GOAWAY within 5 s")
            .expect("closed before any GOAWAY");
        match frame {
            (GOAWAY, ..) => break Instant::now(),
            (4, 0, _) => stream.write_all(&SETTINGS_ACK).await.unwrap(),
            _ => {}
        }
        last_frame = Instant::now();
    };
    let idle = goaway_at.duration_since(last_frame);
    assert!(
        idle >= Duration::from_millis(300),
        "GOAWAY too early: {idle:?}"
    );
    assert!(idle < Duration::from_secs(3), "GOAWAY too late: {idle:?}");

    // This client ignores the GOAWAY (and the PING after it): after as long
    // again, the node drops the connection.
    let exchange = raw::read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let held = goaway_at.elapsed();
    assert!(
        exchange.closed,
        "a client ignoring GOAWAY kept its connection"
    );
    assert!(
        held >= Duration::from_millis(300),
        "dropped too early: {held:?}"
    );
    node.shutdown().await.unwrap();
}

/// The node's own keep-alive PINGs do not keep an idle connection open.
#[tokio::test]
async fn keep_alive_pings_do_not_keep_an_idle_http2_connection() {
    let node = support::start(support::config(
        "[limits]\nhttp2_idle_timeout = \"2500ms\"\nhttp2_keep_alive_interval = \"1s\"",
    ))
    .await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    let opened = Instant::now();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&SETTINGS).await.unwrap();
    let mut pings = 0;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream))
            .await
            .expect("no GOAWAY within 10 s")
            .expect("closed before any GOAWAY");
        match frame {
            (GOAWAY, ..) => break,
            (4, 0, _) => stream.write_all(&SETTINGS_ACK).await.unwrap(),
            (PING, 0, _) => pings += 1,
            _ => {}
        }
    }
    let idle = opened.elapsed();
    assert!(pings >= 1, "the node sent no keep-alive PING");
    assert!(
        idle >= Duration::from_millis(2400),
        "GOAWAY too early: {idle:?}"
    );
    assert!(idle < Duration::from_secs(8), "GOAWAY too late: {idle:?}");
    node.shutdown().await.unwrap();
}

/// A client that announces a flow-control window of zero holds the node's
/// answer back; the node cuts it at the write stall timeout, as it cuts an
/// HTTP/1 client that stops reading.
#[tokio::test]
async fn an_http2_answer_held_back_by_a_zero_window_is_cut_at_the_write_stall_timeout() {
    let node = support::start(support::config("[limits]\nwrite_stall_timeout = \"600ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    stream
        .write_all(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0])
        .await
        .unwrap();
    stream.write_all(&get_frame("/health/live")).await.unwrap();
    let asked = Instant::now();
    let closed = frames_until_closed(&mut stream, Duration::from_secs(10)).await;
    let held = asked.elapsed();
    let (kinds, data) = closed.expect("the held-back answer kept its connection");
    assert!(kinds.contains(&1), "no answer head came: {kinds:?}");
    assert_eq!(data, 0, "DATA sent into a zero window: {kinds:?}");
    assert!(
        held >= Duration::from_millis(400),
        "cut too early: {held:?}"
    );
    node.shutdown().await.unwrap();
}

/// A client that keeps the default window (64 KiB) and never opens it
/// again, asking for an answer of a mebibyte in one chunk: the node hands
/// data to h2 in pieces, so the answer waits in the node, not in h2's
/// buffer, and the connection is cut at the write stall timeout.
#[tokio::test]
async fn a_large_http2_answer_whose_window_is_never_opened_again_is_cut() {
    let service = support::echo_builder()
        .route(
            "/big",
            axum::routing::get(|| async { vec![b'x'; 1024 * 1024] }),
        )
        .build()
        .unwrap();
    let node = support::start_with(
        support::config("[limits]\nwrite_stall_timeout = \"600ms\""),
        service,
    )
    .await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&SETTINGS).await.unwrap();
    stream.write_all(&get_frame("/big")).await.unwrap();
    let closed = frames_until_closed(&mut stream, Duration::from_secs(10)).await;
    let (kinds, data) = closed.expect("the held-back answer kept its connection");
    assert!(data <= 65_535, "more than the window was sent: {data}");
    assert!(data > 0, "nothing was sent");
    assert!(kinds.contains(&GOAWAY), "closed without GOAWAY: {kinds:?}");
    node.shutdown().await.unwrap();
}

/// A gRPC channel whose connections are counted.
async fn counted_channel(
    addr: SocketAddr,
) -> (EchoClient<tonic::transport::Channel>, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_uri: http::Uri| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                TcpStream::connect(addr)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap();
    (EchoClient::new(channel), connections)
}

#[tokio::test]
async fn a_grpc_channel_outlives_the_idle_timeout_without_a_failed_call() {
    let node = support::start(support::config("[limits]\nhttp2_idle_timeout = \"300ms\"")).await;
    let (mut client, connections) = counted_channel(node.local_addr()).await;
    // A call longer than the idle timeout keeps its connection.
    let slow = EchoRequest {
        message: "slow".to_owned(),
        delay_ms: 1_000,
        ..EchoRequest::default()
    };
    let answer = client.echo(slow).await.unwrap().into_inner();
    assert_eq!(answer.message, "slow");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "cut mid-call");
    // Idle past the timeout: the node says GOAWAY, and the channel's next
    // calls connect again, none of them failing.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..3 {
        let answer = client.echo(EchoRequest::default()).await.unwrap();
        assert_eq!(answer.into_inner().message, "");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_timeout_of_zero_keeps_idle_http2_connections() {
    let node = support::start(support::config(
        "[limits]\nhttp2_idle_timeout = \"0s\"\nheader_read_timeout = \"100ms\"",
    ))
    .await;
    let (mut client, connections) = counted_channel(node.local_addr()).await;
    client.echo(EchoRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.echo(EchoRequest::default()).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    node.shutdown().await.unwrap();
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n";

/// A kept-alive HTTP/1 connection that has been answered once.
async fn answered_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(LIVE).await.unwrap();
    let mut buf = [0_u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once_and_counted() {
    let node = support::start(support::config("[limits]\nmax_connections = 2")).await;
    let addr = node.local_addr();
    let first = answered_connection(addr).await;
    let second = answered_connection(addr).await;

    let started = Instant::now();
    let refused = raw::exchange(addr, LIVE, Duration::from_secs(5)).await;
    assert!(refused.closed, "a third connection was held");
    assert!(refused.received.is_empty(), "{}", refused.text());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "refused slowly: {took:?}");

    // A connection that closes gives its place back.
    drop(first);
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let exchange = raw::exchange(addr, LIVE, Duration::from_millis(300)).await;
        if exchange.status_line() == "HTTP/1.1 200 OK" {
            served = Some(exchange);
            break;
        }
    }
    assert!(
        served.is_some(),
        "the freed place was not given to a new connection"
    );

    drop(second);
    let sample = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}{{listener=\"main\"}} ")))
            .and_then(|value| value.parse::<u64>().ok())
    };
    // Once the two closed connections are noticed, the metrics request's
    // own is the one open.
    let mut last = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(response) = support::http1()
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
        else {
            continue;
        };
        last = response.text().await.unwrap();
        if sample(&last, "room619_server_open_connections") == Some(1) {
            break;
        }
    }
    assert_eq!(
        sample(&last, "room619_server_open_connections"),
        Some(1),
        "{last}"
    );
    let refused_total = sample(&last, "room619_server_refused_connections_total");
    assert!(refused_total.is_some_and(|n| n >= 1), "{last}");
    node.shutdown().await.unwrap();
}

/// `GET /upgrade`: switches to a protocol that echoes bytes until closed.
async fn upgrade(mut request: axum::extract::Request) -> axum::response::Response {
    echo_once_handed(&mut request);
    switching_protocols()
}

/// `CONNECT /tunnel`: a tunnel that echoes bytes until closed.
async fn tunnel(mut request: axum::extract::Request) -> axum::response::Response {
    echo_once_handed(&mut request);
    axum::response::Response::new(axum::body::Body::empty())
}

/// Echoes what comes through `request`'s socket once hyper hands it over.
fn echo_once_handed(request: &mut axum::extract::Request) {
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let mut io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
        let mut buf = [0_u8; 64];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            if io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
}

/// `GET /hold`: switches protocols, then holds the socket for a minute
/// without reading or writing.
async fn upgrade_and_hold(mut request: axum::extract::Request) -> axum::response::Response {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let io = upgrade.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(io);
    });
    switching_protocols()
}

fn switching_protocols() -> axum::response::Response {
    axum::response::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, "echo")
        .body(axum::body::Body::empty())
        .unwrap()
}

/// An upgraded connection (a WebSocket, say) left the listener's count
/// when hyper handed it to the handler; it now holds its place until the
/// handler drops it.
#[tokio::test]
async fn an_upgraded_connection_keeps_its_place_until_it_closes() {
    let node = node_with_upgrades(support::config("[limits]\nmax_connections = 1")).await;
    let addr = node.local_addr();
    let upgraded = upgraded_connection(addr).await;

    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = raw::exchange(addr, LIVE, Duration::from_secs(5)).await;
    assert!(
        refused.closed && refused.received.is_empty(),
        "served beside the upgraded connection: {}",
        refused.text()
    );

    drop(upgraded);
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let exchange = raw::exchange(addr, LIVE, Duration::from_millis(300)).await;
        if exchange.status_line() == "HTTP/1.1 200 OK" {
            served = true;
            break;
        }
    }
    assert!(served, "the upgraded connection's place was not given back");
    node.shutdown().await.unwrap();
}

/// A node hosting `/upgrade` with `config`.
async fn node_with_upgrades(config: room619::config::Config) -> room619::RunningNode {
    let service = support::echo_builder()
        .route("/upgrade", axum::routing::get(upgrade))
        .route("/hold", axum::routing::get(upgrade_and_hold))
        .route("/tunnel", axum::routing::connect(tunnel))
        .build()
        .unwrap();
    support::start_with(config, service).await
}

/// A connection upgraded on the node at `addr`, checked to echo.
async fn upgraded_connection(addr: SocketAddr) -> TcpStream {
    let mut upgraded = switched(addr, "/upgrade").await;
    echoes(&mut upgraded, b"ping").await;
    upgraded
}

/// A connection to `addr` whose request for `path` switched protocols.
async fn switched(addr: SocketAddr, path: &str) -> TcpStream {
    let head =
        format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n");
    handed_over(addr, &head, b"HTTP/1.1 101").await
}

/// A connection to `addr` whose request `head` was answered with `status`
/// (a status line's start), the rest of it handed to the handler.
async fn handed_over(addr: SocketAddr, head: &str, status: &[u8]) -> TcpStream {
    let mut upgraded = TcpStream::connect(addr).await.unwrap();
    upgraded.write_all(head.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        upgraded.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(status),
        "{}",
        String::from_utf8_lossy(&head)
    );
    upgraded
}

/// A node hosting `/upgrade` with `drain_timeout`, and a connection
/// upgraded on it.
async fn node_with_an_upgraded_connection(
    drain_timeout: Duration,
) -> (room619::RunningNode, TcpStream) {
    let mut config = support::config("");
    config.node.drain_timeout = drain_timeout;
    let node = node_with_upgrades(config).await;
    let upgraded = upgraded_connection(node.local_addr()).await;
    (node, upgraded)
}

async fn echoes(upgraded: &mut TcpStream, bytes: &[u8]) {
    upgraded.write_all(bytes).await.unwrap();
    let mut echoed = vec![0_u8; bytes.len()];
    upgraded.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, bytes);
}

/// A shutdown drains an upgraded connection (a WebSocket, say) as it drains
/// requests: it goes on working, and the node stops once its handler
/// dropped it.
#[tokio::test]
async fn a_shutdown_waits_for_upgraded_connections_to_close() {
    let (node, mut upgraded) = node_with_an_upgraded_connection(Duration::from_secs(5)).await;
    let started = Instant::now();
    let shutdown = tokio::spawn(node.shutdown());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !shutdown.is_finished(),
        "the node stopped beside an open upgraded connection"
    );
    echoes(&mut upgraded, b"still here").await;
    drop(upgraded);
    tokio::time::timeout(Duration::from_secs(3), shutdown)
        .await
        .expect("the node did not stop once the upgraded connection closed")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// An upgraded connection (or a `CONNECT` tunnel) whose handler ignores
/// the shutdown is ended at the drain timeout: the handler's wait for the
/// next read fails, and the client sees the connection close.
#[tokio::test]
async fn an_upgraded_connection_is_closed_at_the_drain_timeout() {
    for tunnel in [false, true] {
        let mut config = support::config("");
        config.node.drain_timeout = Duration::from_secs(1);
        let node = node_with_upgrades(config).await;
        let mut upgraded = if tunnel {
            let head = "CONNECT /tunnel HTTP/1.1\r\nhost: t\r\n\r\n";
            handed_over(node.local_addr(), head, b"HTTP/1.1 200").await
        } else {
            switched(node.local_addr(), "/upgrade").await
        };
        echoes(&mut upgraded, b"ping").await;
        let shutdown = tokio::spawn(node.shutdown());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!shutdown.is_finished(), "the node stopped at once");
        echoes(&mut upgraded, b"held").await;
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("an upgraded connection held the shutdown")
            .unwrap()
            .unwrap();
        let mut rest = [0_u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), upgraded.read(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("still open after the shutdown (tunnel: {tunnel})"));
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
}

/// An upgraded connection its handler holds without reading or writing
/// holds a shutdown for the drain timeout and a grace of at most a second,
/// not for ever.
#[tokio::test]
async fn an_upgraded_connection_holds_a_shutdown_only_for_the_drain_timeout() {
    let mut config = support::config("");
    config.node.drain_timeout = Duration::from_millis(300);
    let node = node_with_upgrades(config).await;
    let _held = switched(node.local_addr(), "/hold").await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), node.shutdown())
        .await
        .expect("an upgraded connection held the shutdown")
        .unwrap();
    let took = started.elapsed();
    // 300 ms of drain, then 300 ms of grace (at most the drain timeout),
    // with slack for a loaded machine.
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
