//! Typed configuration: a TOML file, `ROOM619_*` environment overrides and CLI
//! flags, validated before anything starts.
//!
//! Sources are merged in this order, later ones winning:
//!
//! 1. built-in defaults (each field's doc states its default);
//! 2. the TOML file, if one is given;
//! 3. environment variables `ROOM619_<SECTION>__<KEY>`, e.g.
//!    `ROOM619_NODE__LISTEN=0.0.0.0:8080` or `ROOM619_LIMITS__HTTP_BODY_LIMIT=1048576`;
//! 4. explicit overrides, such as the CLI flags of [`ConfigArgs`] (feature `cli`).
//!
//! Every failure is a [`ConfigError`] that names the offending key and says
//! what is wrong with it. Unknown keys are errors too, so a typo never passes
//! silently.
//!
//! ```
//! use room619::config::Config;
//!
//! let config = Config::from_toml_str(r#"
//!     [node]
//!     listen = "127.0.0.1:0"
//!     [limits]
//!     http_body_limit = 1048576
//! "#).unwrap();
//! assert_eq!(config.limits.http_body_limit, 1_048_576);
//!
//! let err = Config::from_toml_str("[limits]\nmax_header_bytes = 10").unwrap_err();
//! assert_eq!(err.key(), "limits.max_header_bytes");
//! ```

#[cfg(feature = "cli")]
mod cli;
mod error;
mod live;
mod load;
mod validate;

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

#[cfg(feature = "cli")]
pub use cli::ConfigArgs;
pub use error::ConfigError;
pub use live::LiveConfig;
pub use load::{ConfigLoader, Overrides};

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the node listens and what it hosts.
    pub node: NodeConfig,
    /// Server hardening limits.
    pub limits: Limits,
    /// Logging.
    pub log: LogConfig,
    /// Where remote services are found.
    pub discovery: DiscoveryConfig,
    /// How calls to other services are protected (breakers, retries,
    /// bulkheads), per downstream service.
    pub resilience: crate::resilience::ResilienceConfig,
    /// The message bus: backend, streams, delivery and dead letters.
    pub bus: crate::bus::BusConfig,
    /// Authentication: JWT keys, JWKS, issuer, audience, API keys.
    pub auth: crate::middleware::auth::AuthConfig,
    /// Rate limits per route and method.
    pub rate_limit: crate::middleware::rate_limit::RateLimitConfig,
    /// Metrics and OpenTelemetry tracing.
    pub telemetry: crate::observability::TelemetryConfig,
    /// CORS and response compression of the HTTP side.
    pub http: crate::middleware::http::HttpConfig,
    /// The application's own settings, one table per section name
    /// (`[app.shop]`, `ROOM619_APP__SHOP__DATA_DIR`); read typed with
    /// [`Config::app`]. The framework does not look inside.
    pub app: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Where instances of services hosted elsewhere are found, and where this
/// node's services are registered (see [`crate::discovery`]).
///
/// ```toml
/// [discovery]
/// backend = "local"   # or "static", "nats", "dns"
///
/// [[discovery.instances]]
/// name = "users"
/// version = "1.4.0"
/// address = "10.0.0.5:8080"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The registry backend. Default: `local`.
    pub backend: crate::discovery::DiscoveryBackend,
    /// Instances listed by hand, known under every backend and hot-reloaded.
    /// Default: none.
    pub instances: Vec<InstanceConfig>,
    /// Settings of the `nats` backend.
    pub nats: crate::discovery::NatsDiscoveryConfig,
    /// Settings of the `dns` backend.
    pub dns: crate::discovery::DnsDiscoveryConfig,
    /// Metadata added to this node's registrations, such as `zone` or
    /// `weight` (`node` is always set to `node.name`). Default: none.
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// One instance of a service, listed in [`DiscoveryConfig::instances`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The service's name.
    pub name: String,
    /// The instance's semver version.
    pub version: String,
    /// Where it listens, as `host:port` (gRPC and HTTP share the port).
    pub address: String,
}

/// Where the node listens, what it hosts and how it stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name, reported in health answers and logs. Default: `room619`.
    pub name: String,
    /// The address serving gRPC and HTTP on one port. Default: `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// A separate address for the admin endpoints (`/health/*`, `/metrics`,
    /// `/registry`); when unset they are served on `listen`. Default: unset.
    pub admin_listen: Option<SocketAddr>,
    /// The `host:port` other nodes reach this node at, as registered in
    /// discovery. Default: the bound listen address, with an unspecified IP
    /// (`0.0.0.0`, `::`) replaced by loopback, which only suits one machine:
    /// set it (e.g. to the pod IP) when nodes run on several.
    pub advertise: Option<String>,
    /// The services to run, by name; empty runs every registered service.
    /// Default: empty.
    pub services: Vec<String>,
    /// How long a service's start hooks may take, together, before the
    /// start (or `add_service`) fails with `DEADLINE_EXCEEDED` and the
    /// services already started are stopped. Like every duration of
    /// `[node]` and `[limits]`, at most a day. Default: `60s`.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    /// Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long the node keeps accepting (while reporting not ready) after a
    /// shutdown signal, so load balancers can take it out of rotation first.
    /// Set it to your readiness probe period on Kubernetes. Default: `0s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// How often a watched config file (see
    /// [`NodeBuilder::watch_config`](crate::node::NodeBuilder::watch_config))
    /// is checked for changes. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub config_poll_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "room619".to_owned(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: None,
            advertise: None,
            services: Vec::new(),
            start_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            config_poll_interval: Duration::from_secs(1),
        }
    }
}

/// Server hardening limits; the defaults are safe for the open internet.
/// Every duration here is at most a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A new connection that sends no byte within this time is closed, and
    /// so is an HTTP/2 one whose client preface (24 bytes) has not all
    /// arrived by then. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// An HTTP/1 connection with no request started, finished or in flight
    /// for this long is closed, within a quarter of it more: a request head
    /// must arrive completely within it (slowloris defence), and an idle
    /// keep-alive connection is let go. A request in flight (a slow handler,
    /// a long streamed answer) keeps its connection, and so does an answer
    /// still being written to a slow reader (up to
    /// [`write_stall_timeout`](Self::write_stall_timeout)). Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection whose answers have waited this long to be sent with
    /// none moving is closed, so a client that stops reading (or reads a
    /// trickle) cannot hold an answer and its buffers for ever: on HTTP/1 a
    /// write waiting for room in the socket with nothing written; on HTTP/2
    /// also an answer waiting for the client's flow-control window (a
    /// client that announced a window of zero, or stopped taking data).
    /// Looked at every quarter of the shorter of it and the connection's
    /// quiet timeout ([`header_read_timeout`](Self::header_read_timeout),
    /// [`http2_idle_timeout`](Self::http2_idle_timeout)). A slow but steady
    /// reader makes progress every few seconds and keeps its connection.
    /// At least `1ms`. Default: `60s`.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// An HTTP/2 connection with no stream open for this long is sent
    /// `GOAWAY` (looked at every quarter of the shorter of it and
    /// [`write_stall_timeout`](Self::write_stall_timeout): 15 s with the
    /// defaults); a client that has not closed its end after as long again
    /// is dropped. Only streams count: PINGs (the node's keep-alive or the
    /// client's) do not keep an idle connection. A gRPC channel idle for
    /// longer connects again for its next call; `GOAWAY` lets the calls in
    /// flight finish, though a call sent at the very moment it arrives may
    /// fail with `UNAVAILABLE` (retry policies take care of it). `0s` keeps
    /// idle HTTP/2 connections for ever. Default: `5m`.
    #[serde(with = "humantime_serde")]
    pub http2_idle_timeout: Duration,
    /// Connections each listener holds at once; one more is closed as soon
    /// as it is accepted (counted in `room619_server_refused_connections_total`),
    /// so many idle or slow clients cannot take all of the process's file
    /// descriptors and memory. Keep it under the process's open-file limit
    /// (`ulimit -n`; the node warns at start on Linux when it is not). At
    /// least `1`. Default: `10000`.
    pub max_connections: usize,
    /// The largest HTTP/1 request head in bytes; larger answers 431. From
    /// 8192 to 1 MiB. Default: `16384`.
    pub max_header_bytes: usize,
    /// HTTP/2 streams a client may have open at once on one connection.
    /// Default: `256`.
    pub http2_max_concurrent_streams: u32,
    /// The largest HTTP/2 header list in bytes (decoded); at most 1 MiB.
    /// Default: `16384`.
    pub http2_max_header_list_size: u32,
    /// How long a connection may be silent before the kernel probes its
    /// peer (TCP keep-alive, then every quarter of it, four times): a dead
    /// peer loses its connection about twice this after it went quiet. On
    /// Linux also how long, twice it, data sent may stay unacknowledged or
    /// the peer's receive window shut (`TCP_USER_TIMEOUT`; zero windows
    /// count since kernel 5.11) before the connection is dropped: a client
    /// that stops reading, over HTTP/1 or HTTP/2, and a network down that
    /// long. Elsewhere a live peer that stops reading keeps its connection;
    /// turn [`http2_keep_alive_interval`](Self::http2_keep_alive_interval)
    /// on there. The kernel does the work: nothing is paid per request.
    /// `0s` disables both; otherwise whole seconds from `1s` to `32767s`.
    /// Default: `20s`.
    #[serde(with = "humantime_serde")]
    pub tcp_keep_alive: Duration,
    /// Interval of HTTP/2 keep-alive pings (an unanswered ping closes the
    /// connection after 20 s); `0s` disables them. Off by default: while on,
    /// hyper reads the clock and takes a lock on every frame and every poll
    /// of the connection (about 2,000 instructions per unary gRPC call), and
    /// [`tcp_keep_alive`](Self::tcp_keep_alive) already finds dead and stuck
    /// peers. Turn it on where a proxy between client and node keeps the TCP
    /// connection alive while the peer behind it is gone. At least `1s`
    /// when on. Default: `0s`.
    #[serde(with = "humantime_serde")]
    pub http2_keep_alive_interval: Duration,
    /// The largest gRPC request message in bytes; larger fails with
    /// `RESOURCE_EXHAUSTED`. Default: 4 MiB. A generated tonic server keeps
    /// its own limit, 4 MiB unless raised: to accept larger messages, also
    /// set it on the server
    /// (`FooServer::new(svc).max_decoding_message_size(usize::MAX)`, since
    /// the node checks this one first).
    pub grpc_max_decode_message_size: usize,
    /// The largest gRPC response message in bytes; larger fails with
    /// `RESOURCE_EXHAUSTED`. Default: 4 MiB.
    pub grpc_max_encode_message_size: usize,
    /// The largest HTTP request body in bytes; larger answers 413. Default: 2 MiB.
    pub http_body_limit: usize,
    /// Requests the node serves at once, over all connections and both
    /// protocols; one more is refused at once (`503` / `UNAVAILABLE`)
    /// rather than queued, so overload costs the client a retry instead of
    /// costing the node memory and every caller its latency. A server stream
    /// counts until it ends. Health checks are never refused. Default: `10000`.
    pub max_concurrent_requests: usize,
    /// The most header fields in one HTTP/1 request; more answers 431, so a
    /// head of many tiny headers cannot cost more than a normal one. hyper
    /// makes room for this many on every request: at most 10000, and at most
    /// a quarter of [`max_header_bytes`](Self::max_header_bytes) (a header
    /// line takes 4 bytes at least). Default: `100`.
    pub http1_max_headers: usize,
    /// HTTP/2 streams a client may open and reset before the server has
    /// accepted them, at once; more closes the connection with
    /// `ENHANCE_YOUR_CALM` (the "rapid reset" attack, CVE-2023-44487).
    /// Default: `20`.
    pub http2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams the server may reset for a client's protocol errors on
    /// one connection; more closes it with `ENHANCE_YOUR_CALM` (the
    /// `MadeYouReset` attack, CVE-2025-8671). Default: `1024`.
    pub http2_max_local_error_reset_streams: usize,
    /// The most response bytes buffered per HTTP/2 stream for a client that
    /// does not read; past it the handler waits (backpressure) instead of the
    /// node buffering a large answer (the node hands data on in pieces of
    /// at most 16 KiB, so at most that much more). Default: 400 KiB.
    pub http2_max_send_buf_size: usize,
    /// An HTTP request body that sends no data for this long fails (`400`),
    /// so a client trickling or withholding a body it announced cannot hold a
    /// request, a task and a buffer for ever. gRPC streams are exempt: their
    /// pauses are legitimate, and TCP keep-alive finds dead peers. (Except
    /// the node's own reflection service, which anyone may call: a
    /// reflection stream that asks nothing for this long fails.)
    /// Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub http_body_idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(60),
            http2_idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            http2_max_concurrent_streams: 256,
            http2_max_header_list_size: 16 * 1024,
            tcp_keep_alive: Duration::from_secs(20),
            http2_keep_alive_interval: Duration::ZERO,
            grpc_max_decode_message_size: 4 * 1024 * 1024,
            grpc_max_encode_message_size: 4 * 1024 * 1024,
            http_body_limit: 2 * 1024 * 1024,
            max_concurrent_requests: 10_000,
            http1_max_headers: 100,
            http2_max_pending_accept_reset_streams: 20,
            http2_max_local_error_reset_streams: 1024,
            http2_max_send_buf_size: 400 * 1024,
            http_body_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `room619=debug,hyper=warn`;
    /// `RUST_LOG`, when set, wins. Default: `info`.
    pub level: String,
    /// The output format. Default: `auto`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Pretty when standard error is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object a line, for log pipelines.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl Config {
    /// Parses and validates a configuration from TOML text alone (no
    /// environment), mostly for tests and examples.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key when the text does not parse, has an
    /// unknown key, or a value fails validation.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        ConfigLoader::new().toml_str(toml).without_env().load()
    }

    /// Loads the configuration from `ROOM619_CONFIG` (a TOML file path, if
    /// set) and the `ROOM619_*` environment.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the key when a source does not parse, has an
    /// unknown key, or a value fails validation.
    pub fn load() -> Result<Self, ConfigError> {
        let mut loader = ConfigLoader::new();
        if let Some(path) = std::env::var_os("ROOM619_CONFIG") {
            loader = loader.file(path);
        }
        loader.load()
    }

    /// The application section `[app.<name>]` as `T`, or `T::default()` when
    /// the section is absent. Give `T` `#[serde(deny_unknown_fields)]` so a
    /// typo in the section is an error too.
    ///
    /// Values are read as the keys of `T` want them: text as the number or
    /// boolean a key takes, a number or boolean as the text a key takes.
    /// So an environment variable, which is text, fits its key:
    /// `ROOM619_APP__SHOP__PORT=8080` is the number 8080 for a `u16` and
    /// the text `"8080"` for a `String`, `ROOM619_APP__SHOP__CODE=007` the
    /// text `"007"` (no number's own text: never made the number 7), and a
    /// value in `[..]` a list. The error names the key and the kind of value
    /// found, never the value.
    ///
    /// ```
    /// use room619::config::Config;
    ///
    /// #[derive(Debug, Default, serde::Deserialize)]
    /// #[serde(default, deny_unknown_fields)]
    /// struct Shop {
    ///     data_dir: String,
    /// }
    ///
    /// let config = Config::from_toml_str("[app.shop]\ndata_dir = \"/var/lib/shop\"").unwrap();
    /// let shop: Shop = config.app("shop").unwrap();
    /// assert_eq!(shop.data_dir, "/var/lib/shop");
    ///
    /// let config = Config::from_toml_str("[app.shop]\ndata_dri = \"x\"").unwrap();
    /// let err = config.app::<Shop>("shop").unwrap_err();
    /// assert_eq!(err.key(), "app.shop.data_dri");
    /// assert!(err.problem().contains("data_dri"));
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `app.<name>` when the section does not
    /// deserialize into `T` (an unknown key, a value of the wrong type).
    pub fn app<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: serde::de::DeserializeOwned + Default,
    {
        match self.app.get(name) {
            None => Ok(T::default()),
            Some(section) => load::app_section(name, section),
        }
    }

    /// Checks every value; [`ConfigLoader::load`] calls it for you.
    ///
    /// # Errors
    ///
    /// The first invalid value, as a [`ConfigError`] naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }
}
