//! `todo-mcp http` authentication: every request names its user with its own bearer
//! credential. Missing, malformed, unknown, revoked and expired API tokens and bad JWTs get
//! `401` with a `WWW-Authenticate: Bearer …` challenge and a JSON-RPC error body before any
//! tool runs, on `/mcp`, `GET /sse` and `POST /message` alike; a legacy SSE session belongs
//! to the user who opened it.

use crate::support;

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cli::create_token_with;
use support::jsonrpc::{PROTOCOL, Reply, add_task, client as http, initialize, initialized};
use support::jwt::sign_hs256;
use support::{Backend, HttpServer, PgTestDb, assert_success, create_token, start_http, todo_mcp};

const JWT_SECRET: &str = "http-auth-test-jwt-secret-32-bytes-at-least";
/// How long a test waits for an SSE event that should arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test watches a stream to see that nothing arrives.
const QUIET_PERIOD: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// JSON-RPC over HTTP
// ---------------------------------------------------------------------------------------------

fn with_auth(request: reqwest::RequestBuilder, auth: Option<&str>) -> reqwest::RequestBuilder {
    match auth {
        Some(value) => request.header("authorization", value),
        None => request,
    }
}

/// `POST /mcp` with the headers Streamable HTTP requires; `auth` is the whole
/// `Authorization` value (`Bearer …`), or none.
async fn post_mcp(server: &HttpServer, auth: Option<&str>, message: &Value) -> Reply {
    let request = http()
        .post(server.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .json(message);
    Reply::read(with_auth(request, auth).send().await.expect("POST /mcp")).await
}

/// `POST` a JSON-RPC message to a legacy session's endpoint (`/message?sessionId=…`).
async fn post_message(
    server: &HttpServer,
    endpoint: &str,
    auth: Option<&str>,
    message: &Value,
) -> Reply {
    let request = http()
        .post(format!("{}{endpoint}", server.base_url()))
        .json(message);
    Reply::read(
        with_auth(request, auth)
            .send()
            .await
            .expect("POST /message"),
    )
    .await
}

/// The successful JSON-RPC response with `id` in a `/mcp` reply.
fn result_of(reply: &Reply, id: i64) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let message = reply
        .response(id)
        .unwrap_or_else(|| panic!("no JSON-RPC response with id {id} in {:?}", reply.body));
    message
        .get("result")
        .cloned()
        .unwrap_or_else(|| panic!("response {id} is not a success: {message}"))
}

/// The task an `add_task` result carries, asserting the call succeeded.
fn task_of(result: &Value) -> Value {
    assert_ne!(result["isError"], true, "add_task failed: {result}");
    let task = result["structuredContent"]["task"].clone();
    assert!(
        task["id"].is_string(),
        "add_task returned no task: {result}"
    );
    task
}

// ---------------------------------------------------------------------------------------------
// The legacy SSE transport
// ---------------------------------------------------------------------------------------------

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>;

#[derive(Debug)]
struct SseEvent {
    event: String,
    data: String,
}

/// An open `GET /sse` stream, read event by event.
struct EventStream {
    body: ByteStream,
    buffer: String,
    /// `/message?sessionId=…`, from the first event.
    endpoint: String,
}

/// What reading the next event gave.
#[derive(Debug)]
enum Next {
    Event(SseEvent),
    TimedOut,
    Ended,
}

impl EventStream {
    /// Opens `/sse` as the holder of `token` and reads its `endpoint` event.
    async fn open(server: &HttpServer, token: &str) -> EventStream {
        let response = get_sse(server, Some(&format!("Bearer {token}"))).await;
        assert_eq!(response.status(), StatusCode::OK, "GET /sse");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET /sse content type: {content_type:?}"
        );
        let mut stream = EventStream {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            endpoint: String::new(),
        };
        let first = stream.expect_event().await;
        assert_eq!(first.event, "endpoint", "first event: {first:?}");
        assert!(
            first.data.starts_with("/message?sessionId=") && first.data.len() > 19,
            "endpoint event data: {:?}",
            first.data
        );
        stream.endpoint = first.data;
        stream
    }

    /// The next event (keep-alive comments skipped), waiting at most `within`.
    async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.take_buffered() {
                return Next::Event(event);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::TimedOut,
                Ok(None) => return Next::Ended,
                Ok(Some(Err(e))) => panic!("reading the SSE stream failed: {e}"),
                Ok(Some(Ok(chunk))) => {
                    let text = std::str::from_utf8(&chunk).expect("SSE is UTF-8");
                    self.buffer.push_str(&text.replace("\r\n", "\n"));
                }
            }
        }
    }

    async fn expect_event(&mut self) -> SseEvent {
        match self.next(EVENT_TIMEOUT).await {
            Next::Event(event) => event,
            other => panic!("expected an SSE event, got {other:?}"),
        }
    }

    /// The next `message` event's JSON-RPC message.
    async fn expect_message(&mut self) -> Value {
        let event = self.expect_event().await;
        assert_eq!(event.event, "message", "{event:?}");
        serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("message event is not JSON ({e}): {event:?}"))
    }

    /// Asserts nothing but keep-alives arrives for a while.
    async fn expect_quiet(&mut self, why: &str) {
        match self.next(QUIET_PERIOD).await {
            Next::TimedOut => {}
            other => panic!("{why}: the stream should stay quiet, got {other:?}"),
        }
    }

    fn take_buffered(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.find("\n\n")?;
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = String::from("message");
            let mut data: Vec<&str> = Vec::new();
            let mut fields = 0;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim_start().to_owned();
                    fields += 1;
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value));
                    fields += 1;
                }
            }
            if fields > 0 {
                return Some(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
        }
    }

    /// Initializes the session (its answer arrives on the stream) and says `initialized`.
    async fn initialize(&mut self, server: &HttpServer, token: &str, id: i64) {
        let auth = format!("Bearer {token}");
        let reply = post_message(server, &self.endpoint, Some(&auth), &initialize(id)).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        let answer = self.expect_message().await;
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(
            answer["result"]["serverInfo"]["name"], "todo-mcp",
            "{answer}"
        );
        let reply = post_message(server, &self.endpoint, Some(&auth), &initialized()).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    }
}

async fn get_sse(server: &HttpServer, auth: Option<&str>) -> reqwest::Response {
    let request = reqwest::Client::new()
        .get(format!("{}/sse", server.base_url()))
        .header("accept", "text/event-stream");
    with_auth(request, auth).send().await.expect("GET /sse")
}

// ---------------------------------------------------------------------------------------------
// Credentials and assertions
// ---------------------------------------------------------------------------------------------

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A JWT for `sub` valid for an hour, signed with [`JWT_SECRET`].
fn valid_jwt(sub: &str) -> String {
    sign_hs256(&json!({"sub": sub, "exp": now() + 3600}), JWT_SECRET)
}

/// A credential the server must refuse, and why.
struct BadCredential {
    what: &'static str,
    /// The whole `Authorization` header, if any.
    auth: Option<String>,
    /// The `error_description` expected (`None`: no token was presented, so no error).
    refusal: Refusal,
}

#[derive(Clone, Copy)]
enum Refusal {
    /// No bearer token presented: a bare challenge.
    NoToken,
    /// A token presented and refused for this reason.
    InvalidToken(&'static str),
}

const NOT_VALID: &str = "the token is not valid";
const EXPIRED: &str = "the token has expired";
const REVOKED: &str = "the token has been revoked";
const MALFORMED: &str = "the token is neither an API token nor a JWT";
const BAD_SIGNATURE: &str = "the token's signature does not verify";
const NO_EXP: &str = "the token has no `exp` claim";
const JWT_DISABLED: &str = "the token is a JWT, but neither TODO_MCP_JWT_ISSUER nor TODO_MCP_JWT_SECRET is set, so JWTs are not accepted";

/// Every kind of bad credential a server with [`JWT_SECRET`] configured must refuse.
async fn bad_credentials(db: &PgTestDb) -> Vec<BadCredential> {
    let expired_token = create_token_with(db.url(), "mallory", &["--expires-in", "1"]);
    db.execute(&support::sql::expire_tokens(
        Backend::Postgres,
        "user_id = 'mallory'",
    ))
    .await;
    let bearer = |token: &str| Some(format!("Bearer {token}"));
    vec![
        BadCredential {
            what: "no Authorization header",
            auth: None,
            refusal: Refusal::NoToken,
        },
        BadCredential {
            what: "an empty bearer token",
            auth: Some("Bearer ".to_owned()),
            refusal: Refusal::NoToken,
        },
        BadCredential {
            what: "Basic credentials",
            auth: Some("Basic YWxpY2U6c2VjcmV0".to_owned()),
            refusal: Refusal::NoToken,
        },
        BadCredential {
            what: "a garbage token",
            auth: bearer("not-a-token"),
            refusal: Refusal::InvalidToken(MALFORMED),
        },
        BadCredential {
            what: "an unknown tmcp_ token",
            auth: bearer("tmcp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            refusal: Refusal::InvalidToken(NOT_VALID),
        },
        BadCredential {
            what: "an expired API token",
            auth: bearer(&expired_token),
            refusal: Refusal::InvalidToken(EXPIRED),
        },
        BadCredential {
            what: "an expired JWT",
            auth: bearer(&sign_hs256(
                &json!({"sub": "mallory", "exp": now() - 3600}),
                JWT_SECRET,
            )),
            refusal: Refusal::InvalidToken(EXPIRED),
        },
        BadCredential {
            what: "a JWT signed with the wrong secret",
            auth: bearer(&sign_hs256(
                &json!({"sub": "mallory", "exp": now() + 3600}),
                "not-the-secret",
            )),
            refusal: Refusal::InvalidToken(BAD_SIGNATURE),
        },
        BadCredential {
            what: "a JWT without exp",
            auth: bearer(&sign_hs256(&json!({"sub": "mallory"}), JWT_SECRET)),
            refusal: Refusal::InvalidToken(NO_EXP),
        },
    ]
}

/// A 401 with an RFC 6750 challenge (`error="invalid_token"` only when a token was
/// presented) and a JSON-RPC error body naming the reason.
fn assert_unauthorized(reply: &Reply, refusal: Refusal, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: expected 401, body {}",
        reply.body
    );
    let challenges: Vec<&str> = reply
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("ASCII WWW-Authenticate"))
        .collect();
    assert_eq!(challenges.len(), 1, "{what}: challenges {challenges:?}");
    let challenge = challenges[0];
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("realm=\"todo-mcp\""),
        "{what}: WWW-Authenticate {challenge:?}"
    );
    let body = reply.json();
    assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
    assert_eq!(body["id"], Value::Null, "{what}: {body}");
    assert_eq!(body["error"]["code"], -32001, "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("unauthorized: "),
        "{what}: error message {message:?}"
    );
    match refusal {
        Refusal::NoToken => {
            assert_eq!(
                challenge, "Bearer realm=\"todo-mcp\"",
                "{what}: no token was presented, so the challenge names no error"
            );
        }
        Refusal::InvalidToken(reason) => {
            assert!(
                challenge.contains("error=\"invalid_token\""),
                "{what}: WWW-Authenticate {challenge:?}"
            );
            assert!(
                challenge.contains(&format!("error_description=\"{reason}\"")),
                "{what}: WWW-Authenticate {challenge:?} should give the reason {reason:?}"
            );
            assert_eq!(message, format!("unauthorized: {reason}"), "{what}");
        }
    }
}

/// Row counts of everything a request could write.
async fn written(db: &PgTestDb) -> Value {
    let rows = db
        .query_json(
            "SELECT (SELECT count(*) FROM tasks) AS tasks, \
                    (SELECT count(*) FROM messages) AS messages, \
                    (SELECT count(*) FROM conversations) AS conversations, \
                    (SELECT count(*) FROM users) AS users",
        )
        .await;
    rows.into_iter().next().expect("one row of counts")
}

async fn tasks_of(db: &PgTestDb, user: &str) -> Vec<Value> {
    db.query_json(&format!(
        "SELECT id::text AS id, user_id, title FROM tasks WHERE user_id = '{user}' ORDER BY id"
    ))
    .await
}

fn jwt_env() -> [(&'static str, &'static str); 1] {
    [("TODO_MCP_JWT_SECRET", JWT_SECRET)]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_refuses_bad_credentials_before_any_tool_runs() {
    let db = PgTestDb::new().await;
    let cases = bad_credentials(&db).await;
    let server = start_http(db.url(), &[], &jwt_env()).await;
    let before = written(&db).await;
    for (i, case) in cases.iter().enumerate() {
        let reply = post_mcp(&server, case.auth.as_deref(), &add_task(1, case.what)).await;
        assert_unauthorized(
            &reply,
            case.refusal,
            &format!("POST /mcp with {}", case.what),
        );
        assert_eq!(
            written(&db).await,
            before,
            "case {i}: {} wrote rows",
            case.what
        );
    }
    // initialize is refused too: nothing is served without a user.
    let reply = post_mcp(&server, None, &initialize(1)).await;
    assert_unauthorized(&reply, Refusal::NoToken, "initialize without a token");
    assert_eq!(written(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_refuses_bad_credentials() {
    let db = PgTestDb::new().await;
    let cases = bad_credentials(&db).await;
    let server = start_http(db.url(), &[], &jwt_env()).await;
    let before = written(&db).await;
    for case in &cases {
        let response = get_sse(&server, case.auth.as_deref()).await;
        let reply = Reply::read(response).await;
        assert_unauthorized(
            &reply,
            case.refusal,
            &format!("GET /sse with {}", case.what),
        );
    }
    assert_eq!(written(&db).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_refuses_bad_credentials_on_a_live_session() {
    let db = PgTestDb::new().await;
    let cases = bad_credentials(&db).await;
    let alice = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &jwt_env()).await;
    let mut stream = EventStream::open(&server, &alice).await;
    let before = written(&db).await;
    // Before initialize (an initialize would be served) ...
    for case in &cases {
        let reply = post_message(
            &server,
            &stream.endpoint,
            case.auth.as_deref(),
            &initialize(100),
        )
        .await;
        assert_unauthorized(
            &reply,
            case.refusal,
            &format!("POST /message initialize with {}", case.what),
        );
    }
    stream.expect_quiet("refused initializes").await;
    // ... and after (a tool call would run).
    stream.initialize(&server, &alice, 1).await;
    let before_calls = written(&db).await;
    for case in &cases {
        let reply = post_message(
            &server,
            &stream.endpoint,
            case.auth.as_deref(),
            &add_task(200, case.what),
        )
        .await;
        assert_unauthorized(
            &reply,
            case.refusal,
            &format!("POST /message tools/call with {}", case.what),
        );
    }
    stream.expect_quiet("refused tool calls").await;
    assert_eq!(written(&db).await, before_calls);
    assert_eq!(before, before_calls, "initialize writes nothing");
    // The session itself is intact: its owner's call works.
    let reply = post_message(
        &server,
        &stream.endpoint,
        Some(&format!("Bearer {alice}")),
        &add_task(3, "alice's own"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let answer = stream.expect_message().await;
    assert_eq!(answer["id"], 3, "{answer}");
    assert_eq!(task_of(&answer["result"])["title"], "alice's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_refused_when_no_secret_is_configured() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let jwt = format!("Bearer {}", valid_jwt("carol"));
    let before = written(&db).await;

    let reply = post_mcp(&server, Some(&jwt), &add_task(1, "via jwt")).await;
    assert_unauthorized(
        &reply,
        Refusal::InvalidToken(JWT_DISABLED),
        "POST /mcp with a JWT",
    );

    let reply = Reply::read(get_sse(&server, Some(&jwt)).await).await;
    assert_unauthorized(
        &reply,
        Refusal::InvalidToken(JWT_DISABLED),
        "GET /sse with a JWT",
    );

    let mut stream = EventStream::open(&server, &alice).await;
    let reply = post_message(&server, &stream.endpoint, Some(&jwt), &initialize(1)).await;
    assert_unauthorized(
        &reply,
        Refusal::InvalidToken(JWT_DISABLED),
        "POST /message with a JWT",
    );
    stream.expect_quiet("a refused JWT").await;
    assert_eq!(written(&db).await, before);
    let carol = db
        .query_json("SELECT id FROM users WHERE id = 'carol'")
        .await;
    assert!(
        carol.is_empty(),
        "a refused JWT created its user: {carol:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_on_its_next_request() {
    let db = PgTestDb::new().await;
    let token = create_token_with(db.url(), "alice", &["--name", "soon-revoked"]);
    let auth = format!("Bearer {token}");
    let server = start_http(db.url(), &[], &[]).await;

    // It works: over /mcp, and on a legacy session.
    let reply = post_mcp(&server, Some(&auth), &add_task(1, "before revocation")).await;
    let task = task_of(&result_of(&reply, 1));
    assert_eq!(task["title"], "before revocation");
    let mut stream = EventStream::open(&server, &token).await;
    stream.initialize(&server, &token, 1).await;
    let reply = post_message(
        &server,
        &stream.endpoint,
        Some(&auth),
        &add_task(2, "on sse"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let answer = stream.expect_message().await;
    assert_eq!(task_of(&answer["result"])["title"], "on sse");
    assert_eq!(tasks_of(&db, "alice").await.len(), 2);

    let listed = todo_mcp(
        &["token", "list", "--user", "alice"],
        &[("DATABASE_URL", db.url())],
    );
    assert_success(&listed, "todo-mcp token list");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("one token as JSON");
    assert_eq!(listed["name"], "soon-revoked");
    let id = listed["id"].as_str().expect("a token id");
    let revoked = todo_mcp(&["token", "revoke", id], &[("DATABASE_URL", db.url())]);
    assert_success(&revoked, "todo-mcp token revoke");

    let before = written(&db).await;
    let reply = post_mcp(&server, Some(&auth), &add_task(3, "after revocation")).await;
    assert_unauthorized(&reply, Refusal::InvalidToken(REVOKED), "POST /mcp, revoked");
    let reply = post_message(
        &server,
        &stream.endpoint,
        Some(&auth),
        &add_task(4, "after"),
    )
    .await;
    assert_unauthorized(
        &reply,
        Refusal::InvalidToken(REVOKED),
        "POST /message, revoked",
    );
    stream.expect_quiet("a revoked token's call").await;
    let reply = Reply::read(get_sse(&server, Some(&auth)).await).await;
    assert_unauthorized(&reply, Refusal::InvalidToken(REVOKED), "GET /sse, revoked");
    assert_eq!(written(&db).await, before);
    assert_eq!(tasks_of(&db, "alice").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_session_belongs_to_the_user_who_opened_it() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let bob_auth = format!("Bearer {bob}");
    let server = start_http(db.url(), &[], &[]).await;
    let mut stream = EventStream::open(&server, &alice).await;
    let before = written(&db).await;

    // Bob, with a valid token, cannot initialize or call on alice's session: it "does not exist".
    for message in [initialize(901), add_task(902, "bob in alice's session")] {
        let reply = post_message(&server, &stream.endpoint, Some(&bob_auth), &message).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "bob's {message} on alice's session: {}",
            reply.body
        );
    }
    stream.expect_quiet("bob's refused messages").await;

    // Alice's own initialize is answered (and is the first message on her stream).
    stream.initialize(&server, &alice, 1).await;

    // Bob again, now that the session is live.
    let reply = post_message(
        &server,
        &stream.endpoint,
        Some(&bob_auth),
        &add_task(903, "bob in alice's live session"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    stream.expect_quiet("bob's refused tool call").await;
    assert_eq!(written(&db).await, before, "bob's refused calls wrote rows");

    // Alice's own call works, and its answer arrives on her stream.
    let reply = post_message(
        &server,
        &stream.endpoint,
        Some(&format!("Bearer {alice}")),
        &add_task(2, "alice's task"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let answer = stream.expect_message().await;
    assert_eq!(answer["id"], 2, "{answer}");
    let task = task_of(&answer["result"]);
    assert_eq!(task["title"], "alice's task");
    let rows = tasks_of(&db, "alice").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], task["id"]);
    assert!(tasks_of(&db, "bob").await.is_empty());

    // An unknown session is 404 for everyone, its would-be owner included.
    let unknown = "/message?sessionId=00000000000000000000000000000000";
    for auth in [&bob_auth, &format!("Bearer {alice}")] {
        let reply = post_message(&server, unknown, Some(auth), &initialize(5)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    }
    let reply = post_message(
        &server,
        "/message?sessionId=",
        Some(&format!("Bearer {alice}")),
        &initialize(6),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    stream.expect_quiet("posts to unknown sessions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_credential_acts_as_its_user() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &jwt_env()).await;

    let auth = format!("Bearer {alice}");
    let reply = post_mcp(&server, Some(&auth), &initialize(1)).await;
    let result = result_of(&reply, 1);
    assert_eq!(result["serverInfo"]["name"], "todo-mcp", "{result}");
    assert_eq!(result["protocolVersion"], PROTOCOL, "{result}");
    assert!(result["capabilities"]["tools"].is_object(), "{result}");

    let reply = post_mcp(&server, Some(&auth), &add_task(2, "milk")).await;
    // A call's answer is one JSON object, not an SSE stream (cheaper to make and to read).
    assert_eq!(
        reply.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "{}",
        reply.body
    );
    let task = task_of(&result_of(&reply, 2));
    assert_eq!(task["title"], "milk");
    assert_eq!(task["completed"], false);
    let rows = tasks_of(&db, "alice").await;
    assert_eq!(
        rows,
        vec![json!({"id": task["id"], "user_id": "alice", "title": "milk"})]
    );
    let audit = db
        .query_json(
            "SELECT user_id, tool_calls->>'tool' AS tool, (tool_calls->>'ok')::boolean AS ok \
             FROM messages WHERE role = 'tool'",
        )
        .await;
    assert_eq!(
        audit,
        vec![json!({"user_id": "alice", "tool": "add_task", "ok": true})]
    );

    // A JWT acts as its subject, created on first sight.
    let jwt = format!("Bearer {}", valid_jwt("carol"));
    let reply = post_mcp(&server, Some(&jwt), &add_task(3, "bread")).await;
    let task = task_of(&result_of(&reply, 3));
    let rows = tasks_of(&db, "carol").await;
    assert_eq!(
        rows,
        vec![json!({"id": task["id"], "user_id": "carol", "title": "bread"})]
    );
    assert_eq!(tasks_of(&db, "alice").await.len(), 1);
}
