//! Access tokens (`EdDSA` JWTs) and refresh tokens (random, stored hashed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use ring::rand::{SecureRandom as _, SystemRandom};
use room619::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shop_proto::auth::v1::TokenPair;

use super::{AuthSettings, Keys};

/// The scope of the token the auth service calls the users service with.
pub const SERVICE_SCOPE: &str = "users:create";
/// The subject of that token.
pub const SERVICE_SUBJECT: &str = "service:auth";
/// How long that token is valid.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The longest lifetime accepted for a token (ten years).
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The claims of the access tokens the auth service signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer (`[app.shop.auth] issuer`).
    pub iss: String,
    /// The audience (`[app.shop.auth] audience`).
    pub aud: String,
    /// The account id, or `service:auth` for the service's own token.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// A unique id of the token.
    pub jti: String,
}

/// Signs access tokens and makes refresh tokens.
#[derive(Debug, Clone)]
pub(crate) struct Issuer {
    keys: Keys,
    iss: String,
    aud: String,
    scope: String,
    access_ttl: Duration,
    refresh_ttl: Duration,
    session_ttl: Duration,
}

/// A new refresh token: what the client gets, and what is stored.
pub(crate) struct NewRefresh {
    pub(crate) token: String,
    pub(crate) hash: String,
    pub(crate) expires_at: i64,
    /// When its family ends, if it starts one (a token rotated in keeps
    /// its family's end, and never outlives it).
    pub(crate) family_expires_at: i64,
}

impl Issuer {
    /// # Errors
    ///
    /// `Config` when a lifetime is zero or longer than ten years.
    pub(crate) fn new(keys: Keys, settings: &AuthSettings) -> Result<Self> {
        for (key, ttl) in [
            ("access_token_ttl", settings.access_token_ttl),
            ("refresh_token_ttl", settings.refresh_token_ttl),
            ("session_ttl", settings.session_ttl),
        ] {
            if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
                return Err(Error::config(format!(
                    "app.shop.auth.{key}: must be between 1s and 10 years"
                )));
            }
        }
        Ok(Self {
            keys,
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            scope: settings.scope.clone(),
            access_ttl: settings.access_token_ttl,
            refresh_ttl: settings.refresh_token_ttl,
            session_ttl: settings.session_ttl,
        })
    }

    /// A signed access token for `subject` with `scope`, valid for `ttl`.
    fn sign(&self, subject: &str, scope: &str, ttl: Duration) -> Result<String> {
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.iss.clone(),
            aud: self.aud.clone(),
            sub: subject.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            scope: scope.to_owned(),
            jti: random_id()?,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.keys.kid().to_owned());
        jsonwebtoken::encode(&header, &claims, self.keys.signing_key())
            .map_err(|err| Error::internal(format!("cannot sign a token: {err}")))
    }

    /// The token the service calls the users service with.
    pub(crate) fn service_token(&self) -> Result<String> {
        self.sign(SERVICE_SUBJECT, SERVICE_SCOPE, SERVICE_TOKEN_TTL)
    }

    /// A new refresh token, not yet stored.
    pub(crate) fn new_refresh(&self) -> Result<NewRefresh> {
        let mut bytes = [0_u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::internal("the system random source failed"))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let seconds = |ttl: Duration| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let now = now();
        let family_expires_at = now.saturating_add(seconds(self.session_ttl));
        Ok(NewRefresh {
            hash: refresh_hash(&token),
            token,
            expires_at: now
                .saturating_add(seconds(self.refresh_ttl))
                .min(family_expires_at),
            family_expires_at,
        })
    }

    /// The pair for `account` with the (already stored) `refresh` token.
    pub(crate) fn pair(&self, account: &str, refresh: NewRefresh) -> Result<TokenPair> {
        Ok(TokenPair {
            access_token: self.sign(account, &self.scope, self.access_ttl)?,
            refresh_token: refresh.token,
            token_type: "Bearer".to_owned(),
            expires_in: u32::try_from(self.access_ttl.as_secs()).unwrap_or(u32::MAX),
        })
    }
}

/// The stored form of a refresh token: its SHA-256, hex.
pub(crate) fn refresh_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex digits.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Seconds since the epoch, as stored.
pub(crate) fn now() -> i64 {
    i64::try_from(now_secs()).unwrap_or(i64::MAX)
}

/// A random UUID (version 4), for account ids, token families and `jti`.
pub(crate) fn random_id() -> Result<String> {
    let mut bytes = [0_u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system random source failed"))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex(&bytes);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}
