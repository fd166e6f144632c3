//! JSON-RPC over HTTP by hand, for tests that check the protocol's edges (status codes,
//! headers, refusals) that a client library would hide.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicI64, Ordering};
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

    /// The JSON-RPC messages of the body: one JSON object (`application/json`, how the
    /// server answers a call), or SSE events (`text/event-stream`).
    pub fn messages(&self) -> Vec<Value> {
        let json = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if json {
            vec![self.json()]
        } else {
            sse_data(&self.body)
        }
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

/// Stateless Streamable HTTP `tools/call`s (no `initialize`), each with the user's token and
/// its own id, for workloads whose failures are counted rather than panicked on.
pub struct StatelessCaller {
    http: reqwest::Client,
    next_id: AtomicI64,
}

/// Why a [`StatelessCaller::call`] has no result.
#[derive(Debug)]
pub enum CallFailure {
    /// The request could not be sent (e.g. the connection was refused).
    Sending(reqwest::Error),
    /// Anything after the request was sent: the call may or may not have taken effect.
    Reply(String),
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Sending(e) => write!(f, "sending: {e:?}"),
            CallFailure::Reply(why) => f.write_str(why),
        }
    }
}

impl StatelessCaller {
    pub fn new(timeout: Duration) -> StatelessCaller {
        StatelessCaller {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("reqwest client"),
            next_id: AtomicI64::new(1),
        }
    }

    /// One `tools/call` POST: its structured content if it succeeded.
    pub async fn call(
        &self,
        url: &str,
        token: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .json(&tool_call(id, tool, arguments))
            .send()
            .await
            .map_err(CallFailure::Sending)?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| CallFailure::Reply(format!("reading the body ({status}): {e:?}")))?;
        if status != 200 {
            return Err(CallFailure::Reply(format!("HTTP {status}: {body}")));
        }
        let Some(message) = lenient_message(&body) else {
            return Err(CallFailure::Reply(format!(
                "no JSON-RPC message in {body:?}"
            )));
        };
        let result = &message["result"];
        if message["id"] != id || result["isError"] != false {
            return Err(CallFailure::Reply(format!(
                "not a successful result: {message}"
            )));
        }
        Ok(result["structuredContent"].clone())
    }
}

/// The JSON-RPC message of an SSE-framed (`data: {...}`) or plain JSON body. Unlike
/// [`sse_data`] it never panics: a body cut short by a dying server is a failed call, not a
/// test failure.
pub fn lenient_message(body: &str) -> Option<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .find(|data| data.starts_with('{'))
        .or_else(|| Some(body.trim()).filter(|b| b.starts_with('{')))
        .and_then(|data| serde_json::from_str(data).ok())
}
