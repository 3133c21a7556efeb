//! A router nested under a prefix is authorized by the full path of the
//! request, the one its rules name: `/admin/{*rest}` guards the nested
//! `/admin/users`, and a nested `/ops/metrics` is not the node's public
//! `/metrics`.

use std::net::SocketAddr;

use axum::{Router, routing::get as route_get};
use room619::middleware::auth::Requirement;
use serde_json::json;

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

fn service() -> room619::service::BuiltService {
    support::echo_builder()
        .nest(
            "/admin",
            Router::new().route("/users", route_get(|| async { "every user" })),
        )
        .nest(
            "/ops",
            Router::new().route("/metrics", route_get(|| async { "ops metrics" })),
        )
        .require("/admin/{*rest}", Requirement::roles(["admin"]))
        .build()
        .unwrap()
}

/// The status and body of `GET path`, with `token` as bearer if any.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = support::http1().get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_rule_on_a_nested_path_guards_the_nested_routes() {
    let node = support::start_with(support::config(&jwt::auth_toml("")), service()).await;
    let addr = node.local_addr();
    let user = mint("RS256", Some("rs"), &good_claims("bob", ""), &jwt::rsa());
    let mut claims = good_claims("carol", "");
    claims["roles"] = json!(["admin"]);
    let admin = mint("RS256", Some("rs"), &claims, &jwt::rsa());

    let (status, _) = get(addr, "/admin/users", Some(user.as_str())).await;
    assert_eq!(status, 403, "the rule names the full path");
    let (status, _) = get(addr, "/admin/users", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        get(addr, "/admin/users", Some(admin.as_str())).await,
        (200, "every user".to_owned())
    );

    // A nested `/ops/metrics` is a route of the service, not the public
    // `/metrics` of the node.
    let (status, _) = get(addr, "/ops/metrics", None).await;
    assert_eq!(status, 401, "not the built-in public /metrics");
    assert_eq!(
        get(addr, "/ops/metrics", Some(user.as_str())).await,
        (200, "ops metrics".to_owned())
    );
    let (status, metrics) = get(addr, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("room619"), "the node's own metrics");
    node.shutdown().await.unwrap();
}
