//! A router nested under a prefix is authorized by the full path of the
//! request, the one its rules name: `/admin/{*rest}` guards the nested
//! `/admin/users`, and a nested `/ops/metrics` is not the node's public
//! `/metrics`. A rule written relative to the prefix, as they once were,
//! is refused with the full path to write; a full-path rule with a
//! parameter under the prefix guards its route and leaves the router's
//! other paths to authenticated callers.

use std::net::SocketAddr;

use axum::{Router, routing::get as route_get};
use reqwest::Method;
use room619::{ErrorKind, middleware::auth::Requirement};
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

/// A token for `subject` with `roles`.
fn token(subject: &str, roles: &[&str]) -> String {
    let mut claims = good_claims(subject, "");
    claims["roles"] = json!(roles);
    mint("RS256", Some("rs"), &claims, &jwt::rsa())
}

/// The status of `method path`, with `token` as bearer if any.
async fn status(addr: SocketAddr, method: Method, path: &str, token: Option<&str>) -> u16 {
    let mut request = support::http1().request(method, format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Before rules named the full path, a nested router's rules were written
/// relative to its prefix; such a rule would now match nothing and leave
/// `/admin/users` to any authenticated caller, so it is refused.
#[test]
fn a_rule_written_relative_to_a_nested_router_is_refused_with_the_full_path() {
    let err = support::echo_builder()
        .nest(
            "/admin",
            Router::new().route("/users", route_get(|| async { "every user" })),
        )
        .require("/users", Requirement::roles(["admin"]))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    for part in ["service `echo`", "`/users`", "`/admin/users`"] {
        assert!(err.message().contains(part), "{part}: {err}");
    }
    // A rule naming nothing at all is refused too, naming the service.
    let err = support::echo_builder()
        .public("/v1/nowhere")
        .build()
        .unwrap_err();
    assert!(err.message().contains("`/v1/nowhere`"), "{err}");
}

fn users() -> Router {
    Router::new().route(
        "/{id}",
        route_get(|| async { "a user" }).delete(|| async { "deleted" }),
    )
}

/// `DELETE /users/{id}` under a router nested at `/users` cannot sit beside
/// the router's `/users/{*rest}`: the rule decides for its route, and the
/// router's other paths need an authenticated caller.
#[tokio::test]
async fn a_rule_with_a_parameter_under_a_nested_prefix_guards_its_route() {
    let service = support::echo_builder()
        .nest("/users", users())
        .require_method(Method::DELETE, "/users/{id}", Requirement::roles(["admin"]))
        .build()
        .unwrap();
    let node = support::start_with(support::config(&jwt::auth_toml("")), service).await;
    let addr = node.local_addr();
    let user = token("bob", &[]);
    let admin = token("carol", &["admin"]);

    assert_eq!(status(addr, Method::DELETE, "/users/5", None).await, 401);
    assert_eq!(
        status(addr, Method::DELETE, "/users/5", Some(user.as_str())).await,
        403
    );
    assert_eq!(
        status(addr, Method::DELETE, "/users/5", Some(admin.as_str())).await,
        200
    );
    assert_eq!(status(addr, Method::GET, "/users/5", None).await, 401);
    assert_eq!(
        status(addr, Method::GET, "/users/5", Some(user.as_str())).await,
        200
    );
    node.shutdown().await.unwrap();
}

/// Beside a public `/{*path}`, leaving the router's `/users/{*rest}` out
/// would open its other paths to anyone: still refused.
#[test]
fn a_rule_under_a_nested_prefix_beside_a_public_catch_all_is_refused() {
    let err = support::echo_builder()
        .route("/{*path}", route_get(|| async { "the app" }))
        .public("/{*path}")
        .nest("/users", users())
        .require_method(Method::DELETE, "/users/{id}", Requirement::roles(["admin"]))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("/users/{*rest}"), "{err}");
}
