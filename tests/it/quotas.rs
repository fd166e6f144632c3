//! Quotas: tasks per user, messages per conversation and bytes per message are configurable;
//! a call past one fails with `quota_exceeded: …` and writes nothing, on both backends.

use crate::support;

use serde_json::{Value, json};
use support::reliability::{self, Evidence};
use support::{McpClient, TestDb, connect_in_process};

const QUOTA_ERROR: &str = "quota_exceeded: ";

async fn serve(db: &TestDb, tasks: u32, messages: u32, bytes: u32) -> McpClient {
    let (tasks, messages, bytes) = (tasks.to_string(), messages.to_string(), bytes.to_string());
    connect_in_process(
        db.url(),
        None,
        &[
            ("TODO_MCP_MAX_TASKS_PER_USER", &tasks),
            ("TODO_MCP_MAX_MESSAGES_PER_CONVERSATION", &messages),
            ("TODO_MCP_MAX_MESSAGE_BYTES", &bytes),
        ],
    )
    .await
}

async fn task_titles(client: &McpClient) -> Vec<String> {
    let listed = client.call_ok("list_tasks", json!({ "limit": 200 })).await;
    listed["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("list_tasks returned no tasks array: {listed}"))
        .iter()
        .map(|t| t["title"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn message_contents(client: &McpClient, conversation: &str) -> Vec<String> {
    let history = client
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": conversation, "limit": 200 }),
        )
        .await;
    history["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array: {history}"))
        .iter()
        .filter(|m| m["role"] != "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_quota_error(error: &str, mentions: &str, what: &str) {
    assert!(
        error.starts_with(QUOTA_ERROR) && error.contains(mentions),
        "{what}: expected `{QUOTA_ERROR}…{mentions}…`, got {error:?}"
    );
}

async fn tasks_per_user(db: TestDb) {
    let client = serve(&db, 3, 100, 1000).await;
    let mut refused = 0;
    for n in 1..=3 {
        client
            .call_ok(
                "add_task",
                json!({ "title": format!("task {n}"), "idempotency_key": format!("k{n}") }),
            )
            .await;
    }
    let error = client
        .call_err("add_task", json!({ "title": "one too many" }))
        .await;
    assert_quota_error(&error, "3 tasks", "the 4th task");
    refused += 1;
    // A retry of a task that exists is not a new task: it still answers.
    let retried = client
        .call_ok(
            "add_task",
            json!({ "title": "task 1", "idempotency_key": "k1" }),
        )
        .await;
    assert_eq!(retried["task"]["title"], "task 1");
    assert_eq!(
        task_titles(&client).await.len(),
        3,
        "the refused add wrote a task"
    );

    // Deleting one frees a place.
    let listed = client.call_ok("list_tasks", json!({})).await;
    let first = listed["tasks"][0]["id"].clone();
    client
        .call_ok("delete_task", json!({ "task_id": first }))
        .await;
    client
        .call_ok("add_task", json!({ "title": "fits again" }))
        .await;
    let error = client
        .call_err("add_task", json!({ "title": "over again" }))
        .await;
    assert_quota_error(&error, "3 tasks", "the 4th task after a delete and an add");
    refused += 1;
    let titles = task_titles(&client).await;
    assert_eq!(
        titles.len(),
        3,
        "tasks after the quota was hit twice: {titles:?}"
    );
    assert!(titles.contains(&"fits again".to_owned()), "{titles:?}");

    reliability::record(Evidence {
        class: &format!("quota: tasks per user ({})", db.name()),
        test: "tests/it/quotas.rs",
        cases: refused,
        clear_errors: refused,
        writes_lost: 0,
        cross_user: 0,
        outcome: "quota_exceeded, nothing written; a delete frees a place",
    });
    client.close().await;
}

async fn messages_per_conversation_and_bytes(db: TestDb) {
    let client = serve(&db, 100, 2, 10).await;
    let started = client
        .call_ok("start_conversation", json!({ "title": "short" }))
        .await;
    let conversation = started["conversation"]["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let append = |content: &str| json!({ "conversation_id": conversation, "role": "user", "content": content });
    let mut refused = 0;

    // Bytes, not characters: "é" is two bytes in UTF-8.
    client.call_ok("append_message", append("ééééé")).await;
    let error = client.call_err("append_message", append("éééééé")).await;
    assert_quota_error(&error, "12 bytes", "a 12-byte message past a 10-byte quota");
    refused += 1;
    client.call_ok("append_message", append("0123456789")).await;

    // Two appended: the third is refused.
    let error = client.call_err("append_message", append("third")).await;
    assert_quota_error(&error, "2 messages", "the 3rd message");
    refused += 1;
    assert_eq!(
        message_contents(&client, &conversation).await,
        ["ééééé", "0123456789"],
        "refused appends wrote messages"
    );

    // The server's own call records are not counted: task tools recording into the full
    // conversation still work, and their records land there.
    client
        .call_ok(
            "add_task",
            json!({ "title": "noted", "conversation_id": conversation }),
        )
        .await;
    let history = client
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": conversation }),
        )
        .await;
    let records = history["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "tool").count())
        .unwrap_or(0);
    assert!(
        records >= 1,
        "no call record in the full conversation: {history}"
    );

    if let TestDb::Pg(pg) = &db {
        let counted = pg
            .query_json(&format!(
                "SELECT message_count FROM conversations WHERE id = '{conversation}'"
            ))
            .await;
        assert_eq!(
            counted[0]["message_count"], 2,
            "the stored counter: {counted:?}"
        );
    }

    reliability::record(Evidence {
        class: &format!(
            "quota: messages per conversation and bytes per message ({})",
            db.name()
        ),
        test: "tests/it/quotas.rs",
        cases: refused,
        clear_errors: refused,
        writes_lost: 0,
        cross_user: 0,
        outcome: "quota_exceeded, nothing written; call records still kept",
    });
    client.close().await;
}

both_backends!(tasks_per_user, messages_per_conversation_and_bytes);

/// Concurrent adds racing for the last places: exactly the quota's worth succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_never_overshoot_the_quota() {
    let db = TestDb::new(support::Backend::Postgres).await;
    let quota = 5;
    let clients: Vec<McpClient> =
        futures_util::future::join_all((0..4).map(|_| serve(&db, quota, 100, 1000))).await;
    let calls = clients.iter().enumerate().flat_map(|(c, client)| {
        (0..4).map(move |n| async move {
            let result = client
                .call("add_task", json!({ "title": format!("racer {c}.{n}") }))
                .await;
            let text = support::mcp::result_text(&result);
            (result.is_error == Some(true), text)
        })
    });
    let outcomes = futures_util::future::join_all(calls).await;
    let succeeded = outcomes.iter().filter(|(failed, _)| !failed).count();
    for (failed, text) in &outcomes {
        if *failed {
            assert!(
                text.starts_with(QUOTA_ERROR),
                "a racer failed otherwise: {text}"
            );
        }
    }
    assert_eq!(succeeded, quota as usize, "successful adds: {outcomes:?}");
    let rows: Vec<Value> = db
        .as_pg()
        .query_json("SELECT count(*) AS n FROM tasks")
        .await;
    assert_eq!(rows[0]["n"], quota, "tasks stored");
    let counter = db
        .as_pg()
        .query_json("SELECT task_count FROM users WHERE id = 'local'")
        .await;
    assert_eq!(counter[0]["task_count"], quota, "the stored counter");
    for client in clients {
        client.close().await;
    }
}
