//! JSON-RPC over HTTP by hand, for tests that check the protocol's edges (status codes,
//! headers, refusals) that a client library would hide.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::time::Duration;

/// The protocol version the hand-made requests speak.
pub const PROTOCOL: &str = "2025-06-18";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a reqwest client")
}

pub fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "todo-mcp-tests", "version": "0"}}})
}

pub fn initialized() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

pub fn tool_call(id: i64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
}

pub fn add_task(id: i64, title: &str) -> Value {
    tool_call(id, "add_task", json!({ "title": title }))
}

/// `POST url` with the headers Streamable HTTP requires and, if given, a bearer token;
/// the caller adds the body and any other header.
pub fn mcp_request(url: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = client()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", PROTOCOL);
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// A finished HTTP exchange.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("reading a response body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The body as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The JSON-RPC messages of an SSE-framed body.
    pub fn messages(&self) -> Vec<Value> {
        sse_data(&self.body)
    }

    /// The JSON-RPC response with `id`, if the body holds one.
    pub fn response(&self, id: i64) -> Option<Value> {
        self.messages().into_iter().find(|m| m["id"] == id)
    }
}

/// The JSON-RPC messages in an SSE-framed body (its `data:` lines).
pub fn sse_data(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| !data.is_empty())
        .map(|data| {
            serde_json::from_str(data)
                .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data:?}"))
        })
        .collect()
}
