//! [`Keys`]: the Ed25519 key that signs access tokens, and its public forms
//! (JWK, JWKS, PEM) for the verifiers.

use std::{io::Write as _, path::Path, sync::Arc};

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::EncodingKey;
use ring::{
    rand::{SecureRandom as _, SystemRandom},
    signature::{Ed25519KeyPair, KeyPair as _},
};
use room619::{
    Error, Result,
    middleware::auth::{AuthConfig, JwtAlgorithm, JwtKeyConfig},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::AuthSettings;
use crate::settings::ShopSettings;

/// The DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo`; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The auth service's signing key and its public forms (cheap to clone).
///
/// ```no_run
/// # fn demo(mut config: room619::config::Config) -> room619::Result<()> {
/// use shop::{auth::Keys, settings::ShopSettings};
///
/// let settings = ShopSettings::default();
/// let keys = Keys::load_or_create(&settings)?;
/// // The node hosting `auth` verifies its tokens without fetching its own JWKS.
/// keys.trust(&mut config.auth, &settings.auth);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    kid: String,
    signing: EncodingKey,
    /// The raw 32-byte public key.
    public: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The key of `[app.shop.auth] signing_key_file`, or else the one at
    /// `<data_dir>/auth/ed25519.pem`, generated (and written with mode 0600)
    /// when it does not exist yet.
    ///
    /// # Errors
    ///
    /// `Config` when the file cannot be read or is not a PKCS#8 Ed25519
    /// private key in PEM, or the generated key cannot be written.
    pub fn load_or_create(settings: &ShopSettings) -> Result<Self> {
        if let Some(path) = &settings.auth.signing_key_file {
            return Self::read(path);
        }
        let path = settings.data_dir.join("auth").join("ed25519.pem");
        if path.exists() {
            return Self::read(&path);
        }
        let created = Self::generate()?;
        match write_new_private(&path, &created.to_pem()) {
            Ok(()) => {
                tracing::info!(path = %path.display(), kid = created.kid(), "generated the auth signing key");
                Ok(created)
            }
            // Another process made it first: use theirs.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Self::read(&path),
            Err(err) => Err(Error::config(format!(
                "cannot write the auth signing key {}: {err}",
                path.display()
            ))),
        }
    }

    /// A new random key.
    ///
    /// # Errors
    ///
    /// `Internal` when the system's random source fails.
    pub fn generate() -> Result<Self> {
        let mut seed = [0_u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| Error::internal("the system random source failed"))?;
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Self::from_pkcs8_der(&der).map_err(Error::internal)
    }

    /// The key in a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    ///
    /// `Config` when it is not an Ed25519 private key in PEM.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("-----") && !line.is_empty())
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|err| Error::config(format!("not a PEM document: {err}")))?;
        Self::from_pkcs8_der(&der).map_err(Error::config)
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|err| format!("not a PKCS#8 Ed25519 private key: {err}"))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(Self {
            inner: Arc::new(Inner {
                kid: thumbprint(&public),
                signing: EncodingKey::from_ed_der(der),
                public,
            }),
        })
    }

    fn read(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path).map_err(|err| {
            Error::config(format!(
                "cannot read the auth signing key {}: {err}",
                path.display()
            ))
        })?;
        Self::from_pem(&pem).map_err(|err| {
            Error::config(format!(
                "auth signing key {}: {}",
                path.display(),
                err.message()
            ))
        })
    }

    /// The key's id: its RFC 7638 JWK thumbprint.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    pub(crate) fn signing_key(&self) -> &EncodingKey {
        &self.inner.signing
    }

    /// The public key as an OKP JWK (`kty`, `crv`, `x`, `kid`, `use`, `alg`).
    #[must_use]
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(&self.inner.public),
            "kid": self.inner.kid,
            "use": "sig",
            "alg": "EdDSA",
        })
    }

    /// The JWKS document of every active key (the one signing key).
    #[must_use]
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// The public key in PEM (`SubjectPublicKeyInfo`).
    #[must_use]
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.inner.public);
        pem("PUBLIC KEY", &der)
    }

    /// The verification keys for `[auth] keys`, so a node trusts these
    /// tokens without fetching the JWKS.
    #[must_use]
    pub fn jwt_key_configs(&self) -> Vec<JwtKeyConfig> {
        vec![JwtKeyConfig {
            kid: Some(self.inner.kid.clone()),
            algorithm: JwtAlgorithm::EdDSA,
            secret: None,
            pem: Some(self.public_pem()),
            pem_file: None,
        }]
    }

    /// Makes `auth` trust these keys ([`jwt_key_configs`](Self::jwt_key_configs))
    /// and, when they are unset, check the `iss` and `aud` of `settings`.
    pub fn trust(&self, auth: &mut AuthConfig, settings: &AuthSettings) {
        auth.keys.extend(self.jwt_key_configs());
        if auth.issuer.is_none() {
            auth.issuer = Some(settings.issuer.clone());
        }
        if auth.audience.is_empty() {
            auth.audience.push(settings.audience.clone());
        }
    }

    fn to_pem(&self) -> String {
        // Only used for generated keys, whose DER is the v1 layout.
        let der = self.inner.signing.as_bytes();
        pem("PRIVATE KEY", der)
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key, base64url.
fn thumbprint(public: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END ");
    text.push_str(label);
    text.push_str("-----\n");
    text
}

/// Writes a new file readable by its owner only (its directory too), whole
/// or not at all: the contents go to a draft of their own, synced, which
/// then takes the name with a hard link, failing (`AlreadyExists`) rather
/// than replacing a file another process made meanwhile. A crash or a full
/// disk part-way leaves no half-written key at `path` to fail every later
/// start; drafts a crash left behind are removed the next time. Where the
/// file system has no hard links, the file is written in place.
fn write_new_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    remove_drafts(dir, &name);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let draft = dir.join(format!("{name}.{}.{now}.tmp", std::process::id()));
    let linked = write_private(&draft, contents).and_then(|()| std::fs::hard_link(&draft, path));
    // The draft goes either way; the key, if linked, stays under `path`.
    let _gone = std::fs::remove_file(&draft);
    match linked {
        Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists && !path.exists() => {
            tracing::debug!(error = %err, "no hard link for the signing key; writing it in place");
            write_private(path, contents)
        }
        linked => linked,
    }
}

/// Writes `contents` to a new file at `path`, readable by its owner only,
/// and syncs it.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Removes the drafts of `name` left in `dir` by a crash.
fn remove_drafts(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            let _gone = std::fs::remove_file(entry.path());
        }
    }
}
