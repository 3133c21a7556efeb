//! A canary secret sent as a bearer token, an API key, a cookie and a JSON
//! password never shows up in the logs, even at trace level and even when a
//! handler logs the whole header map.

use axum::{Json, routing::post};
use shop_proto::echo::v1::EchoRequest;

use crate::support::{self, jwt, logs::Captured};

const CANARY: &str = "CANARY-7f3a9c1e-do-not-log";

#[derive(serde::Deserialize)]
struct Login {
    user: String,
    #[serde(rename = "password")]
    _password: String,
}

async fn login(request: axum::extract::Request) -> String {
    // A careless handler: logs every header, then parses the body.
    tracing::info!(headers = ?request.headers(), "login attempt");
    let body = axum::body::to_bytes(request.into_body(), 1 << 16)
        .await
        .unwrap();
    match serde_json::from_slice::<Login>(&body) {
        Ok(login) => {
            tracing::info!(user = %login.user, "logged in");
            login.user
        }
        Err(_) => "bad".to_owned(),
    }
}

// One thread, so the thread-local subscriber sees the node's work too.
#[tokio::test(flavor = "current_thread")]
async fn a_canary_secret_never_appears_in_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let service = support::echo_builder()
        .route("/login", post(login))
        .route(
            "/typed",
            post(|Json(login): Json<Login>| async move { login.user }),
        )
        .public("/login")
        .public("/typed")
        .build()
        .unwrap();
    let node = support::start_with(support::config(&jwt::auth_toml("")), service).await;
    let addr = node.local_addr();
    let client = support::http1();

    let response = client
        .get(format!("http://{addr}/me"))
        .bearer_auth(CANARY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .get(format!("http://{addr}/me"))
        .header("x-api-key", CANARY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body = serde_json::json!({"user": "ann", "password": CANARY}).to_string();
    let response = client
        .post(format!("http://{addr}/login"))
        .header("cookie", format!("session={CANARY}"))
        .bearer_auth(CANARY)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ann");
    // A malformed body around the password: refused without logging it.
    let response = client
        .post(format!("http://{addr}/typed"))
        .header("content-type", "application/json")
        .body(format!("{{\"user\": 5, \"password\": \"{CANARY}\""))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let mut request = tonic::Request::new(EchoRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {CANARY}").parse().unwrap());
    assert!(
        support::echo_client(addr)
            .await
            .echo(request)
            .await
            .is_err()
    );
    node.shutdown().await.unwrap();

    let logs = captured.text();
    // The capture works: the handler's own line is there. (Not a framework
    // line such as "credentials refused": tests running at once on other
    // threads race this thread-local subscriber for the interest of shared
    // callsites, and tracing may then skip one here.)
    assert!(
        logs.contains("login attempt") && logs.contains("Sensitive"),
        "{logs}"
    );
    assert!(!logs.contains(CANARY), "the canary leaked:\n{logs}");
}
