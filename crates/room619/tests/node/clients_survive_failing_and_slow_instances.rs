use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use room619::{
    RunningNode,
    config::InstanceConfig,
    resilience::{
        ClientPolicy,
        circuit_breaker::{BreakerPolicy, Window},
        hedge::HedgePolicy,
        retry::RetryPolicy,
    },
    rpc::client::RpcChannel,
};
use shop_proto::echo::v1::{EchoRequest, echo_client::EchoClient};

use crate::support::{
    self,
    fault_proxy::{Fault, FaultProxy},
};

/// A caller whose `echo` instances are the given proxies, with resilience
/// tuned for a short test: idempotent `Echo`, 4 attempts, instance breakers
/// opening on 3 failures in a row or half slow calls (over 150 ms), open for
/// 500 ms, 2 probes.
async fn caller(proxies: &[&FaultProxy]) -> RunningNode {
    caller_with(proxies, |_| {}).await
}

/// [`caller`], with the policy changed by `tune` before the node starts.
async fn caller_with(proxies: &[&FaultProxy], tune: impl FnOnce(&mut ClientPolicy)) -> RunningNode {
    let mut config = support::config("");
    config.node.name = "caller".into();
    config.discovery.instances = proxies
        .iter()
        .map(|proxy| InstanceConfig {
            name: "echo".into(),
            version: "1.0.0".into(),
            address: proxy.addr().to_string(),
        })
        .collect();
    let policy = &mut config.resilience.defaults;
    policy.retry = RetryPolicy {
        max_attempts: 4,
        idempotent: vec!["/shop.echo.v1.Echo/Echo".into()],
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    policy.instance_breaker = BreakerPolicy {
        window: Window::Count(20),
        minimum_calls: 10,
        consecutive_failures: 3,
        slow_call_duration: Duration::from_millis(150),
        slow_call_rate: 0.5,
        open_duration: Duration::from_millis(500),
        half_open_probes: 2,
        ..BreakerPolicy::default()
    };
    tune(policy);
    support::start_all(config, []).await
}

/// Echo nodes named `names`, each behind a fault proxy.
async fn behind_proxies(names: &[&str]) -> (Vec<RunningNode>, Vec<FaultProxy>) {
    let mut servers = Vec::new();
    let mut proxies = Vec::new();
    for name in names {
        let server = support::start_named(name, &[], Some(support::echo_service())).await;
        proxies.push(FaultProxy::start(server.local_addr()).await);
        servers.push(server);
    }
    (servers, proxies)
}

/// Stops the load, checks that no call failed, and stops every node.
async fn finish(load: Load, caller: RunningNode, servers: Vec<RunningNode>) {
    let failures = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    caller.shutdown().await.unwrap();
    for server in servers {
        server.shutdown().await.unwrap();
    }
}

/// Calls from `workers` tasks until `run` is cleared; counts answers by node
/// and failures.
struct Load {
    run: Arc<AtomicBool>,
    answers: Arc<Mutex<HashMap<String, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(channel: &RpcChannel, workers: usize) -> Self {
        let run = Arc::new(AtomicBool::new(true));
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let mut client = EchoClient::new(channel.clone());
                let (run, answers, failures) = (
                    Arc::clone(&run),
                    Arc::clone(&answers),
                    Arc::clone(&failures),
                );
                tokio::spawn(async move {
                    while run.load(Ordering::SeqCst) {
                        match client.echo(EchoRequest::default()).await {
                            Ok(reply) => {
                                *answers
                                    .lock()
                                    .unwrap()
                                    .entry(reply.into_inner().node)
                                    .or_default() += 1;
                            }
                            Err(status) => failures.lock().unwrap().push(format!("{status:?}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            run,
            answers,
            failures,
            tasks,
        }
    }

    /// Answers by node since the last call (and resets them).
    fn take_answers(&self) -> HashMap<String, usize> {
        std::mem::take(&mut *self.answers.lock().unwrap())
    }

    async fn stop(self) -> Vec<String> {
        self.run.store(false, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.failures.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_survive_a_dead_instance_and_avoid_a_slow_one() {
    let (mut servers, proxies) = behind_proxies(&["one", "two", "three"]).await;
    let caller = caller(&proxies.iter().collect::<Vec<_>>()).await;
    let channel = caller.handle().channel("echo", "^1").unwrap();
    let load = Load::start(&channel, 8);

    // Warm: all three answer.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let warm = load.take_answers();
    for name in ["one", "two", "three"] {
        assert!(
            warm.get(name).copied().unwrap_or_default() > 0,
            "{name} idle: {warm:?}"
        );
    }

    // Kill "two": its connections reset, its node goes away.
    proxies[1].set(Fault::Reset);
    servers.remove(1).shutdown().await.unwrap();
    // Answers already on their way when it died may still arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    load.take_answers();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after_kill = load.take_answers();
    assert_eq!(after_kill.get("two"), None, "{after_kill:?}");

    // Make "three" slow: its breaker opens and traffic moves to "one".
    proxies[2].set(Fault::Latency(Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.take_answers();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let slow = load.take_answers();
    let total: usize = slow.values().sum();
    let to_three = slow.get("three").copied().unwrap_or_default();
    assert!(
        to_three * 20 <= total,
        "the slow instance still took {to_three} of {total} calls: {slow:?}"
    );

    // Recovery: "three" is fast again; after the open duration, probes close
    // its breaker and it takes traffic again.
    proxies[2].set(Fault::Pass);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.take_answers();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recovered = load.take_answers();
    let total: usize = recovered.values().sum();
    let to_three = recovered.get("three").copied().unwrap_or_default();
    assert!(
        to_three * 5 >= total,
        "three took only {to_three} of {total}: {recovered:?}"
    );

    finish(load, caller, servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_instance_costs_no_call_and_is_then_avoided() {
    let (servers, proxies) = behind_proxies(&["one", "two"]).await;
    // Attempts time out after 1 s; hedges go out after p95 of recent calls.
    let caller = caller_with(&proxies.iter().collect::<Vec<_>>(), |policy| {
        policy.retry.attempt_timeout = Some(Duration::from_secs(1));
        policy.hedge = HedgePolicy {
            methods: vec!["/shop.echo.v1.Echo/Echo".into()],
            min_samples: 20,
            max_ratio: 0.5,
            ..HedgePolicy::default()
        };
    })
    .await;
    let channel = caller.handle().channel("echo", "^1").unwrap();
    let load = Load::start(&channel, 8);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let warm = load.take_answers();
    assert!(
        warm.contains_key("one") && warm.contains_key("two"),
        "{warm:?}"
    );

    // "two" swallows everything: its calls hang until hedged, or cut by the
    // attempt timeout and retried; its breaker opens and traffic moves to "one".
    proxies[1].set(Fault::BlackHole);
    tokio::time::sleep(Duration::from_secs(3)).await;
    load.take_answers();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let holed = load.take_answers();
    let total: usize = holed.values().sum();
    assert!(total > 0, "no call answered while two was black-holed");
    assert_eq!(holed.get("two"), None, "{holed:?}");
    finish(load, caller, servers).await;
}

/// Without hedging, a black-holed instance's calls are cut by the attempt
/// timeout, never answered: the cuts count as its failures and open its
/// breaker (a black hole answers nothing, so the answers alone cannot tell
/// whether it was avoided by chance or by its breaker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_cut_at_their_attempt_timeout_open_a_black_holed_instance_breaker() {
    let (servers, proxies) = behind_proxies(&["one", "two"]).await;
    let caller = caller_with(&proxies.iter().collect::<Vec<_>>(), |policy| {
        policy.retry.attempt_timeout = Some(Duration::from_millis(300));
    })
    .await;
    let channel = caller.handle().channel("echo", "^1").unwrap();
    let load = Load::start(&channel, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxies[1].set(Fault::BlackHole);
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.take_answers();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let holed = load.take_answers();
    assert_eq!(holed.get("two"), None, "{holed:?}");
    // Its calls were cut, never answered, and still opened its breaker (a
    // black hole answers nothing, so the counts above cannot tell).
    let metrics = support::metrics_text(caller.local_addr()).await;
    let opened = format!(
        "room619_circuit_breaker_transitions_total{{breaker=\"echo@{}\",protocol=\"grpc\",from=\"closed\",to=\"open\"}}",
        proxies[1].addr()
    );
    assert!(
        metrics.lines().any(|line| line.starts_with(&opened)),
        "no `{opened}` in\n{metrics}"
    );

    finish(load, caller, servers).await;
}
