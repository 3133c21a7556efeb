//! Configuration hot reload: an edit of the watched file changes the log
//! level and the listed instances live; a broken edit is rejected, reported
//! and counted, and the running configuration stays.

use std::{path::Path, time::Duration};

use room619::{
    config::{ConfigLoader, LogConfig, LogFormat, Overrides},
    observability::logging,
};
use tracing::Level;

/// Hang guard for a reload to be noticed.
const GUARD: Duration = Duration::from_secs(20);

fn toml(level: &str, users_address: &str) -> String {
    format!(
        "[node]\nlisten = \"127.0.0.1:0\"\nname = \"reloading\"\ndrain_timeout = \"5s\"\n\
         config_poll_interval = \"20ms\"\n\
         [log]\nlevel = \"{level}\"\n\
         [[discovery.instances]]\nname = \"users\"\nversion = \"1.0.0\"\naddress = \"{users_address}\"\n"
    )
}

/// Replaces the file in one step, so the poller never sees half an edit.
fn write(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A fresh directory named after `name` and the process, and in it
/// `room619.toml` holding `text`.
fn config_file(name: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("room619-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("room619.toml");
    write(&path, text);
    (dir, path)
}

/// A node with the echo service, configured from the file at `path` and
/// watching it.
async fn watching(path: &Path) -> room619::RunningNode {
    let config = ConfigLoader::new().file(path).without_env().load().unwrap();
    room619::Node::builder()
        .config(config)
        .watch_config(path, Overrides::new())
        .service(crate::support::echo_service())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// The addresses of the `users` instances the node behind `handle` knows.
fn users(handle: &room619::node::NodeHandle) -> Vec<String> {
    handle
        .discovery()
        .resolve("users", &"^1".parse().unwrap())
        .iter()
        .map(|i| i.address().to_owned())
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(GUARD, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

#[tokio::test]
async fn a_config_edit_applies_live_and_a_broken_one_is_rejected() {
    assert!(
        std::env::var_os("RUST_LOG").is_none(),
        "RUST_LOG wins over log.level; unset it for this test"
    );
    let log = LogConfig {
        level: "error".into(),
        format: LogFormat::Json,
    };
    if logging::init(&log).is_err() {
        // Another test installed it first: start from the same filter.
        logging::set_filter("error").unwrap();
    }
    let (dir, path) = config_file("reload", &toml("error", "127.0.0.1:1"));
    let node = watching(&path).await;
    let handle = node.handle();
    let live = handle.live_config().clone();
    assert!(!tracing::enabled!(Level::DEBUG));
    assert_eq!(users(&handle), ["127.0.0.1:1"]);

    // A valid edit: the log level and the listed instances change live.
    write(&path, &toml("debug", "127.0.0.1:2"));
    wait_for("the reload", || live.reloads() == 1).await;
    assert_eq!(live.current().log.level, "debug");
    assert!(tracing::enabled!(Level::DEBUG));
    assert_eq!(users(&handle), ["127.0.0.1:2"]);

    // Broken edits: a bad value, then bad TOML. Both are counted; nothing changes.
    write(
        &path,
        &format!(
            "{}[limits]\nmax_header_bytes = 10\n",
            toml("warn", "127.0.0.1:3")
        ),
    );
    wait_for("the first rejection", || live.reloads_failed() == 1).await;
    write(&path, "[node\nlisten = ");
    wait_for("the second rejection", || live.reloads_failed() == 2).await;
    assert_eq!(live.reloads(), 1);
    assert_eq!(live.current().log.level, "debug");
    assert!(tracing::enabled!(Level::DEBUG));
    assert_eq!(users(&handle), ["127.0.0.1:2"]);

    // A valid edit again is applied.
    write(&path, &toml("error", "127.0.0.1:2"));
    wait_for("the second reload", || live.reloads() == 2).await;
    assert!(!tracing::enabled!(Level::DEBUG));

    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An edit written in place (an editor saving, `cat >`): the poller may see
/// the file truncated, or half written; it loads the file only once two
/// reads a moment apart agree, and never takes an empty file for the
/// defaults (which would drop every listed instance).
#[tokio::test]
async fn an_edit_written_in_place_is_loaded_whole_or_not_at_all() {
    let (dir, path) = config_file("in-place", &toml("error", "127.0.0.1:1"));
    let node = watching(&path).await;
    let handle = node.handle();
    let live = handle.live_config().clone();

    // Truncated, then written a little later, as `cat > file` does.
    for address in ["127.0.0.1:2", "127.0.0.1:3"] {
        let file = std::fs::File::create(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::io::Write::write_all(&mut &file, toml("error", address).as_bytes()).unwrap();
        drop(file);
        wait_for("the edit", || users(&handle) == [address]).await;
    }
    // Long enough for any late reload to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(live.reloads(), 2, "a half-written file was loaded");
    assert_eq!(live.reloads_failed(), 0);

    // Left empty, it is refused: the running configuration stays.
    drop(std::fs::File::create(&path).unwrap());
    wait_for("the rejection", || live.reloads_failed() == 1).await;
    assert_eq!(users(&handle), ["127.0.0.1:3"]);
    assert_eq!(live.reloads(), 2);

    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file left with nothing but blank lines and comments (an editor's
/// template, a file emptied but for its header) sets no key: it is refused
/// like an empty one, not taken for the defaults, which would drop the
/// listed instances and the rate limits live.
#[tokio::test]
async fn a_file_of_only_blanks_and_comments_is_refused_like_an_empty_one() {
    let (dir, path) = config_file("comments", &toml("error", "127.0.0.1:1"));
    let node = watching(&path).await;
    let handle = node.handle();
    let live = handle.live_config().clone();

    write(&path, "\n   \n# room619.toml: being rewritten\n\t\n");
    wait_for("the rejection", || live.reloads_failed() == 1).await;
    assert_eq!(live.reloads(), 0);
    assert_eq!(users(&handle), ["127.0.0.1:1"]);
    assert_eq!(live.current().node.name, "reloading");

    // A real edit after it is applied.
    write(&path, &toml("error", "127.0.0.1:2"));
    wait_for("the reload", || live.reloads() == 1).await;
    assert_eq!(users(&handle), ["127.0.0.1:2"]);

    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An edit made after the watch was asked for but before the node polls
/// (while it starts) is a change like any other; and each reloaded
/// configuration gets the application's own adjustments, as the one it
/// started with did.
#[tokio::test]
async fn an_edit_made_while_the_node_starts_is_applied_with_the_apps_adjustments() {
    let (dir, path) = config_file("starting", &toml("error", "127.0.0.1:1"));
    let adjust = |config: &mut room619::config::Config| {
        config
            .app
            .insert("adjusted".into(), serde_json::Value::Bool(true));
    };
    let mut config = ConfigLoader::new()
        .file(&path)
        .without_env()
        .load()
        .unwrap();
    adjust(&mut config);
    let node = room619::Node::builder()
        .config(config)
        .watch_config(&path, Overrides::new())
        .adjust_reloads(adjust)
        .service(crate::support::echo_service())
        .build()
        .unwrap();
    write(&path, &toml("error", "127.0.0.1:2"));
    let node = node.start().await.unwrap();
    let handle = node.handle();
    let live = handle.live_config().clone();

    wait_for("the edit", || users(&handle) == ["127.0.0.1:2"]).await;
    assert_eq!(live.reloads(), 1);
    assert_eq!(
        live.current().app.get("adjusted"),
        Some(&serde_json::Value::Bool(true)),
        "the reloaded configuration lost the application's adjustment"
    );

    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
