use std::io::Write as _;

use room619::{ErrorKind, config::ConfigLoader};

use crate::support;

#[test]
fn a_bad_value_in_a_file_names_the_key_and_the_file() {
    let dir = std::env::temp_dir().join(format!("room619-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(file, "[limits]\nhttp2_max_concurrent_streams = -1").unwrap();
    let err = ConfigLoader::new()
        .file(&path)
        .without_env()
        .load()
        .unwrap_err();
    assert_eq!(err.key(), "limits.http2_max_concurrent_streams");
    let shown = err.to_string();
    assert!(shown.contains("bad.toml"), "{shown}");
    assert!(
        shown.contains("limits.http2_max_concurrent_streams"),
        "{shown}"
    );
}

#[test]
fn an_unknown_service_in_the_service_set_is_rejected() {
    let mut config = support::config("");
    config.node.services = vec!["echo".into(), "payments".into()];
    let err = room619::Node::builder()
        .config(config)
        .service(support::echo_service())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("node.services"), "{err}");
    assert!(err.message().contains("payments"), "{err}");
}

#[tokio::test]
async fn the_service_set_selects_which_services_run() {
    let mut config = support::config("");
    config.node.services = vec!["other".into()];
    let other = room619::ServiceBuilder::new("other", "1.0.0")
        .unwrap()
        .build()
        .unwrap();
    let node = support::start_all(config, [support::echo_service(), other]).await;
    let names: Vec<String> = node
        .handle()
        .registry()
        .list()
        .iter()
        .map(|status| status.descriptor.name().to_owned())
        .collect();
    assert_eq!(names, ["other"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_listener_that_cannot_bind_names_its_key() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = support::config("");
    config.node.listen = taken.local_addr().unwrap();
    let err = support::start_fails(config, []).await;
    assert!(err.message().contains("node.listen"), "{err}");
}

/// Absurd values that would make the node allocate gigabytes per request or
/// overflow its clock are refused at load, naming their key.
#[test]
fn absurd_sizes_and_durations_are_refused_naming_their_key() {
    for (toml, key) in [
        (
            "[limits]\nhttp1_max_headers = 100000000",
            "limits.http1_max_headers",
        ),
        (
            "[limits]\nmax_header_bytes = 10000000000",
            "limits.max_header_bytes",
        ),
        (
            "[node]\ndrain_timeout = \"300000000000y\"",
            "node.drain_timeout",
        ),
        ("[node]\nshutdown_delay = \"2days\"", "node.shutdown_delay"),
        (
            "[limits]\nwrite_stall_timeout = \"1year\"",
            "limits.write_stall_timeout",
        ),
    ] {
        let err = ConfigLoader::new()
            .toml_str(toml)
            .without_env()
            .load()
            .unwrap_err();
        assert_eq!(err.key(), key, "{toml}: {err}");
    }
}
