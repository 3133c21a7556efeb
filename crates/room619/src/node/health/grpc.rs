//! The gRPC health service a node serves: tonic-health's, whose `Watch`
//! streams end once the node drains.
//!
//! tonic-health ends a `Watch` stream only when the sender of its status is
//! dropped, and the node's reporter keeps every sender for the node's whole
//! life: an open `Watch` (a load balancer's, a client-side health check)
//! would hold its connection, and with it the shutdown, for the whole
//! `node.drain_timeout`. Here each stream, once the node drains, first
//! sends what changed and is not sent yet (the `NOT_SERVING` the drain
//! published), then ends with `UNAVAILABLE`: the watcher retries, elsewhere
//! or once the node is back.
//!
//! `Watch` is public and never shed (a load balancer must hear a node that
//! is overloaded), so the streams open at once are capped at
//! [`MAX_WATCHES`]: one more is refused with `RESOURCE_EXHAUSTED`, so that
//! clients cannot hold an unbounded number of endless streams.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::Stream;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService, WatchStream},
};

/// The node's gRPC health service (`grpc.health.v1.Health`).
pub(crate) type GrpcHealthServer = HealthServer<NodeHealth>;

/// How many `Watch` streams a node keeps open at once.
pub(crate) const MAX_WATCHES: usize = 1024;

/// The gRPC health service answering `reporter`'s statuses, whose `Watch`
/// streams end once `drained` is cancelled.
pub(super) fn server(reporter: HealthReporter, drained: CancellationToken) -> GrpcHealthServer {
    HealthServer::new(NodeHealth::new(reporter, drained, MAX_WATCHES))
}

/// tonic-health's service, with `Watch` streams that end when the node
/// drains.
pub(crate) struct NodeHealth {
    statuses: HealthService,
    /// Cancelled once the node drains.
    drained: CancellationToken,
    /// A permit for each open `Watch` stream.
    watches: Arc<Semaphore>,
}

impl NodeHealth {
    fn new(reporter: HealthReporter, drained: CancellationToken, watches: usize) -> Self {
        Self {
            statuses: HealthService::from_health_reporter(reporter),
            drained,
            watches: Arc::new(Semaphore::new(watches)),
        }
    }
}

#[tonic::async_trait]
impl Health for NodeHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.statuses.check(request).await
    }

    type WatchStream = UntilDrained;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let Ok(permit) = Arc::clone(&self.watches).try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "this node keeps at most {MAX_WATCHES} health watches open; use Check, or watch later"
            )));
        };
        let watched = self.statuses.watch(request).await?;
        let drained = self.drained.clone().cancelled_owned();
        Ok(watched.map(|statuses| UntilDrained {
            statuses,
            drained,
            ended: false,
            _permit: permit,
        }))
    }
}

pin_project! {
    /// A `Watch` stream: the statuses of one name, until the node drains;
    /// then the changes not sent yet, and `UNAVAILABLE`.
    pub(crate) struct UntilDrained {
        statuses: WatchStream,
        #[pin]
        drained: WaitForCancellationFutureOwned,
        ended: bool,
        // Given back when the stream is dropped.
        _permit: OwnedSemaphorePermit,
    }
}

impl Stream for UntilDrained {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        // A change goes first: the `NOT_SERVING` the drain published is
        // sent even when the drain began before this stream was polled.
        if let Poll::Ready(status) = Pin::new(this.statuses).poll_next(cx) {
            *this.ended = status.is_none();
            return Poll::Ready(status);
        }
        if this.drained.poll(cx).is_pending() {
            return Poll::Pending;
        }
        *this.ended = true;
        Poll::Ready(Some(Err(Status::unavailable("the node is shutting down"))))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use tonic_health::{ServingStatus, pb::health_check_response::ServingStatus as Wire};

    use super::*;

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.to_owned(),
        })
    }

    fn status(item: Option<Result<HealthCheckResponse, Status>>) -> Wire {
        item.expect("a message").expect("a status").status()
    }

    #[tokio::test]
    async fn a_watch_sends_the_last_change_then_ends_once_drained() {
        let reporter = HealthReporter::new();
        let drained = CancellationToken::new();
        let health = NodeHealth::new(reporter.clone(), drained.clone(), MAX_WATCHES);
        let mut watch = Box::pin(health.watch(request("")).await.unwrap().into_inner());
        assert_eq!(status(watch.next().await), Wire::Serving);

        // The drain publishes NOT_SERVING, then begins before the stream is
        // polled again: the change is still sent, then the stream ends.
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        drained.cancel();
        assert_eq!(status(watch.next().await), Wire::NotServing);
        let end = watch.next().await.expect("an end status").unwrap_err();
        assert_eq!(end.code(), tonic::Code::Unavailable);
        assert!(watch.next().await.is_none());

        // A watch begun once drained: the status, then the end.
        let mut late = Box::pin(health.watch(request("")).await.unwrap().into_inner());
        assert_eq!(status(late.next().await), Wire::NotServing);
        assert!(late.next().await.expect("an end status").is_err());
        assert!(late.next().await.is_none());
    }

    #[tokio::test]
    async fn an_unknown_name_is_not_found() {
        let health = NodeHealth::new(HealthReporter::new(), CancellationToken::new(), MAX_WATCHES);
        let err = health.watch(request("no.such.Service")).await.err();
        assert_eq!(err.map(|err| err.code()), Some(tonic::Code::NotFound));
    }

    #[tokio::test]
    async fn watches_past_the_cap_are_refused_until_one_ends() {
        let health = NodeHealth::new(HealthReporter::new(), CancellationToken::new(), 2);
        let first = health.watch(request("")).await.unwrap();
        let _second = health.watch(request("")).await.unwrap();
        let refused = health.watch(request("")).await.err().expect("a refusal");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        drop(first);
        assert!(health.watch(request("")).await.is_ok(), "a slot came free");
    }
}
