use axum::routing::post;
use prost::Message as _;
use room619::{
    ServiceBuilder,
    rpc::codec::{Accepted, Decoded, Encoded},
};
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
            node: "rest".into(),
            payload: request.payload,
        },
    )
}

async fn start() -> room619::RunningNode {
    let service = ServiceBuilder::new("codec", "1.0.0")
        .unwrap()
        .route("/v1/echo", post(echo))
        .build()
        .unwrap();
    support::start_with(support::config(""), service).await
}

#[tokio::test]
async fn one_route_reads_and_answers_json_and_protobuf() {
    let node = start().await;
    let url = format!("http://{}/v1/echo", node.local_addr());
    let client = support::http1();

    let json = client
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"message":"as json"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 200);
    assert_eq!(json.headers()["content-type"], "application/json");
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["message"], "as json");

    let proto_request = EchoRequest {
        message: "as protobuf".into(),
        payload: vec![1, 2, 3],
        ..EchoRequest::default()
    };
    let proto = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("accept", "application/x-protobuf")
        .body(proto_request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(proto.status(), 200);
    assert_eq!(proto.headers()["content-type"], "application/x-protobuf");
    let answer = EchoResponse::decode(proto.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.message, "as protobuf");
    assert_eq!(answer.payload, [1, 2, 3]);

    // JSON in, protobuf out.
    let mixed = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json;q=0.2, application/x-protobuf")
        .body(r#"{"message":"mixed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(mixed.headers()["content-type"], "application/x-protobuf");
    assert_eq!(
        EchoResponse::decode(mixed.bytes().await.unwrap())
            .unwrap()
            .message,
        "mixed"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn unsupported_media_types_are_415_and_unacceptable_accepts_406() {
    let node = start().await;
    let url = format!("http://{}/v1/echo", node.local_addr());
    let client = support::http1();

    let unsupported = client
        .post(&url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), 415);
    support::problem(unsupported).await;

    let unacceptable = client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unacceptable.status(), 406);
    support::problem(unacceptable).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_bodies_are_400_without_echoing_the_input() {
    let node = start().await;
    let url = format!("http://{}/v1/echo", node.local_addr());
    let client = support::http1();
    for (content_type, body) in [
        ("application/json", b"{\"message\": \"SECRET-VALUE".to_vec()),
        (
            "application/json",
            b"{\"message\": [\"SECRET-VALUE\"]}".to_vec(),
        ),
        ("application/x-protobuf", b"\x0a\xffSECRET-VALUE".to_vec()),
    ] {
        let response = client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{content_type}");
        let problem = support::problem(response).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(!detail.contains("SECRET"), "{detail}");
    }
    node.shutdown().await.unwrap();
}
