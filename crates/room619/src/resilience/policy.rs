//! [`ClientPolicy`] and [`ResilienceConfig`]: the resilience settings of the
//! clients of each downstream service.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    bulkhead::BulkheadPolicy, circuit_breaker::BreakerPolicy, hedge::HedgePolicy,
    retry::RetryPolicy,
};

/// The `[resilience]` section: defaults for every downstream service and
/// overrides per service name.
///
/// ```toml
/// [resilience.defaults.retry]
/// max_attempts = 3
///
/// [resilience.services.users.retry]
/// idempotent = ["/users.v1.Users/GetUser", "/users.v1.Users/ListUsers"]
///
/// [resilience.services.users.hedge]
/// methods = ["/users.v1.Users/GetUser"]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// The policy of every downstream service without an override.
    pub defaults: ClientPolicy,
    /// Per downstream service: its whole policy (keys not given take the
    /// built-in defaults, not `defaults`).
    pub services: BTreeMap<String, ClientPolicy>,
}

impl ResilienceConfig {
    /// Checks every policy; the error names the key (relative to
    /// `resilience`) and the problem.
    ///
    /// # Errors
    ///
    /// `(key, problem)` for the first invalid value.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.defaults.validate("defaults")?;
        for (name, policy) in &self.services {
            policy.validate(&format!("services.{name}"))?;
        }
        Ok(())
    }

    /// The policy for calls to `service`.
    #[must_use]
    pub fn for_service(&self, service: &str) -> &ClientPolicy {
        self.services.get(service).unwrap_or(&self.defaults)
    }
}

/// How calls to one downstream service are protected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientPolicy {
    /// The breaker in front of the whole service.
    pub breaker: BreakerPolicy,
    /// The breaker of each instance (takes a failing instance out of the
    /// balancer). Default: the breaker defaults, plus 5 failures in a row
    /// open it; a table that sets some keys keeps those defaults for the
    /// others (`consecutive_failures` included).
    #[serde(deserialize_with = "instance_breaker")]
    pub instance_breaker: BreakerPolicy,
    /// Retries.
    pub retry: RetryPolicy,
    /// The concurrency limit.
    pub bulkhead: BulkheadPolicy,
    /// Hedged reads. Default: off.
    pub hedge: HedgePolicy,
}

/// The consecutive failures that open an instance's breaker by default.
const INSTANCE_CONSECUTIVE_FAILURES: u32 = 5;

/// An `instance_breaker` table: the keys it gives over the instance
/// defaults (not over [`BreakerPolicy::default`], whose
/// `consecutive_failures` is 0).
fn instance_breaker<'de, D>(deserializer: D) -> Result<BreakerPolicy, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut table = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    table
        .entry("consecutive_failures")
        .or_insert_with(|| INSTANCE_CONSECUTIVE_FAILURES.into());
    BreakerPolicy::deserialize(serde_json::Value::Object(table)).map_err(serde::de::Error::custom)
}

impl ClientPolicy {
    fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: String| Err((format!("{at}.{key}"), problem));
        for (key, breaker) in [
            ("breaker", &self.breaker),
            ("instance_breaker", &self.instance_breaker),
        ] {
            for (field, rate) in [
                ("failure_rate", breaker.failure_rate),
                ("slow_call_rate", breaker.slow_call_rate),
            ] {
                if !(rate > 0.0 && rate <= 1.0) {
                    return fail(
                        &format!("{key}.{field}"),
                        format!("must be in (0, 1] (got {rate})"),
                    );
                }
            }
            match breaker.window {
                super::circuit_breaker::Window::Count(0) => {
                    return fail(
                        &format!("{key}.window"),
                        "must count at least 1 call".to_owned(),
                    );
                }
                super::circuit_breaker::Window::Time(span)
                    if span < std::time::Duration::from_millis(10) =>
                {
                    return fail(
                        &format!("{key}.window"),
                        "must span at least 10ms".to_owned(),
                    );
                }
                _ => {}
            }
            if let super::circuit_breaker::Window::Count(size) = breaker.window
                && breaker.minimum_calls > size
            {
                return fail(
                    &format!("{key}.minimum_calls"),
                    format!(
                        "must not exceed the window's {size} calls (got {}): the rates would never be judged",
                        breaker.minimum_calls
                    ),
                );
            }
            if breaker.half_open_probes == 0 {
                return fail(
                    &format!("{key}.half_open_probes"),
                    "must be at least 1".to_owned(),
                );
            }
            // A zero slow-call duration makes every call slow: the breaker
            // would open on successes and never close again.
            for (field, wait) in [
                ("open_duration", breaker.open_duration),
                ("slow_call_duration", breaker.slow_call_duration),
            ] {
                if wait.is_zero() {
                    return fail(&format!("{key}.{field}"), "must be longer than zero".into());
                }
                check_wait(wait).or_else(|problem| fail(&format!("{key}.{field}"), problem))?;
            }
            for (index, name) in breaker.failures.grpc_codes.iter().enumerate() {
                if super::code_from_name(name).is_none() {
                    return fail(
                        &format!("{key}.failures.grpc_codes.{index}"),
                        format!("`{name}` is not a gRPC code name such as UNAVAILABLE"),
                    );
                }
            }
        }
        let retry = &self.retry;
        if retry.max_attempts == 0 {
            return fail("retry.max_attempts", "must be at least 1".to_owned());
        }
        for (field, wait) in [
            ("initial_backoff", Some(retry.initial_backoff)),
            ("max_backoff", Some(retry.max_backoff)),
            ("attempt_timeout", retry.attempt_timeout),
            ("budget.ttl", Some(retry.budget.ttl)),
        ] {
            if let Some(wait) = wait {
                // Zero would cut every attempt as it starts.
                if field == "attempt_timeout" && wait.is_zero() {
                    return fail(
                        "retry.attempt_timeout",
                        "must be longer than zero (leave it out for no per-attempt timeout)".into(),
                    );
                }
                check_wait(wait).or_else(|problem| fail(&format!("retry.{field}"), problem))?;
            }
        }
        for (list, patterns) in [
            ("retry.idempotent", &retry.idempotent),
            ("hedge.methods", &self.hedge.methods),
        ] {
            for (index, pattern) in patterns.iter().enumerate() {
                if pattern != "*" && !pattern.starts_with('/') {
                    return fail(
                        &format!("{list}.{index}"),
                        format!(
                            "`{pattern}` must be a gRPC path such as `/users.v1.Users/GetUser`, \
                             a prefix ending in `*` such as `/users.v1.Users/*`, or `*` (every \
                             method)"
                        ),
                    );
                }
            }
        }
        if retry.max_backoff < retry.initial_backoff {
            return fail(
                "retry.max_backoff",
                "must be at least retry.initial_backoff".to_owned(),
            );
        }
        if let Err((field, problem)) = super::budget::check(retry.budget.ttl, retry.budget.ratio) {
            return fail(&format!("retry.budget.{field}"), problem);
        }
        for (index, name) in retry.retryable_codes.iter().enumerate() {
            if super::code_from_name(name).is_none() {
                return fail(
                    &format!("retry.retryable_codes.{index}"),
                    format!("`{name}` is not a gRPC code name such as UNAVAILABLE"),
                );
            }
        }
        if self.bulkhead.max_concurrent == 0 {
            return fail("bulkhead.max_concurrent", "must be at least 1".to_owned());
        }
        for (field, size) in [
            ("max_concurrent", self.bulkhead.max_concurrent),
            ("max_queued", self.bulkhead.max_queued),
        ] {
            if size > MAX_BULKHEAD {
                return fail(
                    &format!("bulkhead.{field}"),
                    format!("must be at most {MAX_BULKHEAD} (got {size})"),
                );
            }
        }
        let queue_wait = self.bulkhead.max_queue_wait;
        if queue_wait.is_zero() {
            return fail(
                "bulkhead.max_queue_wait",
                "must be longer than zero (max_queued = 0 for no queue)".to_owned(),
            );
        }
        check_wait(queue_wait).or_else(|problem| fail("bulkhead.max_queue_wait", problem))?;
        for (field, wait) in [
            ("min_delay", self.hedge.min_delay),
            ("max_delay", self.hedge.max_delay),
        ] {
            check_wait(wait).or_else(|problem| fail(&format!("hedge.{field}"), problem))?;
        }
        if let Err((field, problem)) = self.hedge.check() {
            return fail(&format!("hedge.{field}"), problem);
        }
        Ok(())
    }
}

/// The longest wait a policy may set (a breaker's open period, a backoff, a
/// timeout): longer is a typo, and would overflow the clock.
const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest bulkhead.
const MAX_BULKHEAD: usize = 1 << 24;

/// A wait no longer than [`MAX_WAIT`]; else what is wrong with it.
fn check_wait(wait: Duration) -> Result<(), String> {
    if wait > MAX_WAIT {
        return Err(format!("must be at most 24h (got {}s)", wait.as_secs()));
    }
    Ok(())
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            breaker: BreakerPolicy::default(),
            instance_breaker: BreakerPolicy {
                consecutive_failures: INSTANCE_CONSECUTIVE_FAILURES,
                ..BreakerPolicy::default()
            },
            retry: RetryPolicy::default(),
            bulkhead: BulkheadPolicy::default(),
            hedge: HedgePolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn an_instance_breaker_table_keeps_the_instance_defaults_it_does_not_set() {
        let config = Config::from_toml_str(
            "[resilience.defaults.instance_breaker]\nopen_duration = \"5s\"\nwindow = { count = 50 }",
        )
        .unwrap();
        let breaker = &config.resilience.defaults.instance_breaker;
        assert_eq!(breaker.open_duration, Duration::from_secs(5));
        assert_eq!(breaker.consecutive_failures, 5);
        assert_eq!(
            breaker.window,
            crate::resilience::circuit_breaker::Window::Count(50)
        );
        let config = Config::from_toml_str(
            "[resilience.defaults.instance_breaker]\nconsecutive_failures = 0",
        )
        .unwrap();
        assert_eq!(
            config
                .resilience
                .defaults
                .instance_breaker
                .consecutive_failures,
            0
        );
        let err =
            Config::from_toml_str("[resilience.defaults.instance_breaker]\nopen_duraton = \"5s\"")
                .unwrap_err();
        assert!(err.to_string().contains("open_duraton"), "{err}");
    }

    #[test]
    fn a_window_too_small_for_the_minimum_is_refused() {
        let err = Config::from_toml_str("[resilience.defaults.breaker]\nwindow = { count = 10 }")
            .unwrap_err();
        assert_eq!(err.key(), "resilience.defaults.breaker.minimum_calls");
        let err = Config::from_toml_str(
            "[resilience.services.users.instance_breaker]\nwindow = { count = 0 }\nminimum_calls = 0",
        )
        .unwrap_err();
        assert_eq!(
            err.key(),
            "resilience.services.users.instance_breaker.window"
        );
        Config::from_toml_str(
            "[resilience.defaults.breaker]\nwindow = { count = 10 }\nminimum_calls = 10",
        )
        .unwrap();
    }

    #[test]
    fn sizes_and_waits_past_their_bounds_and_paths_without_a_slash_are_refused() {
        for (toml, key) in [
            (
                "[resilience.defaults.bulkhead]\nmax_concurrent = 3000000000000000000",
                "resilience.defaults.bulkhead.max_concurrent",
            ),
            (
                "[resilience.services.users.breaker]\nopen_duration = \"300000000000y\"",
                "resilience.services.users.breaker.open_duration",
            ),
            (
                "[resilience.defaults.retry]\nattempt_timeout = \"2days\"",
                "resilience.defaults.retry.attempt_timeout",
            ),
            (
                "[resilience.defaults.retry]\nidempotent = [\"/users.v1.Users/Get*\", \"users.v1.Users/List\"]",
                "resilience.defaults.retry.idempotent.1",
            ),
            (
                "[resilience.defaults.hedge]\nmethods = [\"users.v1.Users/*\"]",
                "resilience.defaults.hedge.methods.0",
            ),
            // Every call would be slow, or cut as it starts.
            (
                "[resilience.defaults.breaker]\nslow_call_duration = \"0s\"",
                "resilience.defaults.breaker.slow_call_duration",
            ),
            (
                "[resilience.services.users.instance_breaker]\nslow_call_duration = \"0s\"",
                "resilience.services.users.instance_breaker.slow_call_duration",
            ),
            (
                "[resilience.defaults.retry]\nattempt_timeout = \"0s\"",
                "resilience.defaults.retry.attempt_timeout",
            ),
            (
                "[resilience.defaults.bulkhead]\nmax_queue_wait = \"0s\"",
                "resilience.defaults.bulkhead.max_queue_wait",
            ),
        ] {
            let err = Config::from_toml_str(toml).unwrap_err();
            assert_eq!(err.key(), key, "{toml}: {err}");
        }
        Config::from_toml_str(
            "[resilience.defaults.breaker]\nopen_duration = \"24h\"\n\
             [resilience.defaults.retry]\nidempotent = [\"/users.v1.Users/Get*\", \"*\"]\n\
             [resilience.defaults.hedge]\nmethods = [\"*\"]",
        )
        .unwrap();
    }
}
