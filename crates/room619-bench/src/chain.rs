//! The full default middleware chain for the load harness: a room619 node
//! with `[auth]` (JWT) and `[rate_limit]` configured, and a token its load
//! sends. The rate limit is far above what the load reaches, so every
//! request pays for the check and none is refused.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

use crate::BoxError;

/// The HS256 secret of the benchmark node.
const SECRET: &str = "benchmark-secret-of-at-least-32-bytes";
/// The RSA key pair of the benchmark node (test-only keys of the room619
/// test suite).
const RSA_PRIVATE: &str = include_str!("../../room619/tests/node/support/keys/rsa.pem");
const RSA_PUBLIC: &str = include_str!("../../room619/tests/node/support/keys/rsa.pub.pem");

/// Which JWT algorithm the chain verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainAlgorithm {
    /// HMAC-SHA256.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256 (2048-bit key).
    Rs256,
}

/// The `[auth]` and `[rate_limit]` TOML of the benchmark node.
#[must_use]
pub fn config(algorithm: ChainAlgorithm) -> String {
    let key = match algorithm {
        ChainAlgorithm::Hs256 => format!("algorithm = \"HS256\"\nsecret = \"{SECRET}\"\n"),
        ChainAlgorithm::Rs256 => format!(
            "algorithm = \"RS256\"\npem = \"{}\"\n",
            RSA_PUBLIC.replace('\n', "\\n")
        ),
    };
    format!(
        "[auth]\nissuer = \"bench\"\naudience = [\"bench\"]\n[[auth.keys]]\nkid = \"k\"\n{key}\
         [rate_limit]\n\
         [[rate_limit.rules]]\nroute = \"/shop.echo.v1.Echo/{{*method}}\"\nlimit = 1000000000\nperiod = \"1s\"\nkey = \"principal\"\n\
         [[rate_limit.rules]]\nroute = \"/v1/echo\"\nlimit = 1000000000\nperiod = \"1s\"\nkey = \"principal\"\n"
    )
}

/// `Bearer <token>` for the benchmark node, valid for a day.
///
/// # Errors
///
/// If the key cannot be read or the token cannot be signed.
pub fn authorization(algorithm: ChainAlgorithm) -> Result<String, BoxError> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 86_400;
    let claims = serde_json::json!({"sub": "bench", "iss": "bench", "aud": "bench", "exp": exp});
    let (alg, key) = match algorithm {
        ChainAlgorithm::Hs256 => (
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET.as_bytes()),
        ),
        ChainAlgorithm::Rs256 => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes())?,
        ),
    };
    let mut header = Header::new(alg);
    header.kid = Some("k".to_owned());
    Ok(format!("Bearer {}", encode(&header, &claims, &key)?))
}
