//! MCP clients, one per simulated user: rmcp's client over a `todo-mcp stdio` child
//! process, JSON-RPC over Streamable HTTP (stateless `POST /mcp`), or the legacy HTTP+SSE
//! transport (`GET /sse`, `POST /message`).

use anyhow::{Context, bail};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use rmcp::model::{CallToolRequestParams, ClientRequest, ListToolsRequest};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The protocol version the HTTP clients speak on /mcp.
const STREAMABLE_PROTOCOL: &str = "2025-06-18";
/// The legacy HTTP+SSE transport's protocol version.
const LEGACY_PROTOCOL: &str = "2024-11-05";
/// How long connecting (and the MCP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a client asks the server.
#[derive(Debug, Clone)]
pub enum Request {
    /// `tools/call`.
    Tool {
        name: &'static str,
        arguments: Value,
    },
    /// `tools/list`: the protocol floor.
    ListTools,
}

impl Request {
    pub fn tool(name: &'static str, arguments: Value) -> Self {
        Request::Tool { name, arguments }
    }

    /// The name latencies are reported under.
    pub fn label(&self) -> &'static str {
        match self {
            Request::Tool { name, .. } => name,
            Request::ListTools => "tools/list",
        }
    }

    fn method_and_params(&self) -> (&'static str, Value) {
        match self {
            Request::Tool { name, arguments } => (
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            ),
            Request::ListTools => ("tools/list", json!({})),
        }
    }
}

/// Why a call did not succeed, and so whether the server may have done its work.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The tool answered `isError: true`: nothing changed, and the server recorded the
    /// failure in the audit trail.
    Tool(String),
    /// A JSON-RPC error: no change, but the server may have recorded a failed call.
    Rpc(String),
    /// Refused before reaching the MCP server (an HTTP error status): nothing happened.
    Refused(String),
    /// No answer (broken connection, timeout): the call may or may not have happened.
    Unknown(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Tool(message) => write!(f, "tool error: {message}"),
            CallError::Rpc(message) => write!(f, "JSON-RPC error: {message}"),
            CallError::Refused(message) => write!(f, "refused: {message}"),
            CallError::Unknown(message) => write!(f, "no answer: {message}"),
        }
    }
}

/// A successful call's structured result (`null` for tools/list).
pub type CallResult = Result<Value, CallError>;

/// One connected client.
pub enum Client {
    Stdio(StdioClient),
    Http(HttpClient),
    Sse(SseClient),
}

impl Client {
    pub async fn call(&mut self, request: &Request) -> CallResult {
        match self {
            Client::Stdio(client) => client.call(request).await,
            Client::Http(client) => client.call(request).await,
            Client::Sse(client) => client.call(request).await,
        }
    }

    /// The process serving this client alone (stdio), if any.
    pub fn server_pid(&self) -> Option<u32> {
        match self {
            Client::Stdio(client) => client.pid,
            Client::Http(_) | Client::Sse(_) => None,
        }
    }

    /// Ends the session (for stdio: closes stdin and waits for the server to exit).
    pub async fn close(self) {
        match self {
            Client::Stdio(client) => {
                let mut service = client.service;
                if let Err(error) = service.close_with_timeout(Duration::from_secs(20)).await {
                    eprintln!("load: closing a stdio session failed: {error}");
                }
            }
            Client::Http(_) => {}
            Client::Sse(client) => client.reader.abort(),
        }
    }
}

/// rmcp's client over the stdio of a `todo-mcp stdio` child process.
pub struct StdioClient {
    service: RunningService<RoleClient, ()>,
    pid: Option<u32>,
}

impl StdioClient {
    /// Starts `command` (a `todo-mcp stdio` with its environment set) and initializes.
    pub async fn connect(
        command: tokio::process::Command,
        stderr: std::fs::File,
    ) -> anyhow::Result<Self> {
        let (transport, _) = TokioChildProcess::builder(command)
            .stderr(stderr)
            .spawn()
            .context("starting todo-mcp stdio")?;
        let pid = transport.id();
        let service = tokio::time::timeout(CONNECT_TIMEOUT, ().serve(transport))
            .await
            .context("MCP initialize over stdio timed out")?
            .context("MCP initialize over stdio failed")?;
        Ok(StdioClient { service, pid })
    }

    async fn call(&self, request: &Request) -> CallResult {
        match request {
            Request::Tool { name, arguments } => {
                let Value::Object(arguments) = arguments.clone() else {
                    return Err(CallError::Refused("arguments must be an object".into()));
                };
                let params = CallToolRequestParams::new(*name).with_arguments(arguments);
                let result = self
                    .service
                    .call_tool(params)
                    .await
                    .map_err(service_error)?;
                if result.is_error == Some(true) {
                    let text: Vec<&str> = result
                        .content
                        .iter()
                        .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
                        .collect();
                    return Err(CallError::Tool(text.join("\n")));
                }
                Ok(result.structured_content.unwrap_or(Value::Null))
            }
            Request::ListTools => {
                // Sent as a plain request: rmcp's `list_tools` would answer from its cache.
                let request = ClientRequest::ListToolsRequest(ListToolsRequest {
                    method: Default::default(),
                    params: None,
                    extensions: Default::default(),
                });
                self.service
                    .send_request(request)
                    .await
                    .map_err(service_error)?;
                Ok(Value::Null)
            }
        }
    }
}

fn service_error(error: ServiceError) -> CallError {
    match error {
        ServiceError::McpError(error) => {
            CallError::Rpc(format!("{}: {}", error.code.0, error.message))
        }
        other => CallError::Unknown(other.to_string()),
    }
}

/// A reqwest client holding one keep-alive connection, as one user's agent would.
fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .context("building an HTTP client")
}

/// Streamable HTTP, stateless: every request is a `POST /mcp` standing alone, answered
/// with an SSE-framed body.
pub struct HttpClient {
    http: reqwest::Client,
    url: String,
    token: String,
    next_id: u64,
}

impl HttpClient {
    pub fn new(base_url: &str, token: String) -> anyhow::Result<Self> {
        Ok(HttpClient {
            http: http_client()?,
            url: format!("{base_url}/mcp"),
            token,
            next_id: 1,
        })
    }

    async fn call(&mut self, request: &Request) -> CallResult {
        let id = self.next_id;
        self.next_id += 1;
        let (method, params) = request.method_and_params();
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", STREAMABLE_PROTOCOL)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| CallError::Unknown(format!("POST /mcp: {e}")))?;
        let status = response.status();
        // The answer is one JSON object, or SSE events (the transport allows either).
        let sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Unknown(format!("reading the answer to POST /mcp: {e}")))?;
        if !status.is_success() {
            let message = format!("HTTP {status}: {}", text.trim());
            return Err(if status == reqwest::StatusCode::REQUEST_TIMEOUT {
                CallError::Unknown(message)
            } else {
                CallError::Refused(message)
            });
        }
        let answer = if sse {
            sse_data(&text).find(|message| message["id"] == id)
        } else {
            serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|message| message["id"] == id)
        };
        let answer = answer
            .ok_or_else(|| CallError::Unknown(format!("no answer with id {id} in: {text}")))?;
        interpret_answer(request, answer)
    }
}

/// The JSON-RPC messages in an SSE-framed body (its `data:` lines).
fn sse_data(body: &str) -> impl Iterator<Item = Value> + '_ {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
}

/// A JSON-RPC response to `request`: its structured result, or why it failed.
fn interpret_answer(request: &Request, mut answer: Value) -> CallResult {
    if let Some(error) = answer.get("error") {
        let message = error["message"].as_str().unwrap_or("(no message)");
        return Err(CallError::Rpc(format!("{}: {message}", error["code"])));
    }
    let mut result = answer
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| CallError::Unknown(format!("neither result nor error in {answer}")))?;
    match request {
        Request::ListTools => Ok(Value::Null),
        Request::Tool { .. } => {
            if result["isError"] == true {
                let text: Vec<&str> = result["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|block| block["text"].as_str())
                    .collect();
                return Err(CallError::Tool(text.join("\n")));
            }
            Ok(result
                .get_mut("structuredContent")
                .map(Value::take)
                .unwrap_or(Value::Null))
        }
    }
}

/// The legacy HTTP+SSE transport: answers arrive on the `GET /sse` stream opened first;
/// requests are `POST /message?sessionId=…`.
pub struct SseClient {
    http: reqwest::Client,
    post_url: String,
    token: String,
    next_id: u64,
    answers: mpsc::Receiver<Value>,
    reader: tokio::task::JoinHandle<()>,
}

impl SseClient {
    /// Opens the stream, reads its endpoint and performs the MCP handshake.
    pub async fn connect(base_url: &str, token: String) -> anyhow::Result<Self> {
        let http = http_client()?;
        let response = http
            .get(format!("{base_url}/sse"))
            .bearer_auth(&token)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .context("GET /sse")?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            bail!("GET /sse answered {status}: {body}");
        }
        let (endpoint_tx, endpoint_rx) = oneshot::channel();
        let (answers_tx, answers) = mpsc::channel(16);
        let reader = tokio::spawn(read_events(response, endpoint_tx, answers_tx));
        let endpoint = tokio::time::timeout(CONNECT_TIMEOUT, endpoint_rx)
            .await
            .context("no endpoint event on /sse")?
            .context("the /sse stream ended before its endpoint event")?;
        let mut client = SseClient {
            http,
            post_url: format!("{base_url}{endpoint}"),
            token,
            next_id: 1,
            answers,
            reader,
        };
        client.initialize().await?;
        Ok(client)
    }

    async fn initialize(&mut self) -> anyhow::Result<()> {
        let params = json!({
            "protocolVersion": LEGACY_PROTOCOL,
            "capabilities": {},
            "clientInfo": { "name": "todo-mcp-load", "version": env!("CARGO_PKG_VERSION") },
        });
        let answer = tokio::time::timeout(CONNECT_TIMEOUT, self.exchange("initialize", params))
            .await
            .context("MCP initialize over SSE timed out")?
            .map_err(|e| anyhow::anyhow!("MCP initialize over SSE failed: {e}"))?;
        if answer.get("error").is_some() {
            bail!("MCP initialize over SSE was refused: {answer}");
        }
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.post(&note)
            .await
            .map_err(|e| anyhow::anyhow!("notifications/initialized: {e}"))
    }

    async fn call(&mut self, request: &Request) -> CallResult {
        let (method, params) = request.method_and_params();
        let answer = self.exchange(method, params).await?;
        interpret_answer(request, answer)
    }

    /// Posts a request and waits for the answer with its id on the stream.
    async fn exchange(&mut self, method: &str, params: Value) -> CallResult {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.post(&body).await?;
        loop {
            let message = self.answers.recv().await.ok_or_else(|| {
                CallError::Unknown("the /sse stream ended while waiting for an answer".into())
            })?;
            if message["id"] == id {
                return Ok(message);
            }
        }
    }

    async fn post(&self, body: &Value) -> Result<(), CallError> {
        let response = self
            .http
            .post(&self.post_url)
            .bearer_auth(&self.token)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| CallError::Unknown(format!("POST /message: {e}")))?;
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            return Err(CallError::Refused(format!(
                "POST /message answered {status}: {text}"
            )));
        }
        Ok(())
    }
}

/// Reads the `/sse` stream: the `endpoint` event once, then JSON-RPC messages.
async fn read_events(
    response: reqwest::Response,
    endpoint: oneshot::Sender<String>,
    answers: mpsc::Sender<Value>,
) {
    let mut endpoint = Some(endpoint);
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some((event, rest)) = split_event(&buffer) {
            let (name, data) = parse_event(&event);
            buffer = rest;
            match name.as_str() {
                "endpoint" => {
                    if let Some(endpoint) = endpoint.take() {
                        let _ = endpoint.send(data);
                    }
                }
                _ if data.is_empty() => {}
                _ => match serde_json::from_str::<Value>(&data) {
                    Ok(message) => {
                        if answers.send(message).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => eprintln!("load: unreadable SSE message ({error}): {data}"),
                },
            }
        }
    }
}

/// The first complete event in `buffer` (up to a blank line) and what follows it.
fn split_event(buffer: &str) -> Option<(String, String)> {
    let normalized;
    let text = if buffer.contains('\r') {
        normalized = buffer.replace("\r\n", "\n");
        &normalized
    } else {
        buffer
    };
    let end = text.find("\n\n")?;
    Some((text[..end].to_owned(), text[end + 2..].to_owned()))
}

/// An event's name (`message` by default) and its data lines joined.
fn parse_event(event: &str) -> (String, String) {
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in event.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (name, data.join("\n"))
}
