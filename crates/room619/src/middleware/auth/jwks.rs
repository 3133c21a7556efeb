//! Loading a JWKS document from a file or an `http://` URL, and reloading
//! it on an interval so rotated keys are picked up without a restart (and,
//! for a URL, out of turn when a token names a key id no key has: see
//! [`Refetch`]; the request waits for that fetch at most 2 s, at most 32
//! requests at once, while the fetch itself may take its [`FETCH_TIMEOUT`]).
//! A document whose usable keys are the ones loaded already changes
//! nothing: the tokens verified with them stay remembered.

use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use jsonwebtoken::jwk::JwkSet;
use tokio_util::sync::CancellationToken;

use super::{Authenticator, JwksConfig, refetch::Refetch};
use crate::{Error, Result};

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long a JWKS fetch may take (a request waiting for a fetch out of
/// turn gives up sooner: see [`Refetch`]).
pub(super) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the JWKS of `config` into `auth`.
///
/// # Errors
///
/// `Unavailable` when the document cannot be read or fetched, or has no
/// usable key (the keys loaded before, if any, stay), `Config` when it is
/// not a JWKS.
pub(crate) async fn load(auth: &Authenticator, config: &JwksConfig) -> Result<usize> {
    auth.set_jwks(&document(config).await?)
}

/// Reads or fetches the JWKS document of `config`.
///
/// # Errors
///
/// As [`load`], but for a document without a usable key.
async fn document(config: &JwksConfig) -> Result<JwkSet> {
    let bytes = match (&config.file, &config.url) {
        (Some(path), _) => {
            let owned = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(owned))
                .await
                .map_err(|err| Error::internal("JWKS read task failed").with_source(err))?
                .map_err(|err| {
                    Error::unavailable(format!("cannot read JWKS file {}: {err}", path.display()))
                })?
        }
        (None, Some(url)) => fetch(url).await?,
        (None, None) => return Err(Error::config("auth.jwks: no file or url")),
    };
    serde_json::from_slice(&bytes)
        .map_err(|err| Error::config(format!("auth.jwks: not a JWKS document: {err}")))
}

async fn fetch(url: &str) -> Result<Vec<u8>> {
    let uri: http::Uri = url
        .parse()
        .map_err(|err| Error::config(format!("auth.jwks.url: {err}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let fetched = tokio::time::timeout(FETCH_TIMEOUT, async {
        let response = client
            .get(uri)
            .await
            .map_err(|err| Error::unavailable(format!("JWKS fetch from {url} failed: {err}")))?;
        if !response.status().is_success() {
            return Err(Error::unavailable(format!(
                "JWKS fetch from {url} answered {}",
                response.status()
            )));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|err| Error::unavailable(format!("JWKS body from {url}: {err}")))?;
        Ok(body.to_bytes().to_vec())
    })
    .await;
    fetched.unwrap_or_else(|_| {
        Err(Error::unavailable(format!(
            "JWKS fetch from {url} timed out"
        )))
    })
}

/// The first wait before fetching a JWKS URL again after a failure; it
/// doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Loads the JWKS of `config` when the node starts, then keeps it fresh
/// until `stop` fires.
///
/// A file must be readable now. A URL may not answer yet (in a system of
/// several processes the identity service may start after this one), and a
/// document, from either, may have no usable key yet (an identity provider
/// still setting up): the failure is logged and the document read or
/// fetched again after 1 s, then 2 s, 4 s... up to `config.refresh`, until
/// it loads. Meanwhile a token no configured key verifies is answered as
/// not verifiable yet (`503` / `UNAVAILABLE`). Once loaded, the document is
/// read again every `config.refresh`, and a URL also when a token names a
/// key id no key has (see [`Refetch`]); a document with the same usable
/// keys keeps the verified tokens, one with a key added, removed or changed
/// forgets them.
///
/// # Errors
///
/// `Unavailable` when the file cannot be read, `Config` when it is not a
/// JWKS or the URL does not parse.
pub(crate) async fn start(
    auth: &Arc<Authenticator>,
    config: &JwksConfig,
    stop: &CancellationToken,
) -> Result<()> {
    if let Some(url) = &config.url {
        url.parse::<http::Uri>()
            .map_err(|err| Error::config(format!("auth.jwks.url: {err}")))?;
    }
    let first = match document(config).await {
        Ok(set) => auth.set_jwks(&set),
        // A URL may not answer yet; a file must be readable now.
        Err(err) if config.file.is_none() => Err(err),
        Err(err) => return Err(err),
    };
    let loaded = match first {
        Ok(keys) => {
            tracing::info!(target: "room619::auth", keys, "JWKS loaded");
            true
        }
        Err(err) => {
            tracing::warn!(target: "room619::auth", error = %err, retry_in = ?FIRST_RETRY,
                "JWKS not loaded yet; tokens no configured key verifies are answered 503 until it is");
            false
        }
    };
    let (auth, config, stop) = (Arc::clone(auth), config.clone(), stop.clone());
    tokio::spawn(async move {
        if !loaded && !retry_until_loaded(&auth, &config, &stop).await {
            return;
        }
        refresh_loop(auth, config, stop).await;
    });
    Ok(())
}

/// Reads or fetches the JWKS with a doubling backoff until it loads
/// (`true`) or `stop` fires (`false`).
async fn retry_until_loaded(
    auth: &Authenticator,
    config: &JwksConfig,
    stop: &CancellationToken,
) -> bool {
    let mut wait = FIRST_RETRY.min(config.refresh);
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(config.refresh);
        match load(auth, config).await {
            Ok(keys) => {
                tracing::info!(target: "room619::auth", keys, "JWKS loaded");
                return true;
            }
            Err(err) => {
                tracing::warn!(target: "room619::auth", error = %err, retry_in = ?wait,
                    "JWKS still not loaded; tokens no configured key verifies are answered 503 until it is");
            }
        }
    }
}

/// Reloads the JWKS every `config.refresh`, and when a request asks for a
/// fetch out of turn, until `stop` fires. A failed reload keeps the
/// previous keys and is logged.
async fn refresh_loop(auth: Arc<Authenticator>, config: JwksConfig, stop: CancellationToken) {
    let refetch = auth.refetch();
    let mut interval = tokio::time::interval(config.refresh);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
            () = asked(refetch) => {
                tracing::debug!(target: "room619::auth",
                    "a token names a key id no key has; fetching the JWKS out of turn");
            }
        }
        let fetch = refetch.map(Refetch::started);
        match load(&auth, &config).await {
            Ok(keys) => tracing::debug!(target: "room619::auth", keys, "JWKS reloaded"),
            Err(err) => {
                tracing::warn!(target: "room619::auth", error = %err, "JWKS reload failed; keeping the previous keys");
            }
        }
        if let Some((refetch, fetch)) = refetch.zip(fetch) {
            refetch.finished(fetch);
        }
    }
}

/// Resolves when a request asks for a fetch out of turn; never without a
/// [`Refetch`] (a JWKS file).
async fn asked(refetch: Option<&Refetch>) {
    match refetch {
        Some(refetch) => refetch.asked().await,
        None => std::future::pending::<()>().await,
    }
}
