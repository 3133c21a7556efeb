//! `.public("/{*path}")` for a single-page app opens the pages it serves,
//! not the routes and gRPC methods beside it that have no rule of their
//! own: those still need an authenticated caller. A service rule for
//! `/metrics` replaces its public default, two rules for one path are
//! refused when the service is built, and a handler's `Principal`
//! extractor on a public route challenges as the auth layer does.

use std::net::SocketAddr;

use axum::routing::get;
use reqwest::Method;
use room619::{ErrorKind, middleware::auth::Requirement};
use serde_json::json;
use shop_proto::echo::v1::EchoRequest;
use tonic::Code;

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

fn service() -> room619::service::BuiltService {
    support::echo_builder()
        .route("/{*path}", get(|| async { "the app" }))
        .public("/{*path}")
        .public("/me")
        .require("/metrics", Requirement::roles(["ops"]))
        .build()
        .unwrap()
}

/// The status and `www-authenticate` of `method path`, with `token` as
/// bearer if any.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>) {
    let post = method == Method::POST;
    let mut request = support::http1().request(method, format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if post {
        request = request.body("x");
    }
    let response = request.send().await.unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    (response.status().as_u16(), challenge)
}

#[tokio::test]
async fn a_catch_all_public_rule_opens_only_what_nothing_more_specific_claims() {
    let node = support::start_with(support::config(&jwt::auth_toml("")), service()).await;
    let addr = node.local_addr();
    let user = mint("RS256", Some("rs"), &good_claims("bob", ""), &jwt::rsa());

    for path in ["/index.html", "/assets/app.js"] {
        let (status, _) = call(addr, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: a page of the app");
    }
    // `/echo` has no rule: the catch-all does not reach it.
    let (status, challenge) = call(addr, Method::POST, "/echo", None).await;
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (status, _) = call(addr, Method::POST, "/echo", Some(user.as_str())).await;
    assert_eq!(status, 200);

    // Nor does it reach a gRPC method without a rule.
    let code = match support::echo_client(addr)
        .await
        .echo(EchoRequest {
            message: "hi".into(),
            ..EchoRequest::default()
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    };
    assert_eq!(code, Code::Unauthenticated);

    // A service rule for `/metrics` replaces the public default.
    let (status, _) = call(addr, Method::GET, "/metrics", None).await;
    assert_eq!(status, 401);
    let (status, _) = call(addr, Method::GET, "/metrics", Some(user.as_str())).await;
    assert_eq!(status, 403);
    let mut claims = good_claims("olga", "");
    claims["roles"] = json!(["ops"]);
    let ops = mint("RS256", Some("rs"), &claims, &jwt::rsa());
    let (status, _) = call(addr, Method::GET, "/metrics", Some(ops.as_str())).await;
    assert_eq!(status, 200);
    node.shutdown().await.unwrap();
}

/// `/me` is public here, so the auth layer lets an anonymous call through
/// and the handler's `Principal` extractor refuses it: with the same
/// `401` and `WWW-Authenticate: Bearer` the layer gives.
#[tokio::test]
async fn the_principal_extractor_answers_401_with_a_bearer_challenge() {
    let node = support::start_with(support::config(&jwt::auth_toml("")), service()).await;
    let addr = node.local_addr();
    let response = support::http1()
        .get(format!("http://{addr}/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(support::problem(response).await["title"], "Unauthorized");
    let user = mint("RS256", Some("rs"), &good_claims("bob", ""), &jwt::rsa());
    let response = support::http1()
        .get(format!("http://{addr}/me"))
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "bob");
    node.shutdown().await.unwrap();
}

#[test]
fn two_rules_for_one_path_are_refused_when_the_service_is_built() {
    let err = support::echo_builder()
        .public("/echo")
        .require("/echo", Requirement::roles(["admin"]))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.message().contains("two access rules"), "{err}");
    // The same path with other parameter names is the same path.
    let err = support::echo_builder()
        .route("/v1/items/{id}", get(|| async { "item" }))
        .require("/v1/items/{id}", Requirement::authenticated())
        .require("/v1/items/{item}", Requirement::roles(["admin"]))
        .build()
        .unwrap_err();
    assert!(err.message().contains("/v1/items/{item}"), "{err}");
}
