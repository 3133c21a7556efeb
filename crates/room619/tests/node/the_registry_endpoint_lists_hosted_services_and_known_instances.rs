//! `GET /registry`: the services a node hosts and every instance its
//! discovery knows, as JSON; on the admin listener when there is one, and
//! behind authentication on the main port when `[auth]` is configured.

use room619::ServiceBuilder;

use crate::support;

#[tokio::test]
async fn it_lists_hosted_services_with_their_grpc_services_and_known_instances() {
    let config = support::config(
        "[[discovery.instances]]\nname = \"users\"\nversion = \"2.1.0\"\naddress = \"10.0.0.7:8080\"",
    );
    let node = support::start(config).await;
    let addr = node.local_addr();
    let answer = support::http1()
        .get(format!("http://{addr}/registry"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["node"], "test-node");
    assert_eq!(body["phase"], "running");
    assert_eq!(body["hosted"][0]["name"], "echo");
    assert_eq!(body["hosted"][0]["version"], "1.0.0");
    assert_eq!(body["hosted"][0]["state"], "running");
    assert_eq!(body["hosted"][0]["grpc"][0], "shop.echo.v1.Echo");
    assert_eq!(body["discovery"]["backend"], "local");
    assert_eq!(body["discovery"]["status"], "ok");
    let instances = body["discovery"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{instances:#?}");
    // By name: the node's own echo first, then the listed users.
    assert_eq!(instances[0]["name"], "echo");
    assert_eq!(instances[0]["address"], addr.to_string());
    assert_eq!(instances[0]["health"], "serving");
    assert_eq!(instances[1]["name"], "users");
    assert_eq!(instances[1]["version"], "2.1.0");
    assert_eq!(instances[1]["address"], "10.0.0.7:8080");

    // A service added at run time shows up, and goes again when removed.
    let handle = node.handle();
    let extra = ServiceBuilder::new("extra", "3.0.0")
        .unwrap()
        .build()
        .unwrap();
    handle.add_service(extra).await.unwrap();
    let body: serde_json::Value = support::http1()
        .get(format!("http://{addr}/registry"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hosted: Vec<&str> = body["hosted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(hosted, ["echo", "extra"]);
    handle.remove_service("extra", "3.0.0").await.unwrap();
    let body: serde_json::Value = support::http1()
        .get(format!("http://{addr}/registry"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["hosted"].as_array().unwrap().len(), 1);
    let names: Vec<&str> = body["discovery"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "users"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn it_moves_to_the_admin_listener_when_there_is_one() {
    let node = support::start(support::config("admin_listen = \"127.0.0.1:0\"")).await;
    let handle = node.handle();
    let admin = handle.admin_addr().unwrap();
    let on_admin = support::http1()
        .get(format!("http://{admin}/registry"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), 200);
    let on_main = support::http1()
        .get(format!("http://{}/registry", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), 404);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_service_route_cannot_take_its_path() {
    let clash = ServiceBuilder::new("clash", "1.0.0")
        .unwrap()
        .route("/registry", axum::routing::get(|| async { "mine" }))
        .build()
        .unwrap();
    let node = room619::Node::builder()
        .config(support::config(""))
        .service(clash)
        .build()
        .unwrap();
    let err = node.start().await.unwrap_err();
    assert!(err.to_string().contains("/registry"), "{err}");
}

#[tokio::test]
async fn it_stays_open_like_health_and_metrics_when_auth_is_configured() {
    use crate::support::jwt::{self, good_claims, mint};

    // An operator's endpoint, as /metrics: `node.admin_listen` is how to
    // keep it off a public port.
    let node = support::start(support::config(&jwt::auth_toml(""))).await;
    let url = format!("http://{}/registry", node.local_addr());
    let anonymous = support::http1().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 200);
    let token = mint("HS256", Some("hs"), &good_claims("ops", ""), &jwt::hs());
    let authenticated = support::http1()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(authenticated.status(), 200);
    // Health stays open to probes.
    let ready = support::http1()
        .get(format!("http://{}/health/ready", node.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    node.shutdown().await.unwrap();
}
