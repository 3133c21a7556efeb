#![cfg(test)]
//! Integration tests of a real node: a server on 127.0.0.1:0, real tonic and
//! HTTP clients. One test binary, one module per behaviour.

mod support;

mod authorization_tells_401_from_403_on_both_protocols;
#[cfg(feature = "nats")]
mod bus_acks_in_flight_messages_on_shutdown;
#[cfg(feature = "nats")]
mod bus_dead_letters_failing_and_undecodable_messages_on_jetstream;
#[cfg(feature = "nats")]
mod bus_delivers_at_least_once_on_jetstream;
mod bus_delivers_messages_between_services_in_memory;
#[cfg(feature = "nats")]
mod bus_keeps_every_confirmed_publish_on_jetstream;
#[cfg(feature = "nats")]
mod bus_speaks_nats_core_across_nodes;

mod clients_reach_colocated_services_in_process_and_others_over_the_network;
mod clients_survive_failing_and_slow_instances;
mod config_errors_name_the_key;
mod cors_and_compression_are_opt_in;
mod deadlines_propagate_and_fail_fast;
mod grpc_and_http_share_one_port;
mod health_follows_the_lifecycle;
mod jwks_rotation_is_picked_up_without_restart;
mod jwt_auth_rejects_forged_expired_and_malformed_tokens;
mod limits_reject_oversized_and_silent_input;
mod malformed_grpc_messages_are_invalid_argument;
#[cfg(feature = "redis")]
mod rate_limits_are_shared_across_nodes_through_redis;
mod rate_limits_hold_against_forged_forwarding_headers;
mod request_ids_are_propagated_or_generated;
mod rest_routes_speak_json_and_protobuf;
mod secrets_never_reach_the_logs;
mod shutdown_drains_in_flight_requests;
mod streaming_calls_work_in_process_and_over_the_network;
#[cfg(feature = "validate")]
mod validation_errors_list_every_field_on_both_protocols;
