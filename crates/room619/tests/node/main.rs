#![cfg(test)]
//! Integration tests of a real node: a server on 127.0.0.1:0, real tonic and
//! HTTP clients. One test binary, one module per behaviour.

mod support;

mod authorization_tells_401_from_403_on_both_protocols;
mod balancers_follow_discovery_changes;
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

mod bad_payloads_get_clear_errors;
mod broad_public_rules_leave_routes_without_rules_protected;
mod clients_reach_colocated_services_in_process_and_others_over_the_network;
mod clients_survive_failing_and_slow_instances;
mod config_errors_name_the_key;
mod config_reloads_apply_live_and_reject_broken_edits;
mod connections_are_bounded_in_number_and_idle_time;
mod cors_and_compression_are_opt_in;
mod deadlines_propagate_and_fail_fast;
mod deprecated_versions_announce_their_sunset;
#[cfg(feature = "dns")]
mod discovery_resolves_headless_services_over_dns;
#[cfg(feature = "nats")]
mod discovery_tracks_instances_through_nats;
mod every_kind_of_http_route_answers_through_the_node;
mod grpc_and_http_share_one_port;
mod h1_abuse_is_rejected_within_limits;
mod h2_abuse_closes_the_abusive_connection;
mod health_follows_the_lifecycle;
mod health_reports_dependency_checks;
mod jwks_rotation_is_picked_up_without_restart;
mod jwks_url_down_at_start_is_retried_until_it_loads;
mod jwt_auth_rejects_forged_expired_and_malformed_tokens;
mod limits_reject_oversized_and_silent_input;
mod malformed_grpc_messages_are_invalid_argument;
mod metrics_count_every_request;
mod nested_routers_are_authorized_by_their_full_path;
mod overload_is_shed_fast;
#[cfg(feature = "redis")]
mod rate_limits_are_shared_across_nodes_through_redis;
mod rate_limits_hold_against_forged_forwarding_headers;
mod refused_credentials_are_limited_per_client_ip;
mod request_ids_are_propagated_or_generated;
mod resilience_policies_change_on_reload;
mod rest_routes_speak_json_and_protobuf;
mod secrets_never_reach_the_logs;
mod services_come_and_go_on_a_running_node;
mod shutdown_drains_in_flight_requests;
mod streamed_answers_run_inside_their_request_span;
mod streaming_calls_work_in_process_and_over_the_network;
mod stuck_clients_lose_their_connection;
mod the_registry_endpoint_lists_hosted_services_and_known_instances;
#[cfg(feature = "otel")]
mod traces_follow_one_request_across_grpc_http_and_the_bus;
mod unknown_key_ids_fetch_the_jwks_out_of_turn;
#[cfg(feature = "validate")]
mod validation_errors_list_every_field_on_both_protocols;
