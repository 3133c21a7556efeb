//! Power-of-two-choices balancing over a set of instances that can change.
//!
//! Each instance's load is the number of calls it has in flight; every call
//! picks two random instances and takes the less loaded one if it is ready,
//! else the other, else any ready one. The instances are shared by every
//! clone behind a mutex that is held only while an instance is picked and
//! the call is started, never while it runs; so, unlike tower's `Buffer`, a
//! call needs no hop to a worker task, and, unlike tower's p2c `Balance`, no
//! instance is moved between a ready and a pending set on every call.
//!
//! A call waits while no instance is ready (connecting, or half-open with
//! every probe out), but not while every instance refuses calls outright
//! (its breaker open): it fails at once with `UNAVAILABLE`, as gRPC fails a
//! call on a channel in transient failure, so that callers fall back or
//! give up instead of holding a slot until their deadline.

use std::{
    fmt,
    future::poll_fn,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::time::Sleep;
use tower::Service;

use crate::{
    error::BoxError,
    resilience::{Rejection, retry::AttemptDeadline},
    rpc::body::Hold,
};

/// What a balancer asks an instance besides readiness.
pub(crate) trait Admission {
    /// Whether it refuses every call for now (its circuit breaker is open),
    /// as opposed to being not ready yet.
    fn refusing(&self) -> bool;
}

impl<S> Admission for crate::resilience::circuit_breaker::CircuitBreaker<S> {
    fn refusing(&self) -> bool {
        self.is_open()
    }
}

/// How often a call waiting for a ready instance looks again by itself.
const RECHECK: Duration = Duration::from_millis(20);

/// The instances a call's attempts went to, shared by all of them (its
/// retries and hedges, which replay the request with its extensions): a
/// later attempt goes to another instance when one is ready, as a retry to
/// the instance that just failed or hung would likely fail the same way.
#[derive(Clone, Default, Debug)]
pub(crate) struct Tried(Arc<Mutex<Vec<String>>>);

impl Tried {
    fn keys(&self) -> MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request that may carry the [`Tried`] instances of its call.
pub(crate) trait Attempted {
    fn tried(&self) -> Option<&Tried>;

    /// States again, in its timeout header, the time its call has left:
    /// it waited for an instance since the header was written.
    fn restate_timeout(&mut self);
}

impl<B> Attempted for http::Request<B> {
    fn tried(&self) -> Option<&Tried> {
        self.extensions().get::<Tried>()
    }

    fn restate_timeout(&mut self) {
        let attempt = self.extensions().get::<AttemptDeadline>().map(|cut| {
            cut.instant()
                .saturating_duration_since(tokio::time::Instant::now())
        });
        crate::resilience::retry::restate_timeout(self, attempt);
    }
}

/// A cloneable, balanced service over the instances of one target.
pub(crate) struct Balanced<S, Req> {
    /// The service balanced over, for errors.
    target: Arc<str>,
    shared: Arc<Mutex<Instances<S>>>,
    instances: Arc<AtomicUsize>,
    request: PhantomData<fn(Req)>,
}

/// The instances, and the last call waiting for one to be ready.
struct Instances<S> {
    list: Vec<Instance<S>>,
    waiting: Option<Waker>,
}

struct Instance<S> {
    key: String,
    service: S,
    /// Calls in flight.
    load: Arc<AtomicUsize>,
}

impl<S, Req> Balanced<S, Req>
where
    S: Service<Req> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
{
    /// Balances over `instances` (key, service) of `target`.
    pub(crate) fn new(target: &str, instances: impl IntoIterator<Item = (String, S)>) -> Self {
        let balanced = Self {
            target: Arc::from(target),
            shared: Arc::new(Mutex::new(Instances {
                list: Vec::new(),
                waiting: None,
            })),
            instances: Arc::new(AtomicUsize::new(0)),
            request: PhantomData,
        };
        for (key, service) in instances {
            balanced.insert(key, service);
        }
        balanced
    }

    /// Drops the instance under `key`; calls it already took finish.
    pub(crate) fn remove(&self, key: &str) {
        let mut instances = self.lock();
        instances.list.retain(|instance| instance.key != key);
        self.instances
            .store(instances.list.len(), Ordering::Relaxed);
    }

    /// Whether an instance is balanced over under `key` (one whose
    /// readiness failed was dropped by the balancer itself).
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lock().list.iter().any(|instance| instance.key == key)
    }

    /// Adds (or replaces) the instance under `key`.
    pub(crate) fn insert(&self, key: String, service: S) {
        let mut instances = self.lock();
        let instance = Instance {
            key,
            service,
            load: Arc::default(),
        };
        if let Some(found) = instances
            .list
            .iter_mut()
            .find(|found| found.key == instance.key)
        {
            *found = instance;
        } else {
            instances.list.push(instance);
        }
        self.instances
            .store(instances.list.len(), Ordering::Relaxed);
        if let Some(waiting) = instances.waiting.take() {
            waiting.wake();
        }
    }
}

/// A [`Balanced`] that does not keep it alive: what the task following
/// discovery holds, so that it ends once no client uses the balancer.
pub(crate) struct WeakBalanced<S, Req> {
    target: Arc<str>,
    shared: Weak<Mutex<Instances<S>>>,
    instances: Arc<AtomicUsize>,
    request: PhantomData<fn(Req)>,
}

impl<S, Req> WeakBalanced<S, Req> {
    /// The balancer, while a client still uses it.
    pub(crate) fn upgrade(&self) -> Option<Balanced<S, Req>> {
        Some(Balanced {
            target: Arc::clone(&self.target),
            shared: self.shared.upgrade()?,
            instances: Arc::clone(&self.instances),
            request: PhantomData,
        })
    }
}

impl<S, Req> Balanced<S, Req> {
    /// A handle that does not keep the balancer alive.
    pub(crate) fn downgrade(&self) -> WeakBalanced<S, Req> {
        WeakBalanced {
            target: Arc::clone(&self.target),
            shared: Arc::downgrade(&self.shared),
            instances: Arc::clone(&self.instances),
            request: PhantomData,
        }
    }

    /// How many instances it balances over.
    pub(crate) fn len(&self) -> usize {
        self.instances.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Instances<S>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Admission> Instances<S> {
    /// The index of a ready instance: the less loaded of two random ones
    /// when it is ready, else the other, else any. Instances whose readiness
    /// fails are dropped, as tower's balancer does. `None` when there is no
    /// instance (none is waited for: a call without a deadline would wait
    /// for ever), or none is ready and every one refuses calls.
    fn pick<Req>(&mut self, cx: &mut Context<'_>, avoid: &[String]) -> Poll<Option<usize>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        loop {
            let count = self.list.len();
            let (first, second) = match count {
                0 => return Poll::Ready(None),
                1 => (0, 0),
                _ => {
                    let a = fastrand::usize(..count);
                    let mut b = fastrand::usize(..count - 1);
                    if b >= a {
                        b += 1;
                    }
                    if self.list[b].load.load(Ordering::Relaxed)
                        < self.list[a].load.load(Ordering::Relaxed)
                    {
                        (b, a)
                    } else {
                        (a, b)
                    }
                }
            };
            let order = std::iter::once(first)
                .chain((second != first).then_some(second))
                .chain((0..count).filter(|index| *index != first && *index != second));
            // Instances the call already tried (of the first 64) come last.
            let tried: u64 = if avoid.is_empty() {
                0
            } else {
                self.list
                    .iter()
                    .take(64)
                    .enumerate()
                    .filter(|(_, instance)| avoid.contains(&instance.key))
                    .fold(0, |tried, (index, _)| tried | 1 << index)
            };
            let was_tried = move |index: &usize| *index < 64 && tried & (1 << *index) != 0;
            let order = order
                .clone()
                .filter(move |index| !was_tried(index))
                .chain(order.filter(move |index| tried != 0 && was_tried(index)));
            let mut failed = None;
            for index in order {
                match self.list[index].service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Some(index)),
                    Poll::Ready(Err(err)) => {
                        failed = Some((index, err.into()));
                        break;
                    }
                    Poll::Pending => {}
                }
            }
            let Some((index, err)) = failed else {
                if self.list.iter().all(|instance| instance.service.refusing()) {
                    return Poll::Ready(None);
                }
                return self.wait(cx);
            };
            let dropped = self.list.swap_remove(index);
            tracing::warn!(instance = %dropped.key, error = %err, "instance failed; dropped from the balancer");
        }
    }

    fn wait<T>(&mut self, cx: &Context<'_>) -> Poll<T> {
        self.waiting = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<S, Req> Service<Req> for Balanced<S, Req>
where
    S: Service<Req> + Admission + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Hold + Send + 'static,
    Req: Attempted + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // An instance is picked (and waited for) inside the call, under the
        // lock, so that no other clone can take the picked one in between.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let counted = Arc::clone(&self.instances);
        let target = Arc::clone(&self.target);
        let tried = request.tried().cloned();
        Box::pin(async move {
            let mut request = Some(request);
            // Only the last waiter's waker is kept; while no instance is
            // ready (every breaker open), each waiter also looks again on its
            // own every `RECHECK` (a timer made only then).
            let mut recheck: Option<Pin<Box<Sleep>>> = None;
            // Whether the call waited for an instance.
            let mut waited = false;
            let (response, in_flight) = poll_fn(|cx| {
                let mut instances = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let mut tried_keys = tried.as_ref().map(Tried::keys);
                let avoid = tried_keys.as_deref().map_or(&[][..], Vec::as_slice);
                let picked = instances.pick::<Req>(cx, avoid);
                // Instances whose readiness failed were dropped.
                counted.store(instances.list.len(), Ordering::Relaxed);
                let index = match picked {
                    Poll::Ready(Some(index)) => index,
                    Poll::Ready(None) => {
                        let rejection = match instances.list.len() {
                            0 => Rejection::no_instances(&target),
                            count => Rejection::instances_open(&target, count),
                        };
                        return Poll::Ready(Err(BoxError::from(rejection)));
                    }
                    Poll::Pending => {
                        waited = true;
                        drop(instances);
                        let recheck =
                            recheck.get_or_insert_with(|| Box::pin(tokio::time::sleep(RECHECK)));
                        while recheck.poll_unpin(cx).is_ready() {
                            recheck
                                .as_mut()
                                .reset(tokio::time::Instant::now() + RECHECK);
                        }
                        return Poll::Pending;
                    }
                };
                let Some(mut request) = request.take() else {
                    return Poll::Ready(Err(BoxError::from("the request was already sent")));
                };
                if waited {
                    // Its timeout header says the time left before the wait.
                    request.restate_timeout();
                }
                let instance = &mut instances.list[index];
                if let Some(keys) = &mut tried_keys
                    && !keys.contains(&instance.key)
                {
                    keys.push(instance.key.clone());
                }
                let in_flight = InFlight::new(&instance.load);
                Poll::Ready(Ok((instance.service.call(request), in_flight)))
            })
            .await?;
            // A stream counts on its instance until its body ends, not only
            // until its head: an instance busy with long streams is not idle.
            let response = response.await.map_err(Into::into)?;
            Ok(response.hold(in_flight))
        })
    }
}

/// One call in flight on an instance, until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(load: &Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(load))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, Req> Clone for Balanced<S, Req> {
    fn clone(&self) -> Self {
        Self {
            target: Arc::clone(&self.target),
            shared: Arc::clone(&self.shared),
            instances: Arc::clone(&self.instances),
            request: PhantomData,
        }
    }
}

impl<S, Req> fmt::Debug for Balanced<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balanced")
            .field("instances", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        future::{Ready, ready},
        task::{Context, Poll},
    };

    use tower::{Service, ServiceExt as _};

    use super::{Admission, Balanced, Tried};

    /// An instance that answers with its name.
    #[derive(Clone)]
    struct Named(&'static str);

    impl Service<http::Request<()>> for Named {
        type Response = &'static str;
        type Error = Infallible;
        type Future = Ready<Result<&'static str, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok(self.0))
        }
    }

    // The answers of the test instances: nothing to read after them.
    impl crate::rpc::body::Hold for &'static str {
        fn hold<G: Send + 'static>(self, _guard: G) -> Self {
            self
        }
    }

    impl crate::rpc::body::Hold for String {
        fn hold<G: Send + 'static>(self, _guard: G) -> Self {
            self
        }
    }

    impl Admission for Named {
        fn refusing(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn later_attempts_of_a_call_go_to_instances_it_has_not_tried() {
        let balanced = Balanced::new(
            "named",
            [("a".to_owned(), Named("a")), ("b".to_owned(), Named("b"))],
        );
        for _ in 0..50 {
            let tried = Tried::default();
            let mut request = http::Request::new(());
            request.extensions_mut().insert(tried.clone());
            let first = balanced.clone().oneshot(request).await.unwrap();
            let mut retry = http::Request::new(());
            retry.extensions_mut().insert(tried.clone());
            let second = balanced.clone().oneshot(retry).await.unwrap();
            assert_ne!(first, second, "the retry went back to `{first}`");
            // Every instance tried: a third attempt still goes somewhere.
            let mut third = http::Request::new(());
            third.extensions_mut().insert(tried.clone());
            balanced.clone().oneshot(third).await.unwrap();
            let mut keys = tried.keys().clone();
            keys.sort();
            assert_eq!(keys, ["a", "b"]);
        }
    }

    #[tokio::test]
    async fn calls_without_attempts_spread_over_every_instance() {
        let balanced = Balanced::new(
            "named",
            [("a".to_owned(), Named("a")), ("b".to_owned(), Named("b"))],
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.insert(
                balanced
                    .clone()
                    .oneshot(http::Request::new(()))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(seen.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_fails_at_once_when_every_instance_breaker_is_open() {
        use std::time::Duration;

        use crate::{
            error::BoxError,
            resilience::{
                Rejection, RejectionKind,
                circuit_breaker::{BreakerPolicy, CircuitBreakerLayer},
            },
        };
        use tower::Layer as _;

        let refusing = || {
            CircuitBreakerLayer::new(
                "users@a",
                BreakerPolicy {
                    consecutive_failures: 1,
                    ..BreakerPolicy::default()
                },
            )
            .unready_while_open()
            .layer(tower::service_fn(|_: http::Request<()>| async {
                Err::<http::Response<()>, BoxError>("connection refused".into())
            }))
        };
        let balanced = Balanced::new(
            "users",
            [("a".to_owned(), refusing()), ("b".to_owned(), refusing())],
        );
        // A call the backend itself refuses (not a rejection).
        let refused_by_backend = || async {
            let error = balanced
                .clone()
                .oneshot(http::Request::new(()))
                .await
                .unwrap_err();
            assert!(error.downcast_ref::<Rejection>().is_none(), "{error}");
        };
        // Each instance fails once: both breakers open.
        for _ in 0..2 {
            refused_by_backend().await;
        }
        let error = tokio::time::timeout(
            Duration::from_millis(100),
            balanced.clone().oneshot(http::Request::new(())),
        )
        .await
        .expect("the call waited for an instance whose breaker is open")
        .unwrap_err();
        let rejection = error.downcast_ref::<Rejection>().unwrap();
        assert_eq!(rejection.kind(), RejectionKind::BreakerOpen);
        assert_eq!(rejection.status().code(), tonic::Code::Unavailable);
        assert!(
            rejection
                .to_string()
                .contains("every instance of `users` (2)"),
            "{rejection}"
        );
        // After the open duration the instances take calls again (probes).
        tokio::time::advance(Duration::from_secs(10)).await;
        refused_by_backend().await;
    }

    /// A call that waited for an instance is sent stating the time it has
    /// left then, not the time it had when its header was written.
    #[tokio::test(start_paused = true)]
    async fn a_call_that_waited_for_an_instance_states_the_time_left() {
        use std::{
            sync::{
                Arc,
                atomic::{AtomicBool, Ordering},
            },
            time::Duration,
        };

        use crate::rpc::deadline::{Deadline, GRPC_TIMEOUT, encode_timeout, parse_timeout};

        /// Ready once `open`; answers the `grpc-timeout` it was sent.
        #[derive(Clone)]
        struct Gated(Arc<AtomicBool>);

        impl Service<http::Request<()>> for Gated {
            type Response = String;
            type Error = Infallible;
            type Future = Ready<Result<String, Infallible>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                if self.0.load(Ordering::Relaxed) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }

            fn call(&mut self, request: http::Request<()>) -> Self::Future {
                let sent = request.headers()[GRPC_TIMEOUT].to_str().unwrap().to_owned();
                ready(Ok(sent))
            }
        }

        impl Admission for Gated {
            fn refusing(&self) -> bool {
                false
            }
        }

        let open = Arc::new(AtomicBool::new(false));
        let balanced = Balanced::new("gated", [("a".to_owned(), Gated(Arc::clone(&open)))]);
        let call = |open_first: bool| {
            let deadline = Deadline::after(Duration::from_secs(3));
            let mut request = http::Request::new(());
            request
                .headers_mut()
                .insert(GRPC_TIMEOUT, encode_timeout(deadline.remaining()));
            request.extensions_mut().insert(deadline);
            open.store(open_first, Ordering::Relaxed);
            tokio::spawn(balanced.clone().oneshot(request))
        };
        let waiting = call(false);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        open.store(true, Ordering::Relaxed);
        let sent = waiting.await.unwrap().unwrap();
        let stated = parse_timeout(sent.as_bytes()).unwrap();
        assert!(
            stated <= Duration::from_millis(500) && stated >= Duration::from_millis(400),
            "{sent}"
        );
        // Not waiting, it keeps the header it was given.
        let sent = call(true).await.unwrap().unwrap();
        assert_eq!(
            parse_timeout(sent.as_bytes()).unwrap(),
            Duration::from_secs(3)
        );
    }

    /// With no instance left (every one left discovery), a call fails at
    /// once with `UNAVAILABLE` saying so: one without a deadline would
    /// otherwise wait for ever.
    #[tokio::test]
    async fn with_no_instance_left_a_call_fails_at_once() {
        use std::time::Duration;

        use crate::resilience::{Rejection, RejectionKind};

        let balanced = Balanced::new("users", [("a".to_owned(), Named("a"))]);
        balanced.remove("a");
        let error = tokio::time::timeout(
            Duration::from_secs(1),
            balanced.clone().oneshot(http::Request::new(())),
        )
        .await
        .expect("the call waited for an instance")
        .unwrap_err();
        let rejection = error.downcast_ref::<Rejection>().unwrap();
        assert_eq!(rejection.kind(), RejectionKind::NoInstances);
        assert_eq!(rejection.status().code(), tonic::Code::Unavailable);
        assert!(
            rejection
                .to_string()
                .contains("no instance of `users` is left"),
            "{rejection}"
        );
    }

    /// An instance that fails its readiness while its flag is set.
    #[derive(Clone)]
    struct Failing(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl Service<http::Request<()>> for Failing {
        type Response = &'static str;
        type Error = crate::error::BoxError;
        type Future = Ready<Result<&'static str, crate::error::BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.0.swap(false, std::sync::atomic::Ordering::SeqCst) {
                Poll::Ready(Err("its worker is gone".into()))
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            ready(Ok("back"))
        }
    }

    impl Admission for Failing {
        fn refusing(&self) -> bool {
            false
        }
    }

    /// The balancer drops an instance whose readiness fails; discovery
    /// announcing it again (same id, same address) brings it back.
    #[tokio::test]
    async fn an_instance_dropped_for_its_readiness_comes_back_with_discovery() {
        use std::{
            collections::HashMap,
            sync::{Arc, atomic::AtomicBool},
            time::Duration,
        };

        use crate::discovery::{Change, Instance};

        let failing = Arc::new(AtomicBool::new(true));
        let instance = Instance::new("named", "1.0.0".parse().unwrap(), "127.0.0.1:9");
        let id = instance.id().to_owned();
        let balanced = Balanced::new("named", [(id.clone(), Failing(Arc::clone(&failing)))]);
        let (changes, watch) = tokio::sync::mpsc::channel(4);
        let made = Arc::clone(&failing);
        super::super::follow::follow(
            balanced.clone(),
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(watch)),
            semver::VersionReq::STAR,
            HashMap::from([(id.clone(), instance.address().to_owned())]),
            move |_: &Instance| Some(Failing(Arc::clone(&made))),
            tokio_util::sync::CancellationToken::new(),
        );

        let refused = balanced.clone().oneshot(http::Request::new(())).await;
        assert!(refused.is_err(), "the instance failed its readiness");
        assert!(!balanced.contains(&id), "dropped by the balancer");

        changes.send(Change::Up(instance)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !balanced.contains(&id) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("discovery's announcement did not bring the instance back");
        let answer = balanced
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(answer, "back");
    }
}
