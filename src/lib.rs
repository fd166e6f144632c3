//! todo-mcp: an MCP server giving AI agents durable tasks and conversation history.
//!
//! Layers, each using only the ones below it:
//! `transport` (stdio) → `tools` (the MCP tool surface) → `store` (the domain) → `db`.
//! `auth` turns a credential into the user every store call is scoped to. `metrics` is
//! recorded into by `tools` and `transport` only, and reads `db`'s pool when scraped.

/// What is logged on stderr unless `--log`/`TODO_MCP_LOG` says otherwise.
pub const DEFAULT_LOG_FILTER: &str = "todo_mcp=info,warn";

pub mod auth;
pub mod db;
pub mod manifest;
pub mod metrics;
pub mod store;
pub mod tools;
pub mod transport;
