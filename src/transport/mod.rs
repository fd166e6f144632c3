//! Transports: how MCP messages reach the tool server.

pub mod http;
pub mod jsonrpc;
pub mod stdio;
