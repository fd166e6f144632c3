//! Invalid arguments: each gets a tool error that names the field at fault, and the only
//! thing written is the call's record in the "Tool activity" conversation. Both backends;
//! on PostgreSQL the tables are also compared row for row around every rejected call.

use crate::support;

use serde_json::{Value, json};
use support::mcp::result_text;
use support::{McpClient, TestDb, connect_in_process};

const CALLS_LOG_TITLE: &str = "Tool activity";
/// Well formed, but no task or conversation has it.
const UNKNOWN_ID: &str = "5b0f8e2c-3d4a-4f6b-9c1d-2e3f4a5b6c7d";

/// What a rejection's text must look like.
struct Expect {
    /// `invalid_argument: ` or `not_found: `.
    prefix: &'static str,
    /// A part of the message that names the field (or the id).
    names: String,
}

fn invalid(names: &str) -> Expect {
    Expect {
        prefix: "invalid_argument: ",
        names: names.to_owned(),
    }
}

fn not_found(entity: &str, id: &str) -> Expect {
    Expect {
        prefix: "not_found: ",
        names: format!("{entity} {id} not found"),
    }
}

/// One server on a fresh database, with what the checks need.
struct Fixture {
    db: TestDb,
    client: McpClient,
    calls_log: String,
}

impl Fixture {
    async fn start(db: TestDb) -> Fixture {
        let client = connect_in_process(db.url(), None, &[]).await;
        // Also puts a first record into the activity log.
        let listed = client.call_ok("list_conversations", json!({})).await;
        let calls_log = listed["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["title"] == CALLS_LOG_TITLE)
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no {CALLS_LOG_TITLE:?} conversation in {listed}"))
            .to_owned();
        Fixture {
            db,
            client,
            calls_log,
        }
    }

    /// The latest `n` messages of "Tool activity", oldest first. (A read of the activity log
    /// is recorded in the other log, so it does not change what it reads.)
    async fn latest_records(&self, n: i64) -> Vec<Value> {
        let args = json!({ "conversation_id": self.calls_log, "limit": n });
        let history = self.client.call_ok("get_conversation_history", args).await;
        history["messages"].as_array().unwrap().clone()
    }

    /// On PostgreSQL: row counts and digests of everything a tool can write.
    async fn rows(&self) -> Option<Value> {
        let TestDb::Pg(pg) = &self.db else {
            return None;
        };
        let mut rows = pg
            .query_json(
                "SELECT \
                   (SELECT count(*) FROM tasks) AS tasks, \
                   (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) \
                      FROM tasks t) AS tasks_digest, \
                   (SELECT count(*) FROM conversations) AS conversations, \
                   (SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY c.id), '')) \
                      FROM conversations c) AS conversations_digest, \
                   (SELECT count(*) FROM messages WHERE role = 'user') AS user_messages, \
                   (SELECT count(*) FROM messages WHERE role = 'assistant') AS assistant_messages, \
                   (SELECT count(*) FROM messages WHERE role = 'system') AS system_messages, \
                   (SELECT count(*) FROM messages WHERE role = 'tool') AS tool_messages",
            )
            .await;
        Some(rows.remove(0))
    }

    /// Calls `tool` with `args`, expects a tool error as described, and checks that the only
    /// thing written is one failure record in "Tool activity". Returns the error text.
    async fn rejected(&self, tool: &str, args: Value, expect: Expect) -> String {
        let shown = format!("{tool} {args} ({})", self.db.name());
        let previous = self.latest_records(1).await;
        let rows_before = self.rows().await;

        let result = self.client.call(tool, args.clone()).await;
        let error = result_text(&result);
        assert_eq!(
            result.is_error,
            Some(true),
            "{shown} should be a tool error; got {error}"
        );
        assert!(
            error.starts_with(expect.prefix) && error.contains(&expect.names),
            "{shown}: error should start with {:?} and contain {:?}; got {error:?}",
            expect.prefix,
            expect.names
        );

        if let (Some(mut expected), Some(after)) = (rows_before, self.rows().await) {
            let tool_messages = expected["tool_messages"].as_i64().unwrap();
            expected["tool_messages"] = json!(tool_messages + 1);
            assert_eq!(
                after, expected,
                "{shown}: exactly one row may be written, the failure record (tool_messages + 1)"
            );
        }

        let latest = self.latest_records(2).await;
        assert_eq!(
            latest.first(),
            previous.last(),
            "{shown}: exactly one new record in {CALLS_LOG_TITLE:?}; latest: {latest:#?}"
        );
        let record = latest.last().unwrap();
        assert_eq!(record["role"], "tool", "{shown}: {record}");
        let (kind, message) = error.split_once(": ").unwrap();
        // NUL bytes cannot be stored (PostgreSQL text/jsonb): records hold U+FFFD instead.
        let recorded_args: Value =
            serde_json::from_str(&args.to_string().replace("\\u0000", "\u{FFFD}"))
                .expect("arguments stay JSON");
        let recorded_args = refused_arguments_as_recorded(recorded_args);
        assert_eq!(
            record["tool_calls"],
            json!({
                "tool": tool,
                "arguments": recorded_args,
                "ok": false,
                "error": { "kind": kind, "message": message },
                "duration_ms": record["tool_calls"]["duration_ms"],
            }),
            "{shown}: the failure record"
        );
        assert!(record["tool_calls"]["duration_ms"].is_number(), "{record}");
        error
    }

    async fn all_tasks(&self) -> Value {
        self.client.call_ok("list_tasks", json!({})).await["tasks"].clone()
    }

    async fn add_task(&self, args: Value) -> Value {
        self.client.call_ok("add_task", args).await["task"].clone()
    }

    async fn start_conversation(&self) -> String {
        let result = self
            .client
            .call_ok("start_conversation", json!({ "title": "talk" }))
            .await;
        result["conversation"]["id"].as_str().unwrap().to_owned()
    }

    async fn history(&self, conversation_id: &str) -> Value {
        let args = json!({ "conversation_id": conversation_id });
        self.client.call_ok("get_conversation_history", args).await
    }
}

fn chars(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn task_text_is_checked(db: TestDb) {
    let f = Fixture::start(db).await;
    let cases = [
        (json!({ "title": "" }), "invalid `title`: must not be empty"),
        (
            json!({ "title": " \t\n " }),
            "invalid `title`: must not be empty",
        ),
        (
            json!({ "title": chars('x', 501) }),
            "invalid `title`: is 501 characters; the limit is 500",
        ),
        (
            json!({ "title": chars('é', 501) }),
            "invalid `title`: is 501 characters; the limit is 500",
        ),
        (
            json!({ "title": "ok", "description": chars('d', 10_001) }),
            "invalid `description`: is 10001 characters; the limit is 10000",
        ),
        (
            json!({ "title": "ok", "idempotency_key": "" }),
            "invalid `idempotency_key`: must not be empty",
        ),
        (
            json!({ "title": "ok", "idempotency_key": chars('k', 201) }),
            "invalid `idempotency_key`: is 201 characters; the limit is 200",
        ),
    ];
    for (args, names) in cases {
        f.rejected("add_task", args, invalid(names)).await;
    }
    assert_eq!(f.all_tasks().await, json!([]), "no task was created");

    // The limits themselves are allowed (characters, not bytes).
    let longest = f
        .add_task(json!({
            "title": chars('é', 500),
            "description": chars('d', 10_000),
            "idempotency_key": chars('k', 200),
        }))
        .await;
    assert_eq!(f.all_tasks().await, json!([longest]));
    f.client.close().await;
}

async fn nul_bytes_are_refused(db: TestDb) {
    let f = Fixture::start(db).await;
    let conversation = f.start_conversation().await;
    f.rejected(
        "add_task",
        json!({ "title": "milk\u{0}" }),
        invalid("invalid `title`: must not contain NUL bytes"),
    )
    .await;
    f.rejected(
        "add_task",
        json!({ "title": "milk", "description": "a\u{0}b" }),
        invalid("invalid `description`: must not contain NUL bytes"),
    )
    .await;
    f.rejected(
        "append_message",
        json!({ "conversation_id": conversation, "role": "user", "content": "hi\u{0}there" }),
        invalid("invalid `content`: must not contain NUL bytes"),
    )
    .await;
    f.rejected(
        "set_conversation_summary",
        json!({ "conversation_id": conversation, "summary": "\u{0}" }),
        invalid("invalid `summary`: must not contain NUL bytes"),
    )
    .await;
    assert_eq!(f.all_tasks().await, json!([]));
    let history = f.history(&conversation).await;
    assert_eq!(history["messages"], json!([]));
    assert_eq!(history["summary"], Value::Null);
    f.client.close().await;
}

async fn message_and_summary_sizes_are_checked(db: TestDb) {
    let f = Fixture::start(db).await;
    let conversation = f.start_conversation().await;
    let append = |content: String| json!({ "conversation_id": conversation, "role": "user", "content": content });
    f.rejected(
        "append_message",
        append(chars('m', 100_001)),
        invalid("invalid `content`: is 100001 characters; the limit is 100000"),
    )
    .await;
    f.rejected(
        "append_message",
        append("  \n ".to_owned()),
        invalid("invalid `content`: must not be empty"),
    )
    .await;
    f.rejected(
        "set_conversation_summary",
        json!({ "conversation_id": conversation, "summary": chars('s', 100_001) }),
        invalid("invalid `summary`: is 100001 characters; the limit is 100000"),
    )
    .await;
    f.rejected(
        "start_conversation",
        json!({ "title": chars('t', 501) }),
        invalid("invalid `title`: is 501 characters; the limit is 500"),
    )
    .await;
    let history = f.history(&conversation).await;
    assert_eq!(history["messages"], json!([]), "no message was stored");
    assert_eq!(history["summary"], Value::Null, "no summary was stored");

    // The limits themselves are allowed.
    let longest = f
        .client
        .call_ok("append_message", append(chars('m', 100_000)))
        .await["message"]
        .clone();
    let args = json!({ "conversation_id": conversation, "summary": chars('s', 100_000) });
    f.client.call_ok("set_conversation_summary", args).await;
    let history = f.history(&conversation).await;
    assert_eq!(history["messages"], json!([longest]));
    assert_eq!(history["summary"], json!(chars('s', 100_000)));
    f.client.close().await;
}

async fn malformed_ids_are_refused(db: TestDb) {
    let f = Fixture::start(db).await;
    let task_id = "invalid `task_id`: `not-a-uuid` is not a uuid";
    let conversation_id = "invalid `conversation_id`: `42` is not a uuid";
    let cases = [
        ("get_task", json!({ "task_id": "not-a-uuid" }), task_id),
        ("complete_task", json!({ "task_id": "not-a-uuid" }), task_id),
        (
            "update_task",
            json!({ "task_id": "not-a-uuid", "title": "x" }),
            task_id,
        ),
        ("delete_task", json!({ "task_id": "not-a-uuid" }), task_id),
        (
            "add_task",
            json!({ "title": "x", "conversation_id": "42" }),
            conversation_id,
        ),
        (
            "list_tasks",
            json!({ "conversation_id": "42" }),
            conversation_id,
        ),
        (
            "append_message",
            json!({ "conversation_id": "42", "role": "user", "content": "hi" }),
            conversation_id,
        ),
        (
            "get_conversation_history",
            json!({ "conversation_id": "42" }),
            conversation_id,
        ),
        (
            "set_conversation_summary",
            json!({ "conversation_id": "42", "summary": "s" }),
            conversation_id,
        ),
        (
            "archive_conversation",
            json!({ "conversation_id": "42" }),
            conversation_id,
        ),
    ];
    for (tool, args, names) in cases {
        f.rejected(tool, args, invalid(names)).await;
    }
    assert_eq!(f.all_tasks().await, json!([]));
    f.client.close().await;
}

async fn unknown_ids_are_not_found(db: TestDb) {
    let f = Fixture::start(db).await;
    let task = || not_found("task", UNKNOWN_ID);
    let conversation = || not_found("conversation", UNKNOWN_ID);
    let cases = [
        ("get_task", json!({ "task_id": UNKNOWN_ID }), task()),
        ("complete_task", json!({ "task_id": UNKNOWN_ID }), task()),
        (
            "update_task",
            json!({ "task_id": UNKNOWN_ID, "completed": true }),
            task(),
        ),
        ("delete_task", json!({ "task_id": UNKNOWN_ID }), task()),
        (
            "add_task",
            json!({ "title": "x", "conversation_id": UNKNOWN_ID }),
            conversation(),
        ),
        (
            "list_tasks",
            json!({ "conversation_id": UNKNOWN_ID }),
            conversation(),
        ),
        (
            "append_message",
            json!({ "conversation_id": UNKNOWN_ID, "role": "user", "content": "hi" }),
            conversation(),
        ),
        (
            "get_conversation_history",
            json!({ "conversation_id": UNKNOWN_ID }),
            conversation(),
        ),
        (
            "set_conversation_summary",
            json!({ "conversation_id": UNKNOWN_ID, "summary": "s" }),
            conversation(),
        ),
        (
            "archive_conversation",
            json!({ "conversation_id": UNKNOWN_ID }),
            conversation(),
        ),
    ];
    for (tool, args, expect) in cases {
        f.rejected(tool, args, expect).await;
    }
    assert_eq!(f.all_tasks().await, json!([]));
    f.client.close().await;
}

async fn wrong_types_and_unknown_fields_are_refused(db: TestDb) {
    let f = Fixture::start(db).await;
    let conversation = f.start_conversation().await;
    let cases = [
        (
            "add_task",
            json!({ "title": 5 }),
            "invalid `title`: invalid type: number 5, expected a string",
        ),
        ("add_task", json!({}), "missing field `title`"),
        (
            "add_task",
            json!({ "title": "x", "foo": 1 }),
            "unknown field `foo`",
        ),
        (
            "list_tasks",
            json!({ "limit": "x" }),
            "invalid `limit`: invalid type: string \"x\"",
        ),
        (
            "list_tasks",
            json!({ "status": "done" }),
            "invalid `status`",
        ),
        (
            "update_task",
            json!({ "task_id": UNKNOWN_ID, "completed": "yes" }),
            "invalid `completed`",
        ),
        (
            "append_message",
            json!({ "conversation_id": conversation, "role": "tool", "content": "fake record" }),
            "invalid `tool_call_id`: a tool message answers one of the agent's tool calls",
        ),
        (
            "append_message",
            json!({ "conversation_id": conversation, "role": "record", "content": "fake record" }),
            "invalid `role`: unknown variant `record`",
        ),
        (
            "append_message",
            json!({ "conversation_id": conversation, "role": "user" }),
            "invalid `content`: must not be empty",
        ),
        (
            "get_conversation_history",
            json!({ "conversation_id": conversation, "before": "1" }),
            "invalid `before`",
        ),
        (
            "list_conversations",
            json!({ "include_archived": "yes" }),
            "invalid `include_archived`",
        ),
    ];
    for (tool, args, names) in cases {
        f.rejected(tool, args, invalid(names)).await;
    }
    assert_eq!(f.all_tasks().await, json!([]));
    assert_eq!(
        f.history(&conversation).await["messages"],
        json!([]),
        "no message, least of all a forged `tool` one"
    );
    f.client.close().await;
}

async fn page_sizes_and_cursors_are_checked(db: TestDb) {
    let f = Fixture::start(db).await;
    let conversation = f.start_conversation().await;
    let older = f.add_task(json!({ "title": "older" })).await;
    let newer = f.add_task(json!({ "title": "newer" })).await;

    for limit in [0, 201, -1] {
        let names = format!("invalid `limit`: {limit} is outside 1..=200");
        f.rejected("list_tasks", json!({ "limit": limit }), invalid(&names))
            .await;
        f.rejected(
            "list_conversations",
            json!({ "limit": limit }),
            invalid(&names),
        )
        .await;
        f.rejected(
            "get_conversation_history",
            json!({ "conversation_id": conversation, "limit": limit }),
            invalid(&names),
        )
        .await;
    }

    let task_cursor = f.client.call_ok("list_tasks", json!({ "limit": 1 })).await["next_cursor"]
        .as_str()
        .expect("two tasks, pages of one: a next cursor")
        .to_owned();
    let conversation_cursor = f
        .client
        .call_ok("list_conversations", json!({ "limit": 1 }))
        .await["next_cursor"]
        .as_str()
        .expect("three conversations, pages of one: a next cursor")
        .to_owned();
    let bad_cursor = "invalid `cursor`: is not a cursor this list returned";
    for (tool, cursor) in [
        ("list_tasks", "abc"),
        ("list_tasks", conversation_cursor.as_str()),
        ("list_conversations", "abc"),
        ("list_conversations", task_cursor.as_str()),
    ] {
        f.rejected(tool, json!({ "cursor": cursor }), invalid(bad_cursor))
            .await;
    }
    for before in [0, -1] {
        f.rejected(
            "get_conversation_history",
            json!({ "conversation_id": conversation, "before": before }),
            invalid(&format!(
                "invalid `before`: {before} is not a message id (ids start at 1)"
            )),
        )
        .await;
    }
    assert_eq!(f.all_tasks().await, json!([newer, older]));
    f.client.close().await;
}

async fn rejected_updates_change_nothing(db: TestDb) {
    let f = Fixture::start(db).await;
    let task = f
        .add_task(json!({ "title": "original", "description": "details" }))
        .await;
    let id = task["id"].clone();
    let cases = [
        (json!({ "task_id": id, "title": "" }), "invalid `title`"),
        (
            json!({ "task_id": id, "title": chars('x', 501), "completed": true }),
            "invalid `title`: is 501 characters",
        ),
        (
            json!({ "task_id": id, "description": chars('d', 10_001) }),
            "invalid `description`: is 10001 characters",
        ),
        (json!({ "task_id": id }), "nothing to change"),
    ];
    for (args, names) in cases {
        f.rejected("update_task", args, invalid(names)).await;
    }
    assert_eq!(f.all_tasks().await, json!([task]), "the task is unchanged");
    f.client.close().await;
}

/// What a failure record keeps of refused arguments (README, "The audit trail"): all of
/// them up to 1,024 bytes of JSON; beyond, each string and key cut after 64 characters,
/// with `…`; if that is still over 1,024 bytes, only `{omitted: true, bytes}`.
fn refused_arguments_as_recorded(arguments: Value) -> Value {
    fn cut_text(text: String) -> String {
        if text.chars().count() > 64 {
            format!("{}…", text.chars().take(64).collect::<String>())
        } else {
            text
        }
    }
    fn cut(value: Value) -> Value {
        match value {
            Value::String(text) => Value::String(cut_text(text)),
            Value::Array(items) => Value::Array(items.into_iter().map(cut).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (cut_text(k), cut(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    let bytes = arguments.to_string().len();
    if bytes <= 1024 {
        return arguments;
    }
    let kept = cut(arguments);
    if kept.to_string().len() <= 1024 {
        kept
    } else {
        json!({ "omitted": true, "bytes": bytes })
    }
}

/// A hostile caller sending megabytes as an id gets a short error, and the failure
/// record, the answer and the log each hold a short prefix of it, not the megabytes.
async fn huge_bad_values_are_quoted_short(db: TestDb) {
    let f = Fixture::start(db).await;
    let huge = "A".repeat(3_000_000);
    let error = f
        .rejected(
            "complete_task",
            json!({ "task_id": huge }),
            invalid(&format!(
                "invalid `task_id`: `{}…` (3000000 characters) is not a uuid",
                "A".repeat(40)
            )),
        )
        .await;
    assert!(error.len() < 200, "{} bytes of error", error.len());
    let error = f
        .rejected(
            "list_tasks",
            json!({ "limit": huge }),
            invalid("invalid `limit`: invalid type: string"),
        )
        .await;
    assert!(error.len() < 400, "{} bytes of error", error.len());
    let record = &f.latest_records(1).await[0];
    let stored = record.to_string().len();
    assert!(stored < 2_000, "the failure record holds {stored} bytes");
    let stderr = f.client.close().await;
    assert!(
        stderr.len() < 100_000,
        "the log holds {} bytes after two refused megabytes",
        stderr.len()
    );
}

/// tools/list gives every tool on its one page: a cursor can only be invalid (-32602).
async fn tools_list_refuses_a_cursor(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let error = client
        .service()
        .list_tools(Some(
            rmcp::model::PaginatedRequestParams::default()
                .with_cursor(Some("bm90LWEtY3Vyc29y".into())),
        ))
        .await
        .expect_err("tools/list with a cursor we never gave out");
    let rmcp::ServiceError::McpError(error) = error else {
        panic!("expected a JSON-RPC error, got {error:?}");
    };
    assert_eq!(error.code.0, -32602, "{error:?}");
    assert!(error.message.contains("invalid cursor"), "{error:?}");
    let tools = client.list_tools().await;
    assert!(
        !tools.is_empty(),
        "tools/list without a cursor still answers"
    );
    client.close().await;
}

both_backends!(
    huge_bad_values_are_quoted_short,
    tools_list_refuses_a_cursor,
    task_text_is_checked,
    nul_bytes_are_refused,
    message_and_summary_sizes_are_checked,
    malformed_ids_are_refused,
    unknown_ids_are_not_found,
    wrong_types_and_unknown_fields_are_refused,
    page_sizes_and_cursors_are_checked,
    rejected_updates_change_nothing,
);
