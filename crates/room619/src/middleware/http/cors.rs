//! [`CorsConfig`] and the `tower-http` layer it makes.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// CORS settings (`[http.cors]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed, such as `https://app.example.com`, or `["*"]` for
    /// any. Default: none.
    pub allow_origins: Vec<String>,
    /// Methods allowed, or `["*"]` for any (not with `allow_credentials`).
    /// Default: `GET, POST, PUT, PATCH, DELETE`.
    pub allow_methods: Vec<String>,
    /// Request headers allowed, or `["*"]` for any (not with
    /// `allow_credentials`). Default: `authorization, content-type,
    /// x-request-id`.
    pub allow_headers: Vec<String>,
    /// Response headers the browser may read, or `["*"]` for all (not with
    /// `allow_credentials`). Default: `x-request-id`.
    pub expose_headers: Vec<String>,
    /// Allow cookies and `authorization`; not with `*` in any list (with
    /// credentials, browsers read `*` as a name, not as "any"). Default:
    /// `false`.
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer. Default: `10m`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Self {
            allow_origins: Vec::new(),
            allow_methods: strings(&["GET", "POST", "PUT", "PATCH", "DELETE"]),
            allow_headers: strings(&["authorization", "content-type", "x-request-id"]),
            expose_headers: strings(&["x-request-id"]),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    fn any_origin(&self) -> bool {
        self.allow_origins.iter().any(|o| o == "*")
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if self.any_origin() && self.allow_origins.len() > 1 {
            return Err((
                "allow_origins".into(),
                "`*` cannot be listed with other origins".into(),
            ));
        }
        if self.any_origin() && self.allow_credentials {
            return Err((
                "allow_credentials".into(),
                "cannot be true with the origin `*`".into(),
            ));
        }
        for (i, origin) in self.allow_origins.iter().enumerate() {
            if origin != "*" && (HeaderValue::from_str(origin).is_err() || !origin.contains("://"))
            {
                return Err((
                    format!("allow_origins.{i}"),
                    format!("`{origin}` is not an origin"),
                ));
            }
        }
        for (i, method) in self.allow_methods.iter().enumerate() {
            if Method::from_bytes(method.as_bytes()).is_err() {
                return Err((
                    format!("allow_methods.{i}"),
                    format!("`{method}` is not a method"),
                ));
            }
        }
        for (key, names) in [
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                if HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err((
                        format!("{key}.{i}"),
                        format!("`{name}` is not a header name"),
                    ));
                }
            }
        }
        self.no_wildcard_with_credentials()
    }

    /// With `allow_credentials`, no `*` in the lists: browsers would read it
    /// as a name, and `tower-http` refuses the combination by panicking when
    /// the layer is applied.
    fn no_wildcard_with_credentials(&self) -> Result<(), (String, String)> {
        if !self.allow_credentials {
            return Ok(());
        }
        for (key, items) in [
            ("allow_methods", &self.allow_methods),
            ("allow_headers", &self.allow_headers),
            ("expose_headers", &self.expose_headers),
        ] {
            if let Some(i) = items.iter().position(|item| item == "*") {
                return Err((
                    format!("{key}.{i}"),
                    "`*` cannot be used with allow_credentials = true; list the names".into(),
                ));
            }
        }
        Ok(())
    }

    /// The layer; the configuration was validated, invalid entries are skipped.
    pub(crate) fn layer(&self) -> CorsLayer {
        let origin = if self.any_origin() {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.allow_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        let names = |names: &[String]| -> Vec<HeaderName> {
            names
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        };
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(
                self.allow_methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect::<Vec<_>>(),
            )
            .allow_headers(names(&self.allow_headers))
            .expose_headers(names(&self.expose_headers))
            .allow_credentials(self.allow_credentials)
            .max_age(self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use tower::Layer as _;

    use super::CorsConfig;

    /// `tower-http` panics when the layer is applied if credentials go with
    /// a wildcard origin, method, allowed or exposed header list; such a
    /// configuration used to pass validation and panic when the node was
    /// built. Now every configuration that validates makes a usable layer,
    /// and only those combinations are refused.
    #[test]
    fn every_configuration_that_validates_makes_a_usable_layer() {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let origins = [&["*"][..], &["https://app.example.com"], &[]];
        let methods = [&["*"][..], &["*", "GET"], &["GET"]];
        let headers = [&["*"][..], &["*", "x-a"], &["x-a"]];
        for allow_credentials in [false, true] {
            for origin in origins {
                for method in methods {
                    for allowed in headers {
                        for exposed in headers {
                            let config = CorsConfig {
                                allow_origins: strings(origin),
                                allow_methods: strings(method),
                                allow_headers: strings(allowed),
                                expose_headers: strings(exposed),
                                allow_credentials,
                                ..CorsConfig::default()
                            };
                            let wildcard = [origin, method, allowed, exposed]
                                .iter()
                                .any(|list| list.contains(&"*"));
                            assert_eq!(
                                config.validate().is_ok(),
                                !(allow_credentials && wildcard),
                                "{config:?}"
                            );
                            if config.validate().is_ok() {
                                drop(config.layer().layer(()));
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_wildcard_with_credentials_names_its_list_and_entry() {
        for (key, list) in [
            ("allow_methods", "allow_methods = [\"GET\", \"*\"]"),
            ("allow_headers", "allow_headers = [\"x-a\", \"*\"]"),
            ("expose_headers", "expose_headers = [\"x-a\", \"*\"]"),
        ] {
            let err = crate::config::Config::from_toml_str(&format!(
                "[http.cors]\nallow_origins = [\"https://app.example.com\"]\n\
                 allow_credentials = true\n{list}\n"
            ))
            .unwrap_err();
            assert_eq!(err.key(), format!("http.cors.{key}.1"), "{err}");
            assert!(err.problem().contains("allow_credentials"), "{err}");
        }
    }
}
