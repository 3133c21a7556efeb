//! The HTTP side of a node: route checks, problem+json answers, body limits.
//!
//! - [`check_routes`] finds malformed or conflicting paths and reports them as
//!   errors, where axum would panic.
//! - [`not_found`] is the fallback: `404` with a problem document.
//! - [`HttpEdgeLayer`] is what every route passes through: body limits,
//!   the deadline, and problem+json for every error answer without a body
//!   of its own.

mod edge;
mod idle;

pub use edge::{HttpEdge, HttpEdgeLayer};
pub(crate) use idle::IdleRequests;

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::StatusCode;

use crate::{Error, Result, error::Problem, service::ServiceRoutes};

/// The longest path quoted back in a `404` problem.
const MAX_QUOTED_PATH: usize = 256;

/// Checks `routes` of service `owner` for malformed and duplicate paths.
///
/// # Errors
///
/// `InvalidArgument` naming the path when it does not start with `/`, when it
/// is written in axum 0.7's syntax (a segment starting with `:` or `*`, which
/// axum 0.8 refuses by panicking: write `{id}` and `{*rest}`), when two
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
        old_syntax(owner, "route", path)?;
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
            old_syntax(owner, "nest prefix", prefix)?;
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

/// Refuses `path` (a `kind` of `owner`'s) when a segment starts with `:` or
/// `*`: axum 0.7's syntax for parameters and wildcards, which `matchit` 0.8
/// takes for text, and axum 0.8 refuses by panicking when the node
/// assembles its routes (at start, or in `add_service`).
fn old_syntax(owner: &str, kind: &str, path: &str) -> Result<()> {
    let Some(segment) = path
        .split('/')
        .find(|segment| segment.starts_with([':', '*']))
    else {
        return Ok(());
    };
    let name = segment.trim_start_matches([':', '*']);
    let name = if name.is_empty() { "name" } else { name };
    let written = if segment.starts_with(':') {
        format!("{{{name}}}")
    } else {
        format!("{{*{name}}}")
    };
    Err(Error::invalid_argument(format!(
        "service `{owner}`: {kind} `{path}` uses axum 0.7's syntax (`{segment}`); \
         write parameters as `{{id}}` and wildcards as `{{*rest}}`: here `{written}`"
    )))
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

pub(crate) fn truncate(text: &str, max: usize) -> &str {
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
    fn axum_0_7_parameters_and_wildcards_are_refused_with_the_new_syntax() {
        for (path, suggested) in [
            ("/v1/users/:id", "`{id}`"),
            ("/files/*rest", "`{*rest}`"),
            ("/:tenant/orders", "`{tenant}`"),
        ] {
            let err = check_routes("users", &routes(&[path])).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
            assert!(err.message().contains(path), "{err}");
            assert!(err.message().contains(suggested), "{err}");
        }
        let nested = ServiceRoutes {
            nested: vec![("/:tenant".to_owned(), axum::Router::new())],
            ..ServiceRoutes::default()
        };
        let err = check_routes("users", &nested).unwrap_err();
        assert!(err.message().contains("nest prefix `/:tenant`"), "{err}");
        // A colon or a star inside a segment is text, for both axum and
        // matchit, and so is the new syntax's own.
        check_routes(
            "users",
            &routes(&["/v1/users/{id}", "/files/{*rest}", "/v1/items:batch"]),
        )
        .unwrap();
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
