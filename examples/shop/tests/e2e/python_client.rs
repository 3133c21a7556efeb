//! A Python `grpcio` client generated from the shop's `.proto` files calls
//! users (v1 and v2) and products directly, with the JWT in its metadata,
//! and reads the same data the gateway serves. `scripts/test` installs
//! grpcio-tools and sets `INTEROP_PYTHON`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::binary::Shop;

#[tokio::test]
async fn a_python_grpc_client_reads_what_the_gateway_wrote() {
    let python = std::env::var("INTEROP_PYTHON").expect(
        "INTEROP_PYTHON must name a Python with grpcio and grpcio-tools (scripts/test sets it)",
    );
    let shop = Shop::start("python");
    let carol = shop.sign_up("carol@example.com", "Carol").await;
    shop.create_product(&carol, "Teapot", 1_200).await;
    shop.create_product(&carol, "Cup", 300).await;

    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/proto");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/grpc_client.py");
    // The shop is another process: blocking this test's thread is harmless.
    let output = std::process::Command::new(python)
        .args([script, proto_root, &shop.addr, &carol.token, &carol.id])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    let token = Some(carol.token.as_str());
    let (_, user) = shop
        .call(Method::GET, &format!("/v1/users/{}", carol.id), token, None)
        .await;
    assert_eq!(
        seen["user"],
        json!({"id": user["id"], "email": user["email"], "name": user["name"]})
    );
    assert_eq!(
        seen["user_v2"]["display_name"], "Carol",
        "users.v2 renames the field"
    );
    let (_, page) = shop
        .call(
            Method::GET,
            &format!("/v1/products?owner_id={}", carol.id),
            token,
            None,
        )
        .await;
    let rest: Vec<Value> = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!({"id": p["id"], "name": p["name"], "price_cents": p["price_cents"], "owner_id": p["owner_id"]}))
        .collect();
    assert_eq!(seen["products"], Value::Array(rest));
    assert_eq!(
        seen["codes"],
        json!({"missing": "NOT_FOUND", "anonymous": "UNAUTHENTICATED", "invalid": "INVALID_ARGUMENT"})
    );
}
