//! `room619 call <service> <method> <json>`: calls any gRPC method of a
//! node with a JSON message and prints the answers as JSON.
//!
//! The contract comes from the node's server reflection
//! (`grpc.reflection.v1`), so the CLI knows no service in advance: the JSON
//! request is checked against the method's input type and encoded as
//! protobuf, and each answer decoded and printed as JSON. Every kind of
//! method works: a server stream prints one JSON document per message, a
//! client stream takes a JSON array of requests.

mod codec;
mod json;
mod reflection;

use std::{io::Read as _, process::ExitCode, time::Duration};

use prost_reflect::{MethodDescriptor, ServiceDescriptor};
use tonic::{
    Code, Status,
    codegen::http::uri::PathAndQuery,
    metadata::{AsciiMetadataValue, MetadataKey, MetadataMap},
};

use self::{codec::DynamicCodec, reflection::Reflection};
use super::{Failure, announce, parse_duration, target};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    room619 call echo Echo '{\"message\": \"hi\"}'\n  \
    room619 call shop.echo.v1.Echo EchoStream '{\"message\": \"hi\", \"repeat\": 3}' --addr 10.0.0.5:8080\n  \
    room619 call products GetProduct '{\"id\": \"p-1\"}' --token \"$TOKEN\"\n  \
    echo '[{\"message\": \"a\"}, {\"message\": \"b\"}]' | room619 call echo EchoCollect -\n\n\
    Exit status: 0 answered, 1 a gRPC error (its code and message are printed) or the node \
    is unreachable, 2 an unknown service or method, or a request that does not fit the \
    method's input type (the field is named).")]
pub(super) struct CallArgs {
    /// The gRPC service: its full name (`products.v1.Products`) or the
    /// room619 service's name (`products`), matched against the services
    /// the node reflects.
    #[arg(value_name = "SERVICE")]
    service: String,
    /// The method, as in the contract (`GetProduct`).
    #[arg(value_name = "METHOD")]
    method: String,
    /// The request as JSON (protobuf JSON mapping); `-` reads it from
    /// standard input. A client-streaming method takes an array.
    #[arg(value_name = "JSON", default_value = "{}")]
    json: String,
    /// The node: `host:port` of its main listener.
    #[arg(long, value_name = "ADDR", default_value = target::DEFAULT_ADDR)]
    addr: String,
    /// A bearer token, sent as `authorization: Bearer <T>`.
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Extra request metadata, `key=value`; may be repeated.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// The call's deadline (sent as `grpc-timeout`) and the time allowed to
    /// connect.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Calls the method; exit 0 when it answered, 1 on a gRPC error.
pub(super) async fn run(args: CallArgs) -> Result<ExitCode, Failure> {
    let url = target::base_url(&args.addr)?;
    let metadata = metadata(args.token.as_deref(), &args.headers)?;
    let json = if args.json == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|err| Failure::Usage(format!("cannot read the request from stdin: {err}")))?;
        text
    } else {
        args.json.clone()
    };
    let work = call(&url, &args, &metadata, &json);
    match tokio::time::timeout(args.timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Failed(format!(
            "DEADLINE_EXCEEDED: no answer from {url} within {}",
            humantime::format_duration(args.timeout)
        ))),
    }
}

async fn call(
    url: &str,
    args: &CallArgs,
    metadata: &MetadataMap,
    json: &str,
) -> Result<ExitCode, Failure> {
    let channel = target::channel(url, args.timeout).await?;
    let mut reflection = Reflection::open(channel.clone(), metadata).await?;
    let name = service_name(&args.service, &reflection.services().await?)?;
    let service = reflection.service(&name).await?;
    drop(reflection);
    let method = method(&service, &args.method)?;
    let requests = json::requests(json, &method.input(), method.is_client_streaming())?;

    let path = PathAndQuery::try_from(format!("/{}/{}", service.full_name(), method.name()))
        .map_err(|err| Failure::Usage(format!("`{}`: {err}", method.full_name())))?;
    let mut request = tonic::Request::new(tokio_stream::iter(requests));
    *request.metadata_mut() = metadata.clone();
    request.set_timeout(args.timeout);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|err| target::unreachable(url, &err))?;
    let answered = grpc
        .streaming(request, path, DynamicCodec::new(method.output()))
        .await;
    let mut answers = match answered {
        Ok(answers) => answers.into_inner(),
        Err(status) => return Err(Failure::Failed(describe_status(&status))),
    };
    loop {
        match answers.message().await {
            Ok(Some(answer)) => announce(&json::render(&answer)?),
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(status) => return Err(Failure::Failed(describe_status(&status))),
        }
    }
}

/// The full name of the gRPC service `wanted` means among `served`: itself,
/// or the one whose package or name is `wanted` (`products` →
/// `products.v1.Products`, `echo` → `shop.echo.v1.Echo`).
fn service_name(wanted: &str, served: &[String]) -> Result<String, Failure> {
    if served.iter().any(|name| name == wanted) {
        return Ok(wanted.to_owned());
    }
    let own: Vec<&String> = served
        .iter()
        .filter(|name| !name.starts_with("grpc."))
        .collect();
    let listed = || {
        own.iter()
            .map(|name| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let matching: Vec<&String> = if wanted.contains('.') {
        Vec::new()
    } else {
        own.iter()
            .copied()
            .filter(|full| {
                let (package, simple) = full.rsplit_once('.').unwrap_or(("", full));
                simple.eq_ignore_ascii_case(wanted)
                    || package
                        .split('.')
                        .any(|part| part.eq_ignore_ascii_case(wanted))
            })
            .collect()
    };
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Failure::Usage(format!(
            "the node serves no gRPC service `{wanted}` (it serves: {})",
            listed()
        ))),
        several => Err(Failure::Usage(format!(
            "`{wanted}` could be {}: name one",
            several
                .iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// The method `wanted` of `service` (its exact name, or the only one
/// matching it case-insensitively).
fn method(service: &ServiceDescriptor, wanted: &str) -> Result<MethodDescriptor, Failure> {
    let exact = service.methods().find(|m| m.name() == wanted);
    let found = exact.or_else(|| {
        let mut loose = service
            .methods()
            .filter(|m| m.name().eq_ignore_ascii_case(wanted));
        loose.next().filter(|_| loose.next().is_none())
    });
    found.ok_or_else(|| {
        let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        Failure::Usage(format!(
            "{} has no method `{wanted}` (it has: {})",
            service.full_name(),
            methods.join(", ")
        ))
    })
}

/// The request metadata: the bearer token and the `key=value` headers.
fn metadata(token: Option<&str>, headers: &[String]) -> Result<MetadataMap, Failure> {
    let mut metadata = MetadataMap::new();
    if let Some(token) = token {
        let value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Failure::Usage("the token is not printable ASCII".to_owned()))?;
        metadata.insert("authorization", value);
    }
    for header in headers {
        let Some((key, value)) = header.split_once('=') else {
            return Err(Failure::Usage(format!(
                "--header `{header}` is not key=value"
            )));
        };
        let key = MetadataKey::from_bytes(key.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| Failure::Usage(format!("--header `{header}`: not a metadata key")))?;
        let value = AsciiMetadataValue::try_from(value.trim())
            .map_err(|_| Failure::Usage(format!("--header `{header}`: not a printable value")))?;
        metadata.append(key, value);
    }
    Ok(metadata)
}

/// A gRPC error as `CODE: message`. The call's own deadline passing is
/// `DEADLINE_EXCEEDED`, as gRPC defines it, whichever side noticed first:
/// tonic reports its local timer as `CANCELLED: Timeout expired`, which
/// races the server's answer when both deadlines are the same.
pub(super) fn describe_status(status: &Status) -> String {
    if status.code() == Code::Cancelled && status.message() == tonic::TimeoutExpired(()).to_string()
    {
        return "DEADLINE_EXCEEDED: no answer within the call's timeout".to_owned();
    }
    format!("{}: {}", code_name(status.code()), status.message())
}

/// The canonical name of a gRPC status code (`NOT_FOUND`).
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<String> {
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "shop.echo.v1.Echo",
            "products.v1.Products",
            "users.v1.Users",
            "users.v2.Users",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    #[test]
    fn the_calls_own_timeout_is_a_deadline_exceeded() {
        // What tonic's client makes of its local timer, not a copy of it.
        let local = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(describe_status(&local).starts_with("DEADLINE_EXCEEDED: "));
        let cancelled = Status::cancelled("the caller went away");
        assert_eq!(
            describe_status(&cancelled),
            "CANCELLED: the caller went away"
        );
    }

    #[test]
    fn registry_names_resolve_to_the_grpc_service() {
        let served = served();
        assert_eq!(service_name("echo", &served).unwrap(), "shop.echo.v1.Echo");
        assert_eq!(
            service_name("products", &served).unwrap(),
            "products.v1.Products"
        );
        assert_eq!(
            service_name("users.v2.Users", &served).unwrap(),
            "users.v2.Users"
        );
        let Err(Failure::Usage(ambiguous)) = service_name("users", &served) else {
            panic!("users is ambiguous");
        };
        assert!(
            ambiguous.contains("users.v1.Users or users.v2.Users"),
            "{ambiguous}"
        );
        let Err(Failure::Usage(unknown)) = service_name("nope", &served) else {
            panic!("nope is unknown");
        };
        assert!(unknown.contains("shop.echo.v1.Echo"), "{unknown}");
        assert!(!unknown.contains("grpc.health"), "{unknown}");
    }

    #[test]
    fn headers_are_key_value_pairs() {
        let metadata = metadata(Some("t0k"), &["X-Tenant=acme".to_owned()]).unwrap();
        assert_eq!(metadata.get("authorization").unwrap(), "Bearer t0k");
        assert_eq!(metadata.get("x-tenant").unwrap(), "acme");
        assert!(matches!(
            metadata_of(&["no-equals"]),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            metadata_of(&["bad key=1"]),
            Err(Failure::Usage(_))
        ));
    }

    fn metadata_of(headers: &[&str]) -> Result<MetadataMap, Failure> {
        let headers: Vec<String> = headers.iter().map(|&h| h.to_owned()).collect();
        metadata(None, &headers)
    }
}
