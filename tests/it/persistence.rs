//! Nothing lives in server memory: data survives a SIGKILL of the server, and two server
//! processes on one database see each other's writes at once. Both backends.

use crate::support;

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::mcp::result_text;
use support::{McpClient, TestDb, connect_stdio};

const CALLS_LOG_TITLE: &str = "Tool activity";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` should be a string in {value}"))
        .to_owned()
}

fn array(value: &Value, key: &str) -> Vec<Value> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("`{key}` should be an array in {value}"))
        .clone()
}

fn ids(messages: &[Value]) -> Vec<i64> {
    messages
        .iter()
        .map(|m| m["id"].as_i64().expect("message id is an integer"))
        .collect()
}

/// A tool call that must fail with a tool error; returns its text.
async fn tool_error(client: &McpClient, tool: &str, args: Value) -> String {
    let result = client.call(tool, args).await;
    assert_eq!(result.is_error, Some(true), "{tool} should have failed");
    result_text(&result)
}

async fn all_tasks(client: &McpClient) -> Vec<Value> {
    let page = client.call_ok("list_tasks", json!({ "limit": 200 })).await;
    assert_eq!(page["next_cursor"], Value::Null);
    array(&page, "tasks")
}

async fn all_conversations(client: &McpClient) -> Vec<Value> {
    let args = json!({ "include_archived": true, "limit": 200 });
    let page = client.call_ok("list_conversations", args).await;
    assert_eq!(page["next_cursor"], Value::Null);
    array(&page, "conversations")
}

async fn history(client: &McpClient, conversation_id: &str) -> Value {
    let args = json!({ "conversation_id": conversation_id, "limit": 200 });
    client.call_ok("get_conversation_history", args).await
}

fn calls_log_id(conversations: &[Value]) -> String {
    let log = conversations
        .iter()
        .find(|c| c["title"] == CALLS_LOG_TITLE)
        .unwrap_or_else(|| panic!("no {CALLS_LOG_TITLE:?} conversation in {conversations:?}"));
    text(log, "id")
}

async fn append(client: &McpClient, conversation_id: &str, role: &str, content: &str) -> Value {
    let args = json!({ "conversation_id": conversation_id, "role": role, "content": content });
    client.call_ok("append_message", args).await["message"].clone()
}

async fn start_conversation(client: &McpClient, title: &str) -> String {
    let result = client
        .call_ok("start_conversation", json!({ "title": title }))
        .await;
    text(&result["conversation"], "id")
}

/// 15 appends to `conversation`, all in flight at once.
async fn append_at_once(client: &McpClient, conversation: &str, who: &str) -> Vec<Value> {
    join_all(
        (0..15).map(|i| async move {
            append(client, conversation, "user", &format!("{who} {i}")).await
        }),
    )
    .await
}

/// 5 `add_task` calls with the same idempotency key, all in flight at once.
async fn add_with_one_key_at_once(client: &McpClient) -> Vec<Value> {
    join_all((0..5).map(|_| async {
        let args = json!({ "title": "only once", "idempotency_key": "race" });
        client.call_ok("add_task", args).await["task"].clone()
    }))
    .await
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn everything_survives_sigkill_and_restart(db: TestDb) {
    let before = connect_stdio(db.url(), None, &[]).await;

    // Tasks in every state.
    let first = before
        .call_ok(
            "add_task",
            json!({ "title": "first", "description": "with details" }),
        )
        .await["task"]
        .clone();
    let keyed = before
        .call_ok(
            "add_task",
            json!({ "title": "keyed", "idempotency_key": "key-1" }),
        )
        .await["task"]
        .clone();
    let third = before
        .call_ok("add_task", json!({ "title": "third" }))
        .await["task"]
        .clone();
    before
        .call_ok("complete_task", json!({ "task_id": keyed["id"] }))
        .await;
    before
        .call_ok(
            "update_task",
            json!({ "task_id": third["id"], "description": "added later" }),
        )
        .await;

    // A conversation with a summary, and an archived one.
    let kept = start_conversation(&before, "kept").await;
    append(&before, &kept, "system", "You are a helpful assistant.").await;
    let asked = append(&before, &kept, "user", "Remind me to buy milk").await;
    append(&before, &kept, "assistant", "Added: buy milk").await;
    before
        .call_ok(
            "set_conversation_summary",
            json!({
                "conversation_id": kept,
                "summary": "The user buys milk.",
                "through_message_id": asked["id"],
            }),
        )
        .await;
    let archived = start_conversation(&before, "archived").await;
    append(&before, &archived, "user", "old talk").await;
    before
        .call_ok(
            "archive_conversation",
            json!({ "conversation_id": archived }),
        )
        .await;

    let tasks = all_tasks(&before).await;
    assert_eq!(tasks.len(), 3);
    assert_eq!(tasks[2], first);
    let conversations = all_conversations(&before).await;
    assert_eq!(conversations.len(), 4, "2 started + 2 activity logs");
    let kept_history = history(&before, &kept).await;
    assert_eq!(kept_history["summary"], "The user buys milk.");
    assert_eq!(array(&kept_history, "messages").len(), 3);
    let archived_history = history(&before, &archived).await;
    let calls_log = calls_log_id(&conversations);
    // Read last: reading the activity log is recorded elsewhere, so this read changes nothing.
    let log_before = array(&history(&before, &calls_log).await, "messages");
    assert_eq!(
        log_before.len(),
        17,
        "one record per call so far: {log_before:#?}"
    );

    // The last write before the crash must survive too.
    let last = before
        .call_ok(
            "add_task",
            json!({ "title": "written just before the kill" }),
        )
        .await["task"]
        .clone();
    before.kill().await;

    let after = connect_stdio(db.url(), None, &[]).await;
    let log_after = array(&history(&after, &calls_log).await, "messages");
    assert_eq!(
        log_after[..log_before.len()],
        log_before[..],
        "the activity log is kept as it was"
    );
    assert_eq!(log_after.len(), log_before.len() + 1);
    assert_eq!(
        log_after[log_before.len()]["tool_calls"]["tool"],
        "add_task"
    );
    assert_eq!(
        log_after[log_before.len()]["tool_calls"]["result"]["task"],
        last
    );

    let mut expected_tasks = vec![last.clone()];
    expected_tasks.extend(tasks);
    assert_eq!(
        all_tasks(&after).await,
        expected_tasks,
        "tasks after restart"
    );
    assert_eq!(
        all_conversations(&after).await,
        conversations,
        "conversations after restart"
    );
    assert_eq!(history(&after, &kept).await, kept_history);
    assert_eq!(history(&after, &archived).await, archived_history);

    // The idempotency key is remembered across processes.
    let retried = after
        .call_ok(
            "add_task",
            json!({ "title": "keyed", "idempotency_key": "key-1" }),
        )
        .await["task"]
        .clone();
    assert_eq!(retried["id"], keyed["id"]);
    assert_eq!(retried["completed"], true);

    // New ids continue after the old ones.
    let newest = append(&after, &kept, "user", "I'm back").await;
    let old_ids = ids(&array(&kept_history, "messages"));
    assert!(
        newest["id"].as_i64().unwrap() > *old_ids.iter().max().unwrap(),
        "{newest} after {old_ids:?}"
    );
    let refused = tool_error(
        &after,
        "append_message",
        json!({ "conversation_id": archived, "role": "user", "content": "hello?" }),
    )
    .await;
    assert!(
        refused.starts_with("conflict: "),
        "still archived: {refused}"
    );
    after.close().await;
}

/// Tracks the tools called, in order, to compare with the shared activity log.
struct Recorder {
    tools: Vec<String>,
}

impl Recorder {
    async fn ok(&mut self, client: &McpClient, tool: &str, args: Value) -> Value {
        self.tools.push(tool.to_owned());
        client.call_ok(tool, args).await
    }

    async fn err(&mut self, client: &McpClient, tool: &str, args: Value) -> String {
        self.tools.push(tool.to_owned());
        tool_error(client, tool, args).await
    }
}

async fn two_servers_on_one_database_see_each_others_writes(db: TestDb) {
    let a = connect_stdio(db.url(), None, &[]).await;
    let b = connect_stdio(db.url(), None, &[]).await;
    assert_ne!(a.pid(), b.pid());
    let mut log = Recorder { tools: Vec::new() };

    // Tasks.
    let added = log
        .ok(&a, "add_task", json!({ "title": "added through a" }))
        .await["task"]
        .clone();
    let listed = log.ok(&b, "list_tasks", json!({})).await;
    assert_eq!(listed["tasks"], json!([added]), "b sees a's task");

    let completed = log
        .ok(&b, "complete_task", json!({ "task_id": added["id"] }))
        .await["task"]
        .clone();
    let seen = log
        .ok(&a, "list_tasks", json!({ "status": "completed" }))
        .await;
    assert_eq!(seen["tasks"], json!([completed]), "a sees b's completion");

    let shared_key = json!({ "title": "once", "idempotency_key": "shared" });
    let from_b = log.ok(&b, "add_task", shared_key.clone()).await["task"].clone();
    let from_a = log.ok(&a, "add_task", shared_key).await["task"].clone();
    assert_eq!(
        from_a, from_b,
        "one idempotency key, one task, across processes"
    );

    log.ok(&b, "delete_task", json!({ "task_id": added["id"] }))
        .await;
    let gone = log
        .err(&a, "complete_task", json!({ "task_id": added["id"] }))
        .await;
    assert!(gone.starts_with("not_found: "), "deleted through b: {gone}");
    let left = log.ok(&a, "list_tasks", json!({})).await;
    assert_eq!(left["tasks"], json!([from_a]));

    // Conversations.
    let started = log
        .ok(&a, "start_conversation", json!({ "title": "shared" }))
        .await["conversation"]
        .clone();
    let id = text(&started, "id");
    let mut messages = Vec::new();
    for (client, role, content) in [
        (&b, "user", "hello from b"),
        (&a, "assistant", "hello from a"),
        (&b, "user", "bye from b"),
    ] {
        let args = json!({ "conversation_id": id, "role": role, "content": content });
        messages.push(log.ok(client, "append_message", args).await["message"].clone());
    }
    let message_ids = ids(&messages);
    assert!(
        message_ids.windows(2).all(|w| w[0] < w[1]),
        "ids increase across processes: {message_ids:?}"
    );
    log.ok(
        &a,
        "set_conversation_summary",
        json!({ "conversation_id": id, "summary": "greetings", "through_message_id": message_ids[1] }),
    )
    .await;
    let args = json!({ "conversation_id": id });
    let through_b = log.ok(&b, "get_conversation_history", args.clone()).await;
    let through_a = log.ok(&a, "get_conversation_history", args).await;
    assert_eq!(
        through_b["messages"],
        json!(messages),
        "b reads what both wrote"
    );
    assert_eq!(through_b["summary"], "greetings", "b reads a's summary");
    assert_eq!(through_a, through_b);

    log.ok(&b, "archive_conversation", json!({ "conversation_id": id }))
        .await;
    let listed = log.ok(&a, "list_conversations", json!({})).await;
    let titles: Vec<String> = array(&listed, "conversations")
        .iter()
        .map(|c| c["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        !titles.contains(&"shared".to_owned()),
        "a no longer lists what b archived: {titles:?}"
    );
    let refused = log
        .err(
            &a,
            "append_message",
            json!({ "conversation_id": id, "role": "user", "content": "late" }),
        )
        .await;
    assert!(refused.starts_with("conflict: "), "{refused}");

    // Both processes recorded into the same activity log, in call order.
    let calls_log = calls_log_id(&array(&listed, "conversations"));
    let recorded_a = array(&history(&a, &calls_log).await, "messages");
    let recorded_b = array(&history(&b, &calls_log).await, "messages");
    assert_eq!(recorded_a, recorded_b);
    let tools: Vec<String> = recorded_a
        .iter()
        .map(|m| text(&m["tool_calls"], "tool"))
        .collect();
    assert_eq!(tools, log.tools, "one record per call, from both servers");

    a.close().await;
    b.close().await;
}

async fn concurrent_writes_through_two_servers_all_land(db: TestDb) {
    let a = connect_stdio(db.url(), None, &[]).await;
    let b = connect_stdio(db.url(), None, &[]).await;
    let conversation = start_conversation(&a, "busy").await;

    let (from_a, from_b, tasks_a, tasks_b) = tokio::join!(
        append_at_once(&a, &conversation, "a"),
        append_at_once(&b, &conversation, "b"),
        add_with_one_key_at_once(&a),
        add_with_one_key_at_once(&b),
    );

    let history = history(&b, &conversation).await;
    let stored = array(&history, "messages");
    let stored_ids = ids(&stored);
    assert!(
        stored_ids.windows(2).all(|w| w[0] < w[1]),
        "history is in strictly increasing id order: {stored_ids:?}"
    );
    let mut appended: Vec<Value> = from_a.into_iter().chain(from_b).collect();
    appended.sort_by_key(|m| m["id"].as_i64());
    assert_eq!(
        stored, appended,
        "all 30 concurrent appends are stored, once each"
    );

    let first = tasks_a[0].clone();
    assert!(
        tasks_a.iter().chain(&tasks_b).all(|t| *t == first),
        "every racing add_task with one key returns the same task: {tasks_a:?} {tasks_b:?}"
    );
    assert_eq!(all_tasks(&a).await, [first], "exactly one task");

    a.close().await;
    b.close().await;
}

both_backends!(
    everything_survives_sigkill_and_restart,
    two_servers_on_one_database_see_each_others_writes,
    concurrent_writes_through_two_servers_all_land,
);
