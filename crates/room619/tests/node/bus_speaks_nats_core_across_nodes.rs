//! The NATS core backend on a real `nats-server`: pub/sub between nodes,
//! queue groups spreading the load, request/reply with timeouts, a clear
//! error when the server is not there, and back-pressure from the
//! connection's publish queue that loses nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use room619::{
    ErrorKind, RunningNode, ServiceBuilder,
    bus::{Event, Json, MessageBus},
    config::Config,
};

use crate::support::{self, nats::NatsServer};

async fn start(config: Config, service: ServiceBuilder) -> RunningNode {
    support::start_with(config, service.build().unwrap()).await
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_message_published_on_one_node_reaches_the_subscribers_of_another() {
    let server = NatsServer::start().await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&got);
    let listener = ServiceBuilder::new("listener", "1.0.0").unwrap().subscribe(
        "greetings.>",
        move |_ctx, event: Event<Json<String>>| {
            let recorder = Arc::clone(&recorder);
            async move {
                recorder
                    .lock()
                    .unwrap()
                    .push((event.subject().to_owned(), event.into_body().0));
                Ok(())
            }
        },
    );
    let node = start(server.config("nats", ""), listener).await;
    let publisher = MessageBus::connect(&server.config("nats", "").bus)
        .await
        .unwrap();

    publisher
        .publish("greetings.en", &Json("hello".to_owned()))
        .await
        .unwrap();
    publisher
        .publish("greetings.fr.formal", &Json("bonjour".to_owned()))
        .await
        .unwrap();
    eventually("both greetings arrived", || got.lock().unwrap().len() == 2).await;
    let mut got = got.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        [
            ("greetings.en".to_owned(), "hello".to_owned()),
            ("greetings.fr.formal".to_owned(), "bonjour".to_owned())
        ]
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_queue_group_spreads_the_messages_over_three_nodes() {
    let server = NatsServer::start().await;
    let counts = Arc::new(Mutex::new(HashMap::<usize, usize>::new()));
    let mut nodes = Vec::new();
    for instance in 0..3 {
        let counts = Arc::clone(&counts);
        let worker = ServiceBuilder::new("worker", "1.0.0")
            .unwrap()
            .queue_subscribe("tasks", "workers", move |_ctx, _event: Event<Json<u32>>| {
                *counts.lock().unwrap().entry(instance).or_default() += 1;
                async { Ok(()) }
            });
        nodes.push(start(server.config("nats", ""), worker).await);
    }
    let publisher = MessageBus::connect(&server.config("nats", "").bus)
        .await
        .unwrap();
    for n in 0..300 {
        publisher.publish("tasks", &Json(n)).await.unwrap();
    }
    publisher.flush().await.unwrap();
    let total = || counts.lock().unwrap().values().sum::<usize>();
    eventually("all 300 tasks were handled", || total() == 300).await;
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.len(), 3, "every instance took part: {counts:?}");
    for (instance, count) in &counts {
        assert!(
            *count >= 30,
            "instance {instance} got only {count} of 300: {counts:?}"
        );
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn requests_are_answered_across_nodes_and_time_out_when_nobody_answers_in_time() {
    let server = NatsServer::start().await;
    let math = ServiceBuilder::new("math", "1.0.0")
        .unwrap()
        .respond("math.square", |_ctx, event: Event<Json<u64>>| async move {
            let Json(n) = event.into_body();
            Ok(Json(n * n))
        })
        .subscribe("math.slow", |_ctx, _event: Event<Json<u64>>| async {
            Ok(())
        });
    let node = start(server.config("nats", ""), math).await;
    let client = MessageBus::connect(&server.config("nats", "").bus)
        .await
        .unwrap();

    let Json(squared): Json<u64> = client
        .request("math.square", &Json(12), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(squared, 144);
    let slow = client
        .request::<_, Json<u64>>("math.slow", &Json(1), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(slow.kind(), ErrorKind::DeadlineExceeded);
    let nobody = client
        .request::<_, Json<u64>>("math.nobody", &Json(1), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(nobody.kind(), ErrorKind::Unavailable, "{nobody}");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_whose_bus_server_is_unreachable_fails_to_start_naming_bus_url() {
    let mut server = NatsServer::start().await;
    let config = server.config("nats", "publish_timeout = \"500ms\"");
    server.kill();
    let err = support::start_fails(config, [support::echo_service()]).await;
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("bus.url"), "{err}");
    assert!(err.message().contains(&server.url()), "{err}");
}

#[tokio::test]
async fn a_one_message_publish_queue_holds_publishers_back_and_loses_nothing() {
    let server = NatsServer::start().await;
    let subscriber = MessageBus::connect(&server.config("nats", "").bus)
        .await
        .unwrap();
    let mut subscription = subscriber.subscribe("counted").await.unwrap();
    subscriber.flush().await.unwrap();
    let publisher = MessageBus::connect(&server.config("nats", "publish_queue = 1").bus)
        .await
        .unwrap();

    let messages: u32 = 2_000;
    for n in 0..messages {
        publisher.publish("counted", &Json(n)).await.unwrap();
    }
    publisher.flush().await.unwrap();
    for expected in 0..messages {
        let message = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .unwrap_or_else(|_| panic!("message {expected} never arrived"))
            .unwrap();
        let Json(n) = message.decode::<Json<u32>>().unwrap();
        assert_eq!(n, expected);
    }
}

/// A message over the server's `max_payload` (1 MiB by default) is the
/// message's fault: `PayloadTooLarge`, as for a request, and the connection
/// goes on.
#[tokio::test]
async fn a_message_larger_than_the_server_takes_is_payload_too_large() {
    let server = NatsServer::start().await;
    let bus = MessageBus::connect(&server.config("nats", "").bus)
        .await
        .unwrap();
    let big = Json("x".repeat(2 * 1024 * 1024));
    let refused = bus.publish("sizes.big", &big).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::PayloadTooLarge, "{refused}");
    bus.publish("sizes.small", &Json("fits".to_owned()))
        .await
        .unwrap();
}

/// While the server is away nothing drains the connection's queue: once it
/// is full, a publish, a request and a subscription each end within their
/// bound with a clear error instead of waiting for the server's return.
#[tokio::test]
async fn with_the_server_gone_a_full_queue_fails_publishes_within_the_publish_timeout() {
    let mut server = NatsServer::start().await;
    let bus = MessageBus::connect(
        &server
            .config("nats", "publish_queue = 4\npublish_timeout = \"300ms\"")
            .bus,
    )
    .await
    .unwrap();
    server.kill();
    let started = std::time::Instant::now();
    let mut refused = None;
    for n in 0..64_u32 {
        if let Err(err) = bus.publish("outage.count", &Json(n)).await {
            refused = Some(err);
            break;
        }
    }
    let refused = refused.expect("a full queue refuses a publish");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(refused.message().contains("publish_timeout"), "{refused}");
    let request = tokio::time::timeout(
        Duration::from_secs(5),
        bus.request::<_, Json<u32>>("outage.ask", &Json(1_u32), Duration::from_millis(300)),
    )
    .await
    .expect("a request ends at its own timeout");
    assert_eq!(request.unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    let subscription = tokio::time::timeout(Duration::from_secs(5), bus.subscribe("outage.>"))
        .await
        .expect("a subscription ends at the publish timeout");
    assert_eq!(
        subscription.err().map(|err| err.kind()),
        Some(ErrorKind::Unavailable)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
