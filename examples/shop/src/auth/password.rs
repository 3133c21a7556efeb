//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes,
//! 1 lane), off the async threads, a few at a time: each takes 19 MiB and a
//! core for a while, so a flood of logins waits its turn (and past
//! [`QUEUE_WAIT`] is refused with `UNAVAILABLE`) instead of taking the
//! blocking pool's 512 threads and gigabytes of memory.

use std::{sync::Arc, time::Duration};

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use room619::{Error, Result};
use tokio::sync::{OnceCell, Semaphore};

/// How long a hash waits for its turn before the request is refused.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Hashes and verifies passwords; keeps a dummy hash so that a login for an
/// unknown email costs as much as one for a known email.
#[derive(Debug, Clone)]
pub(crate) struct Passwords {
    dummy: Arc<OnceCell<String>>,
    /// Hashes at once: twice the cores.
    turns: Arc<Semaphore>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            dummy: Arc::default(),
            turns: Arc::new(Semaphore::new(2 * cores)),
        }
    }
}

impl Passwords {
    /// The argon2id PHC string of `password`, with a random salt.
    pub(crate) async fn hash(&self, password: String) -> Result<String> {
        let mut salt = [0_u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::internal("the system random source failed"))?;
        self.blocking(move || {
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
        let matches = self
            .blocking(move || {
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

impl Passwords {
    /// Runs `work` on the blocking pool once a turn is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let turn = tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.turns).acquire_owned())
            .await
            .map_err(|_| Error::unavailable("too many passwords are being checked; retry shortly"))?
            .map_err(|_| Error::internal("the password hashing queue closed"))?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await
        .map_err(|err| Error::internal("a password hashing task failed").with_source(err))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_waits_for_its_turn_and_is_refused_past_the_wait() {
        let passwords = Passwords {
            dummy: Arc::default(),
            turns: Arc::new(Semaphore::new(1)),
        };
        let busy = Arc::clone(&passwords.turns).acquire_owned().await.unwrap();
        let started = tokio::time::Instant::now();
        let refused = passwords.hash("secret".to_owned()).await.unwrap_err();
        assert_eq!(refused.kind(), room619::ErrorKind::Unavailable, "{refused}");
        assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());
        drop(busy);
        let hash = passwords.hash("secret".to_owned()).await.unwrap();
        let stored = Some(hash);
        assert!(passwords.verify("secret".to_owned(), stored).await.unwrap());
    }
}
