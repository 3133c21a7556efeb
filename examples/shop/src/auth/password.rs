//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes,
//! 1 lane), off the async threads.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use room619::{Error, Result};
use tokio::sync::OnceCell;

/// Hashes and verifies passwords; keeps a dummy hash so that a login for an
/// unknown email costs as much as one for a known email.
#[derive(Debug, Clone, Default)]
pub(crate) struct Passwords {
    dummy: Arc<OnceCell<String>>,
}

impl Passwords {
    /// The argon2id PHC string of `password`, with a random salt.
    pub(crate) async fn hash(&self, password: String) -> Result<String> {
        let mut salt = [0_u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::internal("the system random source failed"))?;
        blocking(move || {
            let salt = SaltString::encode_b64(&salt)
                .map_err(|err| Error::internal(format!("salt: {err}")))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|err| Error::internal(format!("password hashing failed: {err}")))
        })
        .await
    }

    /// Makes the dummy hash now rather than at the first unknown login.
    pub(crate) async fn warm(&self) -> Result<()> {
        self.dummy().await.map(|_| ())
    }

    async fn dummy(&self) -> Result<&String> {
        self.dummy
            .get_or_try_init(|| self.hash("not the password of anyone".to_owned()))
            .await
    }

    /// Whether `password` matches `stored` (a PHC string); with no stored
    /// hash, checks against a dummy one and answers `false`, in about the
    /// same time.
    pub(crate) async fn verify(&self, password: String, stored: Option<String>) -> Result<bool> {
        let known = stored.is_some();
        let stored = match stored {
            Some(stored) => stored,
            None => self.dummy().await?.clone(),
        };
        let matches = blocking(move || {
            let parsed = PasswordHash::new(&stored).map_err(|err| {
                Error::internal(format!("a stored password hash is corrupt: {err}"))
            })?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await?;
        Ok(known && matches)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal("a password hashing task failed").with_source(err))?
}
