//! Where a client command goes: a node's address as given on the command
//! line (`host:port` or `http://host:port`), and connections to it.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::Failure;

/// The address of the node's main listener when none is given.
pub(super) const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// A node's base URL, `http://host:port`, from `host:port` or a URL.
///
/// # Errors
///
/// `Usage` for anything else (a path, `https`, which the CLI does not speak,
/// a missing port).
pub(super) fn base_url(addr: &str) -> Result<String, Failure> {
    let url = if addr.contains("://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{addr}")
    };
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .map_err(|err| Failure::Usage(format!("`{addr}` is not an address: {err}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(Failure::Usage(format!(
            "`{addr}`: only plain http:// nodes can be reached (TLS ends before the node)"
        )));
    }
    let has_port = uri
        .authority()
        .and_then(tonic::codegen::http::uri::Authority::port_u16)
        .is_some();
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if !has_port || !bare {
        return Err(Failure::Usage(format!(
            "`{addr}` is not `host:port` (such as 127.0.0.1:8080)"
        )));
    }
    Ok(url)
}

/// A gRPC channel to `url`, connected within `timeout`.
///
/// # Errors
///
/// `Failed` when the node cannot be reached in time.
pub(super) async fn channel(url: &str, timeout: Duration) -> Result<Channel, Failure> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| Failure::Usage(format!("`{url}` is not an address: {err}")))?
        .connect_timeout(timeout)
        .timeout(timeout);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(err)) => Err(unreachable(url, &err)),
        Err(_) => Err(Failure::Failed(format!(
            "cannot reach {url}: no answer within {}",
            humantime::format_duration(timeout)
        ))),
    }
}

/// An HTTP client whose requests give up after `timeout`.
///
/// # Errors
///
/// `Failed` when the client cannot be made (no TLS roots needed; in practice
/// never).
pub(super) fn http(timeout: Duration) -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|err| Failure::Failed(format!("cannot make an HTTP client: {err}")))
}

/// `Failed` naming `url` and the deepest cause of `err` (such as
/// "Connection refused").
pub(super) fn unreachable(url: &str, err: &(dyn std::error::Error + 'static)) -> Failure {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    Failure::Failed(format!("cannot reach {url}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://node:9090/").unwrap(), "http://node:9090");
        assert_eq!(base_url("[::1]:80").unwrap(), "http://[::1]:80");
        for bad in [
            "127.0.0.1",
            "https://node:443",
            "node:80/health",
            "not an address",
        ] {
            assert!(matches!(base_url(bad), Err(Failure::Usage(_))), "{bad}");
        }
    }
}
