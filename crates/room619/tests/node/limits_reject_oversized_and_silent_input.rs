use std::{
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
use tonic::Code;

use crate::support;

/// Reads what the server sends until it closes or `limit` passes.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_line(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn oversized_grpc_requests_are_resource_exhausted() {
    let node = support::start(support::config(
        "[limits]\ngrpc_max_decode_message_size = 1024",
    ))
    .await;
    let mut client = support::echo_client(node.local_addr()).await;
    let small = client.echo(carrying(512)).await.unwrap();
    assert_eq!(small.into_inner().payload.len(), 512);
    let status = client.echo(carrying(4096)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("1024"), "{status:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_default_grpc_limit_is_four_mebibytes() {
    let node = support::start(support::config("")).await;
    let mut client = support::echo_client(node.local_addr()).await;
    let status = client.echo(carrying(5 * 1024 * 1024)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    node.shutdown().await.unwrap();
}

/// A node limit above 4 MiB leaves the generated server's own 4 MiB limit,
/// which answers as the node's does: `RESOURCE_EXHAUSTED`, not tonic's
/// `OUT_OF_RANGE`.
#[tokio::test]
async fn a_message_over_the_servers_own_limit_is_resource_exhausted() {
    let node = support::start(support::config(
        "[limits]\ngrpc_max_decode_message_size = 16777216\nhttp_body_limit = 16777216",
    ))
    .await;
    let mut client = support::echo_client(node.local_addr()).await;
    let status = client.echo(carrying(5 * 1024 * 1024)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_grpc_responses_are_resource_exhausted() {
    let node = support::start(support::config(
        "[limits]\ngrpc_max_encode_message_size = 1024",
    ))
    .await;
    let mut client = support::echo_client(node.local_addr()).await;
    let status = client.echo(carrying(2048)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("1024"), "{status:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_http_bodies_answer_413_problem_json() {
    let node = support::start(support::config("[limits]\nhttp_body_limit = 1024")).await;
    let addr = node.local_addr();
    for client in [support::http1(), support::h2c()] {
        let ok = client
            .post(format!("http://{addr}/echo"))
            .body(vec![b'a'; 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let response = client
            .post(format!("http://{addr}/echo"))
            .body(vec![b'a'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        let problem = support::problem(response).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("1024"),
            "{problem}"
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn chunked_bodies_without_a_length_are_cut_at_the_limit() {
    let node = support::start(support::config("[limits]\nhttp_body_limit = 1024")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    let mut request =
        b"POST /echo HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend(std::iter::repeat_n(b'x', 0x200));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let response = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status_line(&response), "HTTP/1.1 413 Payload Too Large");
    assert!(String::from_utf8_lossy(&response).contains("application/problem+json"));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_headers_answer_431() {
    let node = support::start(support::config("[limits]\nmax_header_bytes = 8192")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    let big = "a".repeat(16 * 1024);
    let request = format!("GET /health/live HTTP/1.1\r\nhost: test\r\nx-big: {big}\r\n\r\n");
    // The server may close before reading it all; only its answer matters.
    let _ignored = stream.write_all(request.as_bytes()).await;
    let response = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let node = support::start(support::config("[limits]\nfirst_byte_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    let started = Instant::now();
    let received = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the silent connection was not closed");
    let took = started.elapsed();
    assert!(received.is_empty());
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn headers_trickled_past_the_read_timeout_close_the_connection() {
    let node = support::start(support::config("[limits]\nheader_read_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the slow connection was not closed");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    node.shutdown().await.unwrap();
}

/// Writes `request` and reads one whole answer of `/health/live` or
/// `/slow` (small bodies, `content-length` framed) off a kept-alive
/// connection; returns its status line.
async fn ask(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map(|value| value.parse::<usize>().unwrap())
                .expect("a content-length framed answer");
            if body.len() >= length {
                return status_line(&received);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the answer came")
            .unwrap();
        assert!(n > 0, "closed mid-answer: {text}");
        received.extend_from_slice(&buf[..n]);
    }
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nhost: t\r\n\r\n";

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let node = support::start(support::config("[limits]\nheader_read_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    assert_eq!(ask(&mut stream, LIVE).await, "HTTP/1.1 200 OK");
    let idle_since = Instant::now();
    let rest = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the idle connection was not closed");
    let idle = idle_since.elapsed();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // Closed once quiet for the timeout, at most a quarter of it later
    // (plus scheduling slack).
    assert!(
        idle >= Duration::from_millis(280),
        "closed too early: {idle:?}"
    );
    assert!(idle < Duration::from_secs(2), "closed too late: {idle:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_keeps_asking_or_waits_on_a_slow_answer_stays_open() {
    let node = support::start(support::config("[limits]\nheader_read_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    // Requests 100 ms apart for three times the timeout: never quiet.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(ask(&mut stream, LIVE).await, "HTTP/1.1 200 OK");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A handler slower than the timeout: in flight, so not quiet either.
    let slow = b"GET /slow?ms=900 HTTP/1.1\r\nhost: t\r\n\r\n";
    assert_eq!(ask(&mut stream, slow).await, "HTTP/1.1 200 OK");
    // And the connection is still there for the next request.
    assert_eq!(ask(&mut stream, LIVE).await, "HTTP/1.1 200 OK");
    node.shutdown().await.unwrap();
}

/// A connection with a small receive window, so that an answer cannot sit
/// in the kernel's buffers, that has asked `/echo` for `len` bytes.
async fn echo_of(addr: std::net::SocketAddr, len: usize) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!("POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: {len}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'a'; len]).await.unwrap();
    stream
}

#[tokio::test]
async fn a_large_answer_to_a_slow_reader_is_sent_whole() {
    // hyper takes a whole-body answer into its write buffer and drops the
    // body at once: the request is finished while megabytes are still to go.
    const LEN: usize = 12 * 1024 * 1024;
    let node = support::start(support::config(&format!(
        "[limits]\nheader_read_timeout = \"300ms\"\nhttp_body_limit = {LEN}"
    )))
    .await;
    let mut stream = echo_of(node.local_addr(), LEN).await;
    // Read it a window at a time, a few milliseconds apart: over a second,
    // several header read timeouts.
    let started = Instant::now();
    let mut received = Vec::with_capacity(LEN + 1024);
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the answer came")
            .unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        if received.len() >= LEN && received.ends_with(b"a") {
            let text = String::from_utf8_lossy(&received[..received.len().min(512)]);
            if let Some((head, _)) = text.split_once("\r\n\r\n")
                && received.len() == head.len() + 4 + LEN
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&received[..received.len().min(512)]).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").expect("an answer head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        received.len() - head.len() - 4,
        LEN,
        "the answer was cut after {took:?}"
    );
    assert!(
        took > Duration::from_millis(600),
        "read too fast to test: {took:?}"
    );
    node.shutdown().await.unwrap();
}

/// A client that asks for a large answer and stops reading does not hold
/// it for ever: its connection is closed at the write stall timeout, with
/// TCP keep-alive off (which would otherwise be the only bound).
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_the_write_stall_timeout() {
    const LEN: usize = 12 * 1024 * 1024;
    let node = support::start(support::config(&format!(
        "[limits]\nheader_read_timeout = \"200ms\"\nwrite_stall_timeout = \"600ms\"\n\
         tcp_keep_alive = \"0s\"\nhttp_body_limit = {LEN}"
    )))
    .await;
    let mut stream = echo_of(node.local_addr(), LEN).await;
    // Not a byte read for two stall timeouts, then whatever is there.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let received = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the connection of a client that stopped reading was kept");
    assert!(received.starts_with(b"HTTP/1.1 200"), "no answer began");
    assert!(
        received.len() < LEN,
        "all of it was sent: {}",
        received.len()
    );
    node.shutdown().await.unwrap();
}

/// An HTTP/2 client whose preface arrives in pieces, the first only two
/// bytes, is taken for HTTP/2: its idle connection is kept like any HTTP/2
/// one (for the HTTP/2 idle timeout), not closed as a quiet HTTP/1 one.
#[tokio::test]
async fn an_http2_preface_split_early_is_taken_for_http2() {
    let node = support::start(support::config("[limits]\nheader_read_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"PR").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream
        .write_all(b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut head = [0_u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("the node answered")
        .unwrap();
    assert_eq!(head[3], 4, "not an HTTP/2 SETTINGS frame: {head:?}");
    // Its SETTINGS acknowledged, the connection idles for three timeouts.
    stream
        .write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
        .await
        .unwrap();
    let idle_until = Instant::now() + Duration::from_millis(900);
    let mut buf = [0_u8; 1024];
    while let Some(left) = idle_until.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => panic!("the idle HTTP/2 connection was closed"),
            Ok(Ok(_)) => {}
        }
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idle_http2_connection_outlives_the_header_read_timeout() {
    let node = support::start(support::config("[limits]\nheader_read_timeout = \"300ms\"")).await;
    let addr = node.local_addr();
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
    let mut client = EchoClient::new(channel);
    client.echo(carrying(8)).await.unwrap();
    // A gRPC channel idles between calls; TCP keep-alive finds dead peers.
    tokio::time::sleep(Duration::from_millis(900)).await;
    client.echo(carrying(8)).await.unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the idle HTTP/2 connection was closed and made again"
    );
    node.shutdown().await.unwrap();
}

/// An echo request carrying `len` bytes of payload.
fn carrying(len: usize) -> EchoRequest {
    EchoRequest {
        payload: vec![1; len],
        ..EchoRequest::default()
    }
}
