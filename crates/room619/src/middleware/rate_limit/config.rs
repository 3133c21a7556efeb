//! `[rate_limit]`: rules per route and method, the key, trusted proxies and
//! the backend.

use std::{net::IpAddr, str::FromStr as _, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The `[rate_limit]` section. Without rules nothing is limited.
///
/// ```toml
/// [rate_limit]
/// trusted_proxies = ["10.0.0.0/8"]   # only these may set X-Forwarded-For
/// forwarded_header = "x-forwarded-for"  # or "forwarded" (RFC 7239): what they write
/// backend = "redis"                  # or "local" (default)
/// redis_url = "redis://127.0.0.1:6379"
///
/// [[rate_limit.rules]]
/// route = "/v1/echo"                 # an HTTP route or a gRPC method path
/// method = "POST"                    # optional: this HTTP method only; one rule per route and method
/// limit = 100                        # requests per period...
/// period = "1m"
/// burst = 20                         # ...plus this many at once
/// key = "ip"                         # or "principal", "api_key"
///
/// [rate_limit.refused_credentials]   # optional: guessing keys and tokens
/// limit = 20                         # refused credentials per period and client IP...
/// period = "1m"
/// burst = 10                         # ...plus this many at once
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The limits. Default: none.
    pub rules: Vec<RateLimitRule>,
    /// Peers (IP addresses or CIDR blocks) whose forwarding header
    /// (`forwarded_header`) is believed. Default: none (the TCP peer is the
    /// client).
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies write the client's address in; the
    /// other one is never read (a client could send it through a proxy that
    /// passes it on). Default: `x-forwarded-for`.
    pub forwarded_header: ForwardedHeader,
    /// Where the counters live. Default: `local`.
    pub backend: RateLimitBackend,
    /// The Redis server of the `redis` backend. Default: `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// The prefix of the Redis keys; nodes sharing a prefix share limits.
    /// Default: `room619:ratelimit:`.
    pub redis_prefix: String,
    /// How many refused credentials (answered `401` / `UNAUTHENTICATED`) a
    /// client IP may send before its requests with credentials are answered
    /// `429` / `RESOURCE_EXHAUSTED` without being checked, until its
    /// allowance comes back. Counted on each node. Default: unset (no
    /// limit).
    pub refused_credentials: Option<RefusedCredentialsLimit>,
}

/// `[rate_limit.refused_credentials]`: `limit` refused credentials per
/// `period` and client IP, plus `burst` at once; see
/// [`RateLimitConfig::refused_credentials`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedCredentialsLimit {
    /// Refusals allowed per `period`, at least 1.
    pub limit: u32,
    /// The period of `limit`. Default: `1m`.
    #[serde(default = "default_period", with = "humantime_serde")]
    pub period: Duration,
    /// Extra refusals allowed at once on top of `limit`. Default: `0`.
    #[serde(default)]
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            backend: RateLimitBackend::Local,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            redis_prefix: "room619:ratelimit:".to_owned(),
            refused_credentials: None,
        }
    }
}

/// The header trusted proxies write the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For`, as `nginx`, Envoy, `HAProxy` and the cloud load
    /// balancers write it.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), its `for=` parameters.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name.
    #[must_use]
    pub fn name(self) -> http::HeaderName {
        match self {
            Self::XForwardedFor => http::HeaderName::from_static("x-forwarded-for"),
            Self::Forwarded => http::header::FORWARDED,
        }
    }
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RateLimitBackend {
    /// In this process: each node limits on its own.
    #[default]
    Local,
    /// In Redis (feature `redis`): every node with the same `redis_prefix`
    /// shares each limit.
    Redis,
}

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RateLimitKey {
    /// The client IP (see `trusted_proxies`).
    #[default]
    Ip,
    /// The authenticated subject; the client IP when unauthenticated.
    Principal,
    /// The API key's name; the client IP for other callers.
    ApiKey,
}

/// One limit: `limit` requests per `period`, plus `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// An HTTP route (axum syntax) or a gRPC method path, or a whole gRPC
    /// service as `/pkg.Service/{*method}`.
    pub route: String,
    /// The HTTP method this rule is for (case matters: `GET`, not `get`).
    /// Default: every method, also written `"*"`. A route has at most one
    /// rule per method, and one for every method.
    #[serde(default)]
    pub method: Option<String>,
    /// Requests allowed per `period`, at least 1.
    pub limit: u32,
    /// The period of `limit`. Default: `1m`.
    #[serde(default = "default_period", with = "humantime_serde")]
    pub period: Duration,
    /// Extra requests allowed at once on top of `limit`. Default: `0`.
    #[serde(default)]
    pub burst: u32,
    /// What the limit counts by. Default: `ip`.
    #[serde(default)]
    pub key: RateLimitKey,
}

fn default_period() -> Duration {
    Duration::from_secs(60)
}

impl RateLimitRule {
    /// The method this rule is for: `None` for every method (no `method`,
    /// or `"*"`), and for one that is not an HTTP method (which `validate`
    /// refuses).
    pub(crate) fn http_method(&self) -> Option<http::Method> {
        match self.method.as_deref() {
            None | Some("*") => None,
            Some(method) => http::Method::from_bytes(method.as_bytes()).ok(),
        }
    }
}

/// Parses a trusted proxy entry: an IP address or a CIDR block.
pub(crate) fn parse_net(entry: &str) -> Option<IpNet> {
    IpNet::from_str(entry)
        .ok()
        .or_else(|| IpAddr::from_str(entry).ok().map(IpNet::from))
}

impl RateLimitConfig {
    /// Checks the section; the error names the key (relative to `rate_limit`).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.route.starts_with('/') {
                return Err((format!("rules.{i}.route"), "must start with `/`".to_owned()));
            }
            if rule.limit == 0 {
                return Err((format!("rules.{i}.limit"), "must be at least 1".to_owned()));
            }
            if rule.period.is_zero() {
                return Err((format!("rules.{i}.period"), "must be positive".to_owned()));
            }
            if let Some(method) = &rule.method
                && http::Method::from_bytes(method.as_bytes()).is_err()
            {
                return Err((
                    format!("rules.{i}.method"),
                    format!("`{method}` is not an HTTP method"),
                ));
            }
        }
        // One rule per route and method: a second one would never apply.
        let mut seen: Vec<(&str, Option<http::Method>)> = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let method = rule.http_method();
            if let Some(first) = seen
                .iter()
                .position(|(route, m)| *route == rule.route && *m == method)
            {
                let method = method.as_ref().map_or("every method", http::Method::as_str);
                return Err((
                    format!("rules.{i}"),
                    format!(
                        "repeats the route and method of rate_limit.rules.{first} \
                         (`{}`, {method}); merge them into one rule",
                        rule.route
                    ),
                ));
            }
            seen.push((rule.route.as_str(), method));
        }
        // The routes as the limiter's table will hold them: a syntax error
        // or two routes that conflict (`/users/{id}` and `/users/{name}`)
        // are this file's error, not a reload that half applies.
        let mut routes = matchit::Router::new();
        let mut added: Vec<&str> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if added.contains(&rule.route.as_str()) {
                continue;
            }
            added.push(&rule.route);
            if let Err(err) = routes.insert(rule.route.as_str(), ()) {
                return Err((
                    format!("rules.{i}.route"),
                    format!("`{}` cannot be matched: {err}", rule.route),
                ));
            }
        }
        if let Some(refused) = &self.refused_credentials {
            if refused.limit == 0 {
                return Err((
                    "refused_credentials.limit".to_owned(),
                    "must be at least 1".to_owned(),
                ));
            }
            if refused.period.is_zero() {
                return Err((
                    "refused_credentials.period".to_owned(),
                    "must be positive".to_owned(),
                ));
            }
        }
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            if parse_net(entry).is_none() {
                return Err((
                    format!("trusted_proxies.{i}"),
                    format!("`{entry}` is not an IP address or CIDR block"),
                ));
            }
        }
        if self.backend == RateLimitBackend::Redis {
            if cfg!(not(feature = "redis")) {
                return Err((
                    "backend".to_owned(),
                    "`redis` needs room619's `redis` feature".to_owned(),
                ));
            }
            if !self.redis_url.starts_with("redis://") {
                return Err(("redis_url".to_owned(), "must be a redis:// URL".to_owned()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn routes_the_limiter_cannot_match_are_refused_by_key() {
        for (routes, key, problem) in [
            (
                ["/users/{id}", "/users/{name}"],
                "rate_limit.rules.1.route",
                "conflict",
            ),
            (
                ["/users", "/orders/{id"],
                "rate_limit.rules.1.route",
                "cannot be matched",
            ),
        ] {
            let toml = routes.iter().fold(String::new(), |toml, route| {
                toml + "[[rate_limit.rules]]\nroute = \"" + route + "\"\nlimit = 5\n"
            });
            let err = Config::from_toml_str(&toml).unwrap_err();
            assert_eq!(err.key(), key, "{err}");
            assert!(err.problem().contains(problem), "{err}");
        }
        // One route for two methods is one entry of the table.
        Config::from_toml_str(
            "[[rate_limit.rules]]\nroute = \"/users/{id}\"\nmethod = \"GET\"\nlimit = 5\n\
             [[rate_limit.rules]]\nroute = \"/users/{id}\"\nmethod = \"POST\"\nlimit = 1\n",
        )
        .unwrap();
    }

    /// A second rule for the same route and method used to be accepted and
    /// never applied (the table finds the first).
    #[test]
    fn a_second_rule_for_the_same_route_and_method_is_refused_by_key() {
        let rule = |method: Option<&str>, limit: u32| {
            let method = method.map_or_else(String::new, |m| format!("method = \"{m}\"\n"));
            format!("[[rate_limit.rules]]\nroute = \"/v1/echo\"\n{method}limit = {limit}\n")
        };
        for (first, second) in [
            (Some("GET"), Some("GET")),
            (None, None),
            (None, Some("*")),
            (Some("*"), None),
        ] {
            let toml = rule(Some("POST"), 1) + &rule(first, 5) + &rule(second, 9);
            let err = Config::from_toml_str(&toml).unwrap_err();
            assert_eq!(
                err.key(),
                "rate_limit.rules.2",
                "{first:?} {second:?}: {err}"
            );
            assert!(
                err.problem().contains("rate_limit.rules.1"),
                "names the first: {err}"
            );
        }
        // Different methods, or one method and every method, are one rule each.
        for (first, second) in [(Some("GET"), Some("HEAD")), (Some("GET"), None)] {
            let toml = rule(first, 5) + &rule(second, 9);
            Config::from_toml_str(&toml).unwrap();
        }
    }
}
