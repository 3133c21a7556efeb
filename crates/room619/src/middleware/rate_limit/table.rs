//! The rules of a [`RateLimitConfig`], looked up by route and method.

use std::sync::Arc;

use ipnet::IpNet;

use super::{RateLimitConfig, RateLimitKey, config::parse_net, gcra::Gcra};
use crate::{Error, Result};

/// One rule, ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Names the rule in counter keys: `METHOD route`, the same on every node.
    pub(crate) id: Arc<str>,
    pub(crate) gcra: Gcra,
    pub(crate) key: RateLimitKey,
}

/// The rules of one route, method-specific ones first.
type Rules = Vec<(Option<http::Method>, Rule)>;

/// The compiled `[rate_limit]` section.
pub(crate) struct Table {
    router: matchit::Router<Rules>,
    pub(crate) trusted: Vec<IpNet>,
    pub(crate) empty: bool,
}

impl Table {
    pub(crate) fn new(config: &RateLimitConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|(key, problem)| Error::config(format!("rate_limit.{key}: {problem}")))?;
        let mut grouped: Vec<(String, Rules)> = Vec::new();
        for rule in &config.rules {
            let method = rule
                .method
                .as_deref()
                .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
            let compiled = Rule {
                id: format!(
                    "{} {}",
                    method.as_ref().map_or("*", http::Method::as_str),
                    rule.route
                )
                .into(),
                gcra: Gcra::new(rule.limit, rule.period, rule.burst),
                key: rule.key,
            };
            match grouped.iter_mut().find(|(route, _)| *route == rule.route) {
                Some((_, rules)) => rules.push((method, compiled)),
                None => grouped.push((rule.route.clone(), vec![(method, compiled)])),
            }
        }
        let mut router = matchit::Router::new();
        for (route, mut rules) in grouped {
            rules.sort_by_key(|(method, _)| method.is_none());
            router.insert(route.clone(), rules).map_err(|err| {
                Error::config(format!(
                    "rate_limit: route `{route}` cannot be added: {err}"
                ))
            })?;
        }
        Ok(Self {
            router,
            trusted: config
                .trusted_proxies
                .iter()
                .filter_map(|e| parse_net(e))
                .collect(),
            empty: config.rules.is_empty(),
        })
    }

    /// The rule for `method` on `path`, if any.
    pub(crate) fn lookup(&self, method: &http::Method, path: &str) -> Option<&Rule> {
        let found = self.router.at(path).ok()?;
        found
            .value
            .iter()
            .find(|(m, _)| m.as_ref().is_none_or(|m| m == method))
            .map(|(_, rule)| rule)
    }
}
