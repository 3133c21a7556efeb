//! JetStream dead letters: a handler failing `max_deliver` times (nak with
//! backoff in between) sends its message to the dead-letter subject with the
//! reason; a payload that cannot be decoded goes there on its first delivery.
//! Both land in the dead-letter stream; with no such stream (made or deleted
//! while the node runs, too), on NATS core.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt as _;
use room619::{
    Error, ServiceBuilder,
    bus::{Event, Json, OutgoingMessage, headers},
};

use crate::support::{self, nats::NatsServer};

const BUS: &str = r#"
[bus.streams.JOBS]
subjects = ["jobs.>"]
[bus.consumers.runner]
max_deliver = 3
initial_backoff = "20ms"
max_backoff = "50ms"
ack_wait = "5s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_messages_go_to_dead_letters_after_three_attempts_and_undecodable_ones_at_once() {
    let server = NatsServer::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let runner = ServiceBuilder::new("runner", "1.0.0")
        .unwrap()
        .durable_subscribe("jobs.>", "runner", move |_ctx, event: Event<Json<u32>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            let delivered = event.delivered();
            async move {
                assert!(delivered <= 3, "delivered {delivered} times");
                Err(Error::unavailable("the payment service is down"))
            }
        })
        .build()
        .unwrap();
    let node = support::start_with(server.config("jetstream", BUS), runner).await;
    let bus = node.handle().bus().clone();
    bus.publish("jobs.charge", &Json(42)).await.unwrap();
    bus.publish_message(OutgoingMessage::new("jobs.charge", "{oops"))
        .await
        .unwrap();

    let js = server.jetstream().await;
    let dead = js.get_stream("DEAD_LETTERS").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while dead.get_info().await.unwrap().state.messages < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "two dead letters within 10 s");
    let mut letters = Vec::new();
    for sequence in 1..=2 {
        let letter = dead.get_raw_message(sequence).await.unwrap();
        let get = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
        letters.push((
            get(headers::DELIVERIES).unwrap(),
            get(headers::DEAD_LETTER_REASON).unwrap(),
            get(headers::ORIGINAL_SUBJECT).unwrap(),
            get(headers::ORIGINAL_STREAM).unwrap(),
            letter.payload.clone(),
        ));
    }
    letters.sort();
    let (deliveries, reason, subject, stream, payload) = &letters[0];
    assert_eq!(
        (deliveries.as_str(), subject.as_str(), stream.as_str()),
        ("1", "jobs.charge", "JOBS")
    );
    assert!(reason.contains("cannot decode"), "{reason}");
    assert_eq!(payload, "{oops");
    let (deliveries, reason, subject, _, payload) = &letters[1];
    assert_eq!(
        (deliveries.as_str(), subject.as_str()),
        ("3", "jobs.charge")
    );
    assert!(reason.contains("the payment service is down"), "{reason}");
    assert_eq!(payload, "42");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "three attempts, none for the undecodable one"
    );

    let consumer = runner_consumer(&js).await;
    let info = consumer.get_info().await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (0, 0),
        "both settled: {info:?}"
    );
    node.shutdown().await.unwrap();
}

/// With `dead_letter_stream = ""` and no stream storing the dead-letter
/// subject, JetStream would refuse every dead letter, and the message would be
/// delivered, failed and given up again for ever: the dead letter goes out on
/// NATS core instead, and the message is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_stream_dead_letters_go_out_on_nats_core_and_the_message_is_settled()
{
    let server = NatsServer::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let runner = always_failing(&calls);
    let config = server.config("jetstream", &format!("dead_letter_stream = \"\"\n{BUS}"));
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut letters = watcher.subscribe("room619.dead-letter").await.unwrap();
    watcher.flush().await.unwrap();
    let node = support::start_with(config, runner).await;
    node.handle()
        .bus()
        .publish("jobs.charge", &Json(7))
        .await
        .unwrap();

    let letter = tokio::time::timeout(Duration::from_secs(10), letters.next())
        .await
        .expect("a dead letter on NATS core within 10 s")
        .unwrap();
    let headers = letter.headers.unwrap();
    assert_eq!(headers.get(headers::DELIVERIES).unwrap().as_str(), "3");
    assert_eq!(&letter.payload[..], b"7");

    let js = server.jetstream().await;
    assert!(
        js.get_stream("DEAD_LETTERS").await.is_err(),
        "no dead-letter stream was created"
    );
    let consumer = runner_consumer(&js).await;
    settled(&consumer).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "three attempts, then given up once"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), letters.next())
            .await
            .is_err(),
        "one dead letter, not one per round"
    );
    node.shutdown().await.unwrap();
}

/// Where a dead letter goes is decided when it is sent (as the server said
/// within the last second), not when the node connected: after the
/// dead-letter stream is deleted, dead letters go out on
/// NATS core (JetStream would refuse them, and the message would loop), and
/// a stream made later for the subject stores them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_follow_the_streams_made_and_deleted_while_the_node_runs() {
    let server = NatsServer::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    let runner = always_failing(&calls);
    let node = support::start_with(server.config("jetstream", BUS), runner).await;
    let js = server.jetstream().await;
    js.delete_stream("DEAD_LETTERS").await.unwrap();
    // The node asks again where dead letters go at most a second after it
    // last asked.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut letters = watcher.subscribe("room619.dead-letter").await.unwrap();
    watcher.flush().await.unwrap();
    let bus = node.handle().bus().clone();

    bus.publish("jobs.charge", &Json(1)).await.unwrap();
    let letter = tokio::time::timeout(Duration::from_secs(10), letters.next())
        .await
        .expect("a dead letter on NATS core within 10 s")
        .unwrap();
    assert_eq!(&letter.payload[..], b"1");
    let consumer = runner_consumer(&js).await;
    settled(&consumer).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "given up once, not looping"
    );

    let late = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "LATE_DEAD_LETTERS".to_owned(),
            subjects: vec!["room619.dead-letter".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    bus.publish("jobs.charge", &Json(2)).await.unwrap();
    let stored = tokio::time::timeout(Duration::from_secs(10), async {
        while late.get_info().await.unwrap().state.messages < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        stored.is_ok(),
        "the second dead letter is stored in the new stream"
    );
    settled(&consumer).await;
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    node.shutdown().await.unwrap();
}

/// The durable consumer `runner` of `jobs.>`, whose handler counts its calls
/// in `calls` and always fails.
fn always_failing(calls: &Arc<AtomicU32>) -> room619::service::BuiltService {
    let counted = Arc::clone(calls);
    ServiceBuilder::new("runner", "1.0.0")
        .unwrap()
        .durable_subscribe("jobs.>", "runner", move |_ctx, _event: Event<Json<u32>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::unavailable("the payment service is down")) }
        })
        .build()
        .unwrap()
}

/// Waits (up to 5 s) until `consumer` has nothing pending or unacked.
async fn settled(
    consumer: &async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
) {
    let settled = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let info = consumer.get_info().await.unwrap();
            if (info.num_pending, info.num_ack_pending) == (0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "the message was settled (terminated)");
}

/// The durable consumer `runner` on the stream `JOBS`, as the server has it.
async fn runner_consumer(
    js: &async_nats::jetstream::Context,
) -> async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config> {
    js.get_stream("JOBS")
        .await
        .unwrap()
        .get_consumer("runner")
        .await
        .unwrap()
}

/// Request/reply runs over core subjects: a stream storing the subject
/// would answer each request with its store receipt (and keep the request
/// as an event), and a JetStream delivery has no reply subject. Both are
/// refused with an error naming the subject, never left to fail silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responders_on_stored_subjects_or_durable_ones_are_refused() {
    let server = NatsServer::start().await;
    let config = server.config(
        "jetstream",
        "[bus.streams.ORDERS]\nsubjects = [\"orders.>\"]",
    );
    let answering = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .respond("orders.get", |_ctx, event: Event<Json<u32>>| async move {
            Ok(Json(event.into_body().0))
        })
        .build()
        .unwrap();
    let err = support::start_fails(config, [answering]).await;
    assert_eq!(err.kind(), room619::ErrorKind::FailedPrecondition, "{err}");
    assert!(err.message().contains("orders.get"), "{err}");
    assert!(err.message().contains("ORDERS"), "{err}");

    let durable = room619::service::Subscriber::responder(
        "questions.get",
        |_ctx, event: Event<Json<u32>>| async move { Ok(Json(event.into_body().0)) },
    )
    .durable("questions");
    let err = ServiceBuilder::new("questions", "1.0.0")
        .unwrap()
        .subscriber(durable)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), room619::ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains("cannot be durable"), "{err}");
}

/// A message close to the server's `max_payload` (1 MiB) no longer fits
/// once the dead letter's headers are added: it would be refused on every
/// delivery, for ever. It goes to the dead letters without its payload
/// (which stays in its stream, named in the headers), and is settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_its_dead_letter_goes_without_its_payload() {
    let server = NatsServer::start().await;
    let runner = ServiceBuilder::new("runner", "1.0.0")
        .unwrap()
        .durable_subscribe(
            "jobs.>",
            "runner",
            |_ctx, _event: Event<Json<String>>| async {
                Err(Error::unavailable(format!("down: {}", "why ".repeat(300))))
            },
        )
        .build()
        .unwrap();
    let node = support::start_with(server.config("jetstream", BUS), runner).await;
    let bus = node.handle().bus().clone();
    let big = Json("x".repeat(1024 * 1024 - 400));
    bus.publish("jobs.big", &big).await.unwrap();

    let js = server.jetstream().await;
    let dead = js.get_stream("DEAD_LETTERS").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while dead.get_info().await.unwrap().state.messages < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "a dead letter within 10 s");
    let letter = dead.get_raw_message(1).await.unwrap();
    let get = |name: &str| letter.headers.get(name).map(|v| v.as_str().to_owned());
    assert!(letter.payload.is_empty());
    let dropped = get(headers::DEAD_LETTER_PAYLOAD).unwrap_or_default();
    assert!(dropped.starts_with("dropped"), "{dropped}");
    assert_eq!(get(headers::ORIGINAL_STREAM).as_deref(), Some("JOBS"));
    assert_eq!(get(headers::ORIGINAL_SEQUENCE).as_deref(), Some("1"));
    let reason = get(headers::DEAD_LETTER_REASON).unwrap_or_default();
    assert!(
        reason.len() <= 1100 && reason.starts_with("down: why"),
        "{reason}"
    );
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let info = runner_consumer(&js).await.get_info().await.unwrap();
            if (info.num_pending, info.num_ack_pending) == (0, 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "the message is settled");
    node.shutdown().await.unwrap();
}

/// The dead-letter stream configured under `bus.streams` by its name is
/// made as configured (it used to be made twice: with a stream's defaults,
/// one replica and kept for ever, and then as configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_configured_by_name_takes_its_settings() {
    let server = NatsServer::start().await;
    let config = server.config(
        "jetstream",
        "[bus.streams.DEAD_LETTERS]\nsubjects = [\"room619.dead-letter\"]\nmax_age = \"7d\"\n",
    );
    let node = support::start(config).await;
    let js = server.jetstream().await;
    let mut dead = js.get_stream("DEAD_LETTERS").await.unwrap();
    assert_eq!(
        dead.info().await.unwrap().config.max_age,
        Duration::from_secs(7 * 24 * 3600)
    );
    node.shutdown().await.unwrap();

    let err = room619::config::Config::from_toml_str(
        "[bus.streams.DEAD_LETTERS]\nsubjects = [\"elsewhere.>\"]\n",
    )
    .unwrap_err();
    assert_eq!(err.key(), "bus.streams.DEAD_LETTERS.subjects", "{err}");
    room619::config::Config::from_toml_str(
        "[bus.streams.DEAD_LETTERS]\nsubjects = [\"room619.>\"]\n",
    )
    .expect("a wildcard storing the subject will do");
}
