//! Hedging: only listed reads, after the percentile, within the budget.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use axum::body::Body;
use http::{Method, Request, Response};
use tower::{Layer as _, Service, ServiceExt as _};

use super::*;
use crate::resilience::testing::call;

/// A backend whose n-th call (0-based) answers after `latency(n)` with gRPC
/// status `code(n)`, tagging the answer with `n`; it counts its calls.
#[derive(Clone)]
struct Backend {
    calls: Arc<AtomicUsize>,
    plan: Arc<dyn Fn(usize) -> (Duration, i32) + Send + Sync>,
}

impl Backend {
    fn new(plan: impl Fn(usize) -> (Duration, i32) + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            plan: Arc::new(plan),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<Body>> for Backend {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<Body>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let (latency, code) = (self.plan)(n);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(Response::builder()
                .header("grpc-status", code.to_string())
                .header("call", n.to_string())
                .body(())
                .unwrap())
        })
    }
}

fn policy() -> HedgePolicy {
    HedgePolicy {
        methods: vec!["/users.v1.Users/Get*".into()],
        min_samples: 10,
        max_ratio: 1000.0,
        ..HedgePolicy::default()
    }
}

/// Warms the latency window with `n` calls of the plan's first answers.
async fn warm(service: &mut Hedge<Backend>, n: usize) {
    for _ in 0..n {
        call(service, "/users.v1.Users/GetUser").await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_read_is_hedged_after_the_percentile_and_the_faster_answer_wins() {
    // Calls 0..10 take 20 ms; call 10 hangs for 10 s; the hedge (11) takes 20 ms.
    let backend = Backend::new(|n| match n {
        10 => (Duration::from_secs(10), 0),
        _ => (Duration::from_millis(20), 0),
    });
    let mut service = HedgeLayer::new("users", policy()).layer(backend.clone());
    warm(&mut service, 10).await;
    assert_eq!(backend.calls(), 10);

    let started = Instant::now();
    let response = call(&mut service, "/users.v1.Users/GetUser").await;
    assert_eq!(response.headers()["call"], "11", "the hedge's answer");
    // Hedged after p95 (20 ms), answered 20 ms later.
    assert_eq!(started.elapsed(), Duration::from_millis(40));
    assert_eq!(backend.calls(), 12);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_hedged_before_enough_latencies_are_known() {
    let backend = Backend::new(|_| (Duration::from_secs(1), 0));
    let mut service = HedgeLayer::new("users", policy()).layer(backend.clone());
    warm(&mut service, 9).await;
    assert_eq!(backend.calls(), 9);
}

#[tokio::test(start_paused = true)]
async fn unlisted_methods_and_writes_are_never_hedged() {
    let backend = Backend::new(|n| {
        if n < 10 {
            (Duration::from_millis(20), 0)
        } else {
            (Duration::from_secs(1), 0)
        }
    });
    let mut service = HedgeLayer::new("users", policy()).layer(backend.clone());
    warm(&mut service, 10).await;
    call(&mut service, "/users.v1.Users/DeleteUser").await;
    let post = Request::builder()
        .method(Method::POST)
        .uri("/v1/users")
        .body(Body::empty())
        .unwrap();
    service.ready().await.unwrap().call(post).await.unwrap();
    assert_eq!(backend.calls(), 12, "one attempt each");
}

#[tokio::test(start_paused = true)]
async fn a_failed_hedge_waits_for_the_original() {
    // The original (10) is slow but succeeds; the hedge (11) fails fast.
    let backend = Backend::new(|n| match n {
        10 => (Duration::from_millis(100), 0),
        11 => (Duration::from_millis(1), 14),
        _ => (Duration::from_millis(20), 0),
    });
    let mut service = HedgeLayer::new("users", policy()).layer(backend.clone());
    warm(&mut service, 10).await;
    let response = call(&mut service, "/users.v1.Users/GetUser").await;
    assert_eq!(response.headers()["call"], "10");
    assert_eq!(response.headers()["grpc-status"], "0");
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_hedges_at_the_ratio() {
    // After warm-up every call is slow, so every call would be hedged.
    let slow_from = Arc::new(Mutex::new(usize::MAX));
    let threshold = Arc::clone(&slow_from);
    let backend = Backend::new(move |n| {
        if n >= *threshold.lock().unwrap() {
            (Duration::from_millis(500), 0)
        } else {
            (Duration::from_millis(20), 0)
        }
    });
    let policy = HedgePolicy {
        max_ratio: 0.1,
        ..policy()
    };
    let mut service = HedgeLayer::new("users", policy).layer(backend.clone());
    warm(&mut service, 10).await;
    *slow_from.lock().unwrap() = backend.calls();
    for _ in 0..100 {
        call(&mut service, "/users.v1.Users/GetUser").await;
    }
    let hedges = backend.calls() - 110;
    // 10 % of the 110 calls deposited: 11 hedges at most, and some were sent.
    assert!((1..=11).contains(&hedges), "{hedges} hedges");
}

/// A hedge needs the time a retry needs: when the delay is up with 5 ms left
/// of the deadline (the one room619's clients keep in the request, or the
/// task's), the slow call is not hedged; with 80 ms left it is.
#[tokio::test(start_paused = true)]
async fn no_hedge_goes_out_with_next_to_no_time_left() {
    // (deadline, kept in the request rather than the task's, hedged)
    for (left, in_request, hedged) in [
        (Duration::from_millis(25), true, false),
        (Duration::from_millis(25), false, false),
        (Duration::from_millis(100), true, true),
    ] {
        // Calls 0..10 take 20 ms (a delay of 20 ms); call 10 takes 200 ms.
        let backend = Backend::new(|n| match n {
            10 => (Duration::from_millis(200), 0),
            _ => (Duration::from_millis(20), 0),
        });
        let mut service = HedgeLayer::new("users", policy()).layer(backend.clone());
        warm(&mut service, 10).await;
        let deadline = Deadline::after(left);
        let mut request = crate::resilience::testing::grpc("/users.v1.Users/GetUser");
        if in_request {
            request.extensions_mut().insert(deadline);
        }
        let pending = service.ready().await.unwrap().call(request);
        let answered = if in_request {
            pending.await
        } else {
            deadline.scope(pending).await
        };
        let (calls, answer) = if hedged { (12, "11") } else { (11, "10") };
        assert_eq!(
            backend.calls(),
            calls,
            "{left:?} left, in the request: {in_request}"
        );
        assert_eq!(answered.unwrap().headers()["call"], answer);
    }
}
