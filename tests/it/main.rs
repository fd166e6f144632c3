//! The integration suite: one binary, one PostgreSQL template database per run, a module
//! per area. The server runs in process (an MCP client joined to it by an in-memory duplex)
//! where the transport is not what a test is about; tests of the stdio pipes, of process
//! start and stop, of replicas and of the HTTP listener start the real binary.
//!
//! Targets that need programs from outside the Rust toolchain (Node, Python, Chromium,
//! PgBouncer, a TLS cluster) are in `tests/external`; the install paths in `tests/install`.

#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod agent_state;
mod audit;
mod auth;
mod bad_input;
mod baseline;
mod citus;
mod cli;
mod columns;
mod concurrency;
mod database_faults;
mod distribution;
mod hardening;
mod harness_selftest;
mod hostile_input;
mod http_auth;
mod http_hardening;
mod http_sessions;
mod http_smoke;
mod isolation;
mod manifest;
mod metrics;
mod migrations;
mod migrations_deploy;
mod overload;
mod persistence;
mod properties;
mod quotas;
mod readme;
mod replicas;
mod row_level_security;
mod samples;
mod schema;
mod scopes;
mod search;
mod sqlite_wal;
mod stdio_pipes;
mod storage_outage;
mod task_fields;
mod task_plans;
mod tools;
mod transactions;
mod transfer;
mod users;
