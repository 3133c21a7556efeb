//! JetStream publishes: confirmed by the server before `publish` returns, so
//! a server killed with SIGKILL mid-publishing loses none of those; a message
//! id published twice is stored once.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    consumer::{AckPolicy, pull},
    stream::Stream,
};
use futures_util::StreamExt as _;
use room619::{
    bus::{Json, MessageBus, OutgoingMessage, headers},
    rpc::codec::Format,
};

use crate::support::nats::NatsServer;

const BUS: &str = r#"
publish_timeout = "10s"
[bus.streams.LEDGER]
subjects = ["ledger.>"]
"#;

fn entry(n: u32, id: &str) -> OutgoingMessage {
    OutgoingMessage::encode("ledger.entry", &Json(n), Format::Json)
        .unwrap()
        .message_id(id)
}

/// Every message id in the stream, in order.
async fn stored_ids(stream: &Stream) -> Vec<String> {
    let count = stream.get_info().await.unwrap().state.messages;
    if count == 0 {
        return Vec::new();
    }
    let reader = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..pull::Config::default()
        })
        .await
        .unwrap();
    let mut messages = reader
        .batch()
        .max_messages(usize::try_from(count).unwrap())
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(headers::MESSAGE_ID))
            .unwrap();
        ids.push(id.as_str().to_owned());
        if ids.len() as u64 == count {
            break;
        }
    }
    ids
}

#[tokio::test]
async fn the_same_message_id_published_twice_is_stored_once() {
    let server = NatsServer::start().await;
    let bus = MessageBus::connect(&server.config("jetstream", BUS).bus)
        .await
        .unwrap();
    bus.publish_message(entry(1, "order-1")).await.unwrap();
    bus.publish_message(entry(1, "order-1")).await.unwrap();
    bus.publish_message(entry(2, "order-2")).await.unwrap();
    let stream = server.jetstream().await.get_stream("LEDGER").await.unwrap();
    assert_eq!(stored_ids(&stream).await, ["order-1", "order-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_that_returned_ok_survives_a_server_killed_with_sigkill() {
    const TOTAL: u32 = 2_000;
    let mut server = NatsServer::start().await;
    let bus = MessageBus::connect(&server.config("jetstream", BUS).bus)
        .await
        .unwrap();
    let progress = Arc::new(AtomicU32::new(0));
    let publishing = tokio::spawn({
        let progress = Arc::clone(&progress);
        async move {
            let (mut confirmed, mut failed) = (Vec::new(), Vec::new());
            for n in 0..TOTAL {
                match bus.publish_message(entry(n, &format!("entry-{n}"))).await {
                    Ok(()) => confirmed.push(format!("entry-{n}")),
                    Err(err) => failed.push((n, err)),
                }
                progress.store(n, Ordering::SeqCst);
            }
            (confirmed, failed)
        }
    });
    while progress.load(Ordering::SeqCst) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let killed_at = progress.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await; // the server stays down a while
    server.restart().await;
    let (confirmed, failed) = tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .unwrap()
        .unwrap();
    assert!(
        killed_at < TOTAL - 1,
        "the server was killed mid-publishing"
    );
    assert!(
        confirmed.len() + 10 >= TOTAL as usize,
        "publishing went on after the restart: {} confirmed, failures: {failed:?}",
        confirmed.len()
    );

    let stream = server.jetstream().await.get_stream("LEDGER").await.unwrap();
    let stored = stored_ids(&stream).await;
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "retries were stored once");
    let lost: Vec<&String> = confirmed.iter().filter(|id| !unique.contains(id)).collect();
    assert!(lost.is_empty(), "confirmed but not stored: {lost:?}");
}
