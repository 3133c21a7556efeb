use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use room619::{
    RunningNode, ServiceBuilder, ServiceContext,
    rpc::{
        client::RpcChannel,
        deadline::{Deadline, parse_timeout},
    },
};
use shop_proto::echo::v1::{EchoRequest, EchoResponse, echo_client::EchoClient};
use tonic::{Code, Request, Response, Status};

use crate::support::{
    self, EchoFixture,
    unary_echo::{self, UnaryEcho},
};

/// A gRPC Echo that forwards every unary call to the `echo` service through
/// its context's client, adding the timeout it received as
/// `x-relay-received-timeout`.
#[derive(Clone, Copy)]
struct Relay;

impl UnaryEcho for Relay {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let ctx = request
            .extensions()
            .get::<ServiceContext>()
            .cloned()
            .unwrap();
        let received = request.metadata().get("grpc-timeout").cloned();
        let mut downstream = ctx.client::<EchoClient<RpcChannel>>("echo", "^1")?;
        let mut response = downstream.echo(request.into_inner()).await?;
        if let Some(received) = received {
            response
                .metadata_mut()
                .insert("x-relay-received-timeout", received);
        }
        Ok(response)
    }
}

fn relay_service() -> room619::service::BuiltService {
    ServiceBuilder::new("relay", "1.0.0")
        .unwrap()
        .grpc(unary_echo::server(Relay))
        .build()
        .unwrap()
}

fn timeout_of(response: &Response<EchoResponse>, key: &str) -> Duration {
    let value = response
        .metadata()
        .get(key)
        .unwrap_or_else(|| panic!("no {key}"));
    parse_timeout(value.as_bytes()).unwrap()
}

/// An echo node, and a relay node whose discovery lists it.
async fn echo_behind_relay() -> (RunningNode, RunningNode) {
    let echo = support::start_named("echo-node", &[], Some(support::echo_service())).await;
    let relay = support::start_named(
        "relay-node",
        &[("echo", "1.0.0", echo.local_addr())],
        Some(relay_service()),
    )
    .await;
    (echo, relay)
}

#[tokio::test]
async fn the_remaining_time_travels_across_two_hops_and_never_grows() {
    let (echo, relay) = echo_behind_relay().await;
    let mut client = support::echo_client(relay.local_addr()).await;

    let mut request = Request::new(EchoRequest {
        message: "through".into(),
        ..EchoRequest::default()
    });
    request.set_timeout(Duration::from_secs(2));
    let response = client.echo(request).await.unwrap();
    let at_relay = timeout_of(&response, "x-relay-received-timeout");
    let at_echo = timeout_of(&response, "x-received-timeout");
    assert!(at_relay <= Duration::from_secs(2), "{at_relay:?}");
    assert!(
        at_echo < at_relay,
        "echo got {at_echo:?}, relay {at_relay:?}"
    );
    assert!(at_echo > Duration::from_secs(1), "echo got {at_echo:?}");
    assert_eq!(response.into_inner().message, "through");

    relay.shutdown().await.unwrap();
    echo.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deadline_that_passes_downstream_fails_the_whole_chain_quickly() {
    let (echo, relay) = echo_behind_relay().await;
    let caller =
        support::start_named("caller", &[("relay", "1.0.0", relay.local_addr())], None).await;
    let mut client = caller
        .handle()
        .client::<EchoClient<RpcChannel>>("relay", "^1")
        .unwrap();

    let request = EchoRequest {
        delay_ms: 5_000,
        ..EchoRequest::default()
    };
    let started = Instant::now();
    let status = Deadline::after(Duration::from_millis(200))
        .scope(client.echo(request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    caller.shutdown().await.unwrap();
    relay.shutdown().await.unwrap();
    echo.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_expired_deadline_fails_fast_without_sending() {
    let fixture = EchoFixture::default();
    let server =
        support::start_named("server", &[], Some(fixture.builder().build().unwrap())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let colocated =
        support::start_with(support::config(""), fixture.builder().build().unwrap()).await;

    for channel in [
        caller.handle().channel("echo", "^1").unwrap(),
        colocated.handle().channel("echo", "^1").unwrap(),
    ] {
        let mut client = EchoClient::new(channel);
        // Warm up (and prove the path works), then call with a spent deadline.
        client.echo(EchoRequest::default()).await.unwrap();
        let before = fixture.calls.load(Ordering::SeqCst);
        let expired = Deadline::after(Duration::ZERO);
        let status = expired
            .scope(async { client.echo(EchoRequest::default()).await })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("not sent"), "{status:?}");
        assert_eq!(
            fixture.calls.load(Ordering::SeqCst),
            before,
            "the call reached the server"
        );
    }
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
    colocated.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_grpc_timeout_is_invalid_argument() {
    let node = support::start(support::config("")).await;
    let mut client = support::echo_client(node.local_addr()).await;
    let mut request = Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("grpc-timeout", "soon".parse().unwrap());
    let status = client.echo(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_requests_are_bounded_by_x_request_timeout() {
    let node = support::start(support::config("")).await;
    let addr = node.local_addr();
    let started = Instant::now();
    let response = support::http1()
        .get(format!("http://{addr}/slow?ms=5000"))
        .header("x-request-timeout", "200m")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    support::problem(response).await;
    assert!(started.elapsed() < Duration::from_secs(2));

    let response = support::http1()
        .get(format!("http://{addr}/slow?ms=1"))
        .header("x-request-timeout", "5 seconds")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    support::problem(response).await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_clients_send_the_remaining_time() {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let http = caller.handle().http_client("echo", "^1").unwrap();
    let whoami: serde_json::Value = Deadline::after(Duration::from_secs(3))
        .scope(http.get_json("/whoami"))
        .await
        .unwrap();
    let sent = parse_timeout(whoami["timeout"].as_str().unwrap().as_bytes()).unwrap();
    assert!(
        sent <= Duration::from_secs(3) && sent > Duration::from_secs(2),
        "{sent:?}"
    );
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A request that states a tighter `x-request-timeout` than the caller's
/// deadline keeps it: the client waits no longer, and the server is told so.
#[tokio::test]
async fn an_http_request_keeps_its_own_tighter_timeout() {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let caller =
        support::start_named("caller", &[("echo", "1.0.0", server.local_addr())], None).await;
    let http = caller.handle().http_client("echo", "^1").unwrap();
    let request = || {
        axum::http::Request::get("/whoami")
            .header("x-request-timeout", "700m")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let response = Deadline::after(Duration::from_secs(5))
        .scope(http.send(request()))
        .await
        .unwrap();
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let whoami: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sent = parse_timeout(whoami["timeout"].as_str().unwrap().as_bytes()).unwrap();
    assert!(sent <= Duration::from_millis(700), "{sent:?}");

    // And it bounds the wait.
    let slow = axum::http::Request::get("/slow?ms=3000")
        .header("x-request-timeout", "200m")
        .body(axum::body::Body::empty())
        .unwrap();
    let started = std::time::Instant::now();
    let result = Deadline::after(Duration::from_secs(5))
        .scope(http.send(slow))
        .await;
    let waited = started.elapsed();
    match result {
        Err(err) => assert_eq!(err.kind(), room619::ErrorKind::DeadlineExceeded, "{err}"),
        Ok(response) => assert_eq!(response.status(), 504),
    }
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

/// A deadline bounds the whole call: a server stream still running when it
/// passes ends with `DEADLINE_EXCEEDED`, over the network and in process.
#[tokio::test]
async fn a_server_stream_ends_at_its_deadline() {
    let node = support::start(support::config("")).await;
    let mut remote = support::echo_client(node.local_addr()).await;
    let mut colocated = node
        .handle()
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    let request = || {
        let mut request = Request::new(EchoRequest {
            message: "forever".into(),
            repeat: u32::MAX,
            ..EchoRequest::default()
        });
        request.set_timeout(Duration::from_millis(400));
        request
    };
    let started = Instant::now();
    let streams = [
        (
            "remote",
            remote.echo_stream(request()).await.unwrap().into_inner(),
        ),
        (
            "colocated",
            colocated.echo_stream(request()).await.unwrap().into_inner(),
        ),
    ];
    for (name, mut stream) in streams {
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: the stream outlived its deadline by seconds"));
        let status = ended.unwrap_or_else(|| panic!("{name}: the stream ended as if complete"));
        assert_eq!(status.code(), Code::DeadlineExceeded, "{name}: {status:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    node.shutdown().await.unwrap();
}

/// A call that waited for a bulkhead slot tells the server the time left
/// when it goes out, not the time left when it was made.
#[tokio::test]
async fn a_call_queued_in_the_bulkhead_sends_the_time_left_when_it_goes() {
    let server = support::start_named("server", &[], Some(support::echo_service())).await;
    let mut config = support::config(
        "[resilience.services.echo.bulkhead]\nmax_concurrent = 1\nmax_queued = 1\n",
    );
    config.node.name = "caller".to_owned();
    config.discovery.instances = vec![room619::config::InstanceConfig {
        name: "echo".to_owned(),
        version: "1.0.0".to_owned(),
        address: server.local_addr().to_string(),
    }];
    let caller = support::start_named_with_config(config).await;
    let client = caller
        .handle()
        .client::<EchoClient<RpcChannel>>("echo", "^1")
        .unwrap();
    let mut busy = client.clone();
    let holding = tokio::spawn(async move {
        busy.echo(EchoRequest {
            delay_ms: 1000,
            ..EchoRequest::default()
        })
        .await
    });
    // The first call has the one slot; the second waits about 700 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut queued = client.clone();
    let reply = Deadline::after(Duration::from_secs(2))
        .scope(queued.echo(EchoRequest::default()))
        .await
        .unwrap();
    let received = reply.metadata().get("x-received-timeout").unwrap();
    let received = parse_timeout(received.as_bytes()).unwrap();
    assert!(received <= Duration::from_millis(1600), "{received:?}");
    holding.await.unwrap().unwrap();
    caller.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}
