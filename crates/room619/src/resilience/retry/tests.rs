//! Retries: only what is safe, jittered, within the budget.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use http::{Request, Response};
use tower::{Layer as _, Service, ServiceExt as _};

use super::*;
use crate::resilience::testing::call;

/// A backend answering every call with gRPC `code`, counting calls.
fn backend(
    calls: Arc<AtomicUsize>,
    code: i32,
) -> impl Service<Request<Body>, Response = Response<()>, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |_: Request<Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("grpc-status", code.to_string())
                    .body(())
                    .unwrap(),
            )
        }
    })
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        idempotent: vec!["/users.v1.Users/Get*".into()],
        ..RetryPolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn idempotent_unavailable_calls_are_retried_up_to_max_attempts() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::new("users", policy()).layer(backend(Arc::clone(&calls), 14));
    let response = call(&mut service, "/users.v1.Users/GetUser").await;
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_calls_and_invalid_argument_are_never_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::new("users", policy()).layer(backend(Arc::clone(&calls), 14));
    call(&mut service, "/users.v1.Users/DeleteUser").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a non-idempotent call was retried"
    );

    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::new("users", policy()).layer(backend(Arc::clone(&calls), 3));
    call(&mut service, "/users.v1.Users/GetUser").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "INVALID_ARGUMENT was retried"
    );
}

#[tokio::test(start_paused = true)]
async fn http_methods_follow_their_idempotency() {
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = {
        let calls = Arc::clone(&calls);
        tower::service_fn(move |_: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(Response::builder().status(503).body(()).unwrap()) }
        })
    };
    let mut service = RetryLayer::new("products", policy()).layer(backend);
    let get = Request::get("/v1/products").body(Body::empty()).unwrap();
    service.ready().await.unwrap().call(get).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let post = Request::post("/v1/products")
        .body(Body::from("{}"))
        .unwrap();
    service.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_buffer_limit_are_sent_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let policy = RetryPolicy {
        max_buffered_body: 4,
        ..policy()
    };
    let mut service = RetryLayer::new("users", policy).layer(backend(Arc::clone(&calls), 14));
    call(&mut service, "/users.v1.Users/GetUser").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A client- or bidi-streaming call listed as idempotent: its body has no
/// end while the caller waits for answers (ping-pong), so it goes out at
/// once, sent once, instead of waiting to be buffered for ever. A body of
/// the same bytes that is all there is buffered and retried.
#[tokio::test(start_paused = true)]
async fn a_streaming_body_still_open_is_sent_at_once_and_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::new("users", policy()).layer(backend(Arc::clone(&calls), 14));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    tx.send(Ok(bytes::Bytes::from_static(b"ping")))
        .await
        .unwrap();
    let mut request = crate::resilience::testing::grpc("/users.v1.Users/GetStream");
    *request.body_mut() = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let answered = tokio::time::timeout(
        Duration::from_secs(60),
        service.ready().await.unwrap().call(request),
    )
    .await;
    assert!(
        answered.is_ok(),
        "the call waited for its request stream to end"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "an open stream was retried"
    );
    drop(tx);

    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::new("users", policy()).layer(backend(Arc::clone(&calls), 14));
    let ended =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"ping"))]);
    let mut request = crate::resilience::testing::grpc("/users.v1.Users/GetStream");
    *request.body_mut() = Body::from_stream(ended);
    service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "a complete stream is retried"
    );
}

#[test]
fn backoff_is_jittered_and_capped() {
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..RetryPolicy::default()
    };
    let delays: Vec<Duration> = (0..200).map(|_| policy.backoff(3)).collect();
    assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
    let distinct: std::collections::HashSet<_> = delays.iter().collect();
    assert!(
        distinct.len() > 150,
        "delays are not jittered: {} distinct",
        distinct.len()
    );
    assert!(policy.backoff(1) <= Duration::from_millis(100));
}

/// 100 requests a second for 10 s against a backend that always answers
/// `UNAVAILABLE`, with 4 attempts each: the budget (20 % + 10/s) keeps the
/// backend's load under requests × 1.2 + 10/s × the seconds it ran (10 s of
/// requests plus the last backoffs).
#[tokio::test(start_paused = true)]
async fn a_dead_backend_never_sees_a_retry_storm() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = RetryLayer::new("users", policy()).layer(backend(Arc::clone(&calls), 14));
    let mut tasks = Vec::new();
    let requests = 1000;
    let started = tokio::time::Instant::now();
    for _ in 0..requests {
        let mut service = service.clone();
        tasks.push(tokio::spawn(async move {
            call(&mut service, "/users.v1.Users/GetUser").await;
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seen = calls.load(Ordering::SeqCst);
    let elapsed = started.elapsed();
    let seconds =
        usize::try_from(elapsed.as_secs()).unwrap() + usize::from(elapsed.subsec_nanos() > 0);
    assert!(seconds <= 12, "the run took {seconds} s");
    let bound = requests * 12 / 10 + 10 * seconds;
    assert!(
        seen <= bound,
        "the backend saw {seen} attempts for {requests} requests (bound {bound})"
    );
    assert!(seen > requests, "no retries happened at all");
}

#[tokio::test(start_paused = true)]
async fn an_attempt_cut_by_its_timeout_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    // The first attempt hangs; the second answers at once.
    let backend = tower::service_fn(move |_: Request<Body>| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, BoxError>(
                Response::builder()
                    .header("grpc-status", "0")
                    .body(())
                    .unwrap(),
            )
        }
    });
    let policy = RetryPolicy {
        attempt_timeout: Some(Duration::from_millis(100)),
        ..policy()
    };
    let mut service = RetryLayer::new("users", policy).layer(backend);
    let response = call(&mut service, "/users.v1.Users/GetUser").await;
    assert_eq!(response.headers()["grpc-status"], "0");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_states_the_time_left_not_the_first_attempts() {
    use std::sync::Mutex;

    use crate::rpc::deadline::{GRPC_TIMEOUT, encode_timeout, parse_timeout};

    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend = tower::service_fn({
        let seen = Arc::clone(&seen);
        move |request: Request<Body>| {
            let stated = request
                .headers()
                .get(GRPC_TIMEOUT)
                .map(|value| parse_timeout(value.as_bytes()).unwrap());
            seen.lock().unwrap().push(stated);
            async {
                // The first attempt takes 800 ms to fail; the retry fails too.
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok::<_, BoxError>(
                    Response::builder()
                        .header("grpc-status", "14")
                        .body(())
                        .unwrap(),
                )
            }
        }
    });
    let mut service = RetryLayer::new(
        "users",
        RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(1),
            ..policy()
        },
    )
    .layer(backend);
    // As room619's channel sends it: the header and the deadline behind it.
    let deadline = Deadline::after(Duration::from_secs(1));
    let mut request = crate::resilience::testing::grpc("/users.v1.Users/GetUser");
    request
        .headers_mut()
        .insert(GRPC_TIMEOUT, encode_timeout(deadline.remaining()));
    request.extensions_mut().insert(deadline);
    service.ready().await.unwrap().call(request).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], Some(Duration::from_secs(1)));
    let second = seen[1].unwrap();
    assert!(
        second <= Duration::from_millis(200) && second > Duration::ZERO,
        "the retry stated {second:?}"
    );
}

/// Attempts with a timeout as long as the whole deadline are still retried
/// while the deadline leaves time (the retry is cut at the deadline, not
/// refused for want of a whole `attempt_timeout`).
#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_attempt_timeout_still_leaves_room_for_retries() {
    use crate::rpc::deadline::Deadline;

    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = RetryLayer::new(
        "users",
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(5),
            attempt_timeout: Some(Duration::from_secs(1)),
            ..policy()
        },
    )
    .layer(backend(Arc::clone(&calls), 14));
    let mut request = crate::resilience::testing::grpc("/users.v1.Users/GetUser");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(1)));
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "every attempt was made");

    // With less than the backoff and a little more left, none is.
    calls.store(0, Ordering::SeqCst);
    let mut request = crate::resilience::testing::grpc("/users.v1.Users/GetUser");
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(8)));
    service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a retry with no time left");
}

/// A call an open breaker refused is not retried: the breaker would refuse
/// again at once, and the retries would spend the budget for nothing.
#[tokio::test(start_paused = true)]
async fn a_call_refused_by_an_open_breaker_is_not_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let refusing = tower::service_fn(move |_: Request<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Err::<Response<()>, BoxError>(Box::new(Rejection::instances_open("users", 3))) }
    });
    let mut service = RetryLayer::new("users", policy()).layer(refusing);
    let request = crate::resilience::testing::grpc("/users.v1.Users/GetUser");
    let error = service
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    assert_eq!(
        error.downcast_ref::<Rejection>().map(Rejection::kind),
        Some(RejectionKind::BreakerOpen)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
