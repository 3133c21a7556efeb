#![cfg(test)]
//! Integration tests of a real node: a server on 127.0.0.1:0, real tonic and
//! HTTP clients. One test binary, one module per behaviour.

mod support;

mod config_errors_name_the_key;
mod grpc_and_http_share_one_port;
mod health_follows_the_lifecycle;
mod limits_reject_oversized_and_silent_input;
mod shutdown_drains_in_flight_requests;
