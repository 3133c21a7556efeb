#![cfg(test)]
//! The shop's storage and its users and products services, on real nodes
//! over real gRPC, against SQLite and the machine's PostgreSQL (which must
//! be running: `postgres://postgres@127.0.0.1:5432/test`, or
//! `SHOP_TEST_POSTGRES_URL`).

mod echo;
mod events;
mod products;
mod storage;
mod support;
mod users;
