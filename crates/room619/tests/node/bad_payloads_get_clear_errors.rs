//! Malformed, hostile and oversized payloads get a clear client error (gRPC
//! `INVALID_ARGUMENT`, HTTP `400` problem+json), never a panic or a hang.

use axum::routing::post;
use room619::rpc::codec::{Accepted, Decoded, Encoded};
use shop_proto::echo::v1::{EchoRequest, EchoResponse};

use crate::support;

async fn echo(
    Accepted(format): Accepted,
    Decoded(request): Decoded<EchoRequest>,
) -> Encoded<EchoResponse> {
    Encoded::new(
        format,
        EchoResponse {
            message: request.message,
            ..EchoResponse::default()
        },
    )
}

async fn start() -> room619::RunningNode {
    let service = support::echo_builder()
        .route("/v1/echo", post(echo))
        .build()
        .unwrap();
    support::start_with(support::config(""), service).await
}

/// Protobuf bytes for `EchoRequest` that do not decode, by name.
fn bad_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    // Field 99 as a start-group (wire type 3), nested past prost's limit.
    let nested: Vec<u8> = std::iter::repeat_n([0x9b_u8, 0x06], 1000)
        .flatten()
        .collect();
    vec![
        // Field 1 (string) says 10 bytes, 3 follow.
        ("truncated", vec![0x0a, 0x0a, b'a', b'b', b'c']),
        ("invalid UTF-8 in a string", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("deeply nested groups", nested),
        ("a varint that never ends", vec![0x08; 32]),
    ]
}

/// One gRPC message: the 5-byte prefix (`compressed` flag) and `bytes`.
fn grpc_message(bytes: &[u8], compressed: bool) -> Vec<u8> {
    let mut framed = vec![u8::from(compressed)];
    framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(bytes);
    framed
}

async fn grpc_status(
    node: &room619::RunningNode,
    body: Vec<u8>,
    encoding: Option<&str>,
) -> (String, String) {
    let mut request = support::h2c()
        .post(format!(
            "http://{}/shop.echo.v1.Echo/Echo",
            node.local_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let response = request.body(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test]
async fn undecodable_grpc_requests_are_invalid_argument() {
    let node = start().await;
    for (name, bytes) in bad_protobuf() {
        let (status, message) = grpc_status(&node, grpc_message(&bytes, false), None).await;
        assert_eq!(status, "3", "{name}: {message}");
        assert!(message.contains("decode"), "{name}: {message}");
    }
    // The node still serves well-formed calls.
    let mut client = support::echo_client(node.local_addr()).await;
    let ok = client
        .echo(EchoRequest {
            message: "fine".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().message, "fine");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn compressed_grpc_requests_are_refused_not_inflated() {
    let node = start().await;
    // A gzip bomb is never inflated: the node accepts no compression, so the
    // call fails before any decompression.
    let bomb = grpc_message(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff], true);
    let (status, message) = grpc_status(&node, bomb.clone(), Some("gzip")).await;
    assert_eq!(status, "12", "{message}");
    // The compressed flag without an encoding is a protocol error.
    let (status, message) = grpc_status(&node, bomb, None).await;
    assert!(matches!(status.as_str(), "3" | "13"), "{status}: {message}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn undecodable_rest_bodies_answer_400_problem_json() {
    let node = start().await;
    let url = format!("http://{}/v1/echo", node.local_addr());
    let client = support::http1();
    let mut cases: Vec<(String, &str, Vec<u8>)> = bad_protobuf()
        .into_iter()
        .map(|(name, bytes)| (format!("protobuf: {name}"), "application/x-protobuf", bytes))
        .collect();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (name, json) in [
        ("truncated", br#"{"message": "ab"#.to_vec()),
        ("invalid UTF-8", b"{\"message\": \"\xff\xfe\"}".to_vec()),
        (
            "deeply nested",
            format!(r#"{{"message": {deep}}}"#).into_bytes(),
        ),
        ("wrong type", br#"{"message": 12}"#.to_vec()),
        ("not JSON", b"\x00\x01\x02".to_vec()),
    ] {
        cases.push((format!("json: {name}"), "application/json", json));
    }
    for (name, content_type, body) in cases {
        let response = client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name}");
        let problem = support::problem(response).await;
        let detail = problem["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "{name}: {problem}");
        assert!(
            detail.len() < 1024,
            "{name}: the detail quotes the input: {detail}"
        );
    }
    node.shutdown().await.unwrap();
}
