use http::uri::PathAndQuery;
use shop_proto::echo::v1::{EchoRequest, EchoResponse};
use tonic::Code;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support;

#[tokio::test]
async fn grpc_and_rest_answer_on_the_same_port_over_http1_and_h2c() {
    let node = support::start(support::config("")).await;
    let addr = node.local_addr();

    let reply = support::echo_client(addr)
        .await
        .echo(EchoRequest {
            message: "hi".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "hi");
    assert_eq!(reply.node, "test-node", "handlers see their ServiceContext");

    for (client, version) in [
        (support::http1(), reqwest::Version::HTTP_11),
        (support::h2c(), reqwest::Version::HTTP_2),
    ] {
        let response = client
            .post(format!("http://{addr}/echo"))
            .body("ping")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert_eq!(response.text().await.unwrap(), "ping");
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_streaming_calls_stream_every_message() {
    let node = support::start(support::config("")).await;
    let mut stream = support::echo_client(node.local_addr())
        .await
        .echo_stream(EchoRequest {
            message: "again".into(),
            repeat: 5,
            ..EchoRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.message, "again");
        count += 1;
    }
    assert_eq!(count, 5);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_grpc_methods_and_services_are_unimplemented() {
    let node = support::start(support::config("")).await;
    let channel = support::channel(node.local_addr()).await;
    for path in [
        "/shop.echo.v1.Echo/NoSuchMethod",
        "/no.such.v1.Service/Call",
    ] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
        let status = grpc
            .unary(
                tonic::Request::new(EchoRequest::default()),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}: {status:?}");
    }
    node.shutdown().await.unwrap();
}

/// A reflection request for the list of services.
fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

#[tokio::test]
async fn reflection_lists_hosted_and_builtin_services() {
    let node = support::start(support::config("")).await;
    let mut client = ServerReflectionClient::new(support::channel(node.local_addr()).await);
    let request = list_services();
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "shop.echo.v1.Echo",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_answer_404_problem_json() {
    let node = support::start(support::config("")).await;
    let addr = node.local_addr();
    for client in [support::http1(), support::h2c()] {
        let response = client
            .get(format!("http://{addr}/no/such/route"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let problem = support::problem(response).await;
        assert_eq!(problem["title"], "Not Found");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("/no/such/route")
        );
    }
    let response = support::http1()
        .delete(format!("http://{addr}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    support::problem(response).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn conflicting_routes_fail_the_start_instead_of_panicking() {
    let other = room619::ServiceBuilder::new("other", "1.0.0")
        .unwrap()
        .route("/echo", axum::routing::get(|| async { "mine" }))
        .build()
        .unwrap();
    let err = support::start_fails(support::config(""), [support::echo_service(), other]).await;
    assert_eq!(err.kind(), room619::ErrorKind::InvalidArgument);
    assert!(err.message().contains("/echo"), "{err}");
    assert!(
        err.message().contains("`echo`"),
        "names the first owner: {err}"
    );
}

/// The node's reflection service is public and its calls are streams: one
/// opened and never asked anything fails after `limits.http_body_idle_timeout`
/// instead of holding its request permit for as long as the client likes.
/// A stream that asks is answered as usual.
#[tokio::test]
async fn a_reflection_stream_that_asks_nothing_is_ended_at_the_idle_timeout() {
    let node = support::start(support::config(
        "[limits]\nhttp_body_idle_timeout = \"1s\"\n",
    ))
    .await;
    let mut client = ServerReflectionClient::new(support::channel(node.local_addr()).await);
    let silent = futures_util::stream::pending::<ServerReflectionRequest>();
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        match client.server_reflection_info(silent).await {
            Err(status) => status,
            Ok(answers) => {
                let mut answers = answers.into_inner();
                loop {
                    match answers.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break tonic::Status::ok("ended without a status"),
                        Err(status) => break status,
                    }
                }
            }
        }
    })
    .await
    .expect("a silent reflection stream was kept open");
    // tonic's reflection service ends its answers when its requests fail.
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900),
        "{took:?} {ended:?}"
    );

    let request = list_services();
    let mut answers = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());
    node.shutdown().await.unwrap();
}
