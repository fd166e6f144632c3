//! todo-mcp: an MCP server giving AI agents durable tasks and conversation history.
//!
//! Layers, each using only the ones below it:
//! `transport` (stdio) → `tools` (the MCP tool surface) → `store` (the domain) → `db`.
//! `auth` turns a credential into the user every store call is scoped to.

pub mod auth;
pub mod db;
pub mod manifest;
pub mod store;
pub mod tools;
pub mod transport;
