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

use crate::support::{self, nats::NatsServer};

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
