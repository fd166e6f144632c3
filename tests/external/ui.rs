//! The read-only web page, `/ui`: a user signed in with their token sees their tasks,
//! conversations, transcripts (the agent's tool calls and the server's call records) and
//! agent state versions; never another user's data; and reading writes nothing.
//!
//! `page_in_chromium_shows_own_data_only` drives Debian's chromium through playwright-core
//! (`tests/clients/ui_browser.cjs`) on both backends (PostgreSQL with row-level security),
//! and saves screenshots under `target/ui-artifacts/<backend>/`. The JSON endpoints'
//! promises (auth, scopes, 405, CSP headers, isolation, paging, no writes) are then checked
//! by hand on the same server.

use crate::support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::cli::create_token_with;
use support::jsonrpc::{Reply, StatelessCaller};
use support::samples::{self, Seed};
use support::{
    Backend, HttpServer, TOOL_NAMES, TestDb, connect_in_process, create_token, start_http,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const ALICE: &str = "alice-ui";
const BOB: &str = "bob-ui";
/// Only Bob's data holds this: finding it anywhere Alice looks is a leak.
const BOB_MARKER: &str = "ZEBRA-7Q";
/// Only Alice's data holds these.
const ALICE_MARKERS: [&str; 3] = ["oat milk", "groceries", ALICE];

const CONVERSATION_TITLE: &str = "Plan the groceries run";
/// A tool result carrying markup, as a fetched web page might: the page must show it as
/// text, and nothing in it may run.
const HOSTILE: &str =
    "Added. <img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";
const LABELED_TASK: &str = "Buy oat milk";
const TAX_TASK: &str = "File the tax return";
const DONE_TASK: &str = "Water the plants";
/// Filler tasks, so that the task list takes two pages of the page's 25.
const FILLERS: usize = 24;
const TOTAL_TASKS: usize = FILLERS + 3;
const TASK_PAGE: usize = 25;

/// What was seeded, for the checks.
struct Seeded {
    alice_token: String,
    bob_token: String,
    /// Alice's write-only token: the page needs todo:read.
    alice_write_only: String,
    alice_conversation: String,
    bob_conversation: String,
}

both_backends!(
    page_in_chromium_shows_own_data_only,
    the_page_shows_every_tools_sample_call,
);

async fn page_in_chromium_shows_own_data_only(db: TestDb) {
    let started = Instant::now();
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: these tests drive Debian's chromium (`apt-get install chromium`)"
    );
    let server = start_http(db.url(), &[], &[]).await;
    let seeded = seed(&db, &server).await;
    let before = table_rows(&db).await;

    let report = run_browser(&server, &seeded, &artifacts_dir().join(db.name())).await;
    let checks = report["checks"].as_array().map_or(0, Vec::len);
    let failures = report["failures"].as_array().cloned().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "the page failed {} check(s):\n{}\nreport: {report:#}\n--- server stderr ---\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("  - {}", f.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n"),
        server.stderr()
    );
    assert!(checks >= 30, "only {checks} checks ran: {report:#}");
    assert_eq!(
        report["console"],
        json!([]),
        "console errors or CSP refusals: {report:#}"
    );
    assert_eq!(
        report["csp_violations"],
        json!([]),
        "CSP violations: {report:#}"
    );
    assert!(
        report["expected_404s"]
            .as_array()
            .is_some_and(|urls| urls.len() <= 2),
        "only the other user's conversation may be answered 404: {report:#}"
    );
    assert!(
        report["api_responses"].as_u64().unwrap_or(0) >= 6,
        "the page read too little of the API: {report:#}"
    );
    for shot in report["screenshots"].as_array().into_iter().flatten() {
        let path = PathBuf::from(shot.as_str().unwrap_or_default());
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(size > 10_000, "{} is missing or empty", path.display());
        println!("screenshot: {}", path.display());
    }

    api_checks(&server, &seeded).await;
    assert_eq!(
        table_rows(&db).await,
        before,
        "browsing the page (and the API checks) changed the database"
    );
    println!(
        "ui: {checks} browser checks passed, {} API responses read, in {:.1?}",
        report["api_responses"],
        started.elapsed()
    );
}

/// The page's data covers every tool: after each tool's sample call (tests/support/
/// samples.rs), the page lists the sampled task and, across the user's conversations, a
/// call record of every tool.
async fn the_page_shows_every_tools_sample_call(db: TestDb) {
    let server = start_http(db.url(), &[], &[]).await;
    let token = create_token(db.url(), "carol-ui");
    let agent = connect_in_process(db.url(), Some(&token), &[]).await;
    let seed = Seed::plant(&agent).await;
    for (tool, args) in samples::all(&seed) {
        agent.call_ok(tool, args).await;
    }
    agent.close().await;

    let tasks = get(&server, "/ui/api/tasks", Some(&token)).await.json();
    let titles: Vec<&str> = tasks["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|task| task["title"].as_str())
        .collect();
    assert!(titles.contains(&"sampled task"), "{tasks}");

    let mut recorded = std::collections::BTreeSet::new();
    let conversations = get(&server, "/ui/api/conversations?limit=100", Some(&token))
        .await
        .json();
    for conversation in conversations["conversations"]
        .as_array()
        .expect("conversations")
    {
        let id = conversation["id"].as_str().expect("a conversation id");
        let mut before = String::new();
        loop {
            let path = format!("/ui/api/conversations/{id}/transcript?limit=200{before}");
            let page = get(&server, &path, Some(&token)).await.json();
            for message in page["messages"].as_array().expect("messages") {
                if message["kind"] == "call_record" {
                    let tool = message["tool_calls"]["tool"].as_str().expect("the tool");
                    recorded.insert(tool.to_owned());
                }
            }
            match page["next_cursor"].as_i64() {
                Some(next) => before = format!("&before={next}"),
                None => break,
            }
        }
    }
    let every: std::collections::BTreeSet<String> =
        TOOL_NAMES.iter().map(|name| name.to_string()).collect();
    assert_eq!(
        recorded, every,
        "the page shows a call record of every tool; conversations: {conversations}"
    );
}

/// A personal server (`--no-auth`): the page needs no sign-in, and shows the local user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_server_needs_no_sign_in() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = start_http(db.url(), &["--no-auth"], &[]).await;
    let config = get(&server, "/ui/config.json", None).await;
    assert_eq!(config.json()["sign_in"], "none", "{}", config.body);
    assert_page_headers(&config, "/ui/config.json");
    let me = get(&server, "/ui/api/me", None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.json()["user"], "local");
    let tasks = get(&server, "/ui/api/tasks", None).await;
    assert_eq!(tasks.json()["tasks"], json!([]), "{}", tasks.body);
}

// ---- Seeding, through the MCP tools as an agent would ------------------------------------

async fn seed(db: &TestDb, server: &HttpServer) -> Seeded {
    let alice_token = create_token(db.url(), ALICE);
    let bob_token = create_token(db.url(), BOB);
    let alice_write_only = create_token_with(db.url(), ALICE, &["--scope", "write"]);
    let mcp = server.mcp_url();
    let caller = StatelessCaller::new(Duration::from_secs(30));
    let alice = |tool: &'static str, arguments: Value| {
        let (caller, mcp, token) = (&caller, &mcp, &alice_token);
        async move {
            caller
                .call(mcp, token, tool, arguments.clone())
                .await
                .unwrap_or_else(|e| panic!("{ALICE}: {tool} {arguments} failed: {e}"))
        }
    };

    for n in 1..=FILLERS {
        let labels = if n % 3 == 0 {
            json!(["home"])
        } else {
            json!([])
        };
        alice(
            "add_task",
            json!({"title": format!("Errand {n:02}"), "priority": "low", "labels": labels}),
        )
        .await;
    }
    let started = alice("start_conversation", json!({"title": CONVERSATION_TITLE})).await;
    let conversation = started["conversation"]["id"]
        .as_str()
        .expect("start_conversation returns the id")
        .to_owned();
    let append = |message: Value| {
        let mut arguments = message;
        arguments["conversation_id"] = json!(conversation);
        alice("append_message", arguments)
    };
    append(json!({"role": "user", "content": "Please put oat milk on my list for Christmas Eve."}))
        .await;
    append(json!({
        "role": "assistant",
        "content": "I'll add that task now.",
        "tool_calls": [{"id": "call_oat_1", "name": "add_task",
                        "arguments": {"title": LABELED_TASK, "due": "2026-12-24"}}],
    }))
    .await;
    alice(
        "add_task",
        json!({"title": LABELED_TASK, "due": "2026-12-24", "priority": "high",
               "labels": ["groceries", "errands"], "conversation_id": conversation}),
    )
    .await;
    // A refused call: its record lands in the conversation too, as a failure.
    let refused = caller
        .call(
            &mcp,
            &alice_token,
            "add_task",
            json!({"title": " ", "conversation_id": conversation}),
        )
        .await;
    assert!(refused.is_err(), "a blank title was accepted: {refused:?}");
    alice(
        "list_tasks",
        json!({"label": "groceries", "conversation_id": conversation}),
    )
    .await;
    append(json!({"role": "tool", "tool_call_id": "call_oat_1", "content": HOSTILE})).await;
    alice(
        "save_agent_state",
        json!({"conversation_id": conversation, "state": {"step": "planning", "todo": ["oat milk"]}}),
    )
    .await;
    alice(
        "save_agent_state",
        json!({"conversation_id": conversation, "expected_version": 1,
               "state": {"step": "done", "added": [LABELED_TASK]}}),
    )
    .await;
    append(json!({"role": "assistant", "content": "Done: oat milk is on your list for Dec 24."}))
        .await;
    alice(
        "add_task",
        json!({"title": TAX_TASK, "due": "2026-12-31T17:00:00+01:00", "priority": "urgent",
               "labels": ["admin"], "description": "Receipts are in the blue folder."}),
    )
    .await;
    let done = alice("add_task", json!({"title": DONE_TASK})).await;
    alice(
        "complete_task",
        json!({"task_id": done["task"]["id"].as_str().expect("a task id")}),
    )
    .await;

    let bob = |tool: &'static str, arguments: Value| {
        let (caller, mcp, token) = (&caller, &mcp, &bob_token);
        async move {
            caller
                .call(mcp, token, tool, arguments.clone())
                .await
                .unwrap_or_else(|e| panic!("{BOB}: {tool} {arguments} failed: {e}"))
        }
    };
    let started = bob(
        "start_conversation",
        json!({"title": format!("{BOB_MARKER} plans")}),
    )
    .await;
    let bob_conversation = started["conversation"]["id"]
        .as_str()
        .expect("start_conversation returns the id")
        .to_owned();
    bob(
        "append_message",
        json!({"conversation_id": bob_conversation, "role": "user",
               "content": format!("{BOB_MARKER}: nobody else may read this")}),
    )
    .await;
    bob(
        "add_task",
        json!({"title": format!("{BOB_MARKER} secret task"), "labels": [BOB_MARKER],
               "conversation_id": bob_conversation}),
    )
    .await;
    bob(
        "save_agent_state",
        json!({"conversation_id": bob_conversation, "state": {"secret": BOB_MARKER}}),
    )
    .await;

    Seeded {
        alice_token,
        bob_token,
        alice_write_only,
        alice_conversation: conversation,
        bob_conversation,
    }
}

// ---- The browser walk ------------------------------------------------------------------------

/// `target/ui-artifacts`: beside the test's temporary directory, so CI can keep it.
fn artifacts_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("ui-artifacts")
}

async fn run_browser(server: &HttpServer, seeded: &Seeded, screenshot_dir: &Path) -> Value {
    let tools = support::node::tools_async().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ui_browser.cjs");
    let input = json!({
        "base_url": server.base_url(),
        "chromium": CHROMIUM,
        "screenshot_dir": screenshot_dir,
        "token": seeded.alice_token,
        "user": ALICE,
        // Not Bob's conversation id: the page itself asks for it below (and is told "not found").
        "other_user_markers": [BOB_MARKER, BOB],
        "other_conversation_id": seeded.bob_conversation,
        "tasks": {
            "total": TOTAL_TASKS,
            "page": TASK_PAGE,
            "titles": [LABELED_TASK, TAX_TASK, DONE_TASK, "Errand 01", "Errand 24"],
            "labeled": {"title": LABELED_TASK, "labels": ["groceries", "errands"],
                        "priority": "high", "due_text": "Dec 24, 2026"},
            "completed_title": DONE_TASK,
        },
        "conversation": {
            "title": CONVERSATION_TITLE,
            "texts": [
                "Please put oat milk on my list for Christmas Eve.",
                "I'll add that task now.",
                HOSTILE,
                "Done: oat milk is on your list for Dec 24.",
                "list_tasks",
            ],
            "tool_call": {"name": "add_task", "id": "call_oat_1"},
            "records": {"ok": 2, "failed": 1},
            "states": [
                {"version": 2, "text": "\"step\": \"done\""},
                {"version": 1, "text": "\"step\": \"planning\""},
            ],
        },
    });
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        let command = tools.node_command(&script, &[&input.to_string()]);
        support::cli::run_with_timeout(command, "node ui_browser.cjs", Duration::from_secs(180))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "ui_browser.cjs wrote no report\n{}",
                support::cli::describe_output(&output)
            )
        });
    assert!(
        output.status.success(),
        "ui_browser.cjs failed\n{}",
        support::cli::describe_output(&output)
    );
    println!("browser walk: {:.1?}", started.elapsed());
    report
}

// ---- The JSON endpoints, by hand -----------------------------------------------------------

/// GET `path` with an optional token.
async fn get(server: &HttpServer, path: &str, token: Option<&str>) -> Reply {
    let mut request = support::jsonrpc::client().get(format!("{}{path}", server.base_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Reply::read(request.send().await.expect("GET reaches the server")).await
}

fn assert_page_headers(reply: &Reply, what: &str) {
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name} header ({})", reply.status))
            .to_owned()
    };
    assert_eq!(header("content-security-policy"), CSP, "{what}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header("cache-control"), "no-store", "{what}");
}

async fn api_checks(server: &HttpServer, seeded: &Seeded) {
    let alice = Some(seeded.alice_token.as_str());
    let bob = Some(seeded.bob_token.as_str());
    let alice_id = &seeded.alice_conversation;
    let bob_id = &seeded.bob_conversation;

    // The static files: served, typed, and under the CSP.
    for (path, content_type) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let reply = get(server, path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}");
        let served = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        assert!(
            served.is_some_and(|t| t.starts_with(content_type)),
            "GET {path}: {served:?}"
        );
        assert_page_headers(&reply, path);
    }
    let index = get(server, "/ui", None).await.body;
    assert!(
        !index.contains("<script>") && !index.contains("style="),
        "the page has inline script or style"
    );

    let data_paths = [
        "/ui/api/me".to_owned(),
        "/ui/api/tasks".to_owned(),
        "/ui/api/conversations".to_owned(),
        format!("/ui/api/conversations/{alice_id}/transcript"),
        format!("/ui/api/conversations/{alice_id}/states"),
        format!("/ui/api/conversations/{alice_id}/states/1"),
    ];
    for path in &data_paths {
        // No token, a made-up one, a write-only one: refused, with the headers still on.
        let reply = get(server, path, None).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{path} without a token"
        );
        assert!(
            reply.headers.contains_key("www-authenticate"),
            "{path}: 401 without a challenge"
        );
        assert_page_headers(&reply, &format!("{path} (401)"));
        let reply = get(server, path, Some("tmcp_not_a_real_token")).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{path}, made-up token"
        );
        let reply = get(server, path, Some(&seeded.alice_write_only)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}, write-only token"
        );
        assert_eq!(
            reply.json()["error"]["kind"],
            "insufficient_scope",
            "{path}"
        );

        // Alice reads her own, and nothing of Bob's.
        let reply = get(server, path, alice).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert_page_headers(&reply, path);
        assert!(
            !reply.body.contains(BOB_MARKER),
            "{path} leaked: {}",
            reply.body
        );
        assert!(!reply.body.contains(BOB), "{path} leaked: {}", reply.body);

        // Only GET: every other method is 405 and writes nothing.
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
            let reply = Reply::read(
                support::jsonrpc::client()
                    .request(method.clone(), format!("{}{path}", server.base_url()))
                    .bearer_auth(&seeded.alice_token)
                    .json(&json!({"title": "written through the page"}))
                    .send()
                    .await
                    .expect("the request reaches the server"),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_page_headers(&reply, &format!("{method} {path}"));
        }
    }

    // The DNS-rebinding guard covers the page and its API.
    for (name, value) in [
        ("host", "evil.example.com".to_owned()),
        ("origin", "http://evil.example.com".to_owned()),
    ] {
        for path in ["/ui", "/ui/api/tasks"] {
            let reply = Reply::read(
                support::jsonrpc::client()
                    .get(format!("{}{path}", server.base_url()))
                    .header(name, &value)
                    .bearer_auth(&seeded.alice_token)
                    .send()
                    .await
                    .expect("the request reaches the server"),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{path} with {name} {value}"
            );
        }
    }

    // What Alice sees.
    let me = get(server, "/ui/api/me", alice).await.json();
    assert_eq!(me["user"], ALICE);
    let first = get(server, "/ui/api/tasks?limit=25", alice).await.json();
    let tasks = first["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), TASK_PAGE, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = get(
        server,
        &format!("/ui/api/tasks?limit=25&cursor={cursor}"),
        alice,
    )
    .await
    .json();
    assert_eq!(
        second["tasks"].as_array().map(Vec::len),
        Some(TOTAL_TASKS - TASK_PAGE)
    );
    assert_eq!(second["next_cursor"], Value::Null);
    // A cursor is bound to its user: Bob cannot page through Alice's list with it.
    let reply = get(server, &format!("/ui/api/tasks?cursor={cursor}"), bob).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let labeled = get(server, "/ui/api/tasks?sort=priority&status=pending", alice)
        .await
        .json();
    let urgent = &labeled["tasks"][0];
    assert_eq!(urgent["title"], TAX_TASK, "{labeled}");
    assert_eq!(urgent["priority"], "urgent");
    assert_eq!(urgent["due"], "2026-12-31T17:00:00+01:00");
    for bad in [
        "/ui/api/tasks?status=everything",
        "/ui/api/tasks?limit=0",
        "/ui/api/tasks?user_id=bob-ui",
    ] {
        let reply = get(server, bad, alice).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        assert!(reply.json()["error"]["message"].is_string(), "{bad}");
    }

    let conversations = get(server, "/ui/api/conversations", alice).await.json();
    let titles: Vec<&str> = conversations["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .filter_map(|c| c["title"].as_str())
        .collect();
    assert_eq!(titles[0], CONVERSATION_TITLE, "{conversations}");
    assert!(titles.contains(&"Tool activity"), "{titles:?}");

    let transcript = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/transcript"),
        alice,
    )
    .await
    .json();
    let messages = transcript["messages"].as_array().expect("messages");
    let records = messages
        .iter()
        .filter(|m| m["kind"] == "call_record")
        .count();
    assert_eq!(
        records, 3,
        "add_task ok, add_task refused, list_tasks: {transcript}"
    );
    let with_calls = messages
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .expect("the assistant message with its tool calls");
    assert_eq!(with_calls["tool_calls"][0]["id"], "call_oat_1");
    let failed = messages
        .iter()
        .find(|m| m["kind"] == "call_record" && m["tool_calls"]["ok"] == false)
        .expect("the refused call's record");
    assert_eq!(failed["tool_calls"]["error"]["kind"], "invalid_argument");
    assert!(failed["tool_calls"]["duration_ms"].is_number(), "{failed}");
    // Paging back through the timeline: the earlier page ends where the later one starts.
    let last_two = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/transcript?limit=2"),
        alice,
    )
    .await
    .json();
    let before = last_two["next_cursor"].as_i64().expect("an earlier page");
    let earlier = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/transcript?limit=200&before={before}"),
        alice,
    )
    .await
    .json();
    assert_eq!(
        earlier["messages"].as_array().map(Vec::len),
        Some(messages.len() - 2)
    );

    let versions = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/states"),
        alice,
    )
    .await
    .json();
    let numbers: Vec<i64> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(numbers, [2, 1], "{versions}");
    let first_state = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/states/1"),
        alice,
    )
    .await
    .json();
    assert_eq!(first_state["state"]["step"], "planning", "{first_state}");
    let missing = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/states/3"),
        alice,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    let zero = get(
        server,
        &format!("/ui/api/conversations/{alice_id}/states/0"),
        alice,
    )
    .await;
    assert_eq!(zero.status, StatusCode::BAD_REQUEST, "{}", zero.body);
    let not_uuid = get(server, "/ui/api/conversations/nope/transcript", alice).await;
    assert_eq!(
        not_uuid.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_uuid.body
    );
    let unknown = get(server, "/ui/api/secrets", alice).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);

    // Each user's conversations are not found by the other: as if they did not exist.
    for (token, id, who) in [(alice, bob_id, "Alice"), (bob, alice_id, "Bob")] {
        for path in [
            format!("/ui/api/conversations/{id}/transcript"),
            format!("/ui/api/conversations/{id}/states"),
            format!("/ui/api/conversations/{id}/states/1"),
        ] {
            let reply = get(server, &path, token).await;
            assert_eq!(
                reply.status,
                StatusCode::NOT_FOUND,
                "{who}: {path}: {}",
                reply.body
            );
        }
    }
    // What Bob sees: his own, nothing of Alice's.
    for path in ["/ui/api/me", "/ui/api/tasks", "/ui/api/conversations"] {
        let reply = get(server, path, bob).await;
        assert_eq!(reply.status, StatusCode::OK, "Bob: {path}");
        for marker in ALICE_MARKERS {
            assert!(
                !reply.body.contains(marker),
                "Bob: {path} shows {marker}: {}",
                reply.body
            );
        }
    }
    let bob_tasks = get(server, "/ui/api/tasks", bob).await.json();
    assert_eq!(
        bob_tasks["tasks"].as_array().map(Vec::len),
        Some(1),
        "{bob_tasks}"
    );
    let bob_transcript = get(
        server,
        &format!("/ui/api/conversations/{bob_id}/transcript"),
        bob,
    )
    .await;
    assert!(
        bob_transcript.body.contains(BOB_MARKER),
        "{}",
        bob_transcript.body
    );
}

// ---- No writes -----------------------------------------------------------------------------

/// Every table's row count (and, on PostgreSQL, a digest of its rows): equal before and
/// after means nothing was written.
async fn table_rows(db: &TestDb) -> BTreeMap<String, String> {
    let tables = match db {
        TestDb::Pg(_) => {
            support::sql::texts(
                db,
                "SELECT tablename AS j FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            )
            .await
        }
        // Not FTS5's own tables: the server adds call records to the search index in
        // the background, about a second after they are written (migration 000019).
        TestDb::Sqlite(_) => {
            support::sql::texts(
                db,
                "SELECT name AS j FROM sqlite_master WHERE type = 'table' AND name NOT IN \
                 ('messages_fts_data', 'messages_fts_idx', 'messages_fts_docsize', \
                 'messages_fts_config') ORDER BY 1",
            )
            .await
        }
    };
    assert!(tables.len() >= 8, "too few tables found: {tables:?}");
    let mut rows = BTreeMap::new();
    for table in tables {
        let select = match db {
            TestDb::Pg(_) => format!(
                "SELECT count(*)::text || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS j FROM \"{table}\" t"
            ),
            TestDb::Sqlite(_) => format!("SELECT CAST(count(*) AS TEXT) AS j FROM \"{table}\""),
        };
        let value = support::sql::texts(db, &select).await.join(",");
        rows.insert(table, value);
    }
    rows
}
