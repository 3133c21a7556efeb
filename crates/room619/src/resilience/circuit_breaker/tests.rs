//! The breaker's state machine, step by step on a paused clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer as _, Service, ServiceExt as _};

use super::*;
use crate::resilience::RejectionKind;

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        window: Window::Count(10),
        minimum_calls: 5,
        failure_rate: 0.5,
        open_duration: Duration::from_secs(10),
        half_open_probes: 2,
        ..BreakerPolicy::default()
    }
}

fn call(breaker: &mut Breaker, failed: bool) -> Option<Transition> {
    let now = Instant::now();
    let (permit, _) = breaker.try_acquire(now);
    breaker.record(
        now,
        permit.expect("admitted"),
        failed,
        Duration::from_millis(1),
    )
}

#[tokio::test(start_paused = true)]
async fn below_minimum_calls_it_stays_closed() {
    let mut breaker = Breaker::new(policy());
    for _ in 0..4 {
        assert_eq!(call(&mut breaker, true), None);
    }
    assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn it_opens_at_the_first_evaluation_at_the_threshold() {
    let mut breaker = Breaker::new(policy());
    for failed in [false, false, false, true] {
        assert_eq!(call(&mut breaker, failed), None);
    }
    // Fifth call: 2 failures of 5 = 40 %: closed. Sixth: 3 of 6 = 50 %: open.
    assert_eq!(call(&mut breaker, true), None);
    assert_eq!(
        call(&mut breaker, true),
        Some(Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open
        })
    );
    assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_probes_and_closes_on_their_success() {
    let mut breaker = Breaker::new(policy());
    for _ in 0..5 {
        call(&mut breaker, true);
    }
    assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
    assert_eq!(breaker.try_acquire(Instant::now()).0, None);

    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let (first, transition) = breaker.try_acquire(now);
    assert_eq!(first, Some(Permit::Probe));
    assert_eq!(transition.map(|t| t.to), Some(BreakerState::HalfOpen));
    let (second, _) = breaker.try_acquire(now);
    assert_eq!(second, Some(Permit::Probe));
    assert_eq!(breaker.try_acquire(now).0, None, "a third probe is refused");

    assert_eq!(
        breaker.record(now, Permit::Probe, false, Duration::ZERO),
        None
    );
    let closed = breaker.record(now, Permit::Probe, false, Duration::ZERO);
    assert_eq!(closed.map(|t| t.to), Some(BreakerState::Closed));
    assert_eq!(breaker.state(now), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_it() {
    let mut breaker = Breaker::new(policy());
    for _ in 0..5 {
        call(&mut breaker, true);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let (probe, _) = breaker.try_acquire(now);
    let reopened = breaker.record(now, probe.unwrap(), true, Duration::ZERO);
    assert_eq!(
        reopened,
        Some(Transition {
            from: BreakerState::HalfOpen,
            to: BreakerState::Open
        })
    );
    assert_eq!(breaker.open_until(now), Some(now + Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it_when_configured() {
    let mut breaker = Breaker::new(BreakerPolicy {
        slow_call_rate: 0.5,
        slow_call_duration: Duration::from_millis(100),
        ..policy()
    });
    let now = Instant::now();
    for _ in 0..5 {
        let (permit, _) = breaker.try_acquire(now);
        breaker.record(now, permit.unwrap(), false, Duration::from_millis(150));
    }
    assert_eq!(breaker.state(now), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_it_before_the_minimum() {
    let mut breaker = Breaker::new(BreakerPolicy {
        consecutive_failures: 3,
        minimum_calls: 100,
        ..policy()
    });
    call(&mut breaker, true);
    call(&mut breaker, true);
    assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
    assert!(call(&mut breaker, true).is_some());
    assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_old_calls() {
    let mut breaker = Breaker::new(BreakerPolicy {
        window: Window::Time(Duration::from_secs(10)),
        ..policy()
    });
    for _ in 0..4 {
        call(&mut breaker, true);
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The four old failures are gone: one new failure is below the minimum.
    assert_eq!(call(&mut breaker, true), None);
    assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
}

/// A backend answering `UNAVAILABLE` (or OK), counting its calls.
fn backend(
    calls: Arc<AtomicUsize>,
    failing: bool,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    tower::service_fn(move |_: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let code = if failing { "14" } else { "0" };
            Ok::<_, BoxError>(
                Response::builder()
                    .header("grpc-status", code)
                    .body(())
                    .unwrap(),
            )
        }
    })
}

#[tokio::test(start_paused = true)]
async fn while_open_it_rejects_without_calling_the_backend() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service =
        CircuitBreakerLayer::new("users", policy()).layer(backend(Arc::clone(&calls), true));
    for _ in 0..5 {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(service.state(), BreakerState::Open);
    let err = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    let rejection = err.downcast_ref::<Rejection>().unwrap();
    assert_eq!(rejection.kind(), RejectionKind::BreakerOpen);
    assert_eq!(rejection.status().code(), tonic::Code::Unavailable);
    assert!(
        rejection.to_string().contains("`users` is open"),
        "{rejection}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "the rejected call reached the backend"
    );
}

#[tokio::test(start_paused = true)]
async fn in_unready_mode_it_is_not_ready_while_open_and_ready_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = CircuitBreakerLayer::new("instance", policy())
        .unready_while_open()
        .layer(backend(Arc::clone(&calls), true));
    for _ in 0..5 {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    let waiting = tokio::time::timeout(Duration::from_secs(5), service.ready()).await;
    assert!(waiting.is_err(), "ready while open");
    // After the open duration the (paused) clock wakes it: ready, half-open.
    tokio::time::timeout(Duration::from_secs(6), service.ready())
        .await
        .expect("still not ready after the open duration")
        .unwrap();
    assert_eq!(service.state(), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_never_counts_as_a_failure() {
    let mut service = CircuitBreakerLayer::new("users", policy()).layer(tower::service_fn(
        |_: Request<()>| async {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("grpc-status", "3")
                    .body(())
                    .unwrap(),
            )
        },
    ));
    for _ in 0..20 {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(service.state(), BreakerState::Closed);
}
