//! JWT verification: any `Authorization` value, and any header and claims
//! JSON correctly signed with the node's HS256 key, is accepted or refused;
//! it never panics. Signed garbage must never be accepted, and neither must
//! `alg` values other than the key's.
#![no_main]

use std::{collections::BTreeMap, sync::OnceLock};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use room619::{config::Config, fuzzing, middleware::auth::Authenticator};
use serde::de::IgnoredAny;

const SECRET: &str = "fuzzing-secret-fuzzing-secret-32";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = Config::from_toml_str(&format!(
            "[auth]\nissuer = \"https://issuer.test\"\naudience = [\"shop\"]\n\
             [[auth.keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n"
        ))
        .expect("the fuzz configuration is valid");
        Authenticator::new(&config.auth).expect("the fuzz key is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let auth = authenticator();
    // Any header value at all.
    let mut raw = b"Bearer ".to_vec();
    raw.extend_from_slice(data);
    let _ = fuzzing::authenticate(auth, &raw);

    // A header and claims document, signed with the real key: the claims
    // decoding and checks run on arbitrary JSON.
    let (header, claims) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&br#"{"alg":"HS256","kid":"hs"}"#[..], data),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Some(signature) = fuzzing::hs256_sign(signing_input.as_bytes(), SECRET.as_bytes()) else {
        return;
    };
    let token = format!("Bearer {signing_input}.{signature}");
    if fuzzing::authenticate(auth, token.as_bytes()) == Some(true) {
        // Accepted: the header must have named the key's algorithm, and the
        // claims must have been a JSON object.
        let header: serde_json::Value =
            serde_json::from_slice(header).expect("accepted header is JSON");
        assert_eq!(
            header["alg"], "HS256",
            "accepted a token whose alg is not the key's"
        );
        // Read as JSON's grammar has it, not into `serde_json::Value`: a
        // claim room619 does not read may hold a number no `f64` holds
        // (`1E999`), which JSON allows and `Value` refuses
        // (`seeds/jwt/huge_exponent_claim`).
        let claims: Result<BTreeMap<String, IgnoredAny>, _> = serde_json::from_slice(claims);
        assert!(
            claims.is_ok(),
            "accepted claims that are not a JSON object: {claims:?}"
        );
    }
});
