//! Graceful shutdown with a JetStream durable consumer: the handlers in
//! flight finish and their messages are acked; nothing new is taken; the
//! next instance gets exactly the rest.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use room619::{
    RunningNode, ServiceBuilder,
    bus::{Event, Json},
    config::Config,
};
use tokio::sync::watch;

use crate::support::{self, nats::NatsServer};

const BUS: &str = r#"
[bus.streams.WORK]
subjects = ["work.>"]
[bus.consumers.worker]
max_in_flight = 2
ack_wait = "2s"
"#;

/// A worker that records what it starts and finishes, and holds each
/// handler until `gate` opens.
async fn worker(
    config: Config,
    log: Arc<Mutex<Vec<String>>>,
    gate: watch::Receiver<bool>,
) -> RunningNode {
    let service = ServiceBuilder::new("worker", "1.0.0")
        .unwrap()
        .durable_subscribe("work.>", "worker", move |_ctx, event: Event<Json<u32>>| {
            let (log, mut gate) = (Arc::clone(&log), gate.clone());
            async move {
                let Json(n) = event.into_body();
                log.lock().unwrap().push(format!("start {n}"));
                gate.wait_for(|open| *open).await.unwrap();
                log.lock().unwrap().push(format!("done {n}"));
                Ok(())
            }
        })
        .build()
        .unwrap();
    support::start_with(config, service).await
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

fn numbers(log: &Mutex<Vec<String>>, prefix: &str) -> Vec<u32> {
    let mut numbers: Vec<u32> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| line.strip_prefix(prefix)?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_acks_the_messages_in_flight_and_takes_no_new_ones() {
    let server = NatsServer::start().await;
    let config = server.config("jetstream", BUS);
    let first_log = Arc::new(Mutex::new(Vec::new()));
    let (open, gate) = watch::channel(false);
    let first = worker(config.clone(), Arc::clone(&first_log), gate).await;
    let bus = first.handle().bus().clone();
    for n in 0..6 {
        bus.publish("work.item", &Json(n)).await.unwrap();
    }
    wait_until("two handlers are in flight", || {
        numbers(&first_log, "start ").len() == 2
    })
    .await;

    let handle = first.handle();
    handle.shutdown();
    open.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .unwrap()
        .unwrap();
    let in_flight = numbers(&first_log, "start ");
    assert_eq!(in_flight.len(), 2, "nothing new was taken: {first_log:?}");
    assert_eq!(
        numbers(&first_log, "done "),
        in_flight,
        "the handlers in flight finished"
    );

    let second_log = Arc::new(Mutex::new(Vec::new()));
    let (_open, gate) = watch::channel(true);
    let second = worker(config, Arc::clone(&second_log), gate).await;
    let consumer = server
        .jetstream()
        .await
        .get_stream("WORK")
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("worker")
        .await
        .unwrap();
    let mut all_acked = false;
    let mut last = None;
    for _ in 0..1500 {
        let info = consumer.get_info().await.unwrap();
        if info.ack_floor.stream_sequence == 6 && info.num_ack_pending == 0 {
            all_acked = true;
            break;
        }
        last = Some(info);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // (This failed once in seven full runs of the suite, never alone; what
    // the consumer and both instances saw is what tells why.)
    assert!(
        all_acked,
        "every message acked within 15 s; the consumer: {last:#?}; \
         first instance: {first_log:?}; next instance: {second_log:?}"
    );
    let rest: Vec<u32> = (0..6).filter(|n| !in_flight.contains(n)).collect();
    assert_eq!(
        numbers(&second_log, "done "),
        rest,
        "the next instance got exactly the messages not taken (the acked ones never came back)"
    );
    second.shutdown().await.unwrap();
}
