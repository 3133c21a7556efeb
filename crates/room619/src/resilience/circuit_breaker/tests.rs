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
    assert_eq!(first, Some(Permit::Probe { period: 1 }));
    assert_eq!(transition.map(|t| t.to), Some(BreakerState::HalfOpen));
    let (second, _) = breaker.try_acquire(now);
    assert_eq!(second, Some(Permit::Probe { period: 1 }));
    assert_eq!(breaker.try_acquire(now).0, None, "a third probe is refused");

    assert_eq!(
        breaker.record(now, Permit::Probe { period: 1 }, false, Duration::ZERO),
        None
    );
    let closed = breaker.record(now, Permit::Probe { period: 1 }, false, Duration::ZERO);
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
    answered(&mut service, 5).await;
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
    answered(&mut service, 5).await;
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
    answered(&mut service, 20).await;
    assert_eq!(service.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_of_an_earlier_half_open_period_says_nothing_about_the_next() {
    let mut breaker = Breaker::new(policy());
    for _ in 0..5 {
        call(&mut breaker, true);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let (failing, _) = breaker.try_acquire(now);
    let (hanging, _) = breaker.try_acquire(now);
    breaker.record(now, failing.unwrap(), true, Duration::ZERO);
    assert_eq!(breaker.state(now), BreakerState::Open);

    // The second half-open period: its two probes are out.
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let (first, _) = breaker.try_acquire(now);
    let (second, _) = breaker.try_acquire(now);
    assert_eq!(first, Some(Permit::Probe { period: 2 }));
    assert!(second.is_some());
    // The first period's hanging probe ends: it frees no slot of this one...
    breaker.release(hanging.unwrap());
    assert_eq!(
        breaker.try_acquire(now).0,
        None,
        "a third probe got through"
    );
    // ...and its outcome neither closes nor reopens the breaker.
    assert_eq!(
        breaker.record(now, hanging.unwrap(), true, Duration::ZERO),
        None
    );
    assert_eq!(breaker.state(now), BreakerState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_counts_when_cut_at_its_timeout_or_slow_and_not_otherwise() {
    let policy = BreakerPolicy {
        consecutive_failures: 2,
        slow_call_duration: Duration::from_secs(1),
        slow_call_rate: 0.5,
        ..policy()
    };
    let mut breaker = Breaker::new(policy.clone());
    let now = Instant::now();
    for _ in 0..10 {
        let (permit, _) = breaker.try_acquire(now);
        assert_eq!(
            breaker.dropped(now, permit.unwrap(), false, Duration::from_millis(999)),
            None
        );
    }
    assert_eq!(
        breaker.state(now),
        BreakerState::Closed,
        "early drops counted"
    );

    let (permit, _) = breaker.try_acquire(now);
    assert_eq!(
        breaker.dropped(now, permit.unwrap(), true, Duration::from_millis(100)),
        None
    );
    let (permit, _) = breaker.try_acquire(now);
    let opened = breaker.dropped(now, permit.unwrap(), true, Duration::from_millis(100));
    assert_eq!(
        opened.map(|t| t.to),
        Some(BreakerState::Open),
        "two timeouts in a row"
    );

    // Slow drops fill the slow-call rate.
    let mut breaker = Breaker::new(policy);
    let mut opened = None;
    for _ in 0..5 {
        let (permit, _) = breaker.try_acquire(now);
        opened = breaker.dropped(now, permit.unwrap(), false, Duration::from_secs(1));
    }
    assert_eq!(opened.map(|t| t.to), Some(BreakerState::Open));
}

#[tokio::test(start_paused = true)]
async fn attempts_cut_by_the_retry_layer_open_the_breaker_below_it() {
    use axum::body::Body;

    use crate::resilience::retry::{RetryLayer, RetryPolicy};

    let calls = Arc::new(AtomicUsize::new(0));
    let hung = tower::service_fn({
        let calls = Arc::clone(&calls);
        move |_: Request<Body>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Response<()>, BoxError>>()
        }
    });
    let breaker = CircuitBreakerLayer::new(
        "users@10.0.0.1:50051",
        BreakerPolicy {
            consecutive_failures: 3,
            ..policy()
        },
    )
    .unready_while_open()
    .layer(hung);
    let watched = breaker.clone();
    let mut service = RetryLayer::new(
        "users",
        RetryPolicy {
            max_attempts: 1,
            attempt_timeout: Some(Duration::from_millis(100)),
            ..RetryPolicy::default()
        },
    )
    .layer(breaker);
    for _ in 0..3 {
        let request = Request::builder()
            .uri("/users.v1.Users/GetUser")
            .body(Body::empty())
            .unwrap();
        let error = service
            .ready()
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap_err();
        let rejection = error.downcast_ref::<Rejection>().unwrap();
        assert_eq!(rejection.kind(), RejectionKind::AttemptTimeout);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        watched.state(),
        BreakerState::Open,
        "a hung instance stays closed"
    );
}

/// A hung backend behind callers with deadlines and no attempt timeout:
/// room619's clients drop each call at its deadline, and those cuts open the
/// breaker as `DEADLINE_EXCEEDED` answers would; unless the policy does not
/// count that code. (The deadlines, 100 ms, are longer than the slow-call
/// duration: shorter, they would not blame the backend.)
#[tokio::test(start_paused = true)]
async fn calls_cut_at_their_callers_deadline_open_the_breaker() {
    use crate::rpc::deadline::Deadline;

    for (counted, expected) in [(true, BreakerState::Open), (false, BreakerState::Closed)] {
        let hung = tower::service_fn(|_: Request<()>| {
            std::future::pending::<Result<Response<()>, BoxError>>()
        });
        let mut failures = FailurePolicy::default();
        if !counted {
            failures
                .grpc_codes
                .retain(|code| code != "DEADLINE_EXCEEDED");
        }
        let mut service = CircuitBreakerLayer::new(
            "users",
            BreakerPolicy {
                consecutive_failures: 3,
                slow_call_duration: Duration::from_millis(50),
                failures,
                ..policy()
            },
        )
        .layer(hung);
        for _ in 0..3 {
            let deadline = Deadline::after(Duration::from_millis(100));
            let mut request = Request::new(());
            request.extensions_mut().insert(deadline);
            let call = service.ready().await.unwrap().call(request);
            let cut = tokio::time::timeout_at(deadline.instant(), call).await;
            assert!(cut.is_err(), "the hung call answered");
        }
        assert_eq!(
            service.state(),
            expected,
            "DEADLINE_EXCEEDED counted: {counted}"
        );
    }
}

/// A backend answering OK after 20 ms, behind a service breaker that opens
/// after 3 failures in a row and calls 10 ms slow.
fn answering_after_20ms()
-> CircuitBreaker<impl Service<Request<()>, Response = Response<()>, Error = BoxError>> {
    let backend = tower::service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, BoxError>(
            Response::builder()
                .header("grpc-status", "0")
                .body(())
                .unwrap(),
        )
    });
    CircuitBreakerLayer::new(
        "users",
        BreakerPolicy {
            consecutive_failures: 3,
            slow_call_duration: Duration::from_millis(10),
            ..policy()
        },
    )
    .layer(backend)
}

/// Calls `service` with a request carrying `deadline`, dropping the call
/// there as room619's clients do; whether it answered in time.
async fn call_within<S>(service: &mut S, deadline: crate::rpc::deadline::Deadline) -> bool
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut request = Request::new(());
    request.extensions_mut().insert(deadline);
    let call = service.ready().await.unwrap().call(request);
    tokio::time::timeout_at(deadline.instant(), call)
        .await
        .is_ok()
}

/// An upstream slowed, so its handlers reach `users` with 5 ms left: their
/// calls, cut at that deadline, say nothing about `users` (a backend may take
/// a slow call's 10 ms without being slow) and leave its breaker closed.
/// Given 15 ms, as much as a slow call and more, the same cuts do open it.
#[tokio::test(start_paused = true)]
async fn calls_cut_at_a_deadline_shorter_than_a_slow_call_count_for_nothing() {
    use crate::rpc::deadline::Deadline;

    for (left, expected) in [
        (Duration::from_millis(5), BreakerState::Closed),
        (Duration::from_millis(15), BreakerState::Open),
    ] {
        let mut service = answering_after_20ms();
        for _ in 0..3 {
            let answered = call_within(&mut service, Deadline::after(left)).await;
            assert!(!answered, "answered within {left:?}");
        }
        assert_eq!(service.state(), expected, "deadlines of {left:?}");
    }
    // Ignored calls leave the count of failures in a row as it was: with
    // short cuts between them, three long ones still open it.
    let mut service = answering_after_20ms();
    for left in [15, 5, 15, 5, 5, 15] {
        call_within(&mut service, Deadline::after(Duration::from_millis(left))).await;
    }
    assert_eq!(service.state(), BreakerState::Open);
}

/// `DEADLINE_EXCEEDED` answers (gRPC) and 504s (HTTP) to calls whose
/// deadline left them less than a slow call's time count for nothing; with
/// time enough they are failures, as before.
#[tokio::test(start_paused = true)]
async fn deadline_answers_to_calls_given_too_little_time_count_for_nothing() {
    use crate::rpc::deadline::Deadline;

    let deadline_exceeded = || {
        Response::builder()
            .header("grpc-status", "4")
            .body(())
            .unwrap()
    };
    let gateway_timeout = || Response::builder().status(504).body(()).unwrap();
    let answers: [fn() -> Response<()>; 2] = [deadline_exceeded, gateway_timeout];
    for answer in answers {
        for (left, expected) in [
            (Duration::from_millis(5), BreakerState::Closed),
            (Duration::from_secs(1), BreakerState::Open),
        ] {
            let mut service = CircuitBreakerLayer::new(
                "users",
                BreakerPolicy {
                    consecutive_failures: 3,
                    slow_call_duration: Duration::from_millis(10),
                    ..policy()
                },
            )
            .layer(tower::service_fn(move |_: Request<()>| async move {
                Ok::<_, BoxError>(answer())
            }));
            for _ in 0..3 {
                assert!(call_within(&mut service, Deadline::after(left)).await);
            }
            assert_eq!(service.state(), expected, "deadlines of {left:?}");
        }
    }
}

/// An ignored call is neither a success nor a failure: failures in a row go
/// on counting across it, and a half-open probe ignored hands back its slot.
#[tokio::test(start_paused = true)]
async fn an_ignored_call_counts_for_nothing_and_hands_back_its_probe() {
    let mut breaker = Breaker::new(BreakerPolicy {
        consecutive_failures: 3,
        minimum_calls: 100,
        ..policy()
    });
    let now = Instant::now();
    call(&mut breaker, true);
    call(&mut breaker, true);
    let (permit, _) = breaker.try_acquire(now);
    assert_eq!(
        breaker.ignored(now, permit.unwrap(), Duration::from_millis(1)),
        None
    );
    assert_eq!(breaker.state(now), BreakerState::Closed);
    assert!(
        call(&mut breaker, true).is_some(),
        "the third failure in a row"
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let first = breaker.try_acquire(now).0.expect("first probe");
    let second = breaker.try_acquire(now).0.expect("second probe");
    assert_eq!(breaker.try_acquire(now).0, None, "both probes are out");
    assert_eq!(breaker.ignored(now, first, Duration::from_millis(1)), None);
    let third = breaker.try_acquire(now).0;
    assert_eq!(
        third,
        Some(Permit::Probe { period: 1 }),
        "the slot came back"
    );
    for probe in [second, third.unwrap()] {
        breaker.record(now, probe, false, Duration::from_millis(1));
    }
    assert_eq!(breaker.state(now), BreakerState::Closed);
}

/// A probe that never ends (no deadline, no attempt timeout) does not keep
/// the breaker half-open for ever: once every probe is out and one has run
/// for `slow_call_duration`, that probe is slow, and the breaker reopens;
/// after `open_duration` a new period probes again.
#[tokio::test(start_paused = true)]
async fn a_probe_that_never_ends_reopens_the_breaker_once_it_is_slow() {
    let policy = BreakerPolicy {
        slow_call_duration: Duration::from_secs(5),
        ..policy()
    };
    let mut breaker = Breaker::new(policy);
    for _ in 0..5 {
        call(&mut breaker, true);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = Instant::now();
    let hung = breaker.try_acquire(now).0.expect("first probe");
    let done = breaker.try_acquire(now).0.expect("second probe");
    assert_eq!(
        breaker.record(now, done, false, Duration::from_millis(1)),
        None
    );
    assert_eq!(breaker.try_acquire(now).0, None, "both probes are out");

    tokio::time::advance(Duration::from_millis(4_900)).await;
    let now = Instant::now();
    assert_eq!(breaker.state(now), BreakerState::HalfOpen);
    assert!(
        breaker
            .next_admission(now)
            .is_some_and(|at| at < now + Duration::from_secs(1))
    );

    tokio::time::advance(Duration::from_millis(100)).await;
    let now = Instant::now();
    assert_eq!(breaker.state(now), BreakerState::Open);
    let reopened_until = now + Duration::from_secs(10);
    assert_eq!(breaker.next_admission(now), Some(reopened_until));
    assert_eq!(
        breaker.try_acquire(now),
        (
            None,
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        )
    );
    // The hung probe ending now says nothing of the next period.
    assert_eq!(
        breaker.record(now, hung, false, Duration::from_secs(5)),
        None
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    let (probe, transition) = breaker.try_acquire(Instant::now());
    assert_eq!(probe, Some(Permit::Probe { period: 2 }));
    assert_eq!(transition.map(|t| t.to), Some(BreakerState::HalfOpen));
}

/// The breaker's series in `/metrics`: one per name and protocol, shared
/// while several breakers of that name live (a client made before a reload
/// and one after), gone with the last of them (an instance that left
/// discovery leaves no state behind).
#[tokio::test(start_paused = true)]
async fn a_breakers_series_lives_as_long_as_the_last_breaker_of_its_name() {
    let metrics = crate::observability::metrics::Metrics::new("n");
    let layer = |protocol| {
        CircuitBreakerLayer::new("users@10.0.0.5:8080", policy()).observed(Some(&metrics), protocol)
    };
    let series = |text: &str| {
        text.lines()
            .filter(|line| line.contains("users@10.0.0.5:8080"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let mut failing = layer("grpc").layer(backend(Arc::clone(&calls), true));
    let again = layer("grpc").layer(backend(Arc::clone(&calls), false));
    let http = layer("http").layer(backend(Arc::clone(&calls), false));
    answered(&mut failing, 5).await;
    let text = metrics.render();
    for expected in [
        r#"room619_circuit_breaker_state{breaker="users@10.0.0.5:8080",protocol="grpc"} 1"#,
        r#"room619_circuit_breaker_state{breaker="users@10.0.0.5:8080",protocol="http"} 0"#,
        r#"room619_circuit_breaker_transitions_total{breaker="users@10.0.0.5:8080",protocol="grpc",from="closed",to="open"} 1"#,
    ] {
        assert!(
            text.contains(expected),
            "{expected} not in {:#?}",
            series(&text)
        );
    }

    drop(failing);
    let text = metrics.render();
    assert!(
        text.contains(
            r#"room619_circuit_breaker_state{breaker="users@10.0.0.5:8080",protocol="grpc"} 1"#
        ),
        "the series went while a breaker of its name lives: {:#?}",
        series(&text)
    );
    // A new breaker of the name (a restarted instance on the same address)
    // is the one calls go through: the series shows it closed.
    let fresh = layer("grpc").layer(backend(Arc::clone(&calls), false));
    assert!(
        metrics.render().contains(
            r#"room619_circuit_breaker_state{breaker="users@10.0.0.5:8080",protocol="grpc"} 0"#
        ),
        "the series kept the replaced breaker's state"
    );
    drop((again, http, fresh));
    assert_eq!(
        series(&metrics.render()),
        Vec::<String>::new(),
        "series left behind"
    );
}

/// Calls `service` `times` times, each answered.
async fn answered<S>(service: &mut S, times: usize)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..times {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
}
