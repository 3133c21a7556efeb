//! HTTP/1.1 abuse over raw sockets: request smuggling, slow and withheld
//! headers and bodies, oversized heads and bodies.

use std::time::{Duration, Instant};

use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::support::{
    self,
    raw::{exchange, read_until_closed},
};

/// A request the smuggling payloads try to hide after their body.
const SMUGGLED: &str = "GET /whoami HTTP/1.1\r\nhost: t\r\n\r\n";
const GUARD: Duration = Duration::from_secs(5);

/// Payloads whose framing is ambiguous or invalid: each must be refused with
/// `400`, or framed one way only with the connection closed after the answer,
/// so the request hidden behind it is never served.
#[tokio::test]
async fn smuggling_payloads_never_reach_a_second_request() {
    let node = support::start(support::config("")).await;
    let addr = node.local_addr();
    let refused_400 = [
        (
            "duplicated differing content-length",
            "content-length: 5\r\ncontent-length: 6\r\n",
        ),
        (
            "listed differing content-length",
            "content-length: 5, 6\r\n",
        ),
        ("signed content-length", "content-length: +5\r\n"),
        ("negative content-length", "content-length: -5\r\n"),
        ("hex content-length", "content-length: 0x5\r\n"),
        ("unknown transfer coding", "transfer-encoding: xchunked\r\n"),
        (
            "chunked not last",
            "transfer-encoding: chunked, identity\r\n",
        ),
        (
            "second transfer-encoding line",
            "transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n",
        ),
        ("space before the colon", "transfer-encoding : chunked\r\n"),
    ];
    for (name, headers) in refused_400 {
        let request = format!("POST /echo HTTP/1.1\r\nhost: t\r\n{headers}\r\nhello{SMUGGLED}");
        let seen = exchange(addr, request.as_bytes(), GUARD).await;
        assert_eq!(
            seen.status_line(),
            "HTTP/1.1 400 Bad Request",
            "{name}: {}",
            seen.text()
        );
        assert_eq!(seen.responses(), 1, "{name}: {}", seen.text());
        assert!(seen.closed, "{name}: the connection stayed open");
    }

    let http10 = format!(
        "POST /echo HTTP/1.0\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let seen = exchange(addr, http10.as_bytes(), GUARD).await;
    // hyper answers in HTTP/1.1 whatever the request's version.
    assert!(
        seen.status_line().ends_with(" 400 Bad Request"),
        "{}",
        seen.text()
    );
    assert_eq!(seen.responses(), 1, "{}", seen.text());

    // Both lengths: chunked wins (RFC 9112 §6.3), and the connection closes
    // after the answer, so nothing after the body is read as a request.
    for (name, headers) in [
        (
            "CL.TE",
            "content-length: 40\r\ntransfer-encoding: chunked\r\n",
        ),
        (
            "TE.CL",
            "transfer-encoding: chunked\r\ncontent-length: 40\r\n",
        ),
    ] {
        let request = format!(
            "POST /echo HTTP/1.1\r\nhost: t\r\n{headers}\r\n5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
        );
        let seen = exchange(addr, request.as_bytes(), GUARD).await;
        let text = seen.text();
        assert_eq!(seen.status_line(), "HTTP/1.1 200 OK", "{name}: {text}");
        assert!(
            text.ends_with("hello"),
            "{name}: the chunked body was not used: {text}"
        );
        assert_eq!(
            seen.responses(),
            1,
            "{name}: the smuggled request was served: {text}"
        );
        assert!(seen.closed, "{name}: the connection stayed open");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_head_of_too_many_headers_answers_431() {
    let node = support::start(support::config("[limits]\nhttp1_max_headers = 20")).await;
    let many = (0..40).fold(String::new(), |mut head, i| {
        use std::fmt::Write as _;
        write!(head, "x-h{i}: v\r\n").unwrap();
        head
    });
    let request = format!("GET /health/live HTTP/1.1\r\nhost: t\r\n{many}\r\n");
    let seen = exchange(node.local_addr(), request.as_bytes(), GUARD).await;
    assert_eq!(
        seen.status_line(),
        "HTTP/1.1 431 Request Header Fields Too Large",
        "{}",
        seen.text()
    );
    // Under the limit the same route answers.
    let ok = b"GET /health/live HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
    assert_eq!(
        exchange(node.local_addr(), ok, GUARD).await.status_line(),
        "HTTP/1.1 200 OK"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn headers_trickled_without_end_are_cut_at_the_read_timeout() {
    let node = support::start(support::config("[limits]\nheader_read_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // A byte every 50 ms keeps the socket busy but never ends the head.
    let mut closed = false;
    while started.elapsed() < GUARD {
        if stream.write_all(b"x-a: b\r\n").await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !closed {
        closed = read_until_closed(&mut stream, Duration::from_secs(1))
            .await
            .closed;
    }
    assert!(closed, "a head trickled for {GUARD:?} was never cut off");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_announced_but_withheld_fails_after_the_idle_timeout() {
    let node = support::start(support::config(
        "[limits]\nhttp_body_idle_timeout = \"300ms\"",
    ))
    .await;
    for (name, head) in [
        ("content-length", "content-length: 100\r\n\r\n0123456789"),
        (
            "chunked",
            "transfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        ),
    ] {
        let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
        let request = format!("POST /echo HTTP/1.1\r\nhost: t\r\n{head}");
        stream.write_all(request.as_bytes()).await.unwrap();
        let seen = read_until_closed(&mut stream, GUARD).await;
        assert_eq!(
            seen.status_line(),
            "HTTP/1.1 400 Bad Request",
            "{name}: {}",
            seen.text()
        );
        assert!(
            seen.text().contains("no data for"),
            "{name}: {}",
            seen.text()
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_declared_oversized_body_answers_413_before_it_is_sent() {
    let node = support::start(support::config("[limits]\nhttp_body_limit = 1024")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    // Only the head: the answer comes without the server waiting for, or
    // reading, any of the 1 GB.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000000\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, GUARD).await;
    assert_eq!(
        seen.status_line(),
        "HTTP/1.1 413 Payload Too Large",
        "{}",
        seen.text()
    );
    assert!(seen.text().contains("application/problem+json"));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_at_the_limit() {
    let node = support::start(support::config("[limits]\nhttp_body_limit = 4096")).await;
    let mut stream = TcpStream::connect(node.local_addr()).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Keeps sending 1 KiB chunks (bounded: at most 64 MiB or the guard).
    let sender = tokio::spawn(async move {
        let mut chunk = b"400\r\n".to_vec();
        chunk.extend(std::iter::repeat_n(b'x', 1024));
        chunk.extend_from_slice(b"\r\n");
        let started = Instant::now();
        for _ in 0..64 * 1024 {
            if started.elapsed() > GUARD || writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    let started = Instant::now();
    while !String::from_utf8_lossy(&received).contains("\r\n\r\n") && started.elapsed() < GUARD {
        use tokio::io::AsyncReadExt as _;
        match tokio::time::timeout(GUARD, reader.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    sender.abort();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 413 Payload Too Large"), "{text}");
    node.shutdown().await.unwrap();
}
