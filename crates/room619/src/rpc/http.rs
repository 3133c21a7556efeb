//! The HTTP side of a node: route checks, problem+json answers, body limits.
//!
//! - [`check_routes`] finds malformed or conflicting paths and reports them as
//!   errors, where axum would panic.
//! - [`not_found`] is the fallback: `404` with a problem document.
//! - [`problem_responses`] turns every error answer that has no body of its
//!   own (axum's `405`, its extractor rejections, a handler's bare status)
//!   into `application/problem+json`, keeping the status and headers.
//! - [`limit_body`] answers `413` at once for a declared length over the
//!   limit and caps streaming bodies at the same limit.

use std::borrow::Cow;

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::{
    Error, Result,
    error::{PROBLEM_JSON, Problem},
    service::ServiceRoutes,
};

/// The longest path quoted back in a `404` problem.
const MAX_QUOTED_PATH: usize = 256;
/// The most bytes of a plain-text error body kept as a problem's `detail`.
const MAX_DETAIL: usize = 1024;

/// Checks `routes` of service `owner` for malformed and duplicate paths.
///
/// # Errors
///
/// `InvalidArgument` naming the path when it does not start with `/`, when two
/// routes are the same or overlap in a way the router cannot tell apart, or
/// when a nest prefix is `/`, ends with `/` or has parameters.
pub fn check_routes(owner: &str, routes: &ServiceRoutes) -> Result<()> {
    RouteTable::default().add(owner, routes)
}

/// Paths claimed so far, with their owners, for conflict reports across
/// services.
#[derive(Default)]
pub(crate) struct RouteTable {
    router: matchit::Router<String>,
}

impl RouteTable {
    /// Claims `path` for `owner`.
    pub(crate) fn claim(&mut self, owner: &str, path: &str) -> Result<()> {
        if !path.starts_with('/') {
            return Err(Error::invalid_argument(format!(
                "service `{owner}`: route `{path}` must start with `/`"
            )));
        }
        self.router.insert(path, owner.to_owned()).map_err(|err| {
            let other = match &err {
                matchit::InsertError::Conflict { with } => self
                    .router
                    .at(with)
                    .map(|found| format!(" (claimed by `{}`)", found.value))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            Error::invalid_argument(format!(
                "service `{owner}`: route `{path}` cannot be added: {err}{other}"
            ))
        })
    }

    /// Claims every route of one service.
    pub(crate) fn add(&mut self, owner: &str, routes: &ServiceRoutes) -> Result<()> {
        for (path, _) in &routes.http {
            self.claim(owner, path)?;
        }
        for (prefix, _) in &routes.nested {
            if prefix.len() < 2 || prefix.ends_with('/') || prefix.contains(['{', '}', '*']) {
                return Err(Error::invalid_argument(format!(
                    "service `{owner}`: nest prefix `{prefix}` must start with `/`, not be `/`, \
                     not end with `/` and have no parameters"
                )));
            }
            self.claim(owner, prefix)?;
            self.claim(owner, &format!("{prefix}/{{*rest}}"))?;
        }
        Ok(())
    }
}

/// The fallback handler: `404 Not Found` as a problem document.
pub async fn not_found(request: Request) -> Response {
    let path = request.uri().path();
    let shown = truncate(path, MAX_QUOTED_PATH);
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {shown}", request.method()),
    )
    .into_response()
}

/// Middleware: an error answer without a body type of its own (empty or
/// `text/plain`) becomes `application/problem+json` with the same status and
/// headers; its text, if any, becomes the `detail`.
pub async fn problem_responses(request: Request, next: Next) -> Response {
    let instance = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.as_bytes().starts_with(b"text/plain"),
    };
    if !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match Limited::new(body, MAX_DETAIL).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let detail = if text.trim().is_empty() {
        Cow::Borrowed(status.canonical_reason().unwrap_or("error"))
    } else {
        Cow::Owned(text)
    };
    let problem = Problem::new(status, detail).with_instance(truncate(&instance, MAX_QUOTED_PATH));
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Middleware state for [`limit_body`]: the largest body in bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Middleware: `413` problem at once when `Content-Length` exceeds the limit;
/// otherwise the body is capped so that reading past the limit fails (and the
/// handler's extractor answers `413`), with no more than the limit read.
pub async fn limit_body(
    State(BodyLimit(limit)): State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Error::payload_too_large(format!(
            "request body of {} bytes exceeds the limit of {limit} bytes",
            declared.unwrap_or_default()
        ))
        .into_response();
    }
    let request = request.map(|body| Body::new(Limited::new(body, limit)));
    next.run(request).await
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use axum::routing::get;

    use super::*;

    fn routes(paths: &[&str]) -> ServiceRoutes {
        ServiceRoutes {
            http: paths
                .iter()
                .map(|path| ((*path).to_owned(), get(|| async { "" })))
                .collect(),
            ..ServiceRoutes::default()
        }
    }

    #[test]
    fn duplicate_paths_are_an_error_not_a_panic() {
        let err = check_routes("users", &routes(&["/v1/users", "/v1/users"])).unwrap_err();
        assert!(err.message().contains("/v1/users"), "{err}");
    }

    #[test]
    fn conflicting_parameters_are_reported() {
        let err =
            check_routes("users", &routes(&["/v1/users/{id}", "/v1/users/{name}"])).unwrap_err();
        assert!(err.message().contains("users"), "{err}");
    }

    #[test]
    fn paths_must_be_absolute() {
        assert!(check_routes("users", &routes(&["v1/users"])).is_err());
    }

    #[test]
    fn conflicts_across_services_name_the_owner() {
        let mut table = RouteTable::default();
        table.add("users", &routes(&["/v1/users"])).unwrap();
        let err = table.add("accounts", &routes(&["/v1/users"])).unwrap_err();
        assert!(err.message().contains("`users`"), "{err}");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
