//! Every column reads back as the field of its name, on both backends: rows whose
//! same-typed columns all hold different values (three distinct times on a task, title and
//! summary on a conversation, role and content on a message) come back through the tools
//! with each value in its own field. A row read by position from a schema whose columns
//! were declared in another order would swap them, and fail here.

use crate::support;

use serde_json::{Value, json};
use std::time::Duration;
use support::sql::texts;
use support::{TestDb, connect_in_process};

/// A pause that puts successive writes at different microseconds.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {value}"))
}

async fn one(db: &TestDb, select: &str) -> String {
    let rows = texts(db, select).await;
    assert_eq!(rows.len(), 1, "`{select}` gave {rows:?}");
    rows.into_iter().next().unwrap_or_default()
}

async fn columns_read_back_by_name(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;

    // A task whose created_at < completed_at < updated_at, and title != description.
    let added = client
        .call_ok(
            "add_task",
            json!({ "title": "the title", "description": "the description" }),
        )
        .await;
    let id = text(&added["task"], "id").to_owned();
    tick().await;
    client
        .call_ok("complete_task", json!({ "task_id": id }))
        .await;
    tick().await;
    client
        .call_ok("update_task", json!({ "task_id": id, "title": "renamed" }))
        .await;
    let task = client.call_ok("get_task", json!({ "task_id": id })).await["task"].clone();
    assert_eq!(
        one(
            &db,
            "SELECT CASE WHEN created_at < completed_at AND completed_at < updated_at \
             THEN 'ordered' ELSE 'not' END AS j FROM tasks",
        )
        .await,
        "ordered",
        "the database holds three distinct, ordered times"
    );
    let (created, completed, updated) = (
        text(&task, "created_at"),
        text(&task, "completed_at"),
        text(&task, "updated_at"),
    );
    assert!(
        created < completed && completed < updated,
        "created_at < completed_at < updated_at as stored, got {task}"
    );
    assert_eq!(
        text(&task, "created_at"),
        text(&added["task"], "created_at")
    );
    assert_eq!(
        text(&task, "title"),
        one(&db, "SELECT title AS j FROM tasks").await
    );
    assert_eq!(
        text(&task, "description"),
        one(&db, "SELECT description AS j FROM tasks").await
    );
    assert_eq!(
        (task["title"].clone(), task["completed"].clone()),
        (json!("renamed"), json!(true))
    );

    // A conversation with a title and a summary, archived after it was made.
    let started = client
        .call_ok("start_conversation", json!({ "title": "the conversation" }))
        .await;
    let conversation = text(&started["conversation"], "id").to_owned();
    let message = client
        .call_ok(
            "append_message",
            json!({ "conversation_id": conversation, "role": "assistant", "content": "the content" }),
        )
        .await["message"]
        .clone();
    tick().await;
    client
        .call_ok(
            "set_conversation_summary",
            json!({ "conversation_id": conversation, "summary": "the summary", "through_message_id": message["id"] }),
        )
        .await;
    tick().await;
    client
        .call_ok(
            "archive_conversation",
            json!({ "conversation_id": conversation }),
        )
        .await;
    let history = client
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": conversation }),
        )
        .await;
    let read = &history["conversation"];
    let select = |column: &str| {
        format!("SELECT {column} AS j FROM conversations WHERE title = 'the conversation'")
    };
    assert_eq!(text(read, "title"), one(&db, &select("title")).await);
    assert_eq!(text(read, "summary"), one(&db, &select("summary")).await);
    assert_eq!(text(read, "status"), "archived");
    assert_eq!(read["summary_through_message_id"], message["id"]);
    assert!(
        text(read, "created_at") < text(read, "archived_at"),
        "created before archived: {read}"
    );
    assert_eq!(
        text(read, "updated_at"),
        text(read, "archived_at"),
        "{read}"
    );

    let messages = history["messages"].as_array().expect("messages");
    let stored = messages
        .iter()
        .find(|m| m["id"] == message["id"])
        .unwrap_or_else(|| panic!("message {} not in {history}", message["id"]));
    assert_eq!(
        (text(stored, "role"), text(stored, "content")),
        ("assistant", "the content")
    );
    assert_eq!(text(stored, "conversation_id"), conversation);
    client.close().await;
}

both_backends!(columns_read_back_by_name);
