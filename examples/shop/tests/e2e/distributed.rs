//! The shop as four processes (`docs/MULTI_PROCESS.md`): auth, users,
//! products and the gateway, each `room619 serve --config
//! examples/shop/config/<name>.toml`, finding each other through NATS
//! discovery, sending events over JetStream, storing in one PostgreSQL
//! schema; the customer journey of the one-process test runs unchanged
//! against the gateway.

use std::path::Path;

use shop::store::Db;

use crate::{
    binary::{self, Shop},
    over_nats::NatsServer,
    shop_flow,
};

/// The PostgreSQL of the tests: `SHOP_TEST_POSTGRES_URL`, else the
/// machine's (trust auth), as in `scripts/test`.
fn postgres() -> String {
    std::env::var("SHOP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A PostgreSQL schema of its own, dropped at the end.
struct Schema {
    name: String,
}

impl Schema {
    async fn create() -> Self {
        let name = format!("shop_e2e_{}", std::process::id());
        let server = postgres();
        let admin = Db::connect_url(&server)
            .await
            .unwrap_or_else(|err| panic!("PostgreSQL at {server} is needed: {err}"));
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(admin.pool())
            .await
            .unwrap();
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(admin.pool())
            .await
            .unwrap();
        admin.close().await;
        Self { name }
    }

    /// A URL whose connections all use this schema.
    fn url(&self) -> String {
        let server = postgres();
        let separator = if server.contains('?') { '&' } else { '?' };
        format!("{server}{separator}options=-csearch_path%3D{}", self.name)
    }

    async fn drop(self) {
        let admin = Db::connect_url(&postgres()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(admin.pool())
            .await
            .unwrap();
        admin.close().await;
    }
}

/// Starts the four processes, auth first (the others fetch its JWKS).
fn start(nats: &str, database_url: &str) -> Shop {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let data = binary::data_dir("distributed");
    let serve = |name: &str, jwks: Option<&str>| {
        let file = configs.join(format!("{name}.toml"));
        let data_dir = data.join(name).to_string_lossy().into_owned();
        let mut envs = vec![
            ("ROOM619_DISCOVERY__NATS__URL", nats),
            ("ROOM619_BUS__URL", nats),
            ("DATABASE_URL", database_url),
            ("ROOM619_APP__SHOP__DATA_DIR", data_dir.as_str()),
        ];
        if let Some(jwks) = jwks {
            envs.push(("ROOM619_AUTH__JWKS__URL", jwks));
        }
        binary::spawn(&["serve", "--config", file.to_str().unwrap()], &envs)
    };
    let (auth, auth_addr) = serve("auth", None);
    let jwks = format!("http://{auth_addr}/.well-known/jwks.json");
    let (users, _) = serve("users", Some(&jwks));
    let (products, _) = serve("products", Some(&jwks));
    let (gateway, gateway_addr) = serve("gateway", Some(&jwks));
    Shop::of(vec![gateway, products, users, auth], gateway_addr, data)
}

/// Waits until the gateway's discovery lists an instance of each service.
async fn discovered(gateway: &str, services: &[&str]) {
    let listed = || async {
        let registry: serde_json::Value = reqwest::get(format!("http://{gateway}/registry"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let names: Vec<String> = registry["discovery"]["instances"]
            .as_array()?
            .iter()
            .filter_map(|instance| instance["name"].as_str().map(str::to_owned))
            .collect();
        Some(
            services
                .iter()
                .all(|service| names.iter().any(|name| name == service)),
        )
    };
    let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while listed().await != Some(true) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "the gateway never discovered {services:?}");
}

#[tokio::test]
async fn the_same_journey_across_four_processes_over_nats_and_postgres() {
    let nats = NatsServer::start().await;
    let schema = Schema::create().await;
    let shop = start(&nats.url(), &schema.url());
    discovered(&shop.addr, &["auth", "users", "products"]).await;
    shop_flow::journey(&shop).await;
    drop(shop);
    schema.drop().await;
}
