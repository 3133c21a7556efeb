//! JetStream durable consumers: 10 000 messages published with ids, the
//! consumer killed mid-stream (its runtime dropped, as a crashed process
//! would be) and started again: every message is processed at least once.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use room619::{
    RunningNode, ServiceBuilder,
    bus::{Event, Json, MessageBus, OutgoingMessage},
    config::Config,
    rpc::codec::Format,
};

use crate::support::{
    self,
    fault_proxy::{Fault, FaultProxy},
    nats::NatsServer,
};

const TOTAL: u32 = 10_000;

const BUS: &str = r#"
[bus.streams.EVENTS]
subjects = ["events.>"]
[bus.consumers.counter]
ack_wait = "1s"
max_in_flight = 128
"#;

#[derive(Clone, Default)]
struct Tally {
    seen: Arc<Mutex<HashSet<u32>>>,
    handled: Arc<AtomicU64>,
}

async fn start_consumer(config: Config, tally: Tally) -> RunningNode {
    let counter = ServiceBuilder::new("counter", "1.0.0")
        .unwrap()
        .durable_subscribe(
            "events.>",
            "counter",
            move |_ctx, event: Event<Json<u32>>| {
                let tally = tally.clone();
                async move {
                    tally.seen.lock().unwrap().insert(event.into_body().0);
                    tally.handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .build()
        .unwrap();
    support::start_with(config, counter).await
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(limit, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

#[test]
fn every_message_is_processed_at_least_once_when_the_consumer_is_killed_mid_stream() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = NatsServer::start().await;
        let config = server.config("jetstream", BUS);
        let tally = Tally::default();

        // The first consumer lives on a runtime of its own: dropping that
        // runtime ends its tasks and its connection mid-handler, unacked.
        let doomed = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let first = doomed
            .spawn(start_consumer(config.clone(), tally.clone()))
            .await
            .unwrap();
        drop(first); // the node keeps running on `doomed`

        let publisher = MessageBus::connect(&config.bus).await.unwrap();
        let publishing = tokio::spawn(async move {
            futures_util::stream::iter(0..TOTAL)
                .map(|n| {
                    let publisher = publisher.clone();
                    async move {
                        let message =
                            OutgoingMessage::encode("events.tick", &Json(n), Format::Json)?
                                .message_id(format!("tick-{n}"));
                        publisher.publish_message(message).await
                    }
                })
                .buffer_unordered(32)
                .try_collect::<Vec<()>>()
                .await
        });

        wait_until(
            "2 000 messages were handled",
            Duration::from_secs(60),
            || tally.handled.load(Ordering::SeqCst) >= 2_000,
        )
        .await;
        doomed.shutdown_background();
        let at_kill = tally.handled.load(Ordering::SeqCst);
        publishing.await.unwrap().unwrap();
        assert!(
            at_kill < u64::from(TOTAL),
            "the consumer was killed mid-stream ({at_kill} handled)"
        );

        let second = start_consumer(config, tally.clone()).await;
        wait_until("every message was handled", Duration::from_secs(60), || {
            tally.seen.lock().unwrap().len() == TOTAL as usize
        })
        .await;
        second.shutdown().await.unwrap();
        assert!(tally.handled.load(Ordering::SeqCst) >= u64::from(TOTAL));
    });
}

/// A backlog larger than the handlers: each message is pulled only when a
/// handler is free for it, so its `ack_wait` is its handler's time. Pulled
/// ahead, messages would wait in a buffer for a handler and be delivered
/// again while their first handler still ran (here each handler takes 0.7 of
/// `ack_wait`, and waiting one more handler's time passes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_waiting_for_free_handlers_is_not_delivered_twice() {
    let server = NatsServer::start().await;
    let config = server.config("jetstream", SLOW);
    let publisher = MessageBus::connect(&config.bus).await.unwrap();
    for n in 0..BACKLOG {
        publisher.publish("events.job", &Json(n)).await.unwrap();
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let node = support::start_with(config, slow_service(&calls)).await;
    each_handled_once(node, &calls).await;
}

/// A handler that runs longer than `ack_wait` keeps its message: the
/// subscriber tells the server it is still in progress, so no second copy is
/// handed to another handler beside it (nor, after `max_deliver` such
/// deliveries, sent to the dead letters while the first still runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_ack_wait_keeps_its_message() {
    let server = NatsServer::start().await;
    let config = server.config(
        "jetstream",
        r#"
[bus.streams.EVENTS]
subjects = ["events.>"]
[bus.consumers.slow]
ack_wait = "1s"
max_deliver = 2
max_in_flight = 4
"#,
    );
    let publisher = MessageBus::connect(&config.bus).await.unwrap();
    let mut dead = publisher.subscribe("room619.dead-letter").await.unwrap();
    let started = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicU64::new(0));
    let (seen, finished) = (Arc::clone(&started), Arc::clone(&done));
    let service = ServiceBuilder::new("slow", "1.0.0")
        .unwrap()
        .durable_subscribe("events.>", "slow", move |_ctx, event: Event<Json<u32>>| {
            let (seen, finished) = (Arc::clone(&seen), Arc::clone(&finished));
            async move {
                seen.lock().unwrap().push(event.into_body().0);
                // Two and a half times `ack_wait`.
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let node = support::start_with(config, service).await;
    for n in 0..2 {
        publisher.publish("events.job", &Json(n)).await.unwrap();
    }
    wait_until("both were handled", Duration::from_secs(20), || {
        done.load(Ordering::SeqCst) >= 2
    })
    .await;
    // Long enough for a redelivery after the ack to show.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    node.shutdown().await.unwrap();
    let mut started = started.lock().unwrap().clone();
    started.sort_unstable();
    assert_eq!(
        started,
        [0, 1],
        "each message handled once, never beside itself"
    );
    let letter = tokio::time::timeout(Duration::from_millis(200), dead.next()).await;
    assert!(letter.is_err(), "nothing was dead-lettered: {letter:?}");
}

/// While the connection is down, the consumer asks for nothing: requests
/// sent then would wait in the client's buffer and all reach the server at
/// the reconnect, each with a fresh expiry, for many more messages than
/// there are handlers, which would wait past their `ack_wait` and be
/// delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_does_not_make_the_consumer_ask_for_more_than_its_handlers() {
    let mut server = NatsServer::start().await;
    let config = server.config("jetstream", SLOW);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let node = support::start_with(config.clone(), slow_service(&calls)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    // Long enough for requests to expire unheard, more than once.
    tokio::time::sleep(Duration::from_secs(9)).await;
    server.restart().await;
    let publisher = MessageBus::connect(&config.bus).await.unwrap();
    for n in 0..BACKLOG {
        publisher.publish("events.job", &Json(n)).await.unwrap();
    }
    each_handled_once(node, &calls).await;
}

/// A connection lost for a moment while the server keeps running does not
/// stall the consumer: the requests it had sent ended with the connection
/// (or, if the server still holds them, would answer on an inbox nobody
/// listens on), and once reconnected it asks again at once, instead of
/// waiting for them to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_brief_connection_loss_the_consumer_pulls_again_at_once() {
    let server = NatsServer::start().await;
    let proxy = FaultProxy::start(server.addr()).await;
    let config = support::config(&format!(
        "[bus]\nbackend = \"jetstream\"\nurl = \"nats://{}\"\n{BUS}",
        proxy.addr()
    ));
    let tally = Tally::default();
    let node = start_consumer(config, tally.clone()).await;
    let publisher = MessageBus::connect(&server.config("jetstream", BUS).bus)
        .await
        .unwrap();
    let handled = |n: u32| {
        let seen = Arc::clone(&tally.seen);
        move || seen.lock().unwrap().contains(&n)
    };
    publisher.publish("events.tick", &Json(1)).await.unwrap();
    wait_until("message 1 was handled", Duration::from_secs(5), handled(1)).await;

    // The consumer's requests are under way when the connection drops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set(Fault::Reset);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Fault::Pass);
    // Reconnect attempts are at most 0.64 s apart by then.
    tokio::time::sleep(Duration::from_millis(700)).await;
    publisher.publish("events.tick", &Json(2)).await.unwrap();
    // Well under the 2 s a server-side expiry takes, and the 4 s of a
    // request the consumer would wait to hear of.
    wait_until(
        "message 2 was handled soon after the reconnect",
        Duration::from_secs(1),
        handled(2),
    )
    .await;
    node.shutdown().await.unwrap();
}

/// A server restart forgets the consumer's pull requests without a word;
/// the consumer does not wait for them to expire (4 s after they were sent)
/// but asks again as soon as it is reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_consumer_pulls_again_at_once() {
    let mut server = NatsServer::start().await;
    let config = server.config("jetstream", BUS);
    let tally = Tally::default();
    let node = start_consumer(config.clone(), tally.clone()).await;
    let handled = |n: u32| {
        let seen = Arc::clone(&tally.seen);
        move || seen.lock().unwrap().contains(&n)
    };
    let publisher = MessageBus::connect(&config.bus).await.unwrap();
    publisher.publish("events.tick", &Json(1)).await.unwrap();
    wait_until("message 1 was handled", Duration::from_secs(5), handled(1)).await;

    // Killed right after the consumer renews its request (each lasts 2 s).
    let probe = server.client().await;
    let mut requests = probe
        .subscribe("$JS.API.CONSUMER.MSG.NEXT.EVENTS.counter")
        .await
        .unwrap();
    probe.flush().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), requests.next())
        .await
        .expect("the consumer renews its pull request within 5 s")
        .unwrap();
    let sent = std::time::Instant::now();
    server.kill();
    server.restart().await;
    publisher.publish("events.tick", &Json(2)).await.unwrap();
    let limit = Duration::from_secs(3).saturating_sub(sent.elapsed());
    wait_until(
        "message 2 was handled less than 3 s after the last request before the restart",
        limit,
        handled(2),
    )
    .await;
    node.shutdown().await.unwrap();
}

/// A backlog larger than [`SLOW`]'s handlers.
const BACKLOG: u32 = 8;

/// Two handlers, each taking 0.7 of `ack_wait`.
const SLOW: &str = r#"
[bus.streams.EVENTS]
subjects = ["events.>"]
[bus.consumers.slow]
ack_wait = "1s"
max_in_flight = 2
"#;

/// The durable consumer `slow` of `events.>`: each message takes 700 ms,
/// then goes into `calls`.
fn slow_service(calls: &Arc<Mutex<Vec<u32>>>) -> room619::service::BuiltService {
    let seen = Arc::clone(calls);
    ServiceBuilder::new("slow", "1.0.0")
        .unwrap()
        .durable_subscribe("events.>", "slow", move |_ctx, event: Event<Json<u32>>| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                seen.lock().unwrap().push(event.into_body().0);
                Ok(())
            }
        })
        .build()
        .unwrap()
}

/// Waits until the backlog was handled, a little more for redeliveries to
/// show, stops `node`, and checks each message was handled once.
async fn each_handled_once(node: RunningNode, calls: &Arc<Mutex<Vec<u32>>>) {
    wait_until("the backlog was handled", Duration::from_secs(30), || {
        calls.lock().unwrap().len() >= BACKLOG as usize
    })
    .await;
    // Long enough for a redelivery of the last ones to show.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    node.shutdown().await.unwrap();
    let mut calls = calls.lock().unwrap().clone();
    calls.sort_unstable();
    assert_eq!(
        calls,
        (0..BACKLOG).collect::<Vec<_>>(),
        "each message handled once"
    );
}

/// The pull requests of a durable consumer outlive what happens to the
/// server: the consumer deleted by an operator is created again, and after a
/// server restart (which forgets the requests under way) pulling resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_resumes_after_it_is_deleted_and_after_a_server_restart() {
    let mut server = NatsServer::start().await;
    let config = server.config("jetstream", BUS);
    let tally = Tally::default();
    let node = start_consumer(config.clone(), tally.clone()).await;
    let publisher = MessageBus::connect(&config.bus).await.unwrap();
    let handled = |n: u32| {
        let seen = Arc::clone(&tally.seen);
        move || seen.lock().unwrap().contains(&n)
    };

    publisher.publish("events.tick", &Json(1)).await.unwrap();
    wait_until("message 1 was handled", Duration::from_secs(5), handled(1)).await;

    let js = server.jetstream().await;
    js.get_stream("EVENTS")
        .await
        .unwrap()
        .delete_consumer("counter")
        .await
        .unwrap();
    publisher.publish("events.tick", &Json(2)).await.unwrap();
    wait_until(
        "message 2 was handled by the consumer created again",
        Duration::from_secs(10),
        handled(2),
    )
    .await;

    server.kill();
    server.restart().await;
    publisher.publish("events.tick", &Json(3)).await.unwrap();
    wait_until(
        "message 3 was handled after the restart",
        Duration::from_secs(20),
        handled(3),
    )
    .await;
    node.shutdown().await.unwrap();
}

/// What the durable consumer's pull bookkeeping relies on, checked against
/// the real server: pull requests answered on subjects of their own under
/// one wildcard subscription each end with a status on their own subject
/// that says how many of their messages never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pull_request_ends_on_its_own_subject_with_what_it_did_not_get() {
    use async_nats::jetstream::consumer::pull::{BatchConfig, Config as PullConfig};

    let server = NatsServer::start().await;
    // One connection for all, as the consumer has: its subscription is
    // there before its requests.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "PULLS".to_owned(),
            subjects: vec!["pulls.>".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(PullConfig {
            durable_name: Some("probe".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.unwrap();
    for (id, batch) in [(0, 3), (1, 2)] {
        let request = BatchConfig {
            batch,
            expires: Some(Duration::from_millis(300)),
            ..BatchConfig::default()
        };
        consumer
            .request_batch(request, format!("{inbox}.{id}").into())
            .await
            .unwrap();
    }
    js.publish("pulls.one", "1".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let mut deliveries = 0;
    let mut ends = Vec::new();
    while ends.len() < 2 {
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .unwrap_or_else(|_elapsed| {
                panic!("both requests end within 5 s; so far {deliveries} delivered, ends {ends:?}")
            })
            .unwrap();
        match reply.status {
            None => {
                assert_eq!(reply.subject.as_str(), "pulls.one");
                deliveries += 1;
            }
            Some(status) => {
                assert_eq!(status, async_nats::StatusCode::TIMEOUT);
                let left: u32 = reply
                    .headers
                    .unwrap()
                    .get("Nats-Pending-Messages")
                    .unwrap()
                    .as_str()
                    .parse()
                    .unwrap();
                ends.push((reply.subject.to_string(), left));
            }
        }
    }
    ends.sort();
    assert_eq!(deliveries, 1);
    assert_eq!(
        ends,
        [(format!("{inbox}.0"), 2), (format!("{inbox}.1"), 2)],
        "the first request got the message"
    );
}

/// A durable consumer with `deliver = "new"` does not replay what its
/// stream held before it was created (it used to: every consumer started at
/// the stream's first message); started again under `deliver = "all"`, it
/// keeps its place (JetStream refuses to change where a consumer started,
/// which used to fail the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_can_skip_the_history_and_an_existing_one_keeps_its_place() {
    fn config(server: &NatsServer, deliver: &str) -> Config {
        server.config(
            "jetstream",
            &format!(
                "[bus.streams.EVENTS]\nsubjects = [\"events.>\"]\n\
                 [bus.consumers.fresh]\ndeliver = \"{deliver}\"\n"
            ),
        )
    }
    async fn start(config: Config, seen: &Arc<Mutex<Vec<u32>>>) -> RunningNode {
        let seen = Arc::clone(seen);
        let service = ServiceBuilder::new("fresh", "1.0.0")
            .unwrap()
            .durable_subscribe("events.>", "fresh", move |_ctx, event: Event<Json<u32>>| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push(event.into_body().0);
                    Ok(())
                }
            })
            .build()
            .unwrap();
        support::start_with(config, service).await
    }

    let server = NatsServer::start().await;
    let publisher = MessageBus::connect(&config(&server, "new").bus)
        .await
        .unwrap();
    for n in 0..3 {
        publisher.publish("events.old", &Json(n)).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let node = start(config(&server, "new"), &seen).await;
    for n in 3..5 {
        publisher.publish("events.new", &Json(n)).await.unwrap();
    }
    wait_until("3 and 4 were handled", Duration::from_secs(10), || {
        seen.lock().unwrap().len() >= 2
    })
    .await;
    node.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [3, 4], "nothing from before");

    publisher.publish("events.new", &Json(5)).await.unwrap();
    let node = start(config(&server, "all"), &seen).await;
    wait_until("5 was handled", Duration::from_secs(10), || {
        seen.lock().unwrap().len() >= 3
    })
    .await;
    // Time for a replay of the history to show, if there were one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [3, 4, 5], "its place kept");
    let info = server
        .jetstream()
        .await
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "fresh", "EVENTS",
        )
        .await
        .unwrap();
    assert_eq!(
        info.cached_info().config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::New
    );
}
