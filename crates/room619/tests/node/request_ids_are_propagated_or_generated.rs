//! Every answer carries an `x-request-id`: the caller's when it sent a sane
//! one, a fresh one otherwise, on both protocols and on error answers.

use shop_proto::echo::v1::EchoRequest;

use crate::support;

#[tokio::test]
async fn request_ids_are_returned_on_http_and_grpc() {
    let node = support::start(support::config("")).await;
    let addr = node.local_addr();
    let client = support::http1();

    let response = client
        .post(format!("http://{addr}/echo"))
        .header("x-request-id", "trace-me-42")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");

    let mut seen = Vec::new();
    for sent in [None, Some("bad id with spaces")] {
        let mut request = client.get(format!("http://{addr}/no-such-route"));
        if let Some(sent) = sent {
            request = request.header("x-request-id", sent);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1]);

    let mut request = tonic::Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-call-7".parse().unwrap());
    let reply = support::echo_client(addr)
        .await
        .echo(request)
        .await
        .unwrap();
    assert_eq!(reply.metadata().get("x-request-id").unwrap(), "grpc-call-7");
    let reply = support::echo_client(addr)
        .await
        .echo(EchoRequest::default())
        .await
        .unwrap();
    assert_eq!(reply.metadata().get("x-request-id").unwrap().len(), 32);
    node.shutdown().await.unwrap();
}
