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
