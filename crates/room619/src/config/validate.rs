//! Validation of a merged [`Config`]: every rule names the key it checks.

use std::time::Duration;

use super::{Config, ConfigError};

/// hyper refuses (by panicking) an HTTP/1 buffer smaller than this.
const MIN_HEADER_BYTES: usize = 8192;
/// The kernel counts keep-alive times in whole seconds, from one...
const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// ...up to 32767 (`TCP_KEEPIDLE` on Linux).
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(32_767);
/// The gRPC length prefix is a `u32`.
const MAX_GRPC_MESSAGE: usize = u32::MAX as usize;
/// The largest request head a node may be told to take, on either protocol
/// (`limits.max_header_bytes`, `limits.http2_max_header_list_size`): 1 MiB,
/// sixty-four times the default.
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// The most header fields an HTTP/1 request may be allowed
/// (`limits.http1_max_headers`): hyper makes room for that many on every
/// request it reads. Fewer still when `limits.max_header_bytes` cannot hold
/// them: a header line takes at least [`MIN_HEADER_LINE`] bytes.
const MAX_HTTP1_HEADERS: usize = 10_000;
/// The shortest header line, `a:b` and its line end.
const MIN_HEADER_LINE: usize = 4;
/// The longest a `node.*` or `limits.*` duration may be: a day. Longer is
/// a mistake (`"30d"` for `"30s"`), and past the clock's range it would
/// overflow it.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The node's name: not empty, and fit to be a metric label value
/// (`build_info{node=..}`, written as it is).
fn node_name(name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::new("node.name", "must not be empty"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(ConfigError::new(
            "node.name",
            format!("must not hold quotes, backslashes or control characters (got {name:?})"),
        ));
    }
    Ok(())
}

pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let node = &config.node;
    let limits = &config.limits;
    node_name(&node.name)?;
    if node
        .admin_listen
        .is_some_and(|admin| admin == node.listen && admin.port() != 0)
    {
        return Err(ConfigError::new(
            "node.admin_listen",
            format!("must differ from node.listen ({})", node.listen),
        ));
    }
    if let Some(name) = node.services.iter().find(|name| name.trim().is_empty()) {
        return Err(ConfigError::new(
            "node.services",
            format!("service names must not be empty (got {name:?})"),
        ));
    }
    timeouts(config)?;
    header_limits(limits)?;
    at_least_one(
        "limits.http2_max_concurrent_streams",
        limits.http2_max_concurrent_streams as usize,
    )?;
    at_least_one("limits.http_body_limit", limits.http_body_limit)?;
    overload_limits(limits)?;
    for (key, value) in [
        (
            "limits.grpc_max_decode_message_size",
            limits.grpc_max_decode_message_size,
        ),
        (
            "limits.grpc_max_encode_message_size",
            limits.grpc_max_encode_message_size,
        ),
    ] {
        at_least_one(key, value)?;
        if value > MAX_GRPC_MESSAGE {
            return Err(ConfigError::new(
                key,
                format!("must be at most {MAX_GRPC_MESSAGE} (got {value})"),
            ));
        }
    }
    for (index, instance) in config.discovery.instances.iter().enumerate() {
        let key = |field: &str| format!("discovery.instances.{index}.{field}");
        // The name alone first (with a version that parses), so that the
        // key named is the field the problem is about.
        if let Err(err) = crate::service::ServiceDescriptor::new(&instance.name, "0.0.0") {
            return Err(ConfigError::new(key("name"), err.message().to_owned()));
        }
        if let Err(err) = crate::service::ServiceDescriptor::new(&instance.name, &instance.version)
        {
            return Err(ConfigError::new(key("version"), err.message().to_owned()));
        }
        if instance
            .address
            .parse::<http::uri::Authority>()
            .map_or(true, |authority| {
                matches!(authority.port_u16(), None | Some(0))
            })
        {
            return Err(ConfigError::new(
                key("address"),
                format!(
                    "`{}` is not a host:port address with a port other than 0",
                    instance.address
                ),
            ));
        }
    }
    discovery(config)?;
    sections(config)?;
    if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        return Err(ConfigError::new(
            "log.level",
            format!("not a valid log filter ({err})"),
        ));
    }
    Ok(())
}

/// The sections that check themselves: their errors name a key relative to
/// the section.
fn sections(config: &Config) -> Result<(), ConfigError> {
    let checks = [
        ("resilience", config.resilience.validate()),
        ("bus", config.bus.validate()),
        ("auth", config.auth.validate()),
        ("rate_limit", config.rate_limit.validate()),
        ("http", config.http.validate()),
        ("telemetry", config.telemetry.validate()),
    ];
    for (section, checked) in checks {
        if let Err((key, problem)) = checked {
            return Err(ConfigError::new(format!("{section}.{key}"), problem));
        }
    }
    Ok(())
}

/// The advertised address and the discovery backends' settings.
fn discovery(config: &Config) -> Result<(), ConfigError> {
    positive(
        "node.config_poll_interval",
        config.node.config_poll_interval,
    )?;
    if let Some(advertise) = &config.node.advertise {
        let authority = advertise.parse::<http::uri::Authority>().ok();
        if authority
            .as_ref()
            .is_none_or(|authority| matches!(authority.port_u16(), None | Some(0)))
        {
            return Err(ConfigError::new(
                "node.advertise",
                format!(
                    "`{advertise}` is not a host:port address with a port other peers can reach"
                ),
            ));
        }
        // `0.0.0.0` and `[::]` are for binding: a peer connecting to them
        // reaches itself (on Linux), never this node.
        let unspecified = authority.is_some_and(|authority| {
            authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
        });
        if unspecified {
            return Err(ConfigError::new(
                "node.advertise",
                format!(
                    "`{advertise}` is the unspecified address: peers connecting to it reach \
                     themselves; advertise this node's own IP or DNS name"
                ),
            ));
        }
    }
    if let Err((key, problem)) = config.discovery.nats.validate() {
        return Err(ConfigError::new(format!("discovery.nats.{key}"), problem));
    }
    if let Err((key, problem)) = config.discovery.dns.validate() {
        return Err(ConfigError::new(format!("discovery.dns.{key}"), problem));
    }
    Ok(())
}

/// The sizes of request heads: each bounded, so that neither a parse nor a
/// client's head can cost more than a sane amount of memory.
fn header_limits(limits: &super::Limits) -> Result<(), ConfigError> {
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&limits.max_header_bytes) {
        return Err(ConfigError::new(
            "limits.max_header_bytes",
            format!(
                "must be from {MIN_HEADER_BYTES} to {MAX_HEADER_BYTES} (got {})",
                limits.max_header_bytes
            ),
        ));
    }
    let list_size = limits.http2_max_header_list_size as usize;
    if !(1..=MAX_HEADER_BYTES).contains(&list_size) {
        return Err(ConfigError::new(
            "limits.http2_max_header_list_size",
            format!("must be from 1 to {MAX_HEADER_BYTES} (got {list_size})"),
        ));
    }
    let headers = limits.http1_max_headers;
    let most = (limits.max_header_bytes / MIN_HEADER_LINE).min(MAX_HTTP1_HEADERS);
    if !(1..=most).contains(&headers) {
        return Err(ConfigError::new(
            "limits.http1_max_headers",
            format!(
                "must be from 1 to {most} (got {headers}): hyper makes room for this many \
                 headers on every request it reads, so at most {MAX_HTTP1_HEADERS}, or as many \
                 header lines ({MIN_HEADER_LINE} bytes at least) as limits.max_header_bytes \
                 holds when fewer"
            ),
        ));
    }
    Ok(())
}

/// Every `node.*` and `limits.*` duration is at most [`MAX_DURATION`]
/// (`limits.tcp_keep_alive` has a range of its own, shorter).
fn durations(config: &Config) -> Result<(), ConfigError> {
    let (node, limits) = (&config.node, &config.limits);
    for (key, value) in [
        ("node.start_timeout", node.start_timeout),
        ("node.drain_timeout", node.drain_timeout),
        ("node.shutdown_delay", node.shutdown_delay),
        ("node.config_poll_interval", node.config_poll_interval),
        ("limits.first_byte_timeout", limits.first_byte_timeout),
        ("limits.header_read_timeout", limits.header_read_timeout),
        ("limits.write_stall_timeout", limits.write_stall_timeout),
        ("limits.http2_idle_timeout", limits.http2_idle_timeout),
        (
            "limits.http2_keep_alive_interval",
            limits.http2_keep_alive_interval,
        ),
        (
            "limits.http_body_idle_timeout",
            limits.http_body_idle_timeout,
        ),
    ] {
        if value > MAX_DURATION {
            return Err(ConfigError::new(
                key,
                format!("must be at most a day, {MAX_DURATION:?} (got {value:?})"),
            ));
        }
    }
    Ok(())
}

/// The node's and the connections' timeouts.
fn timeouts(config: &Config) -> Result<(), ConfigError> {
    let limits = &config.limits;
    durations(config)?;
    positive("node.start_timeout", config.node.start_timeout)?;
    positive("node.drain_timeout", config.node.drain_timeout)?;
    positive("limits.first_byte_timeout", limits.first_byte_timeout)?;
    at_least(
        "limits.header_read_timeout",
        limits.header_read_timeout,
        Duration::from_millis(1),
    )?;
    at_least(
        "limits.write_stall_timeout",
        limits.write_stall_timeout,
        Duration::from_millis(1),
    )?;
    if !limits.http2_idle_timeout.is_zero() {
        at_least(
            "limits.http2_idle_timeout",
            limits.http2_idle_timeout,
            Duration::from_millis(1),
        )?;
    }
    let ping = limits.http2_keep_alive_interval;
    if !ping.is_zero() {
        at_least(
            "limits.http2_keep_alive_interval",
            ping,
            Duration::from_secs(1),
        )?;
    }
    let keep_alive = limits.tcp_keep_alive;
    if !keep_alive.is_zero()
        && (!(MIN_KEEP_ALIVE..=MAX_KEEP_ALIVE).contains(&keep_alive)
            || keep_alive.subsec_nanos() != 0)
    {
        return Err(ConfigError::new(
            "limits.tcp_keep_alive",
            format!(
                "must be 0s (off) or whole seconds from 1s to 32767s, the kernel's range for \
                 the first probe (got {keep_alive:?})"
            ),
        ));
    }
    Ok(())
}

fn at_least(key: &str, value: Duration, least: Duration) -> Result<(), ConfigError> {
    if value < least {
        return Err(ConfigError::new(
            key,
            format!("must be at least {least:?} (got {value:?})"),
        ));
    }
    Ok(())
}

fn positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(())
}

/// The limits against overload and HTTP/2 abuse (see `docs/SECURITY.md`).
fn overload_limits(limits: &super::Limits) -> Result<(), ConfigError> {
    positive(
        "limits.http_body_idle_timeout",
        limits.http_body_idle_timeout,
    )?;
    for (key, value) in [
        (
            "limits.max_concurrent_requests",
            limits.max_concurrent_requests,
        ),
        ("limits.max_connections", limits.max_connections),
        (
            "limits.http2_max_pending_accept_reset_streams",
            limits.http2_max_pending_accept_reset_streams,
        ),
        (
            "limits.http2_max_local_error_reset_streams",
            limits.http2_max_local_error_reset_streams,
        ),
        (
            "limits.http2_max_send_buf_size",
            limits.http2_max_send_buf_size,
        ),
    ] {
        at_least_one(key, value)?;
    }
    if limits.http2_max_send_buf_size > MAX_GRPC_MESSAGE {
        return Err(ConfigError::new(
            "limits.http2_max_send_buf_size",
            format!(
                "must be at most {MAX_GRPC_MESSAGE} (got {})",
                limits.http2_max_send_buf_size
            ),
        ));
    }
    Ok(())
}

fn at_least_one(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        validate(&Config::default()).unwrap();
    }

    #[test]
    fn an_unspecified_advertised_address_is_refused() {
        for unspecified in ["0.0.0.0:8080", "[::]:8080", "[0:0::0]:8080"] {
            let mut config = Config::default();
            config.node.advertise = Some(unspecified.to_owned());
            let err = validate(&config).unwrap_err();
            assert_eq!(err.key(), "node.advertise", "{unspecified}");
            assert!(err.problem().contains("unspecified"), "{err}");
        }
        for reachable in ["10.0.0.7:8080", "[fd00::7]:8080", "users-0.users:8080"] {
            let mut config = Config::default();
            config.node.advertise = Some(reachable.to_owned());
            validate(&config).unwrap();
        }
    }

    #[test]
    fn small_header_limit_names_its_key() {
        let mut config = Config::default();
        config.limits.max_header_bytes = 100;
        let err = validate(&config).unwrap_err();
        assert_eq!(err.key(), "limits.max_header_bytes");
        assert!(err.problem().contains("8192"), "{err}");
    }

    #[test]
    fn overload_and_http2_limits_name_their_keys() {
        type Breaks = fn(&mut Config);
        let cases: [(&str, Breaks); 12] = [
            ("limits.http2_idle_timeout", |c| {
                c.limits.http2_idle_timeout = Duration::from_micros(500);
            }),
            ("limits.max_connections", |c| {
                c.limits.max_connections = 0;
            }),
            ("limits.http2_keep_alive_interval", |c| {
                c.limits.http2_keep_alive_interval = Duration::from_millis(1);
            }),
            ("limits.header_read_timeout", |c| {
                c.limits.header_read_timeout = Duration::from_nanos(3);
            }),
            ("node.advertise", |c| {
                c.node.advertise = Some("10.0.0.7:0".to_owned());
            }),
            ("limits.tcp_keep_alive", |c| {
                c.limits.tcp_keep_alive = Duration::from_millis(500);
            }),
            ("limits.tcp_keep_alive", |c| {
                c.limits.tcp_keep_alive = Duration::from_secs(40_000);
            }),
            ("limits.tcp_keep_alive", |c| {
                c.limits.tcp_keep_alive = Duration::from_millis(1500);
            }),
            ("limits.max_concurrent_requests", |c| {
                c.limits.max_concurrent_requests = 0;
            }),
            ("limits.http2_max_pending_accept_reset_streams", |c| {
                c.limits.http2_max_pending_accept_reset_streams = 0;
            }),
            ("limits.http2_max_send_buf_size", |c| {
                c.limits.http2_max_send_buf_size = usize::MAX;
            }),
            ("limits.http_body_idle_timeout", |c| {
                c.limits.http_body_idle_timeout = Duration::ZERO;
            }),
        ];
        for (key, break_it) in cases {
            let mut config = Config::default();
            break_it(&mut config);
            assert_eq!(validate(&config).unwrap_err().key(), key);
        }
    }

    #[test]
    fn header_limits_have_ceilings_that_name_their_keys() {
        type Breaks = fn(&mut Config);
        let cases: [(&str, Breaks); 5] = [
            ("limits.http1_max_headers", |c| {
                c.limits.http1_max_headers = usize::MAX;
            }),
            ("limits.http1_max_headers", |c| {
                c.limits.http1_max_headers = 10_001;
            }),
            // 8192 bytes hold at most 2048 header lines.
            ("limits.http1_max_headers", |c| {
                c.limits.max_header_bytes = 8192;
                c.limits.http1_max_headers = 2049;
            }),
            ("limits.max_header_bytes", |c| {
                c.limits.max_header_bytes = usize::MAX;
            }),
            ("limits.http2_max_header_list_size", |c| {
                c.limits.http2_max_header_list_size = u32::MAX;
            }),
        ];
        for (key, break_it) in cases {
            let mut config = Config::default();
            break_it(&mut config);
            assert_eq!(validate(&config).unwrap_err().key(), key);
        }
        let mut config = Config::default();
        config.limits.max_header_bytes = MAX_HEADER_BYTES;
        config.limits.http2_max_header_list_size = 1024 * 1024;
        config.limits.http1_max_headers = MAX_HTTP1_HEADERS;
        validate(&config).unwrap();
        config.limits.max_header_bytes = 8192;
        config.limits.http1_max_headers = 2048;
        validate(&config).unwrap();
    }

    #[test]
    fn node_and_limits_durations_are_at_most_a_day() {
        type Sets = fn(&mut Config, Duration);
        let keys: [(&str, Sets); 10] = [
            ("node.start_timeout", |c, d| c.node.start_timeout = d),
            ("node.drain_timeout", |c, d| c.node.drain_timeout = d),
            ("node.shutdown_delay", |c, d| c.node.shutdown_delay = d),
            ("node.config_poll_interval", |c, d| {
                c.node.config_poll_interval = d;
            }),
            ("limits.first_byte_timeout", |c, d| {
                c.limits.first_byte_timeout = d;
            }),
            ("limits.header_read_timeout", |c, d| {
                c.limits.header_read_timeout = d;
            }),
            ("limits.write_stall_timeout", |c, d| {
                c.limits.write_stall_timeout = d;
            }),
            ("limits.http2_idle_timeout", |c, d| {
                c.limits.http2_idle_timeout = d;
            }),
            ("limits.http2_keep_alive_interval", |c, d| {
                c.limits.http2_keep_alive_interval = d;
            }),
            ("limits.http_body_idle_timeout", |c, d| {
                c.limits.http_body_idle_timeout = d;
            }),
        ];
        for (key, set) in keys {
            let mut config = Config::default();
            set(&mut config, MAX_DURATION);
            validate(&config).unwrap();
            for absurd in [MAX_DURATION + Duration::from_secs(1), Duration::MAX] {
                set(&mut config, absurd);
                let err = validate(&config).unwrap_err();
                assert_eq!(err.key(), key);
                assert!(err.problem().contains("a day"), "{err}");
            }
        }
    }

    #[test]
    fn an_http2_idle_timeout_of_zero_turns_it_off() {
        let mut config = Config::default();
        config.limits.http2_idle_timeout = Duration::ZERO;
        validate(&config).unwrap();
    }

    #[test]
    fn zero_start_and_drain_timeouts_are_rejected() {
        let mut config = Config::default();
        config.node.drain_timeout = Duration::ZERO;
        assert_eq!(validate(&config).unwrap_err().key(), "node.drain_timeout");
        let mut config = Config::default();
        config.node.start_timeout = Duration::ZERO;
        assert_eq!(validate(&config).unwrap_err().key(), "node.start_timeout");
    }

    #[test]
    fn bad_instances_name_their_index_and_field() {
        let mut config = Config::default();
        config
            .discovery
            .instances
            .push(super::super::InstanceConfig {
                name: "users".into(),
                version: "1.0.0".into(),
                address: "127.0.0.1:80".into(),
            });
        validate(&config).unwrap();
        config
            .discovery
            .instances
            .push(super::super::InstanceConfig {
                name: "users".into(),
                version: "one".into(),
                address: "127.0.0.1:80".into(),
            });
        assert_eq!(
            validate(&config).unwrap_err().key(),
            "discovery.instances.1.version"
        );
        // Both wrong: the key is the field the problem is about.
        config.discovery.instances[1].name = "Users!".into();
        let err = validate(&config).unwrap_err();
        assert_eq!(err.key(), "discovery.instances.1.name", "{err}");
        assert!(err.problem().contains("service name"), "{err}");
        config.discovery.instances[1].name = "users".into();
        config.discovery.instances[1].version = "2.0.0".into();
        for address in ["no-port", "127.0.0.1:0"] {
            config.discovery.instances[1].address = address.into();
            assert_eq!(
                validate(&config).unwrap_err().key(),
                "discovery.instances.1.address",
                "{address}"
            );
        }
    }

    #[test]
    fn bad_resilience_values_name_their_key() {
        let config = Config::from_toml_str(
            "[resilience.services.users.retry]\nretryable_codes = [\"UNAVAILABLE\", \"SOMETIMES\"]",
        );
        assert_eq!(
            config.unwrap_err().key(),
            "resilience.services.users.retry.retryable_codes.1"
        );
        let config = Config::from_toml_str("[resilience.defaults.breaker]\nfailure_rate = 1.5");
        assert_eq!(
            config.unwrap_err().key(),
            "resilience.defaults.breaker.failure_rate"
        );
        for (toml, key) in [
            (
                "[resilience.defaults.retry.budget]\nttl = \"0s\"",
                "resilience.defaults.retry.budget.ttl",
            ),
            (
                "[resilience.services.users.hedge]\npercentile = 1.0",
                "resilience.services.users.hedge.percentile",
            ),
            (
                "[resilience.services.users.hedge]\nmin_delay = \"2s\"\nmax_delay = \"1s\"",
                "resilience.services.users.hedge.max_delay",
            ),
        ] {
            assert_eq!(
                Config::from_toml_str(toml).unwrap_err().key(),
                key,
                "{toml}"
            );
        }
    }

    #[test]
    fn bad_log_filter_is_rejected() {
        let mut config = Config::default();
        config.log.level = "room619=loud".to_owned();
        assert_eq!(validate(&config).unwrap_err().key(), "log.level");
    }

    #[test]
    fn same_admin_and_main_address_is_rejected() {
        let mut config = Config::default();
        config.node.admin_listen = Some(config.node.listen);
        assert_eq!(validate(&config).unwrap_err().key(), "node.admin_listen");
    }
}
