//! `[auth]`: JWT keys, JWKS, issuer, audience, leeway and API keys.

use std::{fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// The `[auth]` section. Authentication is on as soon as a key, a JWKS
/// source or an API key is configured; then every route needs credentials
/// unless its service marks it public.
///
/// Configure `issuer` and `audience`: without them a token minted for
/// another service by the same issuer key would be accepted here.
///
/// ```toml
/// [auth]
/// issuer = "https://login.example.com"
/// audience = ["shop"]
/// leeway = "30s"
///
/// [[auth.keys]]
/// kid = "2024-01"
/// algorithm = "RS256"
/// pem_file = "/etc/room619/jwt.pub.pem"
///
/// [auth.jwks]
/// file = "/etc/room619/jwks.json"   # or url = "http://idp.internal/jwks.json"
/// refresh = "5m"
///
/// [[auth.api_keys]]
/// name = "ci"
/// sha256 = "<64 hex digits: sha256 of the key>"
/// scopes = ["deploy"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The required `iss` of tokens. Default: unset (not checked).
    pub issuer: Option<String>,
    /// Accepted `aud` values; a token must name one. Default: empty (not
    /// checked, and tokens carrying `aud` are refused).
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default: `30s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Verification keys given inline or by file. Default: none.
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS document, reloaded on an interval. Default: unset.
    pub jwks: Option<JwksConfig>,
    /// API keys, stored as SHA-256 hashes. Default: none.
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::from_secs(30),
            keys: Vec::new(),
            jwks: None,
            api_keys: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// Whether any credential source is configured.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty() || self.jwks.is_some() || !self.api_keys.is_empty()
    }
}

/// A JWT signature algorithm room619 accepts. Each key has exactly one, so
/// a token cannot choose how it is checked (no `none`, no RS/HS confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256; the key is a shared secret of at least 32 bytes.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

/// One verification key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The key id tokens name in their `kid` header. Default: unset (the key
    /// verifies tokens without `kid`).
    #[serde(default)]
    pub kid: Option<String>,
    /// The algorithm this key verifies.
    pub algorithm: JwtAlgorithm,
    /// The shared secret of an `HS256` key.
    #[serde(default)]
    pub secret: Option<String>,
    /// A PEM public key (`RS256`, `ES256`, `EdDSA`).
    #[serde(default)]
    pub pem: Option<String>,
    /// A file holding a PEM public key.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
}

impl fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("pem", &self.pem.as_ref().map(|_| "<pem>"))
            .field("pem_file", &self.pem_file)
            .finish()
    }
}

/// Where a JWKS document comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// A file holding the JWKS JSON.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An `http://` URL serving the JWKS JSON (put TLS in front, e.g. a
    /// sidecar, for a remote identity provider). When it does not answer as
    /// the node starts, or answers a document with no usable key, the node
    /// starts anyway and fetches it again after 1 s, 2 s, 4 s... (at most
    /// `refresh` apart) until it loads; meanwhile a token no configured key
    /// verifies is answered `503` / `UNAVAILABLE` with `Retry-After: 1`
    /// (not as an invalid token). Once loaded, a token naming a key id no
    /// key has makes the node fetch the URL out of turn, at most once per
    /// 30 s, and wait for it (at most 2 s, at most 32 requests at once;
    /// more are refused as invalid tokens). A `file` must be readable at
    /// start (one with no usable key is read again the same way).
    #[serde(default)]
    pub url: Option<String>,
    /// How often the document is loaded again. Default: `5m`.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

/// One API key, sent by callers in the `x-api-key` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's name: the principal's subject.
    pub name: String,
    /// The SHA-256 of the key, as 64 hex digits (`printf %s KEY | sha256sum`).
    pub sha256: String,
    /// Scopes granted. Default: none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted. Default: none.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET: usize = 32;

impl AuthConfig {
    /// Checks the section; the error names the key (relative to `auth`).
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (i, key) in self.keys.iter().enumerate() {
            let at = |field: &str| format!("keys.{i}.{field}");
            let pem_sources = usize::from(key.pem.is_some()) + usize::from(key.pem_file.is_some());
            if key.algorithm == JwtAlgorithm::HS256 {
                match &key.secret {
                    Some(secret) if secret.len() >= MIN_SECRET => {}
                    Some(_) => {
                        return Err((at("secret"), format!("must be at least {MIN_SECRET} bytes")));
                    }
                    None => return Err((at("secret"), "is required for HS256".to_owned())),
                }
                if pem_sources > 0 {
                    return Err((at("pem"), "HS256 keys take `secret`, not a PEM".to_owned()));
                }
            } else {
                if key.secret.is_some() {
                    return Err((at("secret"), "only HS256 keys take a secret".to_owned()));
                }
                if pem_sources != 1 {
                    return Err((
                        at("pem"),
                        "give exactly one of `pem` and `pem_file`".to_owned(),
                    ));
                }
                if let Some(pem) = &key.pem {
                    super::keys::decoding_key(key.algorithm, pem.as_bytes())
                        .map_err(|err| (at("pem"), err))?;
                }
            }
        }
        if let Some(jwks) = &self.jwks {
            match (&jwks.file, &jwks.url) {
                (Some(_), None) => {}
                (None, Some(url)) if url.starts_with("http://") => {}
                (None, Some(_)) => {
                    return Err(("jwks.url".to_owned(), "must be an http:// URL".to_owned()));
                }
                _ => {
                    return Err((
                        "jwks".to_owned(),
                        "give exactly one of `file` and `url`".to_owned(),
                    ));
                }
            }
            if jwks.refresh < Duration::from_secs(1) {
                return Err(("jwks.refresh".to_owned(), "must be at least 1s".to_owned()));
            }
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.name.trim().is_empty() {
                return Err((format!("api_keys.{i}.name"), "must not be empty".to_owned()));
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err((
                    format!("api_keys.{i}.sha256"),
                    "must be 64 hex digits".to_owned(),
                ));
            }
        }
        Ok(())
    }
}
