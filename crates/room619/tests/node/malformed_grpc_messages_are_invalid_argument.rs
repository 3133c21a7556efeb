//! A gRPC message that does not decode is the caller's fault:
//! `INVALID_ARGUMENT`, and the status never quotes the bytes.

use crate::support;

#[tokio::test]
async fn an_undecodable_message_answers_invalid_argument() {
    let node = support::start(support::config("")).await;
    // Field 1 (string) claiming 100 bytes, followed by 3, plus a marker.
    let mut message = vec![0x0a, 100];
    message.extend_from_slice(b"MARKER");
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    let response = support::h2c()
        .post(format!(
            "http://{}/shop.echo.v1.Echo/Echo",
            node.local_addr()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "3", "{headers:?}");
    let message = headers["grpc-message"].to_str().unwrap();
    assert!(!message.contains("MARKER"), "{message}");
    node.shutdown().await.unwrap();
}
