//! Tests against real programs from outside the Rust toolchain: the Python MCP SDK, the
//! MCP Inspector and conformance suite (Node), Better Auth as the OAuth server, the web page
//! in Chromium, PgBouncer in transaction mode, and PostgreSQL over TLS. Each installs what it
//! needs into the harness's caches (tests/support) and fails loudly when it cannot.

#[path = "../support/mod.rs"]
#[macro_use]
mod support;

mod conformance;
mod http_inspector;
mod http_python;
mod oauth;
mod pgbouncer;
mod tls;
mod ui;
