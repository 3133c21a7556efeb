//! `/metrics` passes `promtool check metrics`, and after requests of known
//! outcome the counters and histogram counts equal them exactly.

use std::process::Stdio;

use axum::{extract::Path, http::StatusCode, routing::get};
use room619::ServiceBuilder;
use shop_proto::echo::v1::{EchoRequest, EchoResponse, echo_client::EchoClient};
use std::io::Write as _;
use tonic::{Request, Response, Status};

use crate::support::{
    self,
    unary_echo::{self, UnaryEcho},
};

/// Echoes, except that the message `missing` is `NOT_FOUND`.
struct Lookup;

impl UnaryEcho for Lookup {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let message = request.into_inner().message;
        if message == "missing" {
            return Err(Status::not_found("no such thing"));
        }
        Ok(Response::new(EchoResponse {
            message,
            ..EchoResponse::default()
        }))
    }
}

async fn item(Path(id): Path<String>) -> Result<&'static str, StatusCode> {
    if id == "known" {
        Ok("here")
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}

fn lookup_service() -> room619::service::BuiltService {
    ServiceBuilder::new("lookup", "1.0.0")
        .unwrap()
        .grpc(unary_echo::server(Lookup))
        .file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
        .route("/items/{id}", get(item))
        .build()
        .unwrap()
}

/// The value of the sample named exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample `{series}` in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Runs `promtool check metrics` on `text`; fails loudly without promtool.
fn promtool_check(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: install Debian's `prometheus` package (scripts/test does)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn metrics_count_every_request_by_outcome_and_pass_promtool() {
    let node = support::start_with(support::config(""), lookup_service()).await;
    let addr = node.local_addr();
    let mut grpc = EchoClient::new(support::channel(addr).await);
    for message in ["a"; 7].into_iter().chain(["missing"; 3]) {
        let result = grpc
            .echo(EchoRequest {
                message: message.into(),
                ..EchoRequest::default()
            })
            .await;
        assert_eq!(result.is_ok(), message != "missing", "{result:?}");
    }
    let http = support::http1();
    for id in ["known"; 5].into_iter().chain(["unknown"; 2]) {
        http.get(format!("http://{addr}/items/{id}"))
            .send()
            .await
            .unwrap();
    }
    let stray = http
        .get(format!("http://{addr}/secret-user-42/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);
    assert!(stray.headers().contains_key("x-request-id"));

    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    promtool_check(&text);
    assert_counts(&text);

    let openmetrics = http
        .get(format!("http://{addr}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        openmetrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"));
    node.shutdown().await.unwrap();
}

/// 7 OK and 3 `NOT_FOUND` gRPC calls; 5 HTTP 200, 2 HTTP 404 on the route
/// and one 404 off any route.
fn assert_counts(text: &str) {
    let rpc = |code: u8| {
        format!(
            "{{rpc_system=\"grpc\",rpc_service=\"shop.echo.v1.Echo\",rpc_method=\"Echo\",rpc_grpc_status_code=\"{code}\"}}"
        )
    };
    assert_eq!(
        sample(text, &format!("rpc_server_requests_total{}", rpc(0))),
        7
    );
    assert_eq!(
        sample(text, &format!("rpc_server_requests_total{}", rpc(5))),
        3
    );
    assert_eq!(
        sample(
            text,
            &format!("rpc_server_call_duration_seconds_count{}", rpc(0))
        ),
        7
    );
    assert_eq!(
        sample(
            text,
            &format!("rpc_server_call_duration_seconds_count{}", rpc(5))
        ),
        3
    );
    let route = |status: u16| {
        format!(
            "{{http_request_method=\"GET\",http_route=\"/items/{{id}}\",http_response_status_code=\"{status}\"}}"
        )
    };
    assert_eq!(
        sample(text, &format!("http_server_requests_total{}", route(200))),
        5
    );
    assert_eq!(
        sample(text, &format!("http_server_requests_total{}", route(404))),
        2
    );
    assert_eq!(
        sample(
            text,
            &format!("http_server_request_duration_seconds_count{}", route(200))
        ),
        5
    );
    assert_eq!(
        sample(
            text,
            "http_server_requests_total{http_request_method=\"GET\",http_route=\"other\",http_response_status_code=\"404\"}"
        ),
        1
    );
    assert!(
        !text.contains("secret-user-42"),
        "a raw path became a label:\n{text}"
    );
    assert_eq!(
        sample(
            text,
            "rpc_server_active_requests{rpc_system=\"grpc\",rpc_service=\"shop.echo.v1.Echo\",rpc_method=\"Echo\"}"
        ),
        0
    );
    assert!(text.contains("room619_build_info{version=\""), "{text}");
}

#[tokio::test]
async fn services_register_their_own_metrics_in_the_node_registry() {
    let node = support::start(support::config("")).await;
    let handle = node.handle();
    let orders = prometheus_client::metrics::counter::Counter::<u64>::default();
    handle
        .metrics()
        .register("shop_orders_placed", "Orders placed", orders.clone())
        .unwrap();
    orders.inc_by(4);
    let text = support::metrics_text(node.local_addr()).await;
    assert_eq!(sample(&text, "shop_orders_placed_total"), 4);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_move_to_the_admin_listener_when_there_is_one() {
    let node = support::start(support::config("admin_listen = \"127.0.0.1:0\"")).await;
    let admin = node.handle().admin_addr().unwrap();
    let http = support::http1();
    let on_admin = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), 200);
    let on_main = http
        .get(format!("http://{}/metrics", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), 404);
    node.shutdown().await.unwrap();
}

/// A handler that panics is a server failure: counted `500`, not the `499`
/// of a caller that went away.
#[tokio::test]
async fn a_panicking_handler_is_counted_as_a_500() {
    let service = ServiceBuilder::new("fragile", "1.0.0")
        .unwrap()
        .route(
            "/boom",
            get(|| async {
                assert!(!std::hint::black_box(true), "the handler's own bug");
                "never"
            }),
        )
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let addr = node.local_addr();
    let http = support::http1();
    // The connection is dropped: no answer to read.
    let _no_answer = http.get(format!("http://{addr}/boom")).send().await;
    let text = support::metrics_text(addr).await;
    let series = |status: u16| {
        format!(
            "http_server_requests_total{{http_request_method=\"GET\",http_route=\"/boom\",http_response_status_code=\"{status}\"}}"
        )
    };
    assert_eq!(sample(&text, &series(500)), 1, "{text}");
    assert!(!text.contains(&series(499)), "{text}");
    node.shutdown().await.unwrap();
}

/// The client series of a call carry the status its trailers brought: a
/// server stream that fails after its first message is a failed call, and
/// one its caller drops half-way a cancelled one (both used to be `0`,
/// read from the answer's head).
#[tokio::test]
async fn client_calls_are_counted_with_the_status_at_their_end() {
    let node = support::start(support::config("")).await;
    let mut echo = EchoClient::new(node.handle().channel("echo", "^1").unwrap());
    let request = |message: &str, repeat: u32| EchoRequest {
        message: message.into(),
        repeat,
        ..EchoRequest::default()
    };
    echo.echo(request("hi", 1)).await.unwrap();
    let mut failing = echo
        .echo_stream(request("panic", 3))
        .await
        .unwrap()
        .into_inner();
    // The first message may come before the failure, or with it.
    let status = loop {
        match failing.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without its failure"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    drop(failing);
    let mut endless = echo
        .echo_stream(request("again", u32::MAX))
        .await
        .unwrap()
        .into_inner();
    assert!(endless.message().await.unwrap().is_some());
    drop(endless);

    let text = support::metrics_text(node.local_addr()).await;
    let calls = |method: &str, code: u32| -> u64 {
        text.lines()
            .filter(|line| line.starts_with("rpc_client_requests_total{"))
            .filter(|line| line.contains(&format!("rpc_method=\"shop.echo.v1.Echo/{method}\"")))
            .filter(|line| line.contains(&format!("rpc_grpc_status_code=\"{code}\"")))
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(calls("Echo", 0), 1, "{text}");
    assert_eq!(calls("EchoStream", 13), 1, "failed half-way:\n{text}");
    assert_eq!(calls("EchoStream", 1), 1, "dropped half-way:\n{text}");
    assert_eq!(calls("EchoStream", 0), 0, "{text}");
    node.shutdown().await.unwrap();
}
