//! Tokens minted by hand for the auth tests: base64url JSON header and
//! payload, signatures computed with `ring`, never with the library under
//! test.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ring::{
    hmac,
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
        RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use serde_json::{Value, json};

/// The HS256 secret the tests configure.
pub const HS_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
/// The issuer and audience the tests configure.
pub const ISSUER: &str = "https://issuer.test";
/// The audience the tests configure.
pub const AUDIENCE: &str = "room619-tests";

/// A private key the tests sign with.
pub enum Signer {
    /// A shared HMAC secret.
    Hs(Vec<u8>),
    /// An RSA key pair.
    Rs(RsaKeyPair),
    /// A P-256 key pair.
    Es(EcdsaKeyPair),
    /// An Ed25519 key pair.
    Ed(Ed25519KeyPair),
}

/// PEM to DER.
pub fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(body).unwrap()
}

/// The test RSA key (`keys/rsa.pem`).
pub fn rsa() -> Signer {
    Signer::Rs(RsaKeyPair::from_pkcs8(&pem_der(include_str!("keys/rsa.pem"))).unwrap())
}

/// The second test RSA key (`keys/rsa2.pem`), for rotation.
pub fn rsa2() -> Signer {
    Signer::Rs(RsaKeyPair::from_pkcs8(&pem_der(include_str!("keys/rsa2.pem"))).unwrap())
}

/// The test P-256 key.
pub fn ec() -> Signer {
    let der = pem_der(include_str!("keys/ec.pem"));
    Signer::Es(
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .unwrap(),
    )
}

/// The test Ed25519 key.
pub fn ed() -> Signer {
    Signer::Ed(
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(include_str!("keys/ed.pem"))).unwrap(),
    )
}

/// The HS256 test secret.
pub fn hs() -> Signer {
    Signer::Hs(HS_SECRET.as_bytes().to_vec())
}

/// Base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Claims that pass every check: right issuer and audience, valid for an hour.
pub fn good_claims(sub: &str, scope: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 3600, "iat": now(), "scope": scope})
}

/// `header.payload` signed by `signer`.
pub fn sign(header: &Value, claims: &Value, signer: &Signer) -> String {
    let signing_input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = match signer {
        Signer::Hs(secret) => hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            signing_input.as_bytes(),
        )
        .as_ref()
        .to_vec(),
        Signer::Rs(key) => {
            let mut signature = vec![0; key.public().modulus_len()];
            key.sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .unwrap();
            signature
        }
        Signer::Es(key) => key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
        Signer::Ed(key) => key.sign(signing_input.as_bytes()).as_ref().to_vec(),
    };
    format!("{signing_input}.{}", b64(signature))
}

/// A token for `claims` with header `{"alg": alg, "typ": "JWT", "kid": kid}`.
pub fn mint(alg: &str, kid: Option<&str>, claims: &Value, signer: &Signer) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign(&header, claims, signer)
}

/// The public JWK of an RSA signer, with `kid`.
pub fn rsa_jwk(signer: &Signer, kid: &str) -> Value {
    let Signer::Rs(key) = signer else {
        panic!("not an RSA key")
    };
    let components = PublicKeyComponents::<Vec<u8>>::from(key.public());
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": b64(&components.n), "e": b64(&components.e)})
}

/// The public JWK of an Ed25519 signer, with `kid`.
pub fn ed_jwk(signer: &Signer, kid: &str) -> Value {
    let Signer::Ed(key) = signer else {
        panic!("not an Ed25519 key")
    };
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(key.public_key().as_ref())})
}

/// The public JWK of a P-256 signer, with `kid`.
pub fn ec_jwk(signer: &Signer, kid: &str) -> Value {
    let Signer::Es(key) = signer else {
        panic!("not a P-256 key")
    };
    let point = key.public_key().as_ref();
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
}

/// The `[auth]` TOML of the tests: issuer, audience, an HS256 key `hs`, PEM
/// keys `rs` (`RS256`), `es` (`ES256`) and `ed` (`EdDSA`), plus `extra`.
pub fn auth_toml(extra: &str) -> String {
    let pem = |text: &str| text.replace('\n', "\\n");
    format!(
        "[auth]\nissuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\n\
         [[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{HS_SECRET}\"\n\
         [[auth.keys]]\nkid = \"rs\"\nalgorithm = \"RS256\"\npem = \"{}\"\n\
         [[auth.keys]]\nkid = \"es\"\nalgorithm = \"ES256\"\npem = \"{}\"\n\
         [[auth.keys]]\nkid = \"ed\"\nalgorithm = \"EdDSA\"\npem = \"{}\"\n{extra}",
        pem(include_str!("keys/rsa.pub.pem")),
        pem(include_str!("keys/ec.pub.pem")),
        pem(include_str!("keys/ed.pub.pem")),
    )
}
