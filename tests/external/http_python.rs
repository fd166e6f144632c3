//! `todo-mcp http` driven by a real agent runtime: the official MCP Python SDK (`mcp==2.3.0`,
//! through tests/clients/mcp_client.py) over Streamable HTTP, in the SDK's default auto mode
//! that probes `server/discover` first, and over the legacy HTTP+SSE transport, on PostgreSQL
//! and SQLite.
//!
//! What it holds the server to: every tool keeps the contract it has on stdio (the same
//! script over stdio gives the same results, ids and times aside); a user's data is the same
//! whichever transport, client or replica reaches it; HTTP calls leave the same audit records
//! as stdio calls; a JWT is a bearer credential like an API token; and a request without a
//! valid credential gets 401 and writes nothing.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::jwt::sign_hs256;
use support::python::{CallResult, PyClient, RawRun, Session, Transport, call};
use support::samples;
use support::{
    READ_ONLY_TOOLS, SqliteTestDb, TOOL_NAMES, TestDb, connect_in_process, create_token,
    start_http, todo_mcp,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACTIVITY: &str = "Tool activity";
const READS: &str = "Tool activity: reads of the activity log";
/// What `server/discover` negotiates with the SDK's auto mode (Streamable HTTP and stdio).
const MODERN_PROTOCOL: &str = "2026-07-28";
/// What `initialize` negotiates with the SDK's `ClientSession` over legacy SSE.
const HANDSHAKE_PROTOCOL: &str = "2025-11-25";
const JWT_SECRET: &str = "http-python-jwt-secret-of-32-bytes-at-least";
/// The driver's exit code for a protocol or transport failure.
const EXIT_PROTOCOL: i32 = 2;

// ---------------------------------------------------------------------------------------------
// Every tool, over each HTTP transport, against the same script over stdio
// ---------------------------------------------------------------------------------------------

/// One session's calls: every tool, successes and failures. `${N.path}` names a field of
/// call N's result; the comments number the calls.
fn every_tool_script() -> Vec<Value> {
    vec![
        // 0, 1: a retry with the same idempotency key returns the first task
        call(
            "add_task",
            json!({ "title": "buy milk", "description": "2 litres", "idempotency_key": "milk-1" }),
        ),
        call(
            "add_task",
            json!({ "title": "buy milk", "description": "2 litres", "idempotency_key": "milk-1" }),
        ),
        // 2
        call("add_task", json!({ "title": "call Bob" })),
        // 3, 4, 5: newest first, then one page at a time
        call("list_tasks", json!({})),
        call("list_tasks", json!({ "limit": 1 })),
        call(
            "list_tasks",
            json!({ "limit": 1, "cursor": "${4.next_cursor}" }),
        ),
        // 6, 7: completing twice changes nothing the second time
        call("complete_task", json!({ "task_id": "${0.task.id}" })),
        call("complete_task", json!({ "task_id": "${0.task.id}" })),
        // 8, 9
        call("list_tasks", json!({ "status": "pending" })),
        call("list_tasks", json!({ "status": "completed" })),
        // 10, 11: text search folds case
        call(
            "update_task",
            json!({ "task_id": "${2.task.id}", "title": "call Bob back", "description": "about the roof" }),
        ),
        call("list_tasks", json!({ "query": "ROOF" })),
        // 12: "" clears the description
        call(
            "update_task",
            json!({ "task_id": "${2.task.id}", "description": "", "completed": true }),
        ),
        // 13, 14: delete, then it is gone
        call("delete_task", json!({ "task_id": "${2.task.id}" })),
        call("delete_task", json!({ "task_id": "${2.task.id}" })),
        // 15
        call("list_tasks", json!({})),
        // 16, 17, 18
        call("start_conversation", json!({ "title": "groceries" })),
        call(
            "append_message",
            json!({ "conversation_id": "${16.conversation.id}", "role": "user", "content": "add milk" }),
        ),
        call(
            "append_message",
            json!({ "conversation_id": "${16.conversation.id}", "role": "assistant", "content": "added milk" }),
        ),
        // 19, 20
        call(
            "set_conversation_summary",
            json!({
                "conversation_id": "${16.conversation.id}",
                "summary": "the user wants milk",
                "through_message_id": "${18.message.id}",
            }),
        ),
        call(
            "get_conversation_history",
            json!({ "conversation_id": "${16.conversation.id}" }),
        ),
        // 21, 22, 23, 24: archived conversations leave the list unless asked for
        call("list_conversations", json!({})),
        call(
            "archive_conversation",
            json!({ "conversation_id": "${16.conversation.id}" }),
        ),
        call("list_conversations", json!({})),
        call("list_conversations", json!({ "include_archived": true })),
        // 25, 26: an archived conversation takes no messages, its history stays readable
        call(
            "append_message",
            json!({ "conversation_id": "${16.conversation.id}", "role": "user", "content": "more" }),
        ),
        call(
            "get_conversation_history",
            json!({ "conversation_id": "${16.conversation.id}" }),
        ),
        // 27: a bad argument is a tool error naming the field
        call("add_task", json!({ "title": "" })),
    ]
}

/// Concrete checks of [`every_tool_script`]'s results.
fn check_every_tool_results(c: &[CallResult]) {
    for (i, result) in c.iter().enumerate() {
        if !result.is_error {
            let text: Value = serde_json::from_str(&result.text).unwrap_or_else(|e| {
                panic!(
                    "call {i} ({}): text is not JSON ({e}): {}",
                    result.tool, result.text
                )
            });
            assert_eq!(
                text, result.structured,
                "call {i} ({}): the text rendering is the structured content",
                result.tool
            );
        }
    }

    let milk = c[0].ok()["task"].clone();
    assert_eq!(milk["title"], "buy milk");
    assert_eq!(milk["description"], "2 litres");
    assert_eq!(milk["completed"], false);
    assert_eq!(milk["completed_at"], Value::Null);
    assert_eq!(milk["created_at"], milk["updated_at"]);
    assert_time(&milk["created_at"]);
    assert_eq!(c[1].ok()["task"], milk, "same idempotency key, same task");
    assert_eq!(
        (&c[0].ok()["replayed"], &c[1].ok()["replayed"]),
        (&json!(false), &json!(true))
    );
    let bob = c[2].ok()["task"].clone();
    assert_eq!(bob["title"], "call Bob");
    assert_eq!(bob["description"], Value::Null);
    let (milk_id, bob_id) = (str_of(&milk["id"]), str_of(&bob["id"]));
    assert_ne!(milk_id, bob_id);

    assert_eq!(task_ids(&c[3]), [bob_id, milk_id], "newest first");
    assert_eq!(c[3].ok()["next_cursor"], Value::Null);
    assert_eq!(task_ids(&c[4]), [bob_id]);
    assert!(c[4].ok()["next_cursor"].is_string(), "{:?}", c[4]);
    assert_eq!(task_ids(&c[5]), [milk_id]);
    assert_eq!(c[5].ok()["next_cursor"], Value::Null);

    let done = c[6].ok()["task"].clone();
    assert_eq!(done["id"], milk_id);
    assert_eq!(done["completed"], true);
    assert_time(&done["completed_at"]);
    assert_eq!(done["created_at"], milk["created_at"]);
    assert_eq!(c[7].ok()["task"], done, "completing again changes nothing");
    assert_eq!(task_ids(&c[8]), [bob_id]);
    assert_eq!(task_ids(&c[9]), [milk_id]);

    let updated = c[10].ok()["task"].clone();
    assert_eq!(updated["id"], bob_id);
    assert_eq!(updated["title"], "call Bob back");
    assert_eq!(updated["description"], "about the roof");
    assert_eq!(updated["completed"], false);
    assert_eq!(updated["created_at"], bob["created_at"]);
    assert_eq!(task_ids(&c[11]), [bob_id]);
    let cleared = c[12].ok()["task"].clone();
    assert_eq!(cleared["title"], "call Bob back");
    assert_eq!(cleared["description"], Value::Null);
    assert_eq!(cleared["completed"], true);
    assert_time(&cleared["completed_at"]);

    assert_eq!(
        c[13].ok(),
        &json!({ "task_id": bob_id, "deleted": true, "subtasks_deleted": 0 })
    );
    assert_eq!(c[14].err(), format!("not_found: task {bob_id} not found"));
    assert_eq!(c[15].ok()["tasks"], json!([done]));

    let convo = c[16].ok()["conversation"].clone();
    assert_eq!(convo["title"], "groceries");
    assert_eq!(convo["status"], "active");
    assert_eq!(convo["summary"], Value::Null);
    assert_eq!(convo["archived_at"], Value::Null);
    let convo_id = str_of(&convo["id"]);
    let asked = c[17].ok()["message"].clone();
    let answered = c[18].ok()["message"].clone();
    for (message, role, content) in [
        (&asked, "user", "add milk"),
        (&answered, "assistant", "added milk"),
    ] {
        assert_eq!(message["conversation_id"], convo_id);
        assert_eq!(message["role"], role);
        assert_eq!(message["content"], content);
        assert_eq!(message["tool_calls"], Value::Null);
        assert_time(&message["created_at"]);
    }
    assert!(
        asked["id"].as_i64() < answered["id"].as_i64(),
        "message ids increase: {asked} then {answered}"
    );
    let summarized = c[19].ok()["conversation"].clone();
    assert_eq!(summarized["id"], convo_id);
    assert_eq!(summarized["summary"], "the user wants milk");
    assert_eq!(summarized["summary_through_message_id"], answered["id"]);
    let history = c[20].ok();
    assert_eq!(history["conversation"], summarized);
    assert_eq!(history["summary"], "the user wants milk");
    assert_eq!(history["messages"], json!([asked, answered]));
    assert_eq!(history["next_cursor"], Value::Null);

    let listed = conversation_titles(&c[21]);
    assert_eq!(listed[0], "groceries", "newest first, the logs last");
    assert_eq!(
        listed[1..].iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([ACTIVITY, READS])
    );
    let archived = c[22].ok()["conversation"].clone();
    assert_eq!(archived["id"], convo_id);
    assert_eq!(archived["status"], "archived");
    assert_time(&archived["archived_at"]);
    assert_eq!(archived["summary"], "the user wants milk");
    assert_eq!(
        conversation_titles(&c[23])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([ACTIVITY, READS])
    );
    assert_eq!(c[24].ok()["conversations"][0], archived);
    assert_eq!(conversation_titles(&c[24]).len(), 3);
    assert_eq!(
        c[25].err(),
        format!(
            "conflict: conversation {convo_id} is archived: unarchive_conversation it, or start a new one, to continue"
        )
    );
    let after = c[26].ok();
    assert_eq!(after["conversation"], archived);
    assert_eq!(after["messages"], json!([asked, answered]));
    assert_eq!(
        c[27].err(),
        "invalid_argument: invalid `title`: must not be empty"
    );
}

/// Runs [`every_tool_script`] over `transport`, checks its results, and runs it again over
/// stdio (the SDK launching `todo-mcp stdio`) as the same user on a fresh database of the
/// same backend: both give the same results and the same tools/list.
async fn every_tool_works_over(db: TestDb, transport: Transport) {
    let server = start_http(db.url(), &[], &[]).await;
    let token = create_token(db.url(), "alice");
    let script = every_tool_script();
    let over_http = PyClient::http(transport, &server)
        .token(&token)
        .list_tools()
        .run(&script)
        .await;
    let expected_protocol = match transport {
        Transport::Streamable => MODERN_PROTOCOL,
        _ => HANDSHAKE_PROTOCOL,
    };
    assert_eq!(
        over_http.connected,
        json!({ "protocol_version": expected_protocol, "server_name": "todo-mcp" })
    );
    check_every_tool_results(&over_http.calls);

    let twin_db = TestDb::new(db.backend()).await;
    let twin_token = create_token(twin_db.url(), "alice");
    let over_stdio = PyClient::stdio(twin_db.url())
        .token(&twin_token)
        .list_tools()
        .run(&script)
        .await;
    assert_eq!(
        over_stdio.connected,
        json!({ "protocol_version": MODERN_PROTOCOL, "server_name": "todo-mcp" })
    );
    check_every_tool_results(&over_stdio.calls);

    let http_tools = tools_by_name(&over_http);
    assert_eq!(
        http_tools.keys().map(String::as_str).collect::<Vec<_>>(),
        *TOOL_NAMES
    );
    for (name, tool) in &http_tools {
        for field in ["description", "inputSchema", "outputSchema", "annotations"] {
            assert!(tool.get(field).is_some(), "{name} has no {field}: {tool}");
        }
        assert_eq!(
            tool["annotations"]["readOnlyHint"],
            READ_ONLY_TOOLS.contains(&name.as_str()),
            "{name}: {tool}"
        );
    }
    assert_eq!(
        http_tools,
        tools_by_name(&over_stdio),
        "tools/list over {transport:?} and over stdio"
    );

    let mut http_norm = Normalizer::default();
    let mut stdio_norm = Normalizer::default();
    for (i, (http, stdio)) in over_http.calls.iter().zip(&over_stdio.calls).enumerate() {
        assert_eq!(
            http_norm.call(http),
            stdio_norm.call(stdio),
            "call {i} ({}) over {transport:?} and over stdio differ beyond ids and times\n\
             {transport:?}: {http:?}\nstdio: {stdio:?}",
            http.tool
        );
    }

    // Then every tool's sample call (tests/support/samples.rs), on rows the script plants
    // first: each succeeds, alike over both.
    let samples = samples::python_script();
    let http_samples = PyClient::http(transport, &server)
        .token(&token)
        .run(&samples)
        .await;
    let stdio_samples = PyClient::stdio(twin_db.url())
        .token(&twin_token)
        .run(&samples)
        .await;
    let mut called: Vec<&str> = http_samples.calls.iter().map(|c| c.tool.as_str()).collect();
    called.sort();
    called.dedup();
    let mut every = TOOL_NAMES.clone();
    every.sort();
    assert_eq!(called, every, "the samples call every tool");
    for (http, stdio) in http_samples.calls.iter().zip(&stdio_samples.calls) {
        http.ok();
        assert_eq!(
            http_norm.call(http),
            stdio_norm.call(stdio),
            "{}'s sample over {transport:?} and over stdio differ beyond ids and times\n\
             {transport:?}: {http:?}\nstdio: {stdio:?}",
            http.tool
        );
    }
}

async fn every_tool_works_over_streamable_http(db: TestDb) {
    every_tool_works_over(db, Transport::Streamable).await;
}

async fn every_tool_works_over_legacy_sse(db: TestDb) {
    every_tool_works_over(db, Transport::Sse).await;
}

// ---------------------------------------------------------------------------------------------
// One user's data, whatever reaches it
// ---------------------------------------------------------------------------------------------

/// A task added over Streamable HTTP is listed over SSE and over stdio (the Rust client) with
/// the same token, and the other way round; a second replica on the same database serves
/// the same data; another user sees none of it on any transport.
async fn a_users_data_is_the_same_over_every_transport(db: TestDb) {
    let server = start_http(db.url(), &[], &[]).await;
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");

    let first = PyClient::streamable(&server)
        .token(&alice)
        .run(&[
            call("add_task", json!({ "title": "from streamable" })),
            call("list_conversations", json!({})),
        ])
        .await;
    let from_streamable = first.calls[0].ok()["task"].clone();
    let logs = conversation_ids(&first.calls[1]);
    assert_eq!(logs.len(), 2, "a new user has their two activity logs");

    let second = PyClient::sse(&server)
        .token(&alice)
        .run(&[
            call("list_tasks", json!({})),
            call("add_task", json!({ "title": "from sse" })),
            call("complete_task", json!({ "task_id": from_streamable["id"] })),
            call("list_conversations", json!({})),
        ])
        .await;
    assert_eq!(second.calls[0].ok()["tasks"], json!([from_streamable]));
    let from_sse = second.calls[1].ok()["task"].clone();
    let completed = second.calls[2].ok()["task"].clone();
    assert_eq!(completed["id"], from_streamable["id"]);
    assert_eq!(completed["completed"], true);
    assert_eq!(
        conversation_ids(&second.calls[3]),
        logs,
        "the same activity logs"
    );

    let stdio = connect_in_process(db.url(), Some(&alice), &[]).await;
    let listed = stdio.call_ok("list_tasks", json!({})).await;
    assert_eq!(listed["tasks"], json!([from_sse, completed]));
    let from_stdio = stdio
        .call_ok("add_task", json!({ "title": "from stdio" }))
        .await["task"]
        .clone();
    let shared = stdio
        .call_ok("start_conversation", json!({ "title": "shared" }))
        .await["conversation"]
        .clone();
    let message = stdio
        .call_ok(
            "append_message",
            json!({ "conversation_id": shared["id"], "role": "user", "content": "seen everywhere" }),
        )
        .await["message"]
        .clone();
    stdio.close().await;

    let replica = start_http(db.url(), &[], &[]).await;
    let reads = [
        call("list_tasks", json!({})),
        call(
            "get_conversation_history",
            json!({ "conversation_id": shared["id"] }),
        ),
    ];
    for (what, client) in [
        ("streamable, replica", PyClient::streamable(&replica)),
        ("sse, first server", PyClient::sse(&server)),
        ("sse, replica", PyClient::sse(&replica)),
    ] {
        let run = client.token(&alice).run(&reads).await;
        assert_eq!(
            run.calls[0].ok()["tasks"],
            json!([from_stdio, from_sse, completed]),
            "{what}"
        );
        assert_eq!(run.calls[1].ok()["messages"], json!([message]), "{what}");
    }

    for client in [PyClient::streamable(&server), PyClient::sse(&replica)] {
        let transport = client.transport();
        let run = client
            .token(&bob)
            .run(&[
                call("list_tasks", json!({})),
                call("complete_task", json!({ "task_id": from_sse["id"] })),
                call(
                    "get_conversation_history",
                    json!({ "conversation_id": shared["id"] }),
                ),
            ])
            .await;
        assert_eq!(
            run.calls[0].ok(),
            &json!({ "tasks": [], "next_cursor": null }),
            "bob over {transport:?}"
        );
        assert_eq!(
            run.calls[1].err(),
            format!("not_found: task {} not found", str_of(&from_sse["id"]))
        );
        assert_eq!(
            run.calls[2].err(),
            format!(
                "not_found: conversation {} not found",
                str_of(&shared["id"])
            )
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The audit trail over HTTP
// ---------------------------------------------------------------------------------------------

/// Successes and failures, recorded in "Tool activity" or in the conversation a task tool
/// names. Call 8 (list_conversations) finds the logs' ids.
fn audited_script() -> Vec<Value> {
    vec![
        call(
            "add_task",
            json!({ "title": "audited", "description": "with a record" }),
        ),
        call("complete_task", json!({ "task_id": "${0.task.id}" })),
        call("complete_task", json!({ "task_id": "not-a-uuid" })),
        call(
            "delete_task",
            json!({ "task_id": "00000000-0000-4000-8000-000000000000" }),
        ),
        call("list_tasks", json!({ "status": "completed" })),
        call("start_conversation", json!({ "title": "chat" })),
        call(
            "add_task",
            json!({ "title": "in chat", "conversation_id": "${5.conversation.id}" }),
        ),
        call(
            "update_task",
            json!({ "task_id": "${6.task.id}", "title": "", "conversation_id": "${5.conversation.id}" }),
        ),
        call("list_conversations", json!({})),
    ]
}

/// Which of [`audited_script`]'s calls are recorded in "Tool activity" and in "chat".
const RECORDED_IN_ACTIVITY: [usize; 7] = [0, 1, 2, 3, 4, 5, 8];
const RECORDED_IN_CHAT: [usize; 2] = [6, 7];

/// Runs [`audited_script`] as `user` over `client`, reads back both conversations in a
/// second session over the same transport, checks every record against the call it records,
/// and returns (script results, activity records, chat records).
async fn audited_session(
    client: PyClient,
    user: &str,
) -> (Vec<CallResult>, Vec<Value>, Vec<Value>) {
    let transport = client.transport();
    let run = client.run(&audited_script()).await;
    let calls = run.calls;
    assert_eq!(
        calls[2].err(),
        "invalid_argument: invalid `task_id`: `not-a-uuid` is not a uuid"
    );
    assert_eq!(
        calls[3].err(),
        "not_found: task 00000000-0000-4000-8000-000000000000 not found"
    );
    assert_eq!(
        calls[7].err(),
        "invalid_argument: invalid `title`: must not be empty"
    );
    let conversations = calls[8].ok()["conversations"]
        .as_array()
        .expect("conversations")
        .clone();
    let id_titled = |title: &str| {
        conversations
            .iter()
            .find(|c| c["title"] == title)
            .map(|c| str_of(&c["id"]).to_string())
            .unwrap_or_else(|| panic!("{user}: no conversation {title:?} in {conversations:?}"))
    };
    let (activity, chat) = (id_titled(ACTIVITY), id_titled("chat"));

    let read = client
        .run(&[
            call(
                "get_conversation_history",
                json!({ "conversation_id": activity, "limit": 200 }),
            ),
            call(
                "get_conversation_history",
                json!({ "conversation_id": chat, "limit": 200 }),
            ),
        ])
        .await;
    let activity_records = messages_of(&read.calls[0]);
    let chat_records = messages_of(&read.calls[1]);
    for (records, conversation, expected) in [
        (&activity_records, &activity, &RECORDED_IN_ACTIVITY[..]),
        (&chat_records, &chat, &RECORDED_IN_CHAT[..]),
    ] {
        let shown: Vec<&Value> = records.iter().map(|m| &m["content"]).collect();
        assert_eq!(
            records.len(),
            expected.len(),
            "{user} over {transport:?}: conversation {conversation} should hold the records of \
             calls {expected:?}, holds {shown:?}"
        );
        for (record, &index) in records.iter().zip(expected) {
            assert_eq!(record["conversation_id"], conversation.as_str());
            assert_record(record, &calls[index]);
        }
        for pair in records.windows(2) {
            assert!(pair[0]["id"].as_i64() < pair[1]["id"].as_i64(), "{pair:?}");
        }
    }
    (calls, activity_records, chat_records)
}

/// One `tool` message against the call it records: tool, arguments as sent, result or
/// error as returned, duration.
fn assert_record(message: &Value, call: &CallResult) {
    assert_eq!(message["role"], "tool", "{message}");
    assert_eq!(
        message["tool_calls"]["tool"],
        call.tool.as_str(),
        "{message}"
    );
    assert_eq!(
        message["tool_calls"]["arguments"], call.arguments,
        "arguments as sent: {message}"
    );
    let duration = message["tool_calls"]["duration_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("duration_ms is a number: {message}"));
    assert!(duration >= 0.0, "{message}");
    let mut record = message["tool_calls"].clone();
    record
        .as_object_mut()
        .expect("tool_calls is an object")
        .remove("duration_ms");
    if call.is_error {
        let (kind, text) = call
            .text
            .split_once(": ")
            .unwrap_or_else(|| panic!("a tool error reads `kind: message`: {}", call.text));
        assert_eq!(
            message["content"],
            format!("{} failed: {text}", call.tool),
            "{message}"
        );
        assert_eq!(
            record,
            json!({
                "tool": call.tool,
                "arguments": call.arguments,
                "ok": false,
                "error": { "kind": kind, "message": text },
            })
        );
    } else {
        assert_eq!(
            message["content"],
            format!("{} succeeded", call.tool),
            "{message}"
        );
        assert_eq!(
            record,
            json!({
                "tool": call.tool,
                "arguments": call.arguments,
                "ok": true,
                "result": call.structured,
            })
        );
    }
}

/// The same calls leave the same records over Streamable HTTP, legacy SSE and stdio: each
/// record matches its call, and the three trails are equal but for ids, times and durations.
async fn http_calls_leave_the_same_audit_records_as_stdio(db: TestDb) {
    let server = start_http(db.url(), &[], &[]).await;
    let mut trails = Vec::new();
    for (user, client) in [
        ("audit-streamable", PyClient::streamable(&server)),
        ("audit-sse", PyClient::sse(&server)),
        ("audit-stdio", PyClient::stdio(db.url())),
    ] {
        let token = create_token(db.url(), user);
        let transport = client.transport();
        let (calls, activity, chat) = audited_session(client.token(&token), user).await;
        // list_conversations lists the activity logs, whose order depends on the user: the
        // trails are compared without its record.
        let mut norm = Normalizer::default();
        let calls: Vec<Value> = calls[..8].iter().map(|c| norm.call(c)).collect();
        let activity: Vec<Value> = activity[..6].iter().map(|m| norm.value(None, m)).collect();
        let chat: Vec<Value> = chat.iter().map(|m| norm.value(None, m)).collect();
        trails.push((
            transport,
            json!({ "calls": calls, "activity": activity, "chat": chat }),
        ));
    }
    let (_, stdio) = &trails[2];
    for (transport, trail) in &trails[..2] {
        assert_eq!(
            trail, stdio,
            "the audit trail over {transport:?} differs from stdio's beyond ids and times"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

fn jwt(sub: &str, expires_in_secs: i64, secret: &str) -> String {
    sign_hs256(
        &json!({ "sub": sub, "exp": chrono::Utc::now().timestamp() + expires_in_secs }),
        secret,
    )
}

/// With TODO_MCP_JWT_SECRET set, an HS256 JWT is a bearer credential on both HTTP
/// transports, naming the same user as that user's API token and as the JWT on stdio;
/// a JWT with the wrong signature or expired gets 401.
async fn a_jwt_bearer_works_over_http(db: TestDb) {
    let secret_env = [("TODO_MCP_JWT_SECRET", JWT_SECRET)];
    let server = start_http(db.url(), &[], &secret_env).await;
    let token = jwt("jwt-user", 3600, JWT_SECRET);

    let added = PyClient::streamable(&server)
        .token(&token)
        .run(&[call("add_task", json!({ "title": "from a jwt" }))])
        .await;
    let task = added.calls[0].ok()["task"].clone();
    assert_eq!(task["title"], "from a jwt");
    let list = [call("list_tasks", json!({}))];
    let over_sse = PyClient::sse(&server).token(&token).run(&list).await;
    assert_eq!(over_sse.calls[0].ok()["tasks"], json!([task]));

    let api_token = create_token(db.url(), "jwt-user");
    let with_api_token = PyClient::streamable(&server)
        .token(&api_token)
        .run(&list)
        .await;
    assert_eq!(with_api_token.calls[0].ok()["tasks"], json!([task]));
    let stdio = connect_in_process(db.url(), Some(&token), &secret_env).await;
    assert_eq!(
        stdio.call_ok("list_tasks", json!({})).await["tasks"],
        json!([task])
    );
    stdio.close().await;

    let forged = jwt("mallory", 3600, "not-the-secret");
    let expired = jwt("jwt-user", -3600, JWT_SECRET);
    for (credential, reason) in [
        (&forged, "the token's signature does not verify"),
        (&expired, "the token has expired"),
    ] {
        for client in [PyClient::streamable(&server), PyClient::sse(&server)] {
            let streamable = client.transport() == Transport::Streamable;
            let run = client
                .token(credential)
                .run_raw(&[call("add_task", json!({ "title": "refused" }))])
                .await;
            assert_refused(&run, streamable.then_some(reason));
        }
    }
    assert_eq!(
        user_ids(&db).await,
        ["jwt-user"],
        "the JWT's user was created on first sight, the forged one's was not"
    );
    assert_eq!(row_counts(&db).await["tasks"], 1);
}

/// A driver run that must have been refused with 401 before anything ran. `reason`: the
/// server's explanation, which the SDK shows for Streamable HTTP (it reports the JSON-RPC
/// error in the 401's body; over SSE it reports the status alone).
fn assert_refused(run: &RawRun, reason: Option<&str>) {
    let shown = format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.status, run.stdout, run.stderr
    );
    assert_eq!(run.status.code(), Some(EXIT_PROTOCOL), "{shown}");
    assert_eq!(run.stdout, "", "refused before connecting: {shown}");
    assert!(run.stderr.contains("HTTP 401 Unauthorized"), "{shown}");
    if let Some(reason) = reason {
        assert!(
            run.stderr
                .contains(&format!("JSON-RPC error -32001: unauthorized: {reason}")),
            "{shown}"
        );
    }
}

/// No token, a malformed or unknown one, a revoked one, or a JWT while JWTs are off: both
/// transports answer 401, the SDK fails, and the database is unchanged. The same calls with
/// a valid token then do write (so the check is not blind).
async fn no_or_bad_token_is_refused_and_writes_nothing(db: TestDb) {
    let server = start_http(db.url(), &[], &[]).await;
    let alice = create_token(db.url(), "alice");
    let revoked = create_token(db.url(), "mallory");
    revoke_all_tokens_of(&db, "mallory");
    let unknown = format!("tmcp_{}", uuid::Uuid::new_v4().simple());
    let a_jwt = jwt("alice", 3600, JWT_SECRET);

    let attempt = [
        call("add_task", json!({ "title": "must not exist" })),
        call("start_conversation", json!({ "title": "must not exist" })),
    ];
    let before = row_counts(&db).await;
    let users_before = user_ids(&db).await;
    assert_eq!(users_before, ["alice", "mallory"]);
    let credentials: [(Option<&str>, &str); 5] = [
        (None, "send `Authorization: Bearer <token>`"),
        (
            Some("not-a-token"),
            "the token is neither an API token nor a JWT",
        ),
        (Some(&unknown), "the token is not valid"),
        (Some(&revoked), "the token has been revoked"),
        (
            Some(&a_jwt),
            "the token is a JWT, but neither TODO_MCP_JWT_ISSUER nor TODO_MCP_JWT_SECRET is set, so JWTs are not accepted",
        ),
    ];
    for (credential, reason) in credentials {
        for client in [PyClient::streamable(&server), PyClient::sse(&server)] {
            let streamable = client.transport() == Transport::Streamable;
            let client = match credential {
                Some(token) => client.token(token),
                None => client,
            };
            let run = client.run_raw(&attempt).await;
            assert_refused(&run, streamable.then_some(reason));
        }
    }
    assert_eq!(
        row_counts(&db).await,
        before,
        "refused requests wrote nothing"
    );
    assert_eq!(user_ids(&db).await, users_before);

    let accepted = PyClient::streamable(&server)
        .token(&alice)
        .run(&attempt)
        .await;
    assert_eq!(accepted.calls[0].ok()["task"]["title"], "must not exist");
    let after = row_counts(&db).await;
    assert_eq!(
        after["tasks"],
        before["tasks"] + 1,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after["conversations"],
        before["conversations"] + 1,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after["messages"],
        before["messages"] + 2,
        "two call records: {before:?} -> {after:?}"
    );
}

/// Why a refused Python client can report `Server disconnected without sending a response`
/// instead of the 401: the server answers 401 as soon as it has the headers; when the body
/// had not arrived yet, it then closes the connection without having said `Connection: close`,
/// so a keep-alive client (the SDK probes `server/discover`, then sends `initialize` on the
/// same connection) has its next request cut off. A response that does not announce the close
/// must leave the connection usable. Raw HTTP/1.1, the body sent after the response arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_sent_before_the_body_arrived_does_not_strand_the_next_request() {
    let db = SqliteTestDb::new();
    let server = start_http(db.url(), &[], &[]).await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer tmcp_{}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: {}\r\n\r\n",
        server.addr(),
        uuid::Uuid::new_v4().simple(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send head");
    let first = read_response(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("no answer to the first request: {e}"));
    assert!(first.starts_with("HTTP/1.1 401 "), "{first}");
    let announced_close = first
        .lines()
        .take_while(|line| !line.is_empty())
        .any(|line| line.eq_ignore_ascii_case("connection: close"));
    if announced_close {
        return;
    }
    // The rest of the first request, then the next one, as a keep-alive client sends them.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let next = format!("{body}{head}{body}");
    let second = match stream.write_all(next.as_bytes()).await {
        Ok(()) => read_response(&mut stream).await,
        Err(e) => Err(format!("sending failed: {e}")),
    };
    assert!(
        second
            .as_deref()
            .is_ok_and(|r| r.starts_with("HTTP/1.1 401 ")),
        "the server closed a connection after a 401 that did not say `Connection: close`, so \
         the next request on it failed ({second:?}); the Python SDK reports this as \
         `httpx2.RemoteProtocolError: Server disconnected without sending a response`.\n\
         first response:\n{first}\n--- server stderr ---\n{}",
        server.stderr()
    );
}

/// One HTTP/1.1 response (head and a Content-Length body), or why there was none.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Result<String, String> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if rest.len() >= length {
                    return Ok(text);
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) => return Err(format!("connection closed after {} bytes", buf.len())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| Err("no response within 10s".to_string()))
}

fn revoke_all_tokens_of(db: &TestDb, user: &str) {
    let env = [("DATABASE_URL", db.url())];
    let listed = todo_mcp(&["token", "list", "--user", user], &env);
    support::assert_success(&listed, "todo-mcp token list");
    let stdout = String::from_utf8(listed.stdout).expect("UTF-8");
    let ids: Vec<String> = stdout
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("token list prints JSON lines");
            str_of(&entry["id"]).to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{user} has one token: {stdout}");
    for id in ids {
        let out = todo_mcp(&["token", "revoke", &id], &env);
        support::assert_success(&out, "todo-mcp token revoke");
    }
}

/// An agent's turn with its model's tool calls, written and read back through the official
/// Python SDK over Streamable HTTP, then rebuilt as OpenAI chat messages: one to one, the
/// server's call records left out.
async fn an_agents_tool_calls_round_trip_through_the_python_sdk(db: TestDb) {
    let token = create_token(db.url(), "agent");
    let server = start_http(db.url(), &[], &[]).await;
    let tool_calls = json!([
        { "id": "call_a", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" },
    ]);
    let messages = json!([
        { "role": "system", "content": "You are terse." },
        { "role": "user", "content": "Weather in Oslo?" },
        { "role": "assistant", "content": "", "tool_calls": tool_calls },
        { "role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": -3}" },
        { "role": "assistant", "content": "-3°C." },
    ]);
    let session = PyClient::streamable(&server)
        .token(&token)
        .run(&[
            call("start_conversation", json!({ "title": "weather" })),
            call(
                "commit_turn",
                json!({ "conversation_id": "${0.conversation.id}", "messages": messages,
                        "state": { "turns": 1 }, "expected_version": 0 }),
            ),
            call(
                "add_task",
                json!({ "title": "buy gloves", "conversation_id": "${0.conversation.id}" }),
            ),
            call(
                "get_conversation_history",
                json!({ "conversation_id": "${0.conversation.id}", "include_call_records": false }),
            ),
        ])
        .await;
    let history = session.calls[3].ok();
    let rebuilt: Vec<Value> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let mut openai = json!({ "role": m["role"], "content": m["content"] });
            for field in ["tool_calls", "tool_call_id"] {
                if !m[field].is_null() {
                    openai[field] = m[field].clone();
                }
            }
            openai
        })
        .collect();
    assert_eq!(Value::from(rebuilt), messages);
}

/// README's Python example, run whole as a user would save it: it defines every name it
/// uses, imports only the SDK's public names, and prints the history it made.
async fn readme_python_example_runs(db: TestDb) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let example = readme
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```python block");
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("example.py");
    std::fs::write(&script, example).expect("write the example");
    let token = create_token(db.url(), "reader");
    // `command="todo-mcp"` is found on PATH, as after `cargo install`.
    let bin_dir = Path::new(support::bin_path())
        .parent()
        .expect("the binary's folder");
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let mut command = tokio::process::Command::new(support::python::python());
    command
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env("TODO_MCP_TOKEN", &token)
        .env("DATABASE_URL", db.url());
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .expect("the README example finished within 2 minutes")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "README's Python example failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"user add milk"), "{stdout}");
    // The task it added is the reader's.
    let reader = connect_in_process(db.url(), Some(&token), &[]).await;
    let tasks = reader.call_ok("list_tasks", json!({})).await;
    assert_eq!(tasks["tasks"][0]["title"], "milk", "{tasks}");
    reader.close().await;
}

both_backends!(
    readme_python_example_runs,
    an_agents_tool_calls_round_trip_through_the_python_sdk,
    every_tool_works_over_streamable_http,
    every_tool_works_over_legacy_sse,
    a_users_data_is_the_same_over_every_transport,
    http_calls_leave_the_same_audit_records_as_stdio,
    a_jwt_bearer_works_over_http,
    no_or_bad_token_is_refused_and_writes_nothing,
);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
}

fn assert_time(value: &Value) {
    let text = str_of(value);
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok()
            && text.ends_with('Z')
            && text.len() == "2026-01-01T00:00:00.000000Z".len(),
        "RFC 3339 UTC with microseconds expected, got {text}"
    );
}

fn task_ids(result: &CallResult) -> Vec<&str> {
    result.ok()["tasks"]
        .as_array()
        .expect("tasks is a list")
        .iter()
        .map(|task| str_of(&task["id"]))
        .collect()
}

fn conversation_titles(result: &CallResult) -> Vec<&str> {
    result.ok()["conversations"]
        .as_array()
        .expect("conversations is a list")
        .iter()
        .map(|c| str_of(&c["title"]))
        .collect()
}

fn conversation_ids(result: &CallResult) -> BTreeSet<String> {
    result.ok()["conversations"]
        .as_array()
        .expect("conversations is a list")
        .iter()
        .map(|c| str_of(&c["id"]).to_string())
        .collect()
}

fn messages_of(result: &CallResult) -> Vec<Value> {
    assert_eq!(
        result.ok()["next_cursor"],
        Value::Null,
        "one page: {result:?}"
    );
    result.ok()["messages"]
        .as_array()
        .expect("messages is a list")
        .clone()
}

fn tools_by_name(session: &Session) -> BTreeMap<String, Value> {
    session
        .tools
        .as_ref()
        .expect("tools/list was asked for")
        .iter()
        .map(|tool| (str_of(&tool["name"]).to_string(), tool.clone()))
        .collect()
}

/// Rewrites what differs between two runs of the same calls (UUIDs, message ids, cursors,
/// times, durations) into labels numbered by first appearance, so that equal runs compare
/// equal and a value reused in the wrong place still shows.
#[derive(Default)]
struct Normalizer {
    labels: HashMap<String, String>,
}

impl Normalizer {
    fn label(&mut self, kind: &str, raw: String) -> String {
        let next = self.labels.len();
        self.labels
            .entry(format!("{kind}:{raw}"))
            .or_insert_with(|| format!("<{kind} {next}>"))
            .clone()
    }

    /// A call's outcome; a success's text is checked against its structured content
    /// elsewhere, so only an error's text is kept.
    fn call(&mut self, result: &CallResult) -> Value {
        json!({
            "tool": result.tool,
            "arguments": self.value(None, &result.arguments),
            "is_error": result.is_error,
            "structured": self.value(None, &result.structured),
            "text": if result.is_error { Value::String(self.text(&result.text)) } else { Value::Null },
        })
    }

    fn value(&mut self, key: Option<&str>, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.value(Some(k), v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(key, v)).collect()),
            Value::String(s) if matches!(key, Some("cursor" | "next_cursor")) => {
                Value::String(self.label("cursor", s.clone()))
            }
            Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
                json!("<time>")
            }
            Value::String(s) => Value::String(self.text(s)),
            Value::Number(_) if key == Some("duration_ms") => json!("<duration>"),
            Value::Number(n)
                if matches!(
                    key,
                    Some(
                        "id" | "summary_through_message_id"
                            | "through_message_id"
                            | "next_cursor"
                            | "before"
                    )
                ) =>
            {
                Value::String(self.label("message", n.to_string()))
            }
            other => other.clone(),
        }
    }

    /// `text` with every UUID in it replaced by its label.
    fn text(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if rest.len() >= 36 && is_uuid(&rest.as_bytes()[..36]) {
                let label = self.label("uuid", rest[..36].to_ascii_lowercase());
                out.push_str(&label);
                rest = &rest[36..];
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    }
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

// ---------------------------------------------------------------------------------------------
// Looking at the database directly (what no client can hide)
// ---------------------------------------------------------------------------------------------

const TABLES: [&str; 5] = ["users", "api_tokens", "tasks", "conversations", "messages"];

/// Rows per table.
async fn row_counts(db: &TestDb) -> BTreeMap<&'static str, i64> {
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let select = format!("SELECT count(*) AS n FROM {table}");
        let n = match db {
            TestDb::Pg(pg) => pg.query_json(&select).await[0]["n"]
                .as_i64()
                .expect("count is a number"),
            TestDb::Sqlite(sqlite) => {
                let rows: Vec<sqlite_rows::Count> =
                    sqlite_rows::query(sqlite.path().to_path_buf(), select).await;
                rows[0].n
            }
        };
        counts.insert(table, n);
    }
    counts
}

/// Every user id, sorted.
async fn user_ids(db: &TestDb) -> Vec<String> {
    const SELECT: &str = "SELECT id FROM users ORDER BY id";
    match db {
        TestDb::Pg(pg) => pg
            .query_json(SELECT)
            .await
            .iter()
            .map(|row| str_of(&row["id"]).to_string())
            .collect(),
        TestDb::Sqlite(sqlite) => {
            let rows: Vec<sqlite_rows::UserId> =
                sqlite_rows::query(sqlite.path().to_path_buf(), SELECT.to_string()).await;
            rows.into_iter().map(|row| row.id).collect()
        }
    }
}

mod sqlite_rows {
    use super::*;
    use diesel::sql_types::{BigInt, Text};
    use diesel::sqlite::{Sqlite, SqliteConnection};
    use diesel::{Connection, QueryableByName, RunQueryDsl};

    #[derive(QueryableByName)]
    pub struct Count {
        #[diesel(sql_type = BigInt)]
        pub n: i64,
    }

    #[derive(QueryableByName)]
    pub struct UserId {
        #[diesel(sql_type = Text)]
        pub id: String,
    }

    /// Runs `select` on the SQLite file at `path` (on a blocking thread).
    pub async fn query<T>(path: PathBuf, select: String) -> Vec<T>
    where
        T: QueryableByName<Sqlite> + Send + 'static,
    {
        tokio::task::spawn_blocking(move || load(&path, &select))
            .await
            .expect("SQLite query thread")
    }

    fn load<T: QueryableByName<Sqlite> + 'static>(path: &Path, select: &str) -> Vec<T> {
        let url = path.to_str().expect("UTF-8 path");
        let mut conn = SqliteConnection::establish(url)
            .unwrap_or_else(|e| panic!("could not open {url}: {e}"));
        diesel::sql_query("PRAGMA busy_timeout = 10000")
            .execute(&mut conn)
            .expect("set busy_timeout");
        diesel::sql_query(select)
            .load(&mut conn)
            .unwrap_or_else(|e| panic!("`{select}` on {url} failed: {e}"))
    }
}
