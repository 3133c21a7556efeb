//! The key-value bucket of the registry: opened, or created when missing.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

/// Opens the bucket `name`, creating it (history 1, `max_age` = `ttl`, on
/// `replicas` servers) when it does not exist.
pub(super) async fn ensure(
    js: &jetstream::Context,
    name: &str,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    if js.get_key_value(name).await.is_err() {
        // The stream a key-value bucket is, made directly: async-nats's
        // `create_key_value` first asks for account details that servers
        // older than 2.10 answer in a shape it cannot read.
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some("room619 service instances".to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_bytes: -1,
            max_messages: -1,
            max_age: ttl,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: replicas,
            ..jetstream::stream::Config::default()
        })
        .await
        .map_err(|err| {
            format!(
                "cannot create the bucket `{name}` on {replicas} server(s) \
                 (`discovery.nats.replicas`): {err}"
            )
        })?;
    }
    js.get_key_value(name)
        .await
        .map_err(|err| format!("cannot open the bucket `{name}`: {err}"))
}
