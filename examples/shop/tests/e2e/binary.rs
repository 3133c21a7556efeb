//! Starting the `room619` binary with its own data directory, and a small
//! REST client of its gateway.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const BINARY: &str = env!("CARGO_BIN_EXE_room619");

/// The running shop, one process or several; killed (and its data
/// removed) when dropped. `addr` is where its gateway listens.
pub struct Shop {
    children: Vec<Child>,
    pub addr: String,
    data: PathBuf,
    http: reqwest::Client,
}

impl Drop for Shop {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ignored = child.kill();
            let _ignored = child.wait();
        }
        let _ignored = std::fs::remove_dir_all(&self.data);
    }
}

/// A fresh data directory for the test `name`.
pub fn data_dir(name: &str) -> PathBuf {
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("e2e-{name}-{}", std::process::id()));
    let _ignored = std::fs::remove_dir_all(&data);
    data
}

/// Starts `room619 <args>` on a free port with `envs`; the child and the
/// address it printed.
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("ROOM619_CONFIG")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.trim().strip_prefix("gRPC + REST  http://") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ignored = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (child, addr),
        Err(err) => {
            let _ignored = child.kill();
            let status = child.wait();
            panic!("room619 {args:?} printed no address ({err}); it exited with {status:?}")
        }
    }
}

/// A user signed up through the gateway.
pub struct User {
    pub id: String,
    pub token: String,
}

impl Shop {
    /// Starts every service in one process on a free port, with a fresh
    /// SQLite database.
    pub fn start(name: &str) -> Self {
        let data = data_dir(name);
        let data_env = data.to_string_lossy().into_owned();
        let (child, addr) = spawn(&[], &[("ROOM619_APP__SHOP__DATA_DIR", &data_env)]);
        Self::of(vec![child], addr, data)
    }

    /// The shop made of `children`, its gateway at `addr`, its files in `data`.
    pub fn of(children: Vec<Child>, addr: String, data: PathBuf) -> Self {
        Self {
            children,
            addr,
            data,
            http: reqwest::Client::new(),
        }
    }

    /// Sends `body` (if any) as JSON with the token (if any); the status and
    /// the JSON answer (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, token, &[], body).await
    }

    /// [`Shop::call`] with `headers` (name, value) too.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                panic!("{path} answered {status} with a body that is not JSON ({err}): {bytes:?}")
            })
        };
        (status, value)
    }

    /// Signs a user up; their id and access token.
    pub async fn sign_up(&self, email: &str, name: &str) -> User {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/auth/signup",
                None,
                Some(json!({"email": email, "password": "correct horse battery", "name": name})),
            )
            .await;
        assert!(status.is_success(), "sign-up answered {status}: {body}");
        User {
            id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["tokens"]["access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a product as `user`; its JSON.
    pub async fn create_product(&self, user: &User, name: &str, price_cents: i64) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/products",
                Some(&user.token),
                Some(json!({"name": name, "description": format!("a {name}"), "price_cents": price_cents})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}
