use std::collections::HashMap;

use room619::{ErrorKind, rpc::client::RpcChannel};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};

use crate::support;

fn hello() -> EchoRequest {
    EchoRequest {
        message: "hello".into(),
        ..EchoRequest::default()
    }
}

#[tokio::test]
async fn a_colocated_service_is_called_in_process_without_a_socket() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let channel = handle.channel("echo", "^1").unwrap();
    assert!(channel.is_colocated());
    let mut client = handle
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    let reply = client.echo(hello()).await.unwrap();
    assert_eq!(reply.metadata().get("x-transport").unwrap(), "in-process");
    assert_eq!(reply.into_inner().message, "hello");

    let http = handle.http_client("echo", "^1").unwrap();
    assert!(http.is_colocated());
    let whoami: serde_json::Value = http.get_json("/whoami").await.unwrap();
    assert_eq!(whoami["transport"], "in-process");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_service_hosted_elsewhere_is_called_over_the_network() {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let handle = caller.handle();

    let mut client = EchoClient::new(handle.channel("echo", "^1").unwrap());
    let reply = client.echo(hello()).await.unwrap();
    assert_eq!(reply.metadata().get("x-transport").unwrap(), "remote");
    assert_eq!(reply.into_inner().node, "server");

    let http = handle.http_client("echo", "^1").unwrap();
    assert!(!http.is_colocated());
    let whoami: serde_json::Value = http.get_json("/whoami").await.unwrap();
    assert_eq!(whoami["transport"], "remote");
    assert_eq!(whoami["node"], "server");

    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn resolution_follows_the_version_requirement() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let err = handle.channel("echo", "^2").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("^2"), "{err}");
    let err = handle.channel("echo", "not a requirement").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = handle.channel("payments", "^1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("payments"), "{err}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_spread_over_three_instances() {
    let mut servers = Vec::new();
    for name in ["one", "two", "three"] {
        servers.push(support::start_named(name, &[], Some(support::echo_service())).await);
    }
    let instances: Vec<_> = servers
        .iter()
        .map(|server| ("echo", "1.0.0", server.local_addr()))
        .collect();
    let caller = support::start_named("caller", &instances, None).await;
    let channel = caller.handle().channel("echo", "^1").unwrap();

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        let calls = (0..30).map(|_| {
            let mut client = EchoClient::new(channel.clone());
            async move { client.echo(hello()).await.unwrap().into_inner().node }
        });
        for node in futures_util::future::join_all(calls).await {
            *counts.entry(node).or_default() += 1;
        }
    }
    assert_eq!(counts.values().sum::<usize>(), 300);
    for name in ["one", "two", "three"] {
        let count = counts.get(name).copied().unwrap_or_default();
        assert!(count >= 40, "{name} got {count} of 300: {counts:?}");
    }
    caller.shutdown().await.unwrap();
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_instance_fails_with_unavailable() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let caller = support::start_named("caller", &[("echo", "1.0.0", free)], None).await;
    let mut client = EchoClient::new(caller.handle().channel("echo", "^1").unwrap());
    let status = client.echo(hello()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    caller.shutdown().await.unwrap();
}

/// A colocated client follows the node: made before its service is removed
/// from the node, it goes to another instance afterwards (over the network)
/// instead of being refused as "being removed" for ever, and back in process
/// when the service is added again, on both protocols.
#[tokio::test]
async fn clients_made_before_their_service_leaves_the_node_go_to_another_instance() {
    let elsewhere = support::start_named("elsewhere", &[], Some(support::echo_service())).await;
    let node = support::start_named(
        "here",
        &[("echo", "1.0.0", elsewhere.local_addr())],
        Some(support::echo_service()),
    )
    .await;
    let handle = node.handle();
    let channel = handle.channel("echo", "^1").unwrap();
    let mut grpc = EchoClient::new(channel.clone());
    let http = handle.http_client("echo", "^1").unwrap();
    assert!(channel.is_colocated() && http.is_colocated());
    let reply = grpc.echo(hello()).await.unwrap();
    assert_eq!(reply.metadata().get("x-transport").unwrap(), "in-process");
    let whoami: serde_json::Value = http.get_json("/whoami").await.unwrap();
    assert_eq!(whoami["node"], "here");

    handle.remove_service("echo", "1.0.0").await.unwrap();

    assert!(!channel.is_colocated() && !http.is_colocated());
    let reply = grpc.echo(hello()).await.unwrap();
    assert_eq!(reply.metadata().get("x-transport").unwrap(), "remote");
    assert_eq!(reply.into_inner().message, "hello");
    let whoami: serde_json::Value = http.get_json("/whoami").await.unwrap();
    assert_eq!(
        (&whoami["node"], &whoami["transport"]),
        (
            &serde_json::json!("elsewhere"),
            &serde_json::json!("remote")
        )
    );

    // Back on the node: back in process, clones of the client too.
    handle.add_service(support::echo_service()).await.unwrap();
    assert!(channel.is_colocated() && http.is_colocated());
    let reply = grpc.clone().echo(hello()).await.unwrap();
    assert_eq!(reply.metadata().get("x-transport").unwrap(), "in-process");
    let whoami: serde_json::Value = http.get_json("/whoami").await.unwrap();
    assert_eq!(whoami["node"], "here");
    node.shutdown().await.unwrap();
    elsewhere.shutdown().await.unwrap();
}

/// A colocated call is a fresh request for the callee, as one over the
/// network is: the caller's request extensions (axum's path parameters and
/// matched path, a principal, a peer address) do not reach it. A gateway
/// route that forwards its own request used to hand the callee its path
/// parameters too, and axum answered 500 "Wrong number of path arguments".
#[tokio::test]
async fn a_forwarded_request_reaches_a_colocated_route_as_a_fresh_one() {
    let node = support::start_all(support::config(""), [items(), gateway()]).await;
    let response = support::http1()
        .get(format!("http://{}/gw/v1/items/7", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("7 leaked=false "), "{text}");
    node.shutdown().await.unwrap();
}

/// A request that reached the gateway over HTTP/2 is forwarded to a remote
/// instance over HTTP/1.1 (hyper refused to send it as HTTP/2 on an HTTP/1
/// connection, and the call failed with 503 while the same call in process
/// worked), with the `Host` of the instance, not the gateway's.
#[tokio::test]
async fn a_request_forwarded_from_http2_reaches_a_remote_route() {
    let elsewhere = support::start_all(support::config(""), [items()]).await;
    let items_at = elsewhere.local_addr();
    let node = support::start_named("here", &[("items", "1.0.0", items_at)], Some(gateway())).await;
    for client in [support::h2c(), support::http1()] {
        let response = client
            .get(format!("http://{}/gw/v1/items/7", node.local_addr()))
            .header("host", "gateway.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            format!("7 leaked=false host={items_at}")
        );
    }
    node.shutdown().await.unwrap();
    elsewhere.shutdown().await.unwrap();
}

/// `items`: `GET /v1/items/{id}` answers the id, whether the caller's
/// [`Marker`] reached it, and the `Host` it was sent with.
fn items() -> room619::service::BuiltService {
    use axum::{
        extract::{Path, Request},
        routing::get,
    };

    room619::ServiceBuilder::new("items", "1.0.0")
        .unwrap()
        .route(
            "/v1/items/{id}",
            get(|Path(id): Path<String>, request: Request| async move {
                let leaked = request.extensions().get::<Marker>().is_some();
                let host = request
                    .headers()
                    .get("host")
                    .map_or("none".to_owned(), |host| host.to_str().unwrap().to_owned());
                format!("{id} leaked={leaked} host={host}")
            }),
        )
        .build()
        .unwrap()
}

/// `gateway`: `GET /gw/{*rest}` forwards its own request, marked with a
/// [`Marker`], to `items` at `/{rest}`.
fn gateway() -> room619::service::BuiltService {
    use axum::{
        extract::{Path, Request},
        routing::get,
    };
    use room619::ServiceContext;

    room619::ServiceBuilder::new("gateway", "1.0.0")
        .unwrap()
        .route(
            "/gw/{*rest}",
            get(
                |axum::Extension(ctx): axum::Extension<ServiceContext>,
                 Path(rest): Path<String>,
                 mut request: Request| async move {
                    *request.uri_mut() = format!("/{rest}").parse().unwrap();
                    request.extensions_mut().insert(Marker);
                    let items = ctx.http_client("items", "^1").unwrap();
                    let response = items.send(request).await.unwrap();
                    let status = response.status();
                    let body = axum::body::to_bytes(response.into_body(), 1024)
                        .await
                        .unwrap();
                    (status, body)
                },
            ),
        )
        .build()
        .unwrap()
}

/// An extension only the caller put in its request.
#[derive(Clone)]
struct Marker;

/// A colocated callee runs on its caller's task: its panic fails the call
/// with `INTERNAL` (as a callee across the network fails its stream), and
/// does not unwind into the caller, whose next call goes through.
#[tokio::test]
async fn a_panicking_colocated_callee_fails_the_call_not_the_caller() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let mut client = handle
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    let panic = EchoRequest {
        message: "panic".into(),
        ..EchoRequest::default()
    };
    let status = client.echo(panic.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(status.message().contains("panicked"), "{status:?}");
    assert_eq!(
        client.echo(hello()).await.unwrap().into_inner().message,
        "hello"
    );

    // A stream that panics after its first message ends with INTERNAL
    // (tonic may encode the first message and meet the panic in one poll).
    let mut stream = client
        .echo_stream(EchoRequest { repeat: 3, ..panic })
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(message)) => assert_eq!(message.message, "panic"),
            Ok(None) => panic!("the stream ended without its panic"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    let http = handle.http_client("echo", "^1").unwrap();
    let err = http
        .send(
            http::Request::get("/panic")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    let whoami: serde_json::Value = http.get_json("/whoami").await.unwrap();
    assert_eq!(whoami["transport"], "in-process");
    node.shutdown().await.unwrap();
}

/// A success with no body decodes as JSON `null`, in process and over the
/// network.
#[tokio::test]
async fn an_answer_without_a_body_decodes_as_null() {
    let node = support::start_named("server", &[], Some(support::echo_service())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", node.local_addr())], None).await;
    assert!(
        !caller
            .handle()
            .http_client("echo", "^1")
            .unwrap()
            .is_colocated()
    );
    for http in [
        node.handle().http_client("echo", "^1").unwrap(),
        caller.handle().http_client("echo", "^1").unwrap(),
    ] {
        let unit: () = http.post_json("/nothing", &()).await.unwrap();
        let absent: Option<u32> = http.post_json("/nothing", &()).await.unwrap();
        assert_eq!((unit, absent), ((), None));
    }
    caller.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// A colocated caller that keeps a `Content-Length` over a body of another
/// size (a stream it put in place of the original) still meets the body
/// limit: only a body that holds to its declared length skips the cap.
#[tokio::test]
async fn a_colocated_body_longer_than_its_content_length_meets_the_limit() {
    let node = support::start(support::config("[limits]\nhttp_body_limit = 1024\n")).await;
    let http = node.handle().http_client("echo", "^1").unwrap();
    assert!(http.is_colocated());
    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 512])));
    let request = http::Request::post("/echo")
        .header(http::header::CONTENT_LENGTH, "10")
        .body(axum::body::Body::from_stream(futures_util::stream::iter(
            chunks,
        )))
        .unwrap();
    let response = http.send(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    node.shutdown().await.unwrap();
}

/// A request forwarded whole from a task with no deadline of its own keeps
/// the deadline it arrived with (its extension), not its timeout header
/// read anew at each hop.
#[tokio::test]
async fn a_forwarded_request_keeps_the_deadline_it_arrived_with() {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let http = caller.handle().http_client("echo", "^1").unwrap();
    let mut request = http::Request::get("/whoami")
        .header("x-request-timeout", "10S")
        .body(axum::body::Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(room619::rpc::deadline::Deadline::after(
            std::time::Duration::from_secs(5),
        ));
    let response = tokio::spawn(async move { http.send(request).await })
        .await
        .unwrap()
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let whoami: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sent = whoami["timeout"].as_str().unwrap();
    let timeout = room619::rpc::deadline::parse_timeout(sent.as_bytes()).unwrap();
    assert!(
        timeout <= std::time::Duration::from_secs(5),
        "sent `{sent}`"
    );
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
