//! Readiness lists each service's named dependency checks: a degraded
//! dependency is reported and keeps the node ready, a failing one makes it
//! not ready.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use room619::{ServiceBuilder, service::Health};

use crate::support;

#[tokio::test]
async fn degraded_dependencies_keep_readiness_and_failing_ones_take_it_away() {
    let database_up = Arc::new(AtomicBool::new(true));
    let up = Arc::clone(&database_up);
    let service = ServiceBuilder::new("orders", "1.0.0")
        .unwrap()
        .dependency("cache", || async {
            Health::Degraded("replica lagging".into())
        })
        .dependency("postgres", move || {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Health::Healthy
                } else {
                    Health::Unhealthy("connection refused".into())
                }
            }
        })
        .build()
        .unwrap();
    let node = support::start_with(support::config(""), service).await;
    let url = format!("http://{}/health/ready", node.local_addr());
    let http = support::http1();

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["status"], "ready");
    assert_eq!(report["degraded"], true);
    assert_eq!(
        report["services"][0]["dependencies"],
        serde_json::json!([
            { "name": "cache", "status": "degraded", "detail": "replica lagging" },
            { "name": "postgres", "status": "healthy" },
        ])
    );

    database_up.store(false, Ordering::SeqCst);
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["status"], "not_ready");
    assert_eq!(
        report["services"][0]["dependencies"][1],
        serde_json::json!({ "name": "postgres", "status": "unhealthy", "detail": "connection refused" })
    );
    node.shutdown().await.unwrap();
}

/// A service of the application's own whose dependency checks never
/// answer: readiness still answers, in about six seconds, not ready.
#[tokio::test]
async fn dependency_checks_that_never_answer_fail_readiness_in_bounded_time() {
    struct Stuck(room619::service::ServiceDescriptor);

    impl room619::service::Service for Stuck {
        fn descriptor(&self) -> &room619::service::ServiceDescriptor {
            &self.0
        }

        fn routes(&self) -> room619::service::ServiceRoutes {
            room619::service::ServiceRoutes::default()
        }

        fn dependencies(
            &self,
        ) -> futures_util::future::BoxFuture<'static, Vec<room619::service::DependencyHealth>>
        {
            Box::pin(std::future::pending())
        }
    }

    let descriptor = room619::service::ServiceDescriptor::new("stuck", "1.0.0").unwrap();
    let node = room619::Node::builder()
        .config(support::config(""))
        .service(Stuck(descriptor))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let url = format!("http://{}/health/ready", node.local_addr());
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        support::http1().get(&url).send(),
    )
    .await
    .expect("readiness hung on a dependency check")
    .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(response.status(), 503);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        report["services"][0]["dependencies"][0]["status"], "unhealthy",
        "{report}"
    );
    node.shutdown().await.unwrap();
}
