//! The in-memory bus through a real node: declared subscribers, typed
//! messages, wildcards, headers, request/reply, retries and dead letters, and
//! the drain on shutdown.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use room619::{
    Error, ErrorKind, ServiceBuilder,
    bus::{Event, Json, OutgoingMessage, headers},
    rpc::codec::Format,
};
use shop_proto::echo::v1::EchoRequest;
use tokio::sync::{Notify, mpsc};

use crate::support;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn recv<T>(receiver: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .expect("a message within 5 s")
        .expect("the sender is alive")
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_owned(),
        ..EchoRequest::default()
    }
}

#[tokio::test]
async fn declared_subscribers_get_typed_messages_by_wildcard_with_their_headers() {
    let (seen, mut received) = mpsc::unbounded_channel();
    let service = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .subscribe("orders.*.created", move |ctx, event: Event<EchoRequest>| {
            let seen = seen.clone();
            async move {
                assert_eq!(ctx.name(), "orders");
                let traceparent = event.headers().get(headers::TRACEPARENT).map(str::to_owned);
                seen.send((
                    event.subject().to_owned(),
                    event.into_body().message,
                    traceparent,
                ))
                .unwrap();
                Ok(())
            }
        })
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let bus = node.handle().bus().clone();

    bus.publish("orders.eu.created", &echo("json"))
        .await
        .unwrap();
    let traced = OutgoingMessage::encode("orders.us.created", &echo("protobuf"), Format::Protobuf)
        .unwrap()
        .traceparent(TRACEPARENT);
    bus.publish_message(traced).await.unwrap();
    bus.publish("orders.created", &echo("no match"))
        .await
        .unwrap();

    let mut got = vec![recv(&mut received).await, recv(&mut received).await];
    got.sort();
    assert_eq!(
        got,
        [
            ("orders.eu.created".to_owned(), "json".to_owned(), None),
            (
                "orders.us.created".to_owned(),
                "protobuf".to_owned(),
                Some(TRACEPARENT.to_owned())
            ),
        ]
    );
    node.shutdown().await.unwrap();
    assert!(
        received.try_recv().is_err(),
        "`orders.created` matched `orders.*.created`"
    );
}

#[tokio::test]
async fn requests_get_replies_the_responders_errors_and_timeouts() {
    let service = ServiceBuilder::new("math", "1.0.0")
        .unwrap()
        .respond("math.double", |_ctx, event: Event<Json<u32>>| async move {
            match event.into_body() {
                Json(0) => Err(Error::invalid_argument(
                    "zero has no double worth computing",
                )),
                Json(n) => Ok(Json(n * 2)),
            }
        })
        .subscribe("math.silent", |_ctx, _event: Event<Json<u32>>| async {
            Ok(())
        })
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let bus = node.handle().bus().clone();
    let second = Duration::from_secs(1);

    let Json(doubled): Json<u32> = bus.request("math.double", &Json(21), second).await.unwrap();
    assert_eq!(doubled, 42);

    let failed = bus
        .request::<_, Json<u32>>("math.double", &Json(0), second)
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::InvalidArgument);
    assert_eq!(failed.message(), "zero has no double worth computing");

    let timeout = Duration::from_millis(200);
    let silent = bus
        .request::<_, Json<u32>>("math.silent", &Json(1), timeout)
        .await
        .unwrap_err();
    assert_eq!(silent.kind(), ErrorKind::DeadlineExceeded);

    let nobody = bus
        .request::<_, Json<u32>>("math.nobody", &Json(1), second)
        .await
        .unwrap_err();
    assert_eq!(nobody.kind(), ErrorKind::Unavailable);

    let bad = bus.publish("math.*", &Json(1)).await.unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn failing_handlers_are_retried_then_dead_lettered_and_undecodable_messages_at_once() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&attempts);
    let service = ServiceBuilder::new("jobs", "1.0.0")
        .unwrap()
        .subscribe("jobs.run", move |_ctx, event: Event<Json<u32>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            assert_eq!(event.delivered(), counted.load(Ordering::SeqCst));
            async { Err(Error::unavailable("the database is down")) }
        })
        .build()
        .unwrap();
    let config = support::config(
        "[bus.delivery]\nmax_deliver = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"",
    );
    let node = support::start_with(config, service).await;
    let bus = node.handle().bus().clone();
    let mut dead = bus.subscribe(bus.dead_letter_subject()).await.unwrap();

    bus.publish_message(
        OutgoingMessage::encode("jobs.run", &Json(7), Format::Json)
            .unwrap()
            .traceparent(TRACEPARENT),
    )
    .await
    .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(5), dead.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let h = letter.headers();
    assert!(
        h.get(headers::DEAD_LETTER_REASON)
            .unwrap()
            .contains("the database is down"),
        "{h:?}"
    );
    assert_eq!(h.get(headers::ORIGINAL_SUBJECT), Some("jobs.run"));
    assert_eq!(h.get(headers::DELIVERIES), Some("3"));
    assert_eq!(h.get(headers::TRACEPARENT), Some(TRACEPARENT));
    assert_eq!(letter.decode::<Json<u32>>().unwrap(), Json(7));

    bus.publish_message(OutgoingMessage::new("jobs.run", "{not json"))
        .await
        .unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(5), dead.next())
        .await
        .unwrap()
        .unwrap();
    let h = letter.headers();
    assert!(
        h.get(headers::DEAD_LETTER_REASON)
            .unwrap()
            .contains("cannot decode"),
        "{h:?}"
    );
    assert_eq!(h.get(headers::DELIVERIES), Some("1"));
    assert_eq!(letter.payload(), "{not json");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "the handler never saw it"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_the_handler_in_flight_finish_before_the_stop_hooks_and_takes_nothing_new() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (handler_log, stop_log) = (Arc::clone(&log), Arc::clone(&log));
    let (handler_entered, handler_release) = (Arc::clone(&entered), Arc::clone(&release));
    let service = ServiceBuilder::new("worker", "1.0.0")
        .unwrap()
        .subscribe("work", move |_ctx, event: Event<Json<u32>>| {
            let (log, entered, release) = (
                Arc::clone(&handler_log),
                Arc::clone(&handler_entered),
                Arc::clone(&handler_release),
            );
            async move {
                let Json(n) = event.into_body();
                log.lock().unwrap().push(format!("start {n}"));
                entered.notify_one();
                release.notified().await;
                log.lock().unwrap().push(format!("done {n}"));
                Ok(())
            }
        })
        .on_stop(move |_ctx| {
            stop_log.lock().unwrap().push("stop hook".to_owned());
            async { Ok(()) }
        })
        .build()
        .unwrap();
    let config = support::config("[bus.delivery]\nmax_in_flight = 1");
    let node = support::start_with(config, service).await;
    let bus = node.handle().bus().clone();

    bus.publish("work", &Json(1)).await.unwrap();
    entered.notified().await;
    bus.publish("work", &Json(2)).await.unwrap(); // queued: the one slot is busy
    let handle = node.handle();
    handle.shutdown();
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(5), node.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*log.lock().unwrap(), ["start 1", "done 1", "stop hook"]);
}

/// Two services of one node cannot share a durable consumer's name: on
/// JetStream the second would take the first's consumer over (and change
/// its filter), so the node refuses to start, naming both.
#[tokio::test]
async fn two_services_declaring_one_durable_name_do_not_start() {
    let durable = |service: &str, subject: &str| {
        ServiceBuilder::new(service, "1.0.0")
            .unwrap()
            .durable_subscribe(
                subject,
                "audit",
                |_ctx, _event: Event<Json<String>>| async { Ok(()) },
            )
            .build()
            .unwrap()
    };
    let refused = room619::Node::builder()
        .config(support::config(""))
        .service(durable("orders", "orders.placed"))
        .service(durable("shipping", "orders.shipped"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
    assert!(
        refused.to_string().contains("`audit`")
            && refused.to_string().contains("orders@1.0.0")
            && refused.to_string().contains("shipping@1.0.0"),
        "{refused}"
    );
}
