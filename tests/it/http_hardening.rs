//! `todo-mcp http` against hostile or careless clients and operators: the Host/Origin guard
//! (DNS rebinding), the 4 MiB body limit, malformed JSON, `--no-auth` off loopback,
//! graceful shutdown under load, and readiness while a migration is pending.

use crate::support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::jsonrpc::{self, PROTOCOL, Reply, add_task, client as http, initialize, initialized};
use support::{HttpServer, PgTestDb, create_token, start_http, todo_mcp, todo_mcp_with_timeout};

/// The server's body limit.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long the server lets in-flight requests finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// JSON-RPC over HTTP
// ---------------------------------------------------------------------------------------------

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::read(request.send().await.expect("sending a request")).await
}

fn mcp_request(server: &HttpServer, token: Option<&str>) -> reqwest::RequestBuilder {
    jsonrpc::mcp_request(&server.mcp_url(), token)
}

async fn post_mcp(server: &HttpServer, token: Option<&str>, message: &Value) -> Reply {
    send(mcp_request(server, token).body(message.to_string())).await
}

/// The task of a successful `add_task` response with `id` in a `/mcp` reply; `None` if the
/// body holds no response with that id.
fn task_in(reply: &Reply, id: i64) -> Option<Value> {
    let message = reply.response(id)?;
    let result = &message["result"];
    assert_ne!(result["isError"], true, "add_task {id} failed: {message}");
    let task = result["structuredContent"]["task"].clone();
    assert!(
        task["id"].is_string(),
        "add_task {id} returned no task: {message}"
    );
    Some(task)
}

/// `add_task` over `/mcp` must succeed; returns the task.
async fn add_task_ok(server: &HttpServer, token: Option<&str>, title: &str) -> Value {
    let reply = post_mcp(server, token, &add_task(7, title)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "add_task {title}: {}",
        reply.body
    );
    task_in(&reply, 7).unwrap_or_else(|| panic!("no add_task response in {:?}", reply.body))
}

async fn get(server: &HttpServer, path: &str) -> Reply {
    send(http().get(format!("{}{path}", server.base_url()))).await
}

/// The server still answers `/healthz` and runs a tool call.
async fn assert_still_serving(server: &HttpServer, token: Option<&str>, db: &PgTestDb) {
    let health = get(server, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    let task = add_task_ok(server, token, "still serving").await;
    let found = db
        .query_json(&format!(
            "SELECT title FROM tasks WHERE id = '{}'",
            task["id"].as_str().expect("task id")
        ))
        .await;
    assert_eq!(found, vec![json!({"title": "still serving"})]);
}

/// With `Host: host`, `/healthz` answers and an `add_task` (sent with `Origin: origin`) adds
/// a task titled after the host.
async fn assert_host_accepted(server: &HttpServer, token: &str, host: &str, origin: &str) {
    let health = send(
        http()
            .get(format!("{}/healthz", server.base_url()))
            .header("host", host),
    )
    .await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "Host {host}: {}",
        health.body
    );
    let reply = send(
        mcp_request(server, Some(token))
            .header("host", host)
            .header("origin", origin)
            .body(add_task(3, host).to_string()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "Host {host}: {}", reply.body);
    assert_eq!(task_in(&reply, 3).expect("a task")["title"], host);
}

async fn task_count(db: &PgTestDb) -> i64 {
    let rows = db.query_json("SELECT count(*) AS n FROM tasks").await;
    rows[0]["n"].as_i64().expect("a count")
}

// ---------------------------------------------------------------------------------------------
// The legacy SSE transport
// ---------------------------------------------------------------------------------------------

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

/// An open `GET /sse` stream, read message by message.
struct EventStream {
    body: ByteStream,
    buffer: String,
    /// `/message?sessionId=…`, from the first event.
    endpoint: String,
}

impl EventStream {
    async fn open(server: &HttpServer, token: Option<&str>) -> EventStream {
        let mut request = reqwest::Client::new()
            .get(format!("{}/sse", server.base_url()))
            .header("accept", "text/event-stream");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET /sse");
        assert_eq!(response.status(), StatusCode::OK, "GET /sse");
        let mut stream = EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            endpoint: String::new(),
        };
        let (event, data) = stream.next_event().await;
        assert_eq!(event, "endpoint", "first event, data {data:?}");
        assert!(data.starts_with("/message?sessionId="), "{data:?}");
        stream.endpoint = data;
        stream
    }

    /// The next event's name and data (keep-alive comments skipped).
    async fn next_event(&mut self) -> (String, String) {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = Some(value.trim_start().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                    }
                }
                if event.is_some() || !data.is_empty() {
                    return (event.unwrap_or_else(|| "message".into()), data.join("\n"));
                }
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("no SSE event within {EVENT_TIMEOUT:?}"),
                Ok(None) => panic!("the SSE stream ended"),
                Ok(Some(Err(e))) => panic!("reading the SSE stream failed: {e}"),
                Ok(Some(Ok(chunk))) => {
                    let text = std::str::from_utf8(&chunk).expect("SSE is UTF-8");
                    self.buffer.push_str(&text.replace("\r\n", "\n"));
                }
            }
        }
    }

    async fn next_message(&mut self) -> Value {
        let (event, data) = self.next_event().await;
        assert_eq!(event, "message", "{data}");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data:?}"))
    }

    fn message_url(&self, server: &HttpServer) -> String {
        format!("{}{}", server.base_url(), self.endpoint)
    }

    async fn post(&self, server: &HttpServer, token: Option<&str>, body: String) -> Reply {
        let mut request = http()
            .post(self.message_url(server))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        send(request).await
    }

    /// Initializes the session and calls `add_task`, asserting the answers on the stream.
    async fn initialize_and_add(&mut self, server: &HttpServer, token: Option<&str>, title: &str) {
        let reply = self.post(server, token, initialize(1).to_string()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(self.next_message().await["id"], 1);
        let reply = self.post(server, token, initialized().to_string()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        self.add(server, token, 2, title).await;
    }

    async fn add(&mut self, server: &HttpServer, token: Option<&str>, id: i64, title: &str) {
        let reply = self
            .post(server, token, add_task(id, title).to_string())
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let answer = self.next_message().await;
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(
            answer["result"]["structuredContent"]["task"]["title"], title,
            "{answer}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Host and Origin guard
// ---------------------------------------------------------------------------------------------

/// A 403 from the guard, with a JSON-RPC error body naming the refused header.
fn assert_forbidden(reply: &Reply, what: &str, names: &str) {
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{what}: expected 403, body {}",
        reply.body
    );
    let body = reply.json();
    assert_eq!(body["error"]["code"], -32600, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("forbidden: ") && message.contains(names),
        "{what}: {message:?} should name {names:?}"
    );
}

/// Every route, with `header: value` added, as a valid client would send it otherwise.
async fn every_route(
    server: &HttpServer,
    token: &str,
    endpoint: &str,
    header: &str,
    value: &str,
) -> Vec<(&'static str, Reply)> {
    let base = server.base_url();
    let mcp = send(
        mcp_request(server, Some(token))
            .header(header, value)
            .body(add_task(1, "through the guard").to_string()),
    )
    .await;
    let sse = send(
        http()
            .get(format!("{base}/sse"))
            .bearer_auth(token)
            .header(header, value),
    )
    .await;
    let message = send(
        http()
            .post(format!("{base}{endpoint}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header(header, value)
            .body(add_task(2, "through the guard").to_string()),
    )
    .await;
    let healthz = send(http().get(format!("{base}/healthz")).header(header, value)).await;
    let readyz = send(http().get(format!("{base}/readyz")).header(header, value)).await;
    vec![
        ("POST /mcp", mcp),
        ("GET /sse", sse),
        ("POST /message", message),
        ("GET /healthz", healthz),
        ("GET /readyz", readyz),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let port = server.addr().port();
    let mut stream = EventStream::open(&server, Some(&token)).await;
    let endpoint = stream.endpoint.clone();

    for host in [
        "evil.example.com".to_owned(),
        format!("evil.example.com:{port}"),
        format!("localhost.evil.example.com:{port}"),
        format!("127.0.0.2:{port}"),
    ] {
        for (route, reply) in every_route(&server, &token, &endpoint, "host", &host).await {
            assert_forbidden(&reply, &format!("{route} with Host {host}"), "Host");
        }
    }
    for origin in [
        "http://evil.example.com".to_owned(),
        format!("http://evil.example.com:{port}"),
        format!("http://localhost.evil.example.com:{port}"),
        "null".to_owned(),
    ] {
        for (route, reply) in every_route(&server, &token, &endpoint, "origin", &origin).await {
            assert_forbidden(&reply, &format!("{route} with Origin {origin}"), "Origin");
        }
    }
    assert_eq!(task_count(&db).await, 0, "a refused request wrote a task");

    // A refused value is quoted short: a 6 kB header is not sent back (nor logged) whole.
    let long = format!("{}.example.com", "a".repeat(6000));
    for header in ["host", "origin"] {
        let value = if header == "origin" {
            format!("http://{long}")
        } else {
            long.clone()
        };
        for (route, reply) in every_route(&server, &token, &endpoint, header, &value).await {
            let what = format!("{route} with a {}-byte {header}", value.len());
            assert_forbidden(&reply, &what, "characters)");
            assert!(reply.body.len() < 300, "{what}: {}", reply.body);
        }
    }

    // Loopback names pass, with and without a port, in any case.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("LOCALHOST:{port}"),
        "localhost".to_owned(),
    ] {
        assert_host_accepted(&server, &token, &host, &format!("http://{host}")).await;
    }
    assert_eq!(task_count(&db).await, 4);
    // The legacy session, opened through the guard, still works.
    stream
        .initialize_and_add(&server, Some(&token), "legacy through the guard")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_host_adds_a_name_and_only_that_name() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &["--allowed-host", "todo.example.com"], &[]).await;
    let stream = EventStream::open(&server, Some(&token)).await;

    for host in [
        "todo.example.com",
        "todo.example.com:443",
        "TODO.example.com",
    ] {
        assert_host_accepted(&server, &token, host, "https://todo.example.com").await;
    }
    assert_eq!(task_count(&db).await, 3);

    for host in [
        "evil.example.com",
        "todo.example.com.evil.example.com",
        "example.com",
    ] {
        for (route, reply) in every_route(&server, &token, &stream.endpoint, "host", host).await {
            assert_forbidden(&reply, &format!("{route} with Host {host}"), "Host");
        }
    }
    for (route, reply) in every_route(
        &server,
        &token,
        &stream.endpoint,
        "origin",
        "https://evil.example.com",
    )
    .await
    {
        assert_forbidden(&reply, &format!("{route} with an evil Origin"), "Origin");
    }
    assert_eq!(task_count(&db).await, 3);
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// A valid JSON-RPC message padded with trailing whitespace to exactly `size` bytes.
fn padded(message: &Value, size: usize) -> String {
    let mut body = message.to_string();
    assert!(body.len() <= size);
    body.push_str(&" ".repeat(size - body.len()));
    body
}

/// Sends an oversized body; the server answers 413, or refuses it by closing the
/// connection before reading it all (which the client sees as a failed send).
async fn assert_too_large(request: reqwest::RequestBuilder, what: &str) {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(
                status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{what}: expected 413, body {body:?}"
            );
        }
        Err(error) => assert!(
            error.is_request() || error.is_body(),
            "{what}: the request failed in an unexpected way: {error:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_4_mib_are_refused_and_the_server_keeps_serving() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let mut stream = EventStream::open(&server, Some(&token)).await;

    // Just under the limit is served: the limit is 4 MiB, not less.
    let reply = send(mcp_request(&server, Some(&token)).body(padded(
        &add_task(1, "just under the limit"),
        MAX_BODY_BYTES - 1024,
    )))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        task_in(&reply, 1).expect("a task")["title"],
        "just under the limit"
    );

    let huge = padded(&add_task(2, "over the limit"), MAX_BODY_BYTES + 1024 * 1024);
    assert_too_large(
        mcp_request(&server, Some(&token)).body(huge.clone()),
        "POST /mcp, 5 MiB",
    )
    .await;
    assert_too_large(
        http()
            .post(stream.message_url(&server))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(huge),
        "POST /message, 5 MiB",
    )
    .await;
    // One byte over, declared up front.
    assert_too_large(
        mcp_request(&server, Some(&token))
            .body(padded(&add_task(3, "one byte over"), MAX_BODY_BYTES + 1)),
        "POST /mcp, 4 MiB + 1",
    )
    .await;

    let titles = db.query_json("SELECT title FROM tasks ORDER BY id").await;
    assert_eq!(titles, vec![json!({"title": "just under the limit"})]);
    assert_still_serving(&server, Some(&token), &db).await;
    // The legacy session survived its refused message.
    stream
        .initialize_and_add(&server, Some(&token), "after the big one")
        .await;
}

const MALFORMED: [&str; 3] = [
    "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ",
    "not json",
    "",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_to_mcp_is_a_jsonrpc_parse_error() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let mut replies = Vec::new();
    for body in MALFORMED {
        replies.push((
            body,
            send(mcp_request(&server, Some(&token)).body(body)).await,
        ));
    }
    assert_eq!(task_count(&db).await, 0);
    assert_still_serving(&server, Some(&token), &db).await;
    for (body, reply) in replies {
        assert!(
            reply.status.is_client_error(),
            "POST /mcp {body:?}: expected a 4xx, got {} {:?}",
            reply.status,
            reply.body
        );
        let parsed: Option<Value> = serde_json::from_str(&reply.body).ok();
        let error = parsed
            .as_ref()
            .map(|p| (&p["jsonrpc"], &p["error"]["code"]));
        assert_eq!(
            error,
            Some((&json!("2.0"), &json!(-32700))),
            "POST /mcp {body:?}: expected a JSON-RPC parse error body, got {} {:?}",
            reply.status,
            reply.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_to_message_is_400() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let mut stream = EventStream::open(&server, Some(&token)).await;
    for body in MALFORMED {
        let reply = stream.post(&server, Some(&token), body.to_owned()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "POST /message {body:?}: {}",
            reply.body
        );
        let parsed = reply.json();
        assert_eq!(parsed["jsonrpc"], "2.0", "{parsed}");
        assert_eq!(parsed["error"]["code"], -32700, "{parsed}");
        assert_eq!(parsed["id"], Value::Null, "{parsed}");
    }
    assert_eq!(task_count(&db).await, 0);
    assert_still_serving(&server, Some(&token), &db).await;
    // The session survived the garbage.
    stream
        .initialize_and_add(&server, Some(&token), "after the garbage")
        .await;
}

/// `POST /message` takes JSON said to be JSON: any other Content-Type (text/plain, which a
/// cross-site form may send without a preflight; none at all) is a JSON-RPC-shaped 415,
/// and nothing reaches the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_requires_a_json_content_type() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let mut stream = EventStream::open(&server, Some(&token)).await;
    let add = add_task(7, "smuggled").to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = http()
            .post(stream.message_url(&server))
            .bearer_auth(&token)
            .body(add.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let reply = send(request).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {}",
            reply.body
        );
        let parsed = reply.json();
        assert_eq!(parsed["jsonrpc"], "2.0", "{parsed}");
        assert_eq!(parsed["error"]["code"], -32600, "{parsed}");
    }
    assert_eq!(task_count(&db).await, 0);
    // Said to be JSON, the same session works.
    stream
        .initialize_and_add(&server, Some(&token), "said to be JSON")
        .await;
    assert_eq!(task_count(&db).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Connections: capped, slow and idle ones closed
// ---------------------------------------------------------------------------------------------

/// What the server's listening line says it holds at most.
fn max_connections(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|line| line.contains("serving MCP over HTTP"))
        .find_map(|line| {
            let start = line.find("max_connections=")? + "max_connections=".len();
            line[start..].split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("the listening line names no max_connections\n{stderr}"))
}

/// `GET /healthz` on an open connection (keep-alive): its status line, within `within`.
async fn healthz_on(
    connection: &mut tokio::net::TcpStream,
    addr: SocketAddr,
    within: Duration,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let exchange = async {
        connection.write_all(request.as_bytes()).await?;
        let mut buffer = vec![0; 4096];
        let read = connection.read(&mut buffer).await?;
        let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
        Ok::<_, std::io::Error>(text.lines().next().unwrap_or("").to_owned())
    };
    match tokio::time::timeout(within, exchange).await {
        Ok(Ok(line)) if !line.is_empty() => Ok(line),
        Ok(Ok(_)) => Err("closed without an answer".into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

/// What the server did with a connection it has not answered: `Some` once it closed or
/// answered it (with the first line it sent, if any), `None` while it is still open.
async fn closed_by_server(
    connection: &mut tokio::net::TcpStream,
    wait: Duration,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0; 512];
    match tokio::time::timeout(wait, connection.read(&mut buffer)).await {
        Err(_) => None,
        Ok(Ok(read)) => Some(
            String::from_utf8_lossy(&buffer[..read])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        Ok(Err(error)) => Some(error.to_string()),
    }
}

/// Finding 1 of the security review: clients that never finish their headers, or never
/// send a request, used to hold their connections forever, and with a low open-file limit
/// a few hundred of them made the server fail to accept (`Too many open files`) and
/// `/healthz` time out. Now the server fits its cap to the limit, refuses past it with a
/// quick 503 while established connections keep working, closes slow clients after the
/// header-read timeout and idle ones after the keep-alive timeout, and never cuts an open
/// SSE stream for being quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_exhaust_connections() {
    const OPEN_FILES: u32 = 256;
    const HEADER_READ: Duration = Duration::from_secs(2);
    const KEEP_ALIVE: Duration = Duration::from_secs(3);
    const QUICK: Duration = Duration::from_secs(1);
    let db = PgTestDb::new().await;
    let server = support::start_http_with_open_files(
        OPEN_FILES,
        db.url(),
        &[
            "--no-auth",
            "--header-read-timeout",
            "2",
            "--keep-alive-timeout",
            "3",
        ],
        &[],
    )
    .await;
    let addr = server.addr();
    let cap = max_connections(&server.stderr());
    assert!(
        cap < OPEN_FILES as usize - 50,
        "the cap ({cap}) must leave room under the open-file limit ({OPEN_FILES})"
    );
    assert!(
        server
            .stderr()
            .contains("more than the open-file limit allows"),
        "lowering the cap should be logged\n{}",
        server.stderr()
    );

    // A quiet SSE stream (a request under way) and a keep-alive connection, opened first.
    let mut stream = EventStream::open(&server, None).await;
    let mut keep = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        healthz_on(&mut keep, addr, QUICK).await.as_deref(),
        Ok("HTTP/1.1 200 OK")
    );

    // More half-sent requests than the cap: the last ones are refused at once.
    let mut slow = Vec::new();
    for _ in 0..cap + 40 {
        use tokio::io::AsyncWriteExt;
        let mut connection = tokio::net::TcpStream::connect(addr).await.expect("connect");
        connection
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1")
            .await
            .expect("write half a request");
        slow.push(connection);
    }
    let flooded = Instant::now();
    // Refusals are sent at accept: a moment later each refused connection has its answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = slow
        .iter()
        .filter(|connection| {
            !matches!(connection.try_read(&mut [0; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert!(
        refused >= 40,
        "{refused} of {} connections past a cap of {cap} were refused",
        cap + 40
    );
    assert_eq!(
        healthz_on(&mut keep, addr, QUICK).await.as_deref(),
        Ok("HTTP/1.1 200 OK"),
        "an established connection keeps working at the cap"
    );
    let keep_used = Instant::now();
    let mut late = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let answer = healthz_on(&mut late, addr, QUICK).await;
    assert!(
        answer
            .as_ref()
            .is_ok_and(|line| line.starts_with("HTTP/1.1 503"))
            || answer.as_ref().is_err_and(|e| !e.starts_with("no answer")),
        "a new connection at the cap must be refused at once, not left waiting: {answer:?}"
    );

    // Past the header-read timeout every slow client has been closed, and /healthz answers
    // a new connection.
    let mut still_open = 0;
    for connection in &mut slow {
        let wait = (flooded + HEADER_READ + QUICK).saturating_duration_since(Instant::now());
        if closed_by_server(connection, wait).await.is_none() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "connections with unfinished headers outlived the header-read timeout"
    );
    drop(slow);
    let mut fresh = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        healthz_on(&mut fresh, addr, QUICK).await.as_deref(),
        Ok("HTTP/1.1 200 OK")
    );

    // Idle past the keep-alive timeout, the keep-alive connection is closed; the SSE
    // stream, quiet as long, still carries a call.
    let wait = (keep_used + KEEP_ALIVE + QUICK).saturating_duration_since(Instant::now());
    assert!(
        closed_by_server(&mut keep, wait).await.is_some(),
        "an idle connection outlived the keep-alive timeout"
    );
    assert!(
        keep_used.elapsed() + Duration::from_millis(100) >= KEEP_ALIVE,
        "an idle connection was closed before the keep-alive timeout ({:?})",
        keep_used.elapsed()
    );
    stream
        .initialize_and_add(&server, None, "after a quiet stream")
        .await;
    assert_eq!(task_count(&db).await, 1);
    let stderr = server.stderr();
    assert!(
        !stderr.contains("Too many open files"),
        "the server ran out of file descriptors\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// --no-auth
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_refuses_a_non_loopback_address() {
    let db = PgTestDb::new().await;
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = todo_mcp_with_timeout(
            &["http", "--no-auth", "--listen", listen],
            &[("DATABASE_URL", db.url())],
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--no-auth on {listen} should refuse to start\n{stderr}"
        );
        assert!(
            stderr.contains("loopback") && stderr.contains(&format!("not {listen}")),
            "--no-auth on {listen}: the refusal should say why\n{stderr}"
        );
        assert!(
            !stderr.contains("serving MCP over HTTP"),
            "--no-auth on {listen} served before refusing\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_on_loopback_serves_everyone_as_local() {
    let db = PgTestDb::new().await;
    let server = start_http(db.url(), &["--no-auth"], &[]).await;
    let task = add_task_ok(&server, None, "local task").await;
    // A bearer token changes nothing: there are no users but `local`.
    let with_token = add_task_ok(&server, Some("tmcp_whatever"), "also local").await;
    let mut stream = EventStream::open(&server, None).await;
    stream
        .initialize_and_add(&server, None, "local over sse")
        .await;
    let rows = db
        .query_json("SELECT id::text AS id, user_id, title FROM tasks ORDER BY id")
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"id": task["id"], "user_id": "local", "title": "local task"}),
            json!({"id": with_token["id"], "user_id": "local", "title": "also local"}),
            json!({"id": rows[2]["id"], "user_id": "local", "title": "local over sse"}),
        ]
    );
    let users = db.query_json("SELECT id FROM users").await;
    assert_eq!(users, vec![json!({"id": "local"})]);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

/// Server backends of this database waiting on a lock.
async fn lock_waiters(db: &PgTestDb) -> i64 {
    let rows = db
        .query_json(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await;
    rows[0]["n"].as_i64().expect("a count")
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_calls_finish_then_exits_0() {
    const CALLS: i64 = 20;
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[("TODO_MCP_POOL_SIZE", "50")]).await;
    let addr = server.addr();
    // The user's activity log exists before the rush.
    add_task_ok(&server, Some(&token), "warm-up").await;

    // Hold every insert into tasks, so the calls are certainly in flight at SIGTERM.
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE tasks IN EXCLUSIVE MODE")
        .await
        .expect("locking tasks");
    let client = http();
    let mcp_url = server.mcp_url();
    let calls: Vec<_> = (1..=CALLS)
        .map(|id| {
            let request = client
                .post(&mcp_url)
                .bearer_auth(&token)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .header("mcp-protocol-version", PROTOCOL)
                .body(add_task(id, &format!("in flight {id}")).to_string());
            tokio::spawn(async move {
                match request.send().await {
                    Ok(response) => Ok(Reply::read(response).await),
                    Err(error) => Err(error.to_string()),
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock_waiters(&db).await < CALLS {
        assert!(
            Instant::now() < deadline,
            "only {} of {CALLS} calls reached the database\n{}",
            lock_waiters(&db).await,
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let terminated = Instant::now();
    let stopping = tokio::spawn(server.terminate(Duration::from_secs(60)));
    // It stops accepting at once, while the calls are still held.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refuses_connections(addr).await {
        assert!(
            Instant::now() < deadline,
            "the server still accepts connections 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still held in the database: the process must still be there to finish them.
    let exited_while_held = stopping.is_finished();
    locker
        .batch_execute("COMMIT")
        .await
        .expect("unlocking tasks");

    let mut answered = Vec::new();
    let mut failures = Vec::new();
    for (id, call) in (1..=CALLS).zip(calls) {
        match call.await.expect("a call task") {
            Ok(reply) if reply.status == StatusCode::OK => match task_in(&reply, id) {
                Some(task) => answered.push(task),
                None => failures.push(format!(
                    "call {id}: 200 without its result: {:?}",
                    reply.body
                )),
            },
            Ok(reply) => failures.push(format!("call {id}: {} {:?}", reply.status, reply.body)),
            Err(error) => failures.push(format!("call {id}: {error}")),
        }
    }
    let (status, log) = stopping.await.expect("the terminate task");
    let took = terminated.elapsed();

    let stored = db
        .query_json("SELECT id::text AS id, title FROM tasks WHERE title <> 'warm-up' ORDER BY id")
        .await;
    let mut answered_rows: Vec<Value> = answered
        .iter()
        .map(|task| json!({"id": task["id"], "title": task["title"]}))
        .collect();
    answered_rows.sort_by_key(|row| row["id"].as_str().unwrap_or_default().to_owned());
    assert!(
        failures.is_empty(),
        "every call in flight at SIGTERM should finish with its result; {} of {CALLS} did not \
         ({} stored):\n{}\n--- server stderr ---\n{log}",
        failures.len(),
        stored.len(),
        failures.join("\n")
    );
    assert_eq!(stored, answered_rows, "stored tasks vs answered calls");
    assert!(
        !exited_while_held,
        "the server exited while its calls were still waiting on the database\n{log}"
    );
    assert!(status.success(), "exit after SIGTERM: {status}\n{log}");
    assert!(
        took < SHUTDOWN_GRACE,
        "exit took {took:?}, more than the grace period\n{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    assert!(
        refuses_connections(addr).await,
        "connections accepted after exit"
    );
}

// ---------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------

/// The newest PostgreSQL migration's directory name (what `migrate down` reverts).
fn latest_migration() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.pop().expect("at least one migration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_pending_migration_and_healthz_stays_up() {
    let db = PgTestDb::new().await;
    let server = start_http(db.url(), &[], &[]).await;
    let ready = get(&server, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "backend": "postgresql"})
    );

    let down = todo_mcp(&["migrate", "down"], &[("DATABASE_URL", db.url())]);
    let stderr = String::from_utf8_lossy(&down.stderr).into_owned();
    assert!(down.status.success(), "migrate down failed\n{stderr}");
    let latest = latest_migration();
    assert!(stderr.contains(&format!("reverted {latest}")), "{stderr}");
    // `migrate status` names what is pending; /readyz must name the same.
    let status = todo_mcp(&["migrate", "status"], &[("DATABASE_URL", db.url())]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let pending: Vec<&str> = status
        .lines()
        .filter_map(|line| line.strip_prefix("pending\t"))
        .collect();
    assert_eq!(pending, [latest.as_str()], "{status}");

    let ready = get(&server, "/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert_eq!(
        ready.json(),
        json!({"status": "migrations pending", "pending": pending})
    );
    let health = get(&server, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.json(), json!({"status": "ok"}));

    let up = todo_mcp(&["migrate"], &[("DATABASE_URL", db.url())]);
    assert!(
        up.status.success(),
        "migrate failed\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let ready = get(&server, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_eq!(
        ready.json(),
        json!({"status": "ready", "backend": "postgresql"})
    );
    let health = get(&server, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
}

/// `/readyz` asks on a pooled connection: 50 probes open no connection each (PostgreSQL's
/// own count of sessions opened on the database grows by no more than the pool fills).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_probes_use_the_pool() {
    let db = PgTestDb::new().await;
    let server = start_http(db.url(), &[], &[]).await;
    let sessions = || async {
        let query = format!(
            "SELECT sessions FROM pg_stat_database WHERE datname = '{}'",
            db.name()
        );
        db.query_json(&query).await[0]["sessions"]
            .as_i64()
            .expect("pg_stat_database.sessions (PostgreSQL 14 or later)")
    };
    let ready = get(&server, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let before = sessions().await;
    for _ in 0..50 {
        let ready = get(&server, "/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    }
    // Statistics reach pg_stat_database when a backend reports them: let them settle.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let opened = sessions().await - before;
    assert!(
        opened <= 2,
        "50 /readyz probes opened {opened} database sessions; the pool should serve them"
    );
}
