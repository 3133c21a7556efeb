//! A hosted route with path parameters, one catching a whole segment, a
//! nested router and the admin endpoints, side by side on one node: each path
//! reaches the route axum would pick, with its parameters, its matched path,
//! its service's context and its request id, and every answer is counted
//! under its own route template.

use axum::{
    Extension, Router,
    extract::{MatchedPath, Path},
    http::StatusCode,
    routing::get,
};
use room619::{ServiceBuilder, ServiceContext, middleware::RequestId};

use crate::support;

/// `GET /items/{id}`: what the handler sees.
async fn item(
    Path(id): Path<String>,
    matched: MatchedPath,
    Extension(ctx): Extension<ServiceContext>,
    Extension(request_id): Extension<RequestId>,
) -> String {
    format!(
        "item {id} via {} of {} as {request_id}",
        matched.as_str(),
        ctx.name()
    )
}

fn shelf() -> room619::service::BuiltService {
    ServiceBuilder::new("shelf", "1.0.0")
        .unwrap()
        .route("/items/{id}", get(item))
        .route("/gone", get(|| async { StatusCode::GONE }))
        .route(
            "/{name}",
            get(|Path(name): Path<String>| async move { format!("name {name}") }),
        )
        .nest(
            "/ui",
            Router::new()
                .route("/", get(|| async { "ui home" }))
                .route("/page", get(|| async { "ui page" })),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_path_reaches_its_route_with_everything_its_handler_reads() {
    let node = support::start_with(support::config(""), shelf()).await;
    let base = format!("http://{}", node.local_addr());
    let client = support::http1();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    let answer = get("/items/42").await.unwrap();
    assert_eq!(answer.status(), 200);
    let id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        answer.text().await.unwrap(),
        format!("item 42 via /items/{{id}} of shelf as {id}")
    );

    for (path, body) in [
        ("/other", "name other"),
        ("/ui", "ui home"),
        ("/ui/page", "ui page"),
    ] {
        let answer = get(path).await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert!(answer.headers().contains_key("x-request-id"), "{path}");
        assert_eq!(answer.text().await.unwrap(), body, "{path}");
    }
    let live = get("/health/live").await.unwrap();
    assert_eq!(live.status(), 200, "the admin path, not `/{{name}}`");

    let missing = get("/ui/none").await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-request-id"));
    let problem = support::problem(missing).await;
    assert_eq!(problem["status"], 404);

    let wrong_method = client
        .delete(format!("{base}/items/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD");
    assert_eq!(support::problem(wrong_method).await["status"], 405);

    let head = client
        .head(format!("{base}/items/42"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.headers().contains_key("x-request-id"));
    assert!(head.text().await.unwrap().is_empty());

    // A bare error status becomes a problem; a HEAD answer has no body, on
    // HTTP/2 too (hyper leaves that to the service there).
    for (client, version) in [(support::http1(), "HTTP/1.1"), (support::h2c(), "HTTP/2")] {
        let gone = client.get(format!("{base}/gone")).send().await.unwrap();
        assert_eq!(gone.status(), 410, "{version}");
        assert_eq!(support::problem(gone).await["status"], 410, "{version}");
        let head = client.head(format!("{base}/gone")).send().await.unwrap();
        assert_eq!(head.status(), 410, "{version}");
        assert_eq!(
            head.headers()["content-type"],
            "application/problem+json",
            "{version}"
        );
        assert!(head.text().await.unwrap().is_empty(), "{version}");
    }

    let metrics = get("/metrics").await.unwrap();
    assert_eq!(metrics.status(), 200, "the admin path, not `/{{name}}`");
    let text = metrics.text().await.unwrap();
    for (method, route, status) in [
        ("GET", "/items/{id}", 200),
        ("HEAD", "/items/{id}", 200),
        ("DELETE", "/items/{id}", 405),
        ("GET", "/{name}", 200),
        ("GET", "/ui", 200),
        ("GET", "/ui/page", 200),
    ] {
        let series = format!(
            "http_server_requests_total{{http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\"}} 1"
        );
        assert!(
            text.lines().any(|line| line == series),
            "no `{series}` in:\n{text}"
        );
    }
    node.shutdown().await.unwrap();
}
