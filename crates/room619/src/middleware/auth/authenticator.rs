//! [`Authenticator`]: turns the credentials of a request into a
//! [`Principal`], or says why it cannot.

use std::{
    collections::HashSet,
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::future::BoxFuture;
use http::{HeaderMap, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, Validation, decode, decode_header, errors::ErrorKind};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{
    AuthConfig, Credential, Principal,
    cache::{self, TokenCache},
    keys::KeyRing,
    refetch::Refetch,
};
use crate::{Result, middleware::sensitive::API_KEY_HEADER};

/// Why credentials were refused. Logged at debug level; the caller only
/// learns that the token is invalid, or that the keys to check it are not
/// loaded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    reason: String,
    keys_pending: bool,
    /// The token names a key id that no key has.
    unknown_kid: bool,
    /// The credentials could be a guess: an API key no key matches, a
    /// token no key's signature verifies, or one that does not even
    /// decode. Not a token that a key signed but that expired or names
    /// another audience, nor one of a key id not loaded yet, nor another
    /// scheme's credentials: legitimate clients send those.
    guess: bool,
}

impl Refused {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            keys_pending: false,
            unknown_kid: false,
            guess: false,
        }
    }

    /// A refusal of credentials that could be a guess (see [`Refused::guess`]).
    fn guess(reason: impl Into<String>) -> Self {
        Self {
            guess: true,
            ..Self::new(reason)
        }
    }

    /// Whether the credentials could be a guess: counted against their
    /// client by `[rate_limit.refused_credentials]`.
    pub(crate) fn is_guess(&self) -> bool {
        self.guess
    }

    /// Whether the token might have been valid: no key matched it while the
    /// JWKS has not been loaded yet.
    pub(crate) fn keys_pending(&self) -> bool {
        self.keys_pending
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

struct ApiKey {
    name: String,
    hash: [u8; 32],
    scopes: Vec<String>,
    roles: Vec<String>,
}

/// Verifies bearer JWTs and API keys against the `[auth]` configuration.
pub struct Authenticator {
    keys: KeyRing,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
    api_keys: Vec<ApiKey>,
    verified: TokenCache,
    /// Set while a configured JWKS has not been loaded once.
    jwks_pending: AtomicBool,
    /// Fetches of a JWKS URL out of turn, for tokens naming an unknown key
    /// id (none without a JWKS URL).
    refetch: Option<Refetch>,
}

/// The claims room619 reads. Typed, so a claim of the wrong JSON type (a
/// string `exp`, say) makes the token invalid instead of absent.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: serde_json::Number,
    #[serde(default, rename = "nbf")]
    _nbf: Option<f64>,
    #[serde(default)]
    scope: Option<Words>,
    #[serde(default)]
    scp: Option<Words>,
    #[serde(default)]
    roles: Option<Words>,
}

/// A claim written as a list of strings (Spring Authorization Server's
/// `scope`), or as one string of space-separated words (RFC 8693's `scope`,
/// Azure AD's `scp`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Words {
    List(Vec<String>),
    Text(String),
}

impl Words {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::List(words) => words,
            Self::Text(text) => text.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

impl Claims {
    /// `exp` in seconds; 0 (never cached) when it is not a whole number.
    fn exp_secs(&self) -> u64 {
        self.exp.as_u64().unwrap_or(0)
    }
}

impl Authenticator {
    /// An authenticator for `config` (its JWKS, if any, is loaded separately).
    ///
    /// # Errors
    ///
    /// `Config` when a key cannot be read or parsed.
    pub fn new(config: &AuthConfig) -> Result<Self> {
        let api_keys = config
            .api_keys
            .iter()
            .map(|key| {
                let mut hash = [0_u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = key
                        .sha256
                        .get(i * 2..i * 2 + 2)
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                        .unwrap_or_default();
                }
                ApiKey {
                    name: key.name.clone(),
                    hash,
                    scopes: key.scopes.clone(),
                    roles: key.roles.clone(),
                }
            })
            .collect();
        Ok(Self {
            keys: KeyRing::new(&config.keys)?,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
            api_keys,
            verified: TokenCache::default(),
            jwks_pending: AtomicBool::new(config.jwks.is_some()),
            refetch: config
                .jwks
                .as_ref()
                .is_some_and(|jwks| jwks.url.is_some() && jwks.file.is_none())
                .then(Refetch::new),
        })
    }

    /// Replaces the JWKS keys; returns how many were usable. Verified
    /// tokens are forgotten when the keys changed (one added, removed or
    /// changed), so a retired key stops working at once; a document with
    /// the same keys (every periodic reload with no rotation, every fetch
    /// out of turn for a made-up key id) keeps them, so it costs no client
    /// a signature check.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the document has no usable key: the keys loaded
    /// before stay, and a JWKS never loaded is still pending.
    pub(crate) fn set_jwks(&self, set: &jsonwebtoken::jwk::JwkSet) -> Result<usize> {
        let loaded = self.keys.set_jwks(set)?;
        if loaded.changed {
            self.verified.clear();
        }
        self.jwks_pending.store(false, Ordering::Release);
        Ok(loaded.keys)
    }

    /// Whether a configured JWKS has not been loaded yet (its URL did not
    /// answer so far): tokens its keys would verify are refused meanwhile.
    pub(crate) fn jwks_pending(&self) -> bool {
        self.jwks_pending.load(Ordering::Acquire)
    }

    /// The fetches of the JWKS URL out of turn, for the JWKS task.
    pub(crate) fn refetch(&self) -> Option<&Refetch> {
        self.refetch.as_ref()
    }

    /// For credentials `refused` because the token names a key id no key
    /// has, with the JWKS loaded from a URL: asks for a fetch of it out of
    /// turn (at most one per 30 s) and returns what to wait for before
    /// checking the credentials again (the fetch, for at most 2 s; it holds
    /// one of 32 places, given back when it ends or is dropped). `None`: the
    /// refusal stands, also when 32 requests wait already.
    pub(crate) fn refetch_for(&self, refused: &Refused) -> Option<BoxFuture<'static, ()>> {
        if !refused.unknown_kid || refused.keys_pending {
            return None;
        }
        self.refetch.as_ref()?.ask()
    }

    /// The principal of a request with these headers: `Ok(None)` when it
    /// carries no credentials, `Err` when they are invalid.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Principal>, Refused> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            match bearer_token(value.as_bytes()) {
                Ok(token) => return self.verify_jwt(token).map(Some),
                // Another scheme (a staging site's `Basic` gate) is not for
                // this service: an API key beside it still is.
                Err(refused) if names_bearer(value.as_bytes()) => return Err(refused),
                Err(refused) => {
                    return match headers.get(API_KEY_HEADER) {
                        Some(key) => self.verify_api_key(key.as_bytes()).map(Some),
                        None => Err(refused),
                    };
                }
            }
        }
        if let Some(value) = headers.get(API_KEY_HEADER) {
            return self.verify_api_key(value.as_bytes()).map(Some);
        }
        Ok(None)
    }

    fn verify_jwt(&self, token: &[u8]) -> Result<Principal, Refused> {
        // A cached token was checked whole: bytes equal to it are it.
        if let Some(principal) = self.verified.get(token) {
            return Ok(principal);
        }
        let token = std::str::from_utf8(token)
            .map_err(|_| Refused::guess("authorization header is not text"))?;
        let header = decode_header(token)
            .map_err(|err| Refused::guess(format!("bad token header: {err}")))?;
        // Read before the keys: a token verified with keys a JWKS reload
        // retires meanwhile is not remembered.
        let generation = self.verified.generation();
        let kid = header.kid.as_deref();
        let candidates = self.keys.candidates(kid, header.alg);
        if candidates.is_empty() {
            return Err(Refused {
                reason: format!("no key for kid {kid:?} and alg {:?}", header.alg),
                keys_pending: self.jwks_pending(),
                unknown_kid: kid.is_some_and(|kid| !self.keys.knows(kid)),
                guess: false,
            });
        }
        let validation = self.validation(header.alg);
        // Several keys may share a kid (or have none): the first whose
        // signature matches decides.
        let mut last_refusal = None;
        let mut verified = None;
        for key in candidates {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    verified = Some((key.kid, data.claims));
                    break;
                }
                Err(err) if another_key_may_verify(err.kind()) => last_refusal = Some(err),
                // Not even a token (checked before its signature): garbage.
                Err(err)
                    if matches!(err.kind(), ErrorKind::InvalidToken | ErrorKind::Base64(_)) =>
                {
                    return Err(Refused::guess(format!("token rejected: {err}")));
                }
                // The signature held: the token is one a key signed.
                Err(err) => return Err(Refused::new(format!("token rejected: {err}"))),
            }
        }
        let Some((kid, claims)) = verified else {
            let reason = last_refusal.map_or_else(
                || "no key verified the token".to_owned(),
                |err| format!("token rejected: {err}"),
            );
            return Err(Refused::guess(reason));
        };
        if !header_and_claims_are_utf8(token) {
            return Err(Refused::new("token header or claims are not UTF-8"));
        }
        let until = claims.exp_secs().saturating_add(self.leeway);
        let mut scopes: HashSet<String> = claims
            .scope
            .map(Words::into_vec)
            .unwrap_or_default()
            .into_iter()
            .collect();
        scopes.extend(claims.scp.map(Words::into_vec).unwrap_or_default());
        let principal = Principal::new(
            claims.sub,
            scopes,
            claims.roles.map(Words::into_vec).unwrap_or_default(),
            Credential::Jwt { kid },
        );
        if until > cache::now() {
            self.verified
                .insert(token, principal.clone(), until, generation);
        }
        Ok(principal)
    }

    /// What a token signed with `algorithm` must pass besides its signature.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // With no audience configured a token naming one is refused (RFC
        // 7519 §4.1.3: this service cannot be among those it names).
        if !self.audience.is_empty() {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn verify_api_key(&self, presented: &[u8]) -> Result<Principal, Refused> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Compare against every key, in constant time each, so timing says
        // nothing about which key (if any) matched.
        let mut found = None;
        for key in &self.api_keys {
            if bool::from(key.hash.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        let key = found.ok_or_else(|| Refused::guess("unknown API key"))?;
        Ok(Principal::new(
            key.name.clone(),
            key.scopes.clone(),
            key.roles.clone(),
            Credential::ApiKey {
                name: key.name.clone(),
            },
        ))
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("api_keys", &self.api_keys.len())
            .finish_non_exhaustive()
    }
}

/// Whether a token refused with a key with this error may still be verified
/// by another key: its signature (or the key) did not fit. Any other error
/// is about the token itself, whichever key signed it.
fn another_key_may_verify(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidKeyFormat
    )
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any
/// case, the token trimmed of spaces).
fn bearer_token(value: &[u8]) -> Result<&[u8], Refused> {
    const SCHEME: &[u8] = b"bearer ";
    value
        .split_at_checked(SCHEME.len())
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(SCHEME))
        .map(|(_, token)| token.trim_ascii())
        .ok_or_else(|| Refused::new("authorization scheme is not Bearer"))
}

/// Whether an `Authorization` value's scheme is `Bearer` (with a token or
/// not).
fn names_bearer(value: &[u8]) -> bool {
    let scheme = value
        .split(u8::is_ascii_whitespace)
        .next()
        .unwrap_or_default();
    scheme.eq_ignore_ascii_case(b"bearer")
}

/// RFC 7519 §7.2: a JWT's header and claims are UTF-8 JSON. serde skips the
/// bytes of members it ignores without checking them, so a signed token with
/// invalid UTF-8 in an unknown claim would otherwise pass; this checks both
/// segments whole (once per token: verified tokens are cached).
fn header_and_claims_are_utf8(token: &str) -> bool {
    token.split('.').take(2).all(|segment| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .is_ok_and(|bytes| std::str::from_utf8(&bytes).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const SECRET: &str = "fuzzing-secret-fuzzing-secret-32";

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_its_token_trimmed() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "Bearer abc\t"] {
            assert_eq!(bearer_token(value.as_bytes()).unwrap(), b"abc", "{value:?}");
        }
        for value in [
            "Basic abc",
            "Bearer",
            "Bearerabc",
            "Bearer\tabc",
            "",
            "Bear abc",
        ] {
            let refused = bearer_token(value.as_bytes()).unwrap_err();
            assert_eq!(
                refused.reason, "authorization scheme is not Bearer",
                "{value:?}"
            );
        }
        let refused = authenticator().verify_jwt(b"\xff\xfe").unwrap_err();
        assert_eq!(refused.reason, "authorization header is not text");
    }

    fn authenticator() -> Authenticator {
        let config = Config::from_toml_str(&format!(
            "[auth]\nissuer = \"https://issuer.test\"\naudience = [\"shop\"]\n\
             [[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n"
        ))
        .unwrap();
        Authenticator::new(&config.auth).unwrap()
    }

    fn hs256(claims: &[u8]) -> String {
        signed(br#"{"alg":"HS256","kid":"hs"}"#, claims, SECRET)
    }

    /// `header.claims` signed with the HS256 `secret`.
    fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{input}.{signature}")
    }

    /// Found by the `jwt` fuzz target (`fuzz/seeds/jwt/invalid_utf8_claim`).
    #[test]
    fn signed_claims_with_invalid_utf8_are_refused() {
        let auth = authenticator();
        let claims = |odd: &[u8]| {
            let mut claims = br#"{"qlg":"H"#.to_vec();
            claims.extend_from_slice(odd);
            claims.extend_from_slice(
                br#"","sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop"}"#,
            );
            claims
        };
        assert!(
            auth.verify_jwt(hs256(&claims(b"x")).as_bytes()).is_ok(),
            "the valid twin passes"
        );
        let refused = auth.verify_jwt(hs256(&claims(b"\xad\xcd\xca\xc0")).as_bytes());
        assert!(refused.is_err());
    }

    /// Found by the `jwt` fuzz target (`fuzz/seeds/jwt/huge_exponent_claim`):
    /// a claim room619 does not read is not decoded, so a number in it that
    /// no `f64` holds (JSON's grammar allows any) does not refuse the token;
    /// one in `exp` does.
    #[test]
    fn numbers_beyond_f64_are_refused_only_where_they_are_read() {
        let auth = authenticator();
        let claims = |extra: &str, exp: &str| {
            format!(
                r#"{{"sub":"alice","exp":{exp},"other":{extra},"iss":"https://issuer.test","aud":"shop"}}"#
            )
        };
        let token = hs256(claims("4102444899E9999999999901", "8204889600").as_bytes());
        assert!(auth.verify_jwt(token.as_bytes()).is_ok());
        let token = hs256(claims("1", "8204889600E999999").as_bytes());
        assert!(auth.verify_jwt(token.as_bytes()).is_err());
    }

    fn without_audience() -> Authenticator {
        let sha = hex(&Sha256::digest(b"the-api-key"));
        let config = Config::from_toml_str(&format!(
            "[auth]\n[[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n\
             [[auth.api_keys]]\nname = \"ci\"\nsha256 = \"{sha}\"\n"
        ))
        .unwrap();
        Authenticator::new(&config.auth).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut hex, byte| {
            std::fmt::Write::write_fmt(&mut hex, format_args!("{byte:02x}")).unwrap();
            hex
        })
    }

    /// RFC 7519 §4.1.3: a service that names no audience is not among those
    /// a token names, so it refuses such a token (as `AuthConfig` says).
    #[test]
    fn without_an_audience_a_token_naming_one_is_refused() {
        let auth = without_audience();
        let plain = hs256(br#"{"sub":"alice","exp":8204889600}"#);
        assert!(auth.verify_jwt(plain.as_bytes()).is_ok());
        for aud in [r#""billing""#, r#"["billing"]"#, "[]"] {
            let claims = format!(r#"{{"sub":"alice","exp":8204889600,"aud":{aud}}}"#);
            let refused = auth.verify_jwt(hs256(claims.as_bytes()).as_bytes());
            assert!(refused.is_err(), "aud {aud} was accepted");
        }
    }

    /// Azure AD writes `scp` as one space-separated string.
    #[test]
    fn scopes_and_roles_are_read_as_lists_or_as_space_separated_text() {
        let auth = authenticator();
        let claims = br#"{"sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop","scp":"User.Read Mail.Read","roles":["admin"],"scope":"a"}"#;
        let principal = auth.verify_jwt(hs256(claims).as_bytes()).unwrap();
        for scope in ["User.Read", "Mail.Read", "a"] {
            assert!(principal.has_scope(scope), "{scope}");
        }
        assert!(principal.has_role("admin"));
        let claims = br#"{"sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop","scp":["x"],"roles":"admin ops"}"#;
        let principal = auth.verify_jwt(hs256(claims).as_bytes()).unwrap();
        assert!(principal.has_scope("x"));
        assert!(principal.has_role("ops"));
        let claims =
            br#"{"sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop","scp":7}"#;
        assert!(
            auth.verify_jwt(hs256(claims).as_bytes()).is_err(),
            "a number is no scope"
        );
    }

    /// Spring Authorization Server writes `scope` as a JSON array.
    #[test]
    fn a_scope_claim_is_read_as_a_list_too() {
        let auth = authenticator();
        let claims = br#"{"sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop","scope":["orders:read","orders:write"]}"#;
        let principal = auth.verify_jwt(hs256(claims).as_bytes()).unwrap();
        assert!(principal.has_scope("orders:read"));
        assert!(principal.has_scope("orders:write"));
        let claims = br#"{"sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop","scope":"a b"}"#;
        let principal = auth.verify_jwt(hs256(claims).as_bytes()).unwrap();
        assert!(principal.has_scope("a") && principal.has_scope("b"));
        let claims = br#"{"sub":"alice","exp":8204889600,"iss":"https://issuer.test","aud":"shop","scope":{"a":1}}"#;
        assert!(
            auth.verify_jwt(hs256(claims).as_bytes()).is_err(),
            "an object is no scope"
        );
    }

    /// Two keys without a `kid` for one algorithm (a secret being rotated):
    /// a token without `kid` is checked with each, not with the first only.
    #[test]
    fn a_token_without_kid_is_checked_with_every_key_without_one() {
        const NEXT: &str = "the-next-secret-the-next-secret-32";
        let config = Config::from_toml_str(&format!(
            "[auth]\n[[auth.keys]]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n\
             [[auth.keys]]\nalgorithm = \"HS256\"\nsecret = \"{NEXT}\"\n"
        ))
        .unwrap();
        let auth = Authenticator::new(&config.auth).unwrap();
        let claims = br#"{"sub":"alice","exp":8204889600}"#;
        for secret in [SECRET, NEXT] {
            let token = signed(br#"{"alg":"HS256"}"#, claims, secret);
            let principal = auth.verify_jwt(token.as_bytes()).unwrap();
            assert_eq!(principal.subject(), "alice");
        }
        let forged = signed(br#"{"alg":"HS256"}"#, claims, &"x".repeat(32));
        let refused = auth.verify_jwt(forged.as_bytes()).unwrap_err();
        assert!(!refused.unknown_kid && !refused.keys_pending, "{refused}");
    }

    /// A JWKS document with no usable key does not count as loaded: tokens
    /// are still answered as not verifiable yet, and it is fetched again.
    #[test]
    fn a_jwks_without_usable_keys_leaves_the_keys_pending() {
        let config =
            Config::from_toml_str("[auth]\n[auth.jwks]\nurl = \"http://127.0.0.1:9/jwks.json\"\n")
                .unwrap();
        let auth = Authenticator::new(&config.auth).unwrap();
        assert!(auth.jwks_pending());
        let empty: jsonwebtoken::jwk::JwkSet = serde_json::from_str(r#"{"keys":[]}"#).unwrap();
        assert!(auth.set_jwks(&empty).is_err());
        assert!(auth.jwks_pending(), "still pending");
        let token = signed(
            br#"{"alg":"RS256","kid":"later"}"#,
            br#"{"sub":"alice","exp":8204889600}"#,
            SECRET,
        );
        let refused = auth.verify_jwt(token.as_bytes()).unwrap_err();
        assert!(refused.keys_pending(), "{refused}");
        assert!(
            auth.refetch_for(&refused).is_none(),
            "the backoff retries fetch it"
        );
    }

    /// A JWKS loaded again with the same keys (a reload with no rotation, a
    /// fetch out of turn for a made-up key id) keeps the verified tokens, so
    /// it costs no client a signature check; one with a key added, removed
    /// or changed forgets them, so a retired key stops working at once.
    #[test]
    fn only_a_jwks_with_other_keys_forgets_the_verified_tokens() {
        const A: &str = r#"{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        const A_ROTATED: &str = r#"{"kty":"OKP","crv":"Ed25519","kid":"a","x":"33qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        const B: &str = r#"{"kty":"OKP","crv":"Ed25519","kid":"b","x":"22qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        const UNUSABLE: &str = r#"{"kty":"oct","kid":"o","k":"c2VjcmV0"}"#;
        fn jwks(keys: &[&str]) -> jsonwebtoken::jwk::JwkSet {
            serde_json::from_str(&format!(r#"{{"keys":[{}]}}"#, keys.join(","))).unwrap()
        }
        let config = Config::from_toml_str(&format!(
            "[auth]\n[[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n\
             [auth.jwks]\nurl = \"http://127.0.0.1:9/jwks.json\"\n"
        ))
        .unwrap();
        let auth = Authenticator::new(&config.auth).unwrap();
        let token = hs256(br#"{"sub":"alice","exp":8204889600}"#);
        let verify = || assert!(auth.verify_jwt(token.as_bytes()).is_ok());
        let cached = || auth.verified.get(token.as_bytes()).is_some();

        assert_eq!(auth.set_jwks(&jwks(&[A])).unwrap(), 1);
        verify();
        assert!(cached());
        assert_eq!(auth.set_jwks(&jwks(&[A])).unwrap(), 1);
        assert!(cached(), "the same keys: still remembered");
        auth.set_jwks(&jwks(&[A, UNUSABLE])).unwrap();
        assert!(cached(), "an unusable key beside them changes nothing");

        auth.set_jwks(&jwks(&[A, B])).unwrap();
        assert!(!cached(), "a key added");
        verify();
        auth.set_jwks(&jwks(&[A])).unwrap();
        assert!(!cached(), "a key removed");
        verify();
        auth.set_jwks(&jwks(&[A_ROTATED])).unwrap();
        assert!(!cached(), "a key's material changed under its id");
        verify();
        assert!(auth.set_jwks(&jwks(&[])).is_err());
        assert!(cached(), "a document without usable keys replaces nothing");
    }

    /// An `Authorization` of another scheme (a staging site's `Basic` gate)
    /// does not hide the API key beside it; a bad bearer token still fails.
    #[test]
    fn an_api_key_counts_beside_an_authorization_of_another_scheme() {
        let auth = without_audience();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Basic c3RhZ2luZzpzZWNyZXQ=".parse().unwrap());
        headers.insert(API_KEY_HEADER, "the-api-key".parse().unwrap());
        let principal = auth.authenticate(&headers).unwrap().unwrap();
        assert_eq!(principal.subject(), "ci");
        headers.insert(AUTHORIZATION, "Bearer not-a-token".parse().unwrap());
        assert!(
            auth.authenticate(&headers).is_err(),
            "a bearer token is checked first"
        );
        headers.remove(API_KEY_HEADER);
        headers.insert(AUTHORIZATION, "Basic c3RhZ2luZzpzZWNyZXQ=".parse().unwrap());
        assert!(
            auth.authenticate(&headers).is_err(),
            "no API key: the scheme is refused"
        );
    }
}
