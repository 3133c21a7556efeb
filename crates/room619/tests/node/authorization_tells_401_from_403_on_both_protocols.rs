//! Authorization declared on the service builder: no credentials → `401` /
//! `UNAUTHENTICATED`, insufficient ones → `403` / `PERMISSION_DENIED`, public
//! routes and the built-in health endpoints open to all; API keys work like
//! tokens.

use std::net::SocketAddr;

use http::Method;
use room619::middleware::auth::Requirement;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use shop_proto::echo::v1::EchoRequest;
use tonic::Code;

use crate::support::{
    self,
    jwt::{self, good_claims, mint},
};

const API_KEY: &str = "k3y-for-the-ci-robot";

fn service() -> room619::service::BuiltService {
    support::echo_builder()
        .require(
            "/shop.echo.v1.Echo/Echo",
            Requirement::scopes(["echo:write"]),
        )
        .require_method(
            Method::POST,
            "/echo",
            Requirement::roles(["writer", "admin"]),
        )
        .public("/whoami")
        .public("/shop.echo.v1.Echo/EchoStream")
        .build()
        .unwrap()
}

fn config() -> room619::config::Config {
    let hash = hex(&Sha256::digest(API_KEY));
    support::config(&jwt::auth_toml(&format!(
        "[[auth.api_keys]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"echo:write\"]\n"
    )))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").unwrap();
        out
    })
}

async fn grpc_echo(addr: SocketAddr, header: Option<(&'static str, String)>) -> Code {
    let mut request = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..EchoRequest::default()
    });
    if let Some((name, value)) = header {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    match support::echo_client(addr).await.echo(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn http_routes_answer_401_without_credentials_and_403_without_rights() {
    let node = support::start_with(config(), service()).await;
    let addr = node.local_addr();
    let client = support::http1();
    let url = format!("http://{addr}/echo");

    let response = client.post(&url).body("x").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let problem = support::problem(response).await;
    assert_eq!(problem["title"], "Unauthorized");

    let reader = mint(
        "RS256",
        Some("rs"),
        &good_claims("bob", "echo:write"),
        &jwt::rsa(),
    );
    let response = client
        .post(&url)
        .bearer_auth(&reader)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "scopes are not roles");
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\""
    );
    assert_eq!(support::problem(response).await["title"], "Forbidden");

    let mut claims = good_claims("carol", "");
    claims["roles"] = json!(["writer"]);
    let writer = mint("ES256", Some("es"), &claims, &jwt::ec());
    let response = client
        .post(&url)
        .bearer_auth(&writer)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "x");

    // Public routes and health: open, even with a bad token.
    for path in ["/whoami", "/health/ready", "/health/live"] {
        let response = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let response = client
            .get(format!("http://{addr}{path}"))
            .bearer_auth("junk")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} with a bad token");
    }
    // Routes without a rule need any authenticated caller.
    let response = client
        .get(format!("http://{addr}/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .get(format!("http://{addr}/me"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "bob");
    // An API key is a principal too.
    let response = client
        .get(format!("http://{addr}/me"))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ci");
    let response = client
        .get(format!("http://{addr}/me"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_methods_answer_unauthenticated_and_permission_denied() {
    let node = support::start_with(config(), service()).await;
    let addr = node.local_addr();
    assert_eq!(grpc_echo(addr, None).await, Code::Unauthenticated);

    let no_scope = mint(
        "EdDSA",
        Some("ed"),
        &good_claims("dave", "other"),
        &jwt::ed(),
    );
    assert_eq!(
        grpc_echo(addr, Some(("authorization", format!("Bearer {no_scope}")))).await,
        Code::PermissionDenied
    );
    let scoped = mint(
        "HS256",
        Some("hs"),
        &good_claims("erin", "read echo:write"),
        &jwt::hs(),
    );
    assert_eq!(
        grpc_echo(addr, Some(("authorization", format!("Bearer {scoped}")))).await,
        Code::Ok
    );
    assert_eq!(
        grpc_echo(addr, Some(("x-api-key", API_KEY.to_owned()))).await,
        Code::Ok
    );
    assert_eq!(
        grpc_echo(addr, Some(("x-api-key", "nope".to_owned()))).await,
        Code::Unauthenticated
    );

    // A public method and the health service need nothing.
    let mut stream = support::echo_client(addr)
        .await
        .echo_stream(EchoRequest {
            message: "open".into(),
            repeat: 2,
            ..EchoRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().message, "open");
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(support::channel(addr).await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(serving.into_inner().status, 1);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn requirements_without_auth_keys_refuse_to_start() {
    let err = support::start_fails(support::config(""), [service()]).await;
    assert!(err.message().contains("[auth]"), "{err}");
}

#[test]
fn auth_config_errors_name_the_key() {
    let err = room619::config::Config::from_toml_str("[auth]\nissuer = \"x\"\nisuer = \"typo\"")
        .unwrap_err();
    assert!(err.key().starts_with("auth"), "{err}");
    let err = room619::config::Config::from_toml_str(
        "[[auth.keys]]\nalgorithm = \"HS256\"\nsecret = \"short\"",
    )
    .unwrap_err();
    assert_eq!(err.key(), "auth.keys.0.secret");
    let err = room619::config::Config::from_toml_str(
        "[[auth.keys]]\nalgorithm = \"none\"\nsecret = \"x\"",
    )
    .unwrap_err();
    assert!(err.key().starts_with("auth.keys"), "{err}");
    let err = room619::config::Config::from_toml_str(
        "[[auth.api_keys]]\nname = \"ci\"\nsha256 = \"abc\"",
    )
    .unwrap_err();
    assert_eq!(err.key(), "auth.api_keys.0.sha256");
}
