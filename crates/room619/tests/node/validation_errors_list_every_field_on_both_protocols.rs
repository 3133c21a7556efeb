//! Declarative validation: field errors arrive as a `google.rpc.BadRequest`
//! in the gRPC status details and as an `errors` list in problem+json;
//! malformed bodies answer `400` without quoting the input.

use axum::routing::post;
use garde::Validate;
use room619::middleware::validation::{Valid, validate};
use shop_proto::echo::v1::{EchoRequest, EchoResponse};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt as _;

use crate::support::{
    self,
    unary_echo::{self, UnaryEcho},
};

const CANARY: &str = "CANARY-in-a-bad-body";

#[derive(serde::Deserialize, Validate)]
struct NewUser {
    #[garde(length(min = 1, max = 16))]
    name: String,
    #[garde(range(min = 18, max = 150))]
    age: u8,
    #[garde(dive)]
    address: Address,
}

#[derive(serde::Deserialize, Validate)]
struct Address {
    #[garde(length(min = 2))]
    city: String,
}

/// The rules of an `EchoRequest`, as a prost message would carry them with
/// `field_attribute`s.
#[derive(Validate)]
struct EchoRules<'a> {
    #[garde(length(min = 1, max = 16))]
    message: &'a str,
    #[garde(range(max = 1000))]
    repeat: u32,
}

struct ValidatingEcho;

impl UnaryEcho for ValidatingEcho {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let request = request.into_inner();
        validate(&EchoRules {
            message: &request.message,
            repeat: request.repeat,
        })?;
        Ok(Response::new(EchoResponse {
            message: request.message,
            ..EchoResponse::default()
        }))
    }
}

async fn start() -> room619::RunningNode {
    let service = room619::ServiceBuilder::new("users", "1.0.0")
        .unwrap()
        .grpc(unary_echo::server(ValidatingEcho))
        .route(
            "/users",
            post(|Valid(user): Valid<NewUser>| async move { user.name }),
        )
        .build()
        .unwrap();
    support::start_with(support::config(""), service).await
}

#[tokio::test]
async fn grpc_field_errors_arrive_as_bad_request_details() {
    let node = start().await;
    let mut client = support::echo_client(node.local_addr()).await;
    let status = client
        .echo(EchoRequest {
            message: String::new(),
            repeat: 5000,
            ..EchoRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_request = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let mut fields: Vec<&str> = bad_request
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["message", "repeat"]);
    assert!(
        bad_request
            .field_violations
            .iter()
            .all(|v| !v.description.is_empty())
    );

    let ok = client
        .echo(EchoRequest {
            message: "fine".into(),
            ..EchoRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().message, "fine");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_field_errors_arrive_as_a_problem_errors_list() {
    let node = start().await;
    let url = format!("http://{}/users", node.local_addr());
    let client = support::http1();

    let response = client
        .post(&url)
        .json(&serde_json::json!({"name": "", "age": 3, "address": {"city": "X"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem = support::problem(response).await;
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["address.city", "age", "name"], "{problem}");
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    let response = client
        .post(&url)
        .json(&serde_json::json!({"name": "ann", "age": 30, "address": {"city": "Oslo"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "ann");

    for body in [
        format!("{{\"name\": \"{CANARY}\", \"age\": "),
        format!("{{\"name\": 5, \"age\": \"{CANARY}\"}}"),
    ] {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(!text.contains(CANARY) && !text.contains("age"), "{text}");
    }
    let response = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 415);
    node.shutdown().await.unwrap();
}
