//! Verification keys: from the config and from JWKS documents.

use std::sync::{Arc, RwLock};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};

use super::{JwtAlgorithm, JwtKeyConfig};
use crate::{Error, Result};

/// One key and the single algorithm it verifies.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The keys in use: the configured ones and the latest JWKS, swapped whole
/// when a reloaded JWKS has different keys.
#[derive(Default)]
pub(crate) struct KeyRing {
    fixed: Vec<VerifyKey>,
    jwks: RwLock<JwksKeys>,
}

/// The keys of the JWKS loaded last, and what each was made of.
#[derive(Default)]
struct JwksKeys {
    keys: Arc<Vec<VerifyKey>>,
    sources: Vec<KeySource>,
}

/// What a JWKS key verifies with: its id, its algorithm and its key
/// material as the document wrote it. Two documents whose usable keys have
/// equal sources, in the same order, verify exactly the same tokens (a key
/// is made from these alone); anything else in them (unusable keys, `x5c`,
/// `key_ops`, members room619 does not read) changes nothing. The material is
/// compared as written, so the same key written otherwise counts as changed:
/// the safe way round.
#[derive(PartialEq, Eq)]
struct KeySource {
    kid: Option<String>,
    algorithm: Algorithm,
    material: AlgorithmParameters,
}

/// What [`KeyRing::set_jwks`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JwksLoaded {
    /// The usable keys of the document.
    pub(crate) keys: usize,
    /// Whether they differ from the keys loaded before (a key added,
    /// removed or changed, or the first document): tokens verified before
    /// must be verified again.
    pub(crate) changed: bool,
}

impl KeyRing {
    pub(crate) fn new(configs: &[JwtKeyConfig]) -> Result<Self> {
        let fixed = configs.iter().map(fixed_key).collect::<Result<_>>()?;
        Ok(Self {
            fixed,
            jwks: RwLock::default(),
        })
    }

    /// Replaces the JWKS keys, unless the document's usable keys are the
    /// ones loaded already (see [`KeySource`]): then nothing changes. A
    /// document with no usable key (an empty set, a half-deployed one)
    /// replaces nothing: every token would be refused until the next good
    /// document.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the document has no usable key (the keys loaded
    /// before, if any, stay), `Internal` when the key lock is poisoned.
    pub(crate) fn set_jwks(&self, set: &JwkSet) -> Result<JwksLoaded> {
        let (keys, sources): (Vec<VerifyKey>, Vec<KeySource>) = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = jwk_key(jwk)?;
                let source = KeySource {
                    kid: key.kid.clone(),
                    algorithm: key.algorithm,
                    material: jwk.algorithm.clone(),
                };
                Some((key, source))
            })
            .unzip();
        let count = keys.len();
        let Ok(mut slot) = self.jwks.write() else {
            return Err(Error::internal("the JWKS key lock is poisoned"));
        };
        if count == 0 {
            let listed = set.keys.len();
            return Err(Error::unavailable(if slot.keys.is_empty() {
                format!("the JWKS document has no usable key ({listed} listed)")
            } else {
                format!(
                    "the JWKS document has no usable key ({listed} listed); the {} keys \
                     loaded before stay",
                    slot.keys.len()
                )
            }));
        }
        let changed = slot.sources != sources;
        if changed {
            *slot = JwksKeys {
                keys: Arc::new(keys),
                sources,
            };
        }
        Ok(JwksLoaded {
            keys: count,
            changed,
        })
    }

    /// The keys that may have signed a token with this header, configured
    /// ones first: those with its `kid`, or without one the keys that have
    /// none; each for `algorithm` only (the key's own).
    pub(crate) fn candidates(&self, kid: Option<&str>, algorithm: Algorithm) -> Vec<VerifyKey> {
        let jwks = self.jwks();
        self.fixed
            .iter()
            .chain(jwks.iter())
            .filter(|key| key.kid.as_deref() == kid && key.algorithm == algorithm)
            .cloned()
            .collect()
    }

    /// Whether some key, of any algorithm, has the id `kid`.
    pub(crate) fn knows(&self, kid: &str) -> bool {
        let jwks = self.jwks();
        self.fixed
            .iter()
            .chain(jwks.iter())
            .any(|key| key.kid.as_deref() == Some(kid))
    }

    /// The JWKS keys now (none when the lock is poisoned).
    fn jwks(&self) -> Arc<Vec<VerifyKey>> {
        self.jwks
            .read()
            .map(|loaded| Arc::clone(&loaded.keys))
            .unwrap_or_default()
    }
}

fn fixed_key(config: &JwtKeyConfig) -> Result<VerifyKey> {
    let key = match (
        config.algorithm,
        &config.secret,
        &config.pem,
        &config.pem_file,
    ) {
        (JwtAlgorithm::HS256, Some(secret), _, _) => DecodingKey::from_secret(secret.as_bytes()),
        (algorithm, _, Some(pem), _) => {
            decoding_key(algorithm, pem.as_bytes()).map_err(Error::config)?
        }
        (algorithm, _, _, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|err| Error::config(format!("auth key file {}: {err}", path.display())))?;
            decoding_key(algorithm, &pem).map_err(Error::config)?
        }
        _ => return Err(Error::config("auth key without key material")),
    };
    Ok(VerifyKey {
        kid: config.kid.clone(),
        algorithm: algorithm(config.algorithm),
        key,
    })
}

/// The jsonwebtoken algorithm of ours.
fn algorithm(algorithm: JwtAlgorithm) -> Algorithm {
    match algorithm {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// Parses a PEM public key for `algorithm`.
pub(crate) fn decoding_key(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let parsed = match algorithm {
        JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(pem),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        JwtAlgorithm::HS256 => return Err("HS256 keys take a secret".to_owned()),
    };
    parsed.map_err(|err| format!("not a {algorithm:?} public key in PEM: {err}"))
}

/// A usable signature key of a JWKS, or `None` (encryption keys, symmetric
/// keys, algorithms room619 does not accept).
fn jwk_key(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyAlgorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            KeyAlgorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            KeyAlgorithm::EdDSA
        }
        _ => return None,
    };
    let declared = jwk.common.key_algorithm.unwrap_or(implied);
    if declared != implied {
        return None;
    }
    let algorithm = match implied {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        _ => Algorithm::EdDSA,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}
