//! Shared by the storage and service tests: a fresh database of either kind
//! (SQLite in a temp dir under `target/`, or its own schema in the machine's
//! PostgreSQL), a real node hosting users + products with `[auth]`
//! configured, tokens minted with `jsonwebtoken`, and gRPC clients.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use room619::{RunningNode, config::ConfigLoader};
use shop::store::Db;
use shop_proto::{
    products::v1::products_client::ProductsClient,
    users::{
        v1::users_client::UsersClient as UsersV1Client,
        v2::users_client::UsersClient as UsersV2Client,
    },
};
use tonic::{Request, transport::Channel};

/// The PostgreSQL the tests use; `SHOP_TEST_POSTGRES_URL` overrides it.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The HS256 secret the test nodes trust.
pub const SECRET: &str = "the-shop-tests-share-this-32-byte-secret";
pub const ISSUER: &str = "https://auth.shop.test";
pub const AUDIENCE: &str = "shop";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh, migrated database; [`TestDb::finish`] drops the PostgreSQL
/// schema (a failed test leaves it, under a unique name).
pub struct TestDb {
    pub db: Db,
    /// SQLite: the data directory.
    pub dir: Option<PathBuf>,
    /// PostgreSQL: the schema.
    pub schema: Option<String>,
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{nanos}_{}", uuid::Uuid::new_v4().simple())
}

pub fn postgres_url() -> String {
    std::env::var("SHOP_TEST_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.to_owned())
}

/// A connection to the PostgreSQL server itself; panics, loudly, when it is
/// not there: these tests must not pass without it.
async fn admin() -> sqlx::AnyConnection {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let url = postgres_url();
    sqlx::AnyConnection::connect(&url)
        .await
        .unwrap_or_else(|err| {
            panic!("PostgreSQL is required for these tests and is not reachable at {url}: {err}")
        })
}

impl TestDb {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => {
                let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("shop"));
                let settings = shop::settings::ShopSettings {
                    data_dir: dir.clone(),
                    database_url: None,
                    ..shop::settings::ShopSettings::default()
                };
                let db = Db::open_sqlite(&settings.sqlite_path()).await.unwrap();
                Self {
                    db,
                    dir: Some(dir),
                    schema: None,
                }
            }
            Kind::Postgres => {
                let schema = unique("t");
                let mut admin = admin().await;
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let db = Db::connect_url(&schema_url(&schema)).await.unwrap();
                Self {
                    db,
                    dir: None,
                    schema: Some(schema),
                }
            }
        }
    }

    /// Closes the pool and drops what the test made.
    pub async fn finish(mut self) {
        self.db.close().await;
        if let Some(schema) = self.schema.take() {
            drop_schema(&schema).await;
        }
        if let Some(dir) = self.dir.take() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    /// `SELECT COUNT(*) FROM <table>`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }
}

async fn drop_schema(schema: &str) {
    let mut admin = admin().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// A test that failed before [`TestDb::finish`] still drops its schema (on a
/// thread of its own: the test's runtime may be gone); its SQLite directory
/// stays under `target/tmp` for a look.
impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let cleanup = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(drop_schema(&schema));
            });
            cleanup.join().unwrap_or_default();
        }
    }
}

/// The URL of `schema` in the test PostgreSQL: every connection's
/// `search_path` is that schema.
pub fn schema_url(schema: &str) -> String {
    let url = postgres_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A node on 127.0.0.1:0 with `[auth]` trusting [`SECRET`], the in-memory
/// bus, hosting users 1 + 2 and products over `db`.
pub async fn start_node(db: &Db) -> RunningNode {
    start_node_with(db, "").await
}

/// As [`start_node`], plus the TOML `extra`.
pub async fn start_node_with(db: &Db, extra: &str) -> RunningNode {
    let toml = format!(
        "[node]\nlisten = \"127.0.0.1:0\"\nname = \"shop-test\"\ndrain_timeout = \"5s\"\n\
         [auth]\nissuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\n\
         [[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n{extra}"
    );
    let config = ConfigLoader::new()
        .toml_str(toml)
        .without_env()
        .load()
        .unwrap();
    let mut node = room619::Node::builder().config(config);
    for service in shop::users::services(db.clone()).unwrap() {
        node = node.service(service);
    }
    node = node.service(shop::products::service(db.clone()).unwrap());
    node.build().unwrap().start().await.unwrap()
}

/// A token for `subject` with `scopes` (space separated), valid for an hour.
pub fn token(subject: &str, scopes: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": subject, "iss": ISSUER, "aud": AUDIENCE,
        "iat": now, "exp": now + 3600, "scope": scopes,
    });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hs".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The token the auth service would use to create profiles.
pub fn service_token() -> String {
    token("auth", "users:create")
}

/// `message` with `Authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// gRPC clients of the node.
pub struct Clients {
    pub v1: UsersV1Client<Channel>,
    pub v2: UsersV2Client<Channel>,
    pub products: ProductsClient<Channel>,
}

pub async fn clients(node: &RunningNode) -> Clients {
    let channel = Channel::from_shared(format!("http://{}", node.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Clients {
        v1: UsersV1Client::new(channel.clone()),
        v2: UsersV2Client::new(channel.clone()),
        products: ProductsClient::new(channel),
    }
}

/// Waits (at most 10 s) until `check` is true.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that `result` failed with `code` and a message containing `words`.
pub fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
    words: &str,
) {
    let status = result.expect_err("the call should have failed");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "`{}` should mention `{words}`",
        status.message()
    );
}

/// Runs a test body against both databases: `both!(name, body_fn)` makes
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:path) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                $body($crate::support::Kind::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                $body($crate::support::Kind::Postgres).await;
            }
        }
    };
}
