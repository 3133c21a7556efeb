//! The rules of a [`RateLimitConfig`], looked up by route and method.

use std::sync::Arc;

use super::{RateLimitConfig, RateLimitKey, client_ip::Proxies, config::parse_net, gcra::Gcra};
use crate::{Error, Result};

/// One rule, ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Names the rule in counter keys: `METHOD route` (`*` for every
    /// method), the same on every node and across updates: a rule whose
    /// limit changes keeps its counters, bounded by the new limit when read
    /// (see [`Gcra::bound`]).
    pub(crate) id: Arc<str>,
    pub(crate) gcra: Gcra,
    pub(crate) key: RateLimitKey,
}

/// The rules of one route, method-specific ones first.
type Rules = Vec<(Option<http::Method>, Rule)>;

/// The compiled `[rate_limit]` section.
pub(crate) struct Table {
    router: matchit::Router<Rules>,
    pub(crate) proxies: Proxies,
    pub(crate) empty: bool,
    /// The allowance of refused credentials per client IP, when limited.
    pub(crate) refused: Option<Gcra>,
}

impl Table {
    pub(crate) fn new(config: &RateLimitConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|(key, problem)| Error::config(format!("rate_limit.{key}: {problem}")))?;
        let mut grouped: Vec<(String, Rules)> = Vec::new();
        for rule in &config.rules {
            // Validated: one rule per route and method, so none is shadowed.
            let method = rule.http_method();
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
            proxies: Proxies {
                trusted: config
                    .trusted_proxies
                    .iter()
                    .filter_map(|e| parse_net(e))
                    .collect(),
                header: config.forwarded_header,
            },
            empty: config.rules.is_empty(),
            refused: config
                .refused_credentials
                .map(|refused| Gcra::new(refused.limit, refused.period, refused.burst)),
        })
    }

    /// The rule for `method` on `path`, if any. `HEAD` (which axum answers
    /// with the `GET` handler) falls under the `GET` rules unless it has its
    /// own.
    pub(crate) fn lookup(&self, method: &http::Method, path: &str) -> Option<&Rule> {
        crate::middleware::for_method(self.router.at(path).ok()?.value, method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn head_falls_under_the_get_rules_unless_it_has_its_own() {
        let config = Config::from_toml_str(
            "[[rate_limit.rules]]\nroute = \"/v1/reports\"\nmethod = \"GET\"\nlimit = 1\n\
             [[rate_limit.rules]]\nroute = \"/v1/reports\"\nlimit = 9\n\
             [[rate_limit.rules]]\nroute = \"/v1/items\"\nmethod = \"GET\"\nlimit = 1\n\
             [[rate_limit.rules]]\nroute = \"/v1/items\"\nmethod = \"HEAD\"\nlimit = 5\n",
        )
        .unwrap();
        let table = Table::new(&config.rate_limit).unwrap();
        let id = |method: http::Method, path| {
            table.lookup(&method, path).map(|rule| rule.id.to_string())
        };
        assert_eq!(
            id(http::Method::HEAD, "/v1/reports").as_deref(),
            Some("GET /v1/reports")
        );
        assert_eq!(
            id(http::Method::POST, "/v1/reports").as_deref(),
            Some("* /v1/reports")
        );
        assert_eq!(
            id(http::Method::HEAD, "/v1/items").as_deref(),
            Some("HEAD /v1/items")
        );
        assert_eq!(id(http::Method::POST, "/v1/items"), None);
    }

    #[test]
    fn a_rule_for_the_method_star_is_the_rule_for_every_method() {
        let config = Config::from_toml_str(
            "[[rate_limit.rules]]\nroute = \"/v1/items\"\nmethod = \"*\"\nlimit = 9\n\
             [[rate_limit.rules]]\nroute = \"/v1/items\"\nmethod = \"GET\"\nlimit = 1\n",
        )
        .unwrap();
        let table = Table::new(&config.rate_limit).unwrap();
        let id = |method: http::Method| {
            table
                .lookup(&method, "/v1/items")
                .map(|rule| rule.id.to_string())
        };
        assert_eq!(id(http::Method::POST).as_deref(), Some("* /v1/items"));
        assert_eq!(id(http::Method::GET).as_deref(), Some("GET /v1/items"));
    }
}
