//! `[http]`: what browsers and HTTP clients need on top of the REST routes —
//! CORS and response compression. Both are opt-in and apply to the HTTP
//! side only (gRPC has its own compression).
//!
//! ```toml
//! [http]
//! compression = true                 # gzip when the client accepts it
//! [http.cors]
//! allow_origins = ["https://app.example.com"]   # or ["*"], not with credentials
//! allow_credentials = true
//! ```
//!
//! CORS runs outside authentication, so preflight requests (which carry no
//! credentials) are answered. With `allow_credentials`, no list may hold
//! `*` (browsers read it as a name then): such a configuration is refused,
//! naming the entry.

mod cors;

use serde::{Deserialize, Serialize};

pub use cors::CorsConfig;

/// The `[http]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Compress responses with gzip when the client accepts it. Default: `false`.
    pub compression: bool,
    /// Answer CORS preflights and add CORS headers. Default: unset (no CORS).
    pub cors: Option<CorsConfig>,
}

impl HttpConfig {
    /// Checks the section; the error names the key (relative to `http`).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        match &self.cors {
            Some(cors) => cors
                .validate()
                .map_err(|(key, problem)| (format!("cors.{key}"), problem)),
            None => Ok(()),
        }
    }

    /// Whether neither compression nor CORS is on.
    pub(crate) fn is_plain(&self) -> bool {
        !self.compression && self.cors.is_none()
    }

    /// Puts compression and CORS (outermost) around `router`.
    pub(crate) fn apply(&self, mut router: axum::Router) -> axum::Router {
        if self.compression {
            router = router.layer(tower_http::compression::CompressionLayer::new().gzip(true));
        }
        if let Some(cors) = &self.cors {
            router = router.layer(cors.layer());
        }
        router
    }
}
