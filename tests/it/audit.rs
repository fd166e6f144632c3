//! The audit trail: every tool call, success or failure, leaves a `tool` message in the right
//! conversation, in call order, with its arguments as sent, its result or error, and its
//! duration; reading a history never makes it grow; a failed call changes nothing.

use crate::support;

use serde_json::{Value, json};
use support::samples::{self, Seed};
use support::{Backend, McpClient, TestDb, connect_in_process, create_token};
use uuid::Uuid;

/// Results whose JSON is larger than this are recorded as `{omitted: true, bytes}`.
const RESULT_RECORD_LIMIT: usize = 16 * 1024;
const ACTIVITY: &str = "Tool activity";
const READS: &str = "Tool activity: reads of the activity log";

/// Where a call's record (or an appended message) is expected.
#[derive(Debug, Clone, PartialEq)]
enum Dest {
    /// The "Tool activity" conversation.
    Activity,
    /// "Tool activity: reads of the activity log".
    Reads,
    Conversation(String),
}

#[derive(Debug)]
enum Outcome {
    Ok(Value),
    Err { kind: String, message: String },
}

/// What a conversation is expected to hold, in order.
#[derive(Debug)]
enum Entry {
    /// The record of one tool call.
    Call {
        dest: Dest,
        tool: String,
        arguments: Value,
        outcome: Outcome,
    },
    /// A message appended by `append_message`, as that call returned it.
    Message { dest: Dest, message: Value },
}

impl Entry {
    fn dest(&self) -> &Dest {
        match self {
            Entry::Call { dest, .. } | Entry::Message { dest, .. } => dest,
        }
    }
}

/// A client session that remembers every call it made and where its record should be.
struct Session {
    client: McpClient,
    entries: Vec<Entry>,
    activity: String,
    reads: String,
}

impl Session {
    /// Connects as a fresh user and finds their activity logs (that first call is recorded
    /// too, in "Tool activity").
    async fn start(db: &TestDb, user: &str) -> Session {
        let token = create_token(db.url(), user);
        let client = connect_in_process(db.url(), Some(&token), &[]).await;
        let mut session = Session {
            client,
            entries: Vec::new(),
            activity: String::new(),
            reads: String::new(),
        };
        let list = session
            .ok(Dest::Activity, "list_conversations", json!({}))
            .await;
        let titled = |title: &str| {
            list["conversations"]
                .as_array()
                .expect("conversations array")
                .iter()
                .find(|c| c["title"] == title)
                .and_then(|c| c["id"].as_str())
                .unwrap_or_else(|| panic!("no conversation titled {title:?} in {list}"))
                .to_string()
        };
        session.activity = titled(ACTIVITY);
        session.reads = titled(READS);
        assert_eq!(
            list["conversations"].as_array().map(Vec::len),
            Some(2),
            "a new user has exactly the two activity logs: {list}"
        );
        session
    }

    fn id_of(&self, dest: &Dest) -> String {
        match dest {
            Dest::Activity => self.activity.clone(),
            Dest::Reads => self.reads.clone(),
            Dest::Conversation(id) => id.clone(),
        }
    }

    /// A call that must succeed and be recorded in `dest`; returns its structured content.
    async fn ok(&mut self, dest: Dest, tool: &str, arguments: Value) -> Value {
        let result = self.client.call_ok(tool, arguments.clone()).await;
        if tool == "append_message" {
            self.entries.push(Entry::Message {
                dest: Dest::Conversation(str_at(&arguments, "/conversation_id").into()),
                message: result["message"].clone(),
            });
        }
        self.entries.push(Entry::Call {
            dest,
            tool: tool.to_string(),
            arguments,
            outcome: Outcome::Ok(result.clone()),
        });
        result
    }

    /// A call that must fail with a tool error of `kind`, recorded in `dest`; returns the
    /// error message (the text after `kind: `).
    async fn err(&mut self, dest: Dest, tool: &str, arguments: Value, kind: &str) -> String {
        let result = self.client.call(tool, arguments.clone()).await;
        let text = support::mcp::result_text(&result);
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} {arguments} should fail, got {text}"
        );
        let message = text
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(": "))
            .unwrap_or_else(|| {
                panic!("{tool} {arguments} should fail with `{kind}: ...`, got {text:?}")
            })
            .to_string();
        self.entries.push(Entry::Call {
            dest,
            tool: tool.to_string(),
            arguments,
            outcome: Outcome::Err {
                kind: kind.to_string(),
                message: message.clone(),
            },
        });
        message
    }

    /// Starts a conversation (recorded in "Tool activity") and returns its id.
    async fn start_conversation(&mut self, arguments: Value) -> String {
        let started = self
            .ok(Dest::Activity, "start_conversation", arguments)
            .await;
        str_at(&started, "/conversation/id").to_string()
    }

    /// Archives `chat_id`, then checks that it takes no message (a `conflict`); both calls
    /// recorded in "Tool activity".
    async fn archive_then_refuse_a_message(&mut self, chat_id: &str, content: &str) {
        self.ok(
            Dest::Activity,
            "archive_conversation",
            json!({ "conversation_id": chat_id }),
        )
        .await;
        self.err(
            Dest::Activity,
            "append_message",
            json!({ "conversation_id": chat_id, "role": "user", "content": content }),
            "conflict",
        )
        .await;
    }

    /// Reads `dest`'s whole history (recorded as a call, in `recorded_in`) and checks that it
    /// holds exactly the expected entries, in order. Returns the history.
    async fn verify(&mut self, dest: Dest, recorded_in: Dest) -> Value {
        let id = self.id_of(&dest);
        let history = self
            .ok(
                recorded_in,
                "get_conversation_history",
                json!({ "conversation_id": id, "limit": 200 }),
            )
            .await;
        let messages = history["messages"].as_array().expect("messages array");
        // The read itself is the last entry and is recorded elsewhere.
        let expected: Vec<&Entry> = self.entries[..self.entries.len() - 1]
            .iter()
            .filter(|entry| *entry.dest() == dest)
            .collect();
        let shown: Vec<&Value> = messages.iter().map(|m| &m["content"]).collect();
        assert_eq!(
            messages.len(),
            expected.len(),
            "conversation {dest:?} should hold {} messages, has {shown:?}",
            expected.len()
        );
        assert_eq!(history["next_cursor"], Value::Null);
        for (message, entry) in messages.iter().zip(expected) {
            assert_eq!(message["conversation_id"], id.as_str(), "{message}");
            match entry {
                Entry::Message { message: sent, .. } => assert_eq!(message, sent),
                Entry::Call {
                    tool,
                    arguments,
                    outcome,
                    ..
                } => assert_record(message, tool, arguments, outcome),
            }
        }
        for pair in messages.windows(2) {
            assert!(
                pair[0]["id"].as_i64() < pair[1]["id"].as_i64(),
                "message ids must increase: {} then {}",
                pair[0]["id"],
                pair[1]["id"]
            );
        }
        history
    }
}

/// One `tool` message against the call it records.
fn assert_record(message: &Value, tool: &str, arguments: &Value, outcome: &Outcome) {
    assert_eq!(message["role"], "tool", "{message}");
    let record = &message["tool_calls"];
    assert_eq!(record["tool"], tool, "{message}");
    assert_eq!(
        &record["arguments"], arguments,
        "arguments as sent: {message}"
    );
    let duration = record["duration_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("duration_ms should be a number: {message}"));
    assert!(duration >= 0.0, "{message}");
    let mut keys: Vec<&str> = record
        .as_object()
        .expect("tool_calls is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    match outcome {
        Outcome::Ok(result) => {
            assert_eq!(message["content"], format!("{tool} succeeded"));
            assert_eq!(record["ok"], true, "{message}");
            assert_eq!(keys, ["arguments", "duration_ms", "ok", "result", "tool"]);
            let bytes = serde_json::to_vec(result).expect("serialize").len();
            if bytes > RESULT_RECORD_LIMIT {
                assert_eq!(record["result"], json!({ "omitted": true, "bytes": bytes }));
            } else {
                assert_eq!(&record["result"], result, "result as returned: {message}");
            }
        }
        Outcome::Err {
            kind,
            message: text,
        } => {
            assert_eq!(message["content"], format!("{tool} failed: {text}"));
            assert_eq!(record["ok"], false, "{message}");
            assert_eq!(keys, ["arguments", "duration_ms", "error", "ok", "tool"]);
            assert_eq!(record["error"], json!({ "kind": kind, "message": text }));
        }
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// A mix of successes and failures, with and without `conversation_id`: each call's record is
/// in the right conversation, in call order, with its arguments, result or error and duration.
async fn every_call_is_recorded_where_and_as_it_happened(db: TestDb) {
    use Dest::Activity;
    let mut s = Session::start(&db, "auditor").await;

    let chat_id = s.start_conversation(json!({ "title": "groceries" })).await;
    let chat = Dest::Conversation(chat_id.clone());
    let asked = s
        .ok(
            Activity,
            "append_message",
            json!({ "conversation_id": chat_id, "role": "user", "content": "add milk" }),
        )
        .await;
    let milk = s
        .ok(
            chat.clone(),
            "add_task",
            json!({ "title": "milk", "conversation_id": chat_id, "idempotency_key": "turn-1" }),
        )
        .await;
    let milk_id = str_at(&milk, "/task/id").to_string();
    // A retry with the same key returns the same task, and is recorded again.
    let retried = s
        .ok(
            chat.clone(),
            "add_task",
            json!({ "title": "milk", "conversation_id": chat_id, "idempotency_key": "turn-1" }),
        )
        .await;
    assert_eq!(retried["task"], milk["task"]);
    assert_eq!(
        (&milk["replayed"], &retried["replayed"]),
        (&json!(false), &json!(true))
    );
    s.err(
        Activity,
        "add_task",
        json!({ "title": "   " }),
        "invalid_argument",
    )
    .await;
    s.ok(
        chat.clone(),
        "list_tasks",
        json!({ "status": "pending", "conversation_id": chat_id }),
    )
    .await;
    s.ok(
        chat.clone(),
        "complete_task",
        json!({ "task_id": milk_id, "conversation_id": chat_id }),
    )
    .await;
    s.err(
        chat.clone(),
        "update_task",
        json!({ "task_id": milk_id, "title": "x".repeat(501), "conversation_id": chat_id }),
        "invalid_argument",
    )
    .await;
    let unknown_task = Uuid::new_v4().to_string();
    let message = s
        .err(
            Activity,
            "update_task",
            json!({ "task_id": unknown_task, "title": "y" }),
            "not_found",
        )
        .await;
    assert_eq!(message, format!("task {unknown_task} not found"));
    s.err(
        chat.clone(),
        "delete_task",
        json!({ "task_id": unknown_task, "conversation_id": chat_id }),
        "not_found",
    )
    .await;
    // A conversation_id that names no conversation of the caller's is the call's error, and
    // is recorded in "Tool activity".
    let unknown_chat = Uuid::new_v4().to_string();
    let message = s
        .err(
            Activity,
            "add_task",
            json!({ "title": "bread", "conversation_id": unknown_chat }),
            "not_found",
        )
        .await;
    assert_eq!(message, format!("conversation {unknown_chat} not found"));
    // Found when its record is written, after the task's insert: rolled back with it.
    let listed = s
        .ok(Activity, "list_tasks", json!({ "query": "bread" }))
        .await;
    assert_eq!(
        listed["tasks"],
        json!([]),
        "the refused call's task was kept"
    );
    s.err(
        Activity,
        "list_tasks",
        json!({ "limit": 0 }),
        "invalid_argument",
    )
    .await;
    s.ok(
        Activity,
        "append_message",
        json!({ "conversation_id": chat_id, "role": "assistant", "content": "added milk" }),
    )
    .await;
    let asked_id = asked["message"]["id"].as_i64().expect("message id");
    s.ok(
        Activity,
        "set_conversation_summary",
        json!({ "conversation_id": chat_id, "summary": "wants milk", "through_message_id": asked_id }),
    )
    .await;
    let eggs = s.ok(Activity, "add_task", json!({ "title": "eggs" })).await;
    let eggs_id = str_at(&eggs, "/task/id").to_string();
    s.ok(
        chat.clone(),
        "delete_task",
        json!({ "task_id": eggs_id, "conversation_id": chat_id }),
    )
    .await;
    s.ok(
        Activity,
        "list_conversations",
        json!({ "include_archived": true }),
    )
    .await;
    s.ok(
        Activity,
        "get_conversation_history",
        json!({ "conversation_id": chat_id, "limit": 3 }),
    )
    .await;
    let activity = s.activity.clone();
    let reads = s.reads.clone();
    s.ok(
        Dest::Reads,
        "get_conversation_history",
        json!({ "conversation_id": activity, "limit": 1 }),
    )
    .await;
    s.ok(
        Activity,
        "get_conversation_history",
        json!({ "conversation_id": reads, "limit": 1 }),
    )
    .await;
    s.err(
        Activity,
        "get_conversation_history",
        json!({ "conversation_id": unknown_chat }),
        "not_found",
    )
    .await;

    // Big results are recorded by size only.
    let big_id = s.start_conversation(json!({ "title": "big" })).await;
    let appended = s
        .ok(
            Activity,
            "append_message",
            json!({ "conversation_id": big_id, "role": "user", "content": "z".repeat(20_000) }),
        )
        .await;
    assert!(serde_json::to_vec(&appended).unwrap().len() > RESULT_RECORD_LIMIT);
    s.ok(
        Activity,
        "get_conversation_history",
        json!({ "conversation_id": big_id }),
    )
    .await;

    s.archive_then_refuse_a_message(&chat_id, "too late").await;

    // Every conversation of the user holds exactly what it should, and nothing else exists.
    let listed = s
        .ok(
            Activity,
            "list_conversations",
            json!({ "include_archived": true }),
        )
        .await;
    let mut listed: Vec<&str> = listed["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    listed.sort_unstable();
    let mut known = vec![
        s.activity.as_str(),
        s.reads.as_str(),
        &chat_id,
        big_id.as_str(),
    ];
    known.sort_unstable();
    assert_eq!(listed, known);
    s.verify(chat, Activity).await;
    s.verify(Dest::Conversation(big_id), Activity).await;
    s.verify(Activity, Dest::Reads).await;
    s.verify(Dest::Reads, Activity).await;
    s.verify(Activity, Dest::Reads).await;

    s.client.close().await;
}

/// Reading a history never makes it grow: two reads in a row return identical content, for
/// an ordinary conversation, for "Tool activity" and for the reads log.
async fn reading_a_history_twice_returns_the_same(db: TestDb) {
    let mut s = Session::start(&db, "reader").await;
    let chat_id = s.start_conversation(json!({})).await;
    s.ok(
        Dest::Activity,
        "append_message",
        json!({ "conversation_id": chat_id, "role": "user", "content": "hello" }),
    )
    .await;
    s.ok(
        Dest::Conversation(chat_id.clone()),
        "add_task",
        json!({ "title": "reply", "conversation_id": chat_id }),
    )
    .await;
    let activity = s.activity.clone();
    let reads = s.reads.clone();

    for (id, recorded_in) in [
        (&chat_id, Dest::Activity),
        (&activity, Dest::Reads),
        (&reads, Dest::Activity),
    ] {
        let args = json!({ "conversation_id": id });
        let first = s
            .ok(
                recorded_in.clone(),
                "get_conversation_history",
                args.clone(),
            )
            .await;
        let second = s.ok(recorded_in, "get_conversation_history", args).await;
        assert_eq!(first, second, "reading {id} twice");
        assert!(
            !first["messages"].as_array().expect("messages").is_empty(),
            "{id} should have messages by now: {first}"
        );
    }
    // The reads themselves were recorded, each in the other log.
    s.verify(Dest::Reads, Dest::Activity).await;
    s.verify(Dest::Activity, Dest::Reads).await;
    s.verify(Dest::Conversation(chat_id), Dest::Activity).await;
    s.client.close().await;
}

/// A failed call changes nothing, and its record says so (ok = false, with the error).
async fn failed_calls_change_nothing_and_are_recorded(db: TestDb) {
    use Dest::Activity;
    let mut s = Session::start(&db, "careful").await;

    let task = s
        .ok(
            Activity,
            "add_task",
            json!({ "title": "original", "description": "keep me" }),
        )
        .await;
    let task_id = str_at(&task, "/task/id").to_string();

    // A too-long title fails the whole update: description and completed are untouched too.
    let message = s
        .err(
            Activity,
            "update_task",
            json!({ "task_id": task_id, "title": "t".repeat(501), "description": "changed", "completed": true }),
            "invalid_argument",
        )
        .await;
    assert!(message.contains("`title`"), "{message}");
    // An unknown conversation_id fails the call before anything is written.
    s.err(
        Activity,
        "add_task",
        json!({ "title": "ghost", "conversation_id": Uuid::new_v4().to_string() }),
        "not_found",
    )
    .await;
    s.err(
        Activity,
        "complete_task",
        json!({ "task_id": task_id, "conversation_id": Uuid::new_v4().to_string() }),
        "not_found",
    )
    .await;
    s.err(
        Activity,
        "delete_task",
        json!({ "task_id": task_id, "conversation_id": "not-a-uuid" }),
        "invalid_argument",
    )
    .await;
    let tasks = s.ok(Activity, "list_tasks", json!({})).await;
    assert_eq!(
        tasks["tasks"],
        json!([task["task"]]),
        "the task is unchanged"
    );

    // A summary that names a message outside the conversation sets nothing.
    let chat_id = s.start_conversation(json!({ "title": "c" })).await;
    s.err(
        Activity,
        "set_conversation_summary",
        json!({ "conversation_id": chat_id, "summary": "nope", "through_message_id": 9_000_000_000_i64 }),
        "invalid_argument",
    )
    .await;
    // An archived conversation takes no message.
    s.archive_then_refuse_a_message(&chat_id, "late").await;
    let history = s
        .ok(
            Activity,
            "get_conversation_history",
            json!({ "conversation_id": chat_id }),
        )
        .await;
    assert_eq!(history["messages"], json!([]));
    assert_eq!(history["summary"], Value::Null);
    assert_eq!(
        history["conversation"]["summary_through_message_id"],
        Value::Null
    );
    assert_eq!(history["conversation"]["status"], "archived");

    s.verify(Activity, Dest::Reads).await;
    s.client.close().await;
}

/// Arguments that do not even deserialize (a wrong type, an unknown enum value, an unknown
/// field, a missing required field) fail like any other bad argument: a tool error whose text
/// is `invalid_argument: ...` naming the field, recorded with that kind and message.
async fn undeserializable_arguments_fail_with_a_kind_and_are_recorded(db: TestDb) {
    let mut s = Session::start(&db, "sloppy").await;
    let chat_id = s.start_conversation(json!({})).await;
    let cases = [
        ("list_tasks", json!({ "limit": "ten" }), "`limit`"),
        (
            "append_message",
            json!({ "conversation_id": chat_id, "role": "record", "content": "forged" }),
            "`role`",
        ),
        (
            "add_task",
            json!({ "title": "t", "user_id": "bob" }),
            "user_id",
        ),
        ("complete_task", json!({}), "task_id"),
    ];
    for (tool, arguments, field) in cases {
        let message = s
            .err(Dest::Activity, tool, arguments, "invalid_argument")
            .await;
        assert!(message.contains(field), "{tool}: {message}");
    }
    let history = s
        .ok(
            Dest::Activity,
            "get_conversation_history",
            json!({ "conversation_id": chat_id }),
        )
        .await;
    assert_eq!(
        history["messages"],
        json!([]),
        "no forged message was stored"
    );
    s.verify(Dest::Activity, Dest::Reads).await;
    s.client.close().await;
}

/// PostgreSQL only: `messages.tool_calls` is `jsonb` holding the record's keys, and every
/// message row belongs to its conversation's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_records_are_jsonb_and_owned_by_the_conversation_owner() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut calls = 0;
    for user in ["owner-a", "owner-b"] {
        let mut s = Session::start(&db, user).await;
        let chat_id = s.start_conversation(json!({})).await;
        let chat = Dest::Conversation(chat_id.clone());
        s.ok(
            Dest::Activity,
            "append_message",
            json!({ "conversation_id": chat_id, "role": "user", "content": "hi" }),
        )
        .await;
        s.ok(
            chat.clone(),
            "add_task",
            json!({ "title": "t", "conversation_id": chat_id }),
        )
        .await;
        s.err(
            chat,
            "update_task",
            json!({ "task_id": Uuid::new_v4().to_string(), "title": "u", "conversation_id": chat_id }),
            "not_found",
        )
        .await;
        s.err(
            Dest::Activity,
            "add_task",
            json!({ "title": "" }),
            "invalid_argument",
        )
        .await;
        calls += s
            .entries
            .iter()
            .filter(|e| matches!(e, Entry::Call { .. }))
            .count();
        s.client.close().await;
    }

    let pg = db.as_pg();
    let column = pg
        .query_json(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_name = 'messages' AND column_name = 'tool_calls'",
        )
        .await;
    assert_eq!(column, [json!({ "data_type": "jsonb" })]);

    let rows = pg
        .query_json(
            "SELECT m.id, m.role, m.user_id, c.user_id AS owner, \
                    jsonb_typeof(m.tool_calls) AS type, \
                    ARRAY(SELECT jsonb_object_keys(m.tool_calls) ORDER BY 1) AS keys, \
                    jsonb_typeof(m.tool_calls->'duration_ms') AS duration_type, \
                    (m.tool_calls->>'duration_ms')::float8 AS duration_ms, \
                    m.tool_calls->'ok' AS ok \
             FROM messages m LEFT JOIN conversations c ON c.id = m.conversation_id \
             ORDER BY m.id",
        )
        .await;
    let tool_rows: Vec<&Value> = rows.iter().filter(|r| r["role"] == "tool").collect();
    assert_eq!(tool_rows.len(), calls, "one record per call: {rows:#?}");
    assert_eq!(rows.len(), calls + 2, "plus the two appended messages");
    for row in &rows {
        assert_eq!(row["user_id"], row["owner"], "{row}");
        if row["role"] != "tool" {
            assert_eq!(row["type"], Value::Null, "{row}");
            continue;
        }
        assert_eq!(row["type"], "object", "{row}");
        assert_eq!(row["duration_type"], "number", "{row}");
        assert!(
            row["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{row}"
        );
        let outcome = if row["ok"] == true { "result" } else { "error" };
        let mut keys = vec!["arguments", "duration_ms", "ok", "tool", outcome];
        keys.sort_unstable();
        assert_eq!(row["keys"], json!(keys), "{row}");
    }
    let users: Vec<&Value> = rows.iter().map(|r| &r["user_id"]).collect();
    assert!(users.contains(&&json!("owner-a")) && users.contains(&&json!("owner-b")));
}

/// Every tool's sample call (tests/support/samples.rs, so a new tool is covered too) leaves
/// a record naming the tool, with its arguments as sent and its result as returned.
async fn every_tools_sample_call_is_recorded(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let seed = Seed::plant(&client).await;
    for (tool, args) in samples::all(&seed) {
        let result = client.call_ok(tool, args.clone()).await;
        // One client, one call at a time: the newest record is this call's.
        let newest = support::sql::texts(
            &db,
            "SELECT tool_calls AS j FROM messages WHERE kind = 'call_record' \
             ORDER BY id DESC LIMIT 1",
        )
        .await;
        let record: Value = serde_json::from_str(newest.first().map_or("null", String::as_str))
            .unwrap_or_else(|e| panic!("{tool}: the newest record is not JSON ({e}): {newest:?}"));
        assert_eq!(record["tool"], tool, "{record}");
        assert_eq!(record["ok"], true, "{tool}: {record}");
        assert_eq!(record["arguments"], args, "{tool}: arguments as sent");
        if record["result"]["omitted"] != true {
            assert_eq!(record["result"], result, "{tool}: result as returned");
        }
    }
    client.close().await;
}

/// Finding 2 of the security review: any token, a read-only one included, could grow the
/// database without bound through the records of calls it knew would be refused (15 KB of
/// junk each, 17.5 KB of records a call). Now a failure record keeps at most 1,024 bytes of
/// arguments (strings cut to 64 characters beyond that) and a tool name to 128 characters,
/// and a user's failures have a budget of records an hour: past it they are answered and
/// counted in the metrics, logged once, not stored. Successful calls are always recorded.
async fn refused_calls_leave_bounded_records_within_an_hourly_budget(db: TestDb) {
    use support::jsonrpc::{Reply, mcp_request, tool_call};
    const BUDGET: usize = 5;
    const REFUSED: usize = 30;
    const METRICS_TOKEN: &str = "metrics-token-for-the-budget-test-0123456789";
    let read_only = support::cli::create_token_with(db.url(), "mallory", &["--scope", "read"]);
    let server = support::start_http(
        db.url(),
        &["--max-failure-records-per-hour", &BUDGET.to_string()],
        &[("TODO_MCP_METRICS_TOKEN", METRICS_TOKEN)],
    )
    .await;
    let skipped = || async {
        let reply = Reply::read(
            support::jsonrpc::client()
                .get(format!("{}/metrics", server.base_url()))
                .bearer_auth(METRICS_TOKEN)
                .send()
                .await
                .expect("GET /metrics"),
        )
        .await;
        reply
            .body
            .lines()
            .find_map(|line| line.strip_prefix("todo_mcp_failure_records_skipped_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no failure_records_skipped in\n{}", reply.body))
    };
    assert_eq!(skipped().await, 0.0);
    let junk = "J".repeat(15_000);
    let long_name = format!("tool_{}", "n".repeat(15_000));
    // Refused by the tools, so recorded or counted (a write the token may not make is
    // refused over HTTP with a 403 before any tool runs, and leaves no record).
    let mut failed_calls = 0;
    for i in 0..REFUSED {
        // A write the token may not make, a tool that does not exist, bad arguments.
        let (tool, arguments) = match i % 3 {
            0 => ("add_task", json!({ "title": junk, "notes": junk })),
            1 => (long_name.as_str(), json!({ "junk": junk })),
            _ => ("get_task", json!({ "task_id": junk })),
        };
        let id = i64::try_from(i).unwrap();
        let reply = Reply::read(
            mcp_request(&server.mcp_url(), Some(&read_only))
                .body(tool_call(id, tool, arguments).to_string())
                .send()
                .await
                .expect("POST /mcp"),
        )
        .await;
        assert!(
            reply.status == reqwest::StatusCode::FORBIDDEN
                || reply.body.contains("\"isError\":true")
                || reply.body.contains("\"error\":{"),
            "call {i} ({}) should be refused: {} {}",
            &tool[..tool.len().min(20)],
            reply.status,
            reply.body.chars().take(300).collect::<String>()
        );
        if reply.status != reqwest::StatusCode::FORBIDDEN {
            failed_calls += 1;
        }
    }
    assert!(
        failed_calls >= 2 * BUDGET,
        "{failed_calls} calls failed in a tool"
    );
    let records = support::sql::texts(
        &db,
        "SELECT tool_calls AS j FROM messages WHERE user_id = 'mallory' ORDER BY created_at",
    )
    .await;
    assert_eq!(
        records.len(),
        BUDGET,
        "{failed_calls} failed calls with a budget of {BUDGET} records an hour"
    );
    for record in &records {
        assert!(
            record.len() < 2 * 1024,
            "a failure record of {} bytes: {}",
            record.len(),
            record.chars().take(300).collect::<String>()
        );
        let record: Value = serde_json::from_str(record).expect("tool_calls is JSON");
        let arguments = serde_json::to_string(&record["arguments"]).unwrap();
        assert!(arguments.len() <= 1024, "kept arguments: {arguments}");
        assert!(
            record["tool"].as_str().unwrap().chars().count() <= 129,
            "{record}"
        );
        assert_eq!(record["ok"], false, "{record}");
    }
    assert_eq!(skipped().await, (failed_calls - BUDGET) as f64);
    let warnings = server
        .stderr()
        .matches("further failures this hour are counted")
        .count();
    assert_eq!(
        warnings,
        1,
        "logged once per user and hour\n{}",
        server.stderr()
    );

    // Past the budget a successful call is still recorded.
    let reply = Reply::read(
        mcp_request(&server.mcp_url(), Some(&read_only))
            .body(tool_call(99, "list_tasks", json!({})).to_string())
            .send()
            .await
            .expect("POST /mcp"),
    )
    .await;
    assert!(
        reply.body.contains("\"isError\":false") || !reply.body.contains("isError"),
        "{}",
        reply.body
    );
    let records = support::sql::texts(
        &db,
        "SELECT tool_calls AS j FROM messages WHERE user_id = 'mallory' ORDER BY created_at",
    )
    .await;
    assert_eq!(records.len(), BUDGET + 1);
    let last: Value = serde_json::from_str(&records[BUDGET]).unwrap();
    assert_eq!(
        (last["tool"].as_str(), last["ok"].as_bool()),
        (Some("list_tasks"), Some(true))
    );
}

both_backends!(
    refused_calls_leave_bounded_records_within_an_hourly_budget,
    every_tools_sample_call_is_recorded,
    every_call_is_recorded_where_and_as_it_happened,
    reading_a_history_twice_returns_the_same,
    failed_calls_change_nothing_and_are_recorded,
    undeserializable_arguments_fail_with_a_kind_and_are_recorded,
);
