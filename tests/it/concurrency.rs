//! Calls racing each other, through one server and through two: optimistic concurrency on
//! update_task, mutations of one task in parallel, appends to one conversation in parallel.
//! Both backends.

use crate::support;

use futures_util::future::join_all;
use serde_json::{Value, json};
use support::mcp::result_text;
use support::{McpClient, TestDb, connect_in_process};

async fn two_servers(db: &TestDb) -> (McpClient, McpClient) {
    let token = support::create_token(db.url(), "racer");
    tokio::join!(
        connect_in_process(db.url(), Some(&token), &[]),
        connect_in_process(db.url(), Some(&token), &[])
    )
}

/// The error kind of a failed result (`kind: message`), or "ok".
fn outcome(result: &rmcp::model::CallToolResult) -> String {
    if result.is_error != Some(true) {
        return "ok".into();
    }
    let text = result_text(result);
    text.split_once(": ")
        .map_or(text.clone(), |(kind, _)| kind.to_owned())
}

async fn stale_expected_updated_at_is_a_conflict(db: TestDb) {
    let token = support::create_token(db.url(), "racer");
    let client = connect_in_process(db.url(), Some(&token), &[]).await;
    let task = client.call_ok("add_task", json!({"title": "v1"})).await["task"].clone();
    let first_read = task["updated_at"].as_str().expect("updated_at").to_owned();

    let v2 = client
        .call_ok(
            "update_task",
            json!({"task_id": task["id"], "title": "v2", "expected_updated_at": first_read}),
        )
        .await["task"]
        .clone();
    assert_eq!(v2["title"], "v2");
    assert_ne!(v2["updated_at"], task["updated_at"]);

    // A writer still holding the first read loses, and changes nothing.
    let error = client
        .call_err(
            "update_task",
            json!({"task_id": task["id"], "title": "stale", "expected_updated_at": first_read}),
        )
        .await;
    assert!(error.starts_with("conflict: task "), "{error}");
    assert!(
        error.contains(v2["updated_at"].as_str().expect("time")),
        "{error}"
    );
    let listed = client.call_ok("list_tasks", json!({})).await;
    assert_eq!(listed["tasks"][0]["title"], "v2");

    let error = client
        .call_err(
            "update_task",
            json!({"task_id": task["id"], "title": "x", "expected_updated_at": "yesterday"}),
        )
        .await;
    assert!(
        error.starts_with("invalid_argument: invalid `expected_updated_at`"),
        "{error}"
    );

    let v3 = client
        .call_ok(
            "update_task",
            json!({"task_id": task["id"], "completed": true, "expected_updated_at": v2["updated_at"]}),
        )
        .await["task"]
        .clone();
    assert_eq!(
        (v3["title"].clone(), v3["completed"].clone()),
        (json!("v2"), json!(true))
    );
    client.close().await;
}

/// Ten writers read the same version and race to update it: exactly one wins.
async fn racing_optimistic_updates_let_exactly_one_win(db: TestDb) {
    let (a, b) = two_servers(&db).await;
    let task = a.call_ok("add_task", json!({"title": "contested"})).await["task"].clone();
    let read = task["updated_at"].clone();
    let calls = (0..10).map(|i| {
        let client = if i % 2 == 0 { &a } else { &b };
        let args = json!({"task_id": task["id"], "title": format!("writer {i}"), "expected_updated_at": read});
        async move { client.call("update_task", args).await }
    });
    let outcomes: Vec<String> = join_all(calls).await.iter().map(outcome).collect();
    let wins = outcomes.iter().filter(|o| *o == "ok").count();
    let conflicts = outcomes.iter().filter(|o| *o == "conflict").count();
    assert_eq!((wins, conflicts), (1, 9), "{outcomes:?}");
    let listed = a.call_ok("list_tasks", json!({})).await;
    let title = listed["tasks"][0]["title"].as_str().expect("title");
    assert!(title.starts_with("writer "), "{title}");
    a.close().await;
    b.close().await;
}

/// Completes, updates and one delete of one task, all at once from two servers: every call
/// either succeeds or finds the task deleted; exactly one delete succeeds; no other error.
async fn parallel_mutations_of_one_task(db: TestDb) {
    let (a, b) = two_servers(&db).await;
    let task = a.call_ok("add_task", json!({"title": "busy"})).await["task"].clone();
    let id = task["id"].clone();
    let calls = (0..24).map(|i| {
        let client = if i % 2 == 0 { &a } else { &b };
        let (tool, args) = match i % 4 {
            0 => ("complete_task", json!({"task_id": id})),
            1 => (
                "update_task",
                json!({"task_id": id, "title": format!("title {i}")}),
            ),
            2 => ("update_task", json!({"task_id": id, "completed": false})),
            _ if i == 11 => ("delete_task", json!({"task_id": id})),
            _ => (
                "update_task",
                json!({"task_id": id, "description": format!("d{i}")}),
            ),
        };
        async move { (tool, client.call(tool, args).await) }
    });
    let results = join_all(calls).await;
    for (tool, result) in &results {
        let outcome = outcome(result);
        assert!(
            outcome == "ok" || outcome == "not_found",
            "{tool} ended {outcome}: {}",
            result_text(result)
        );
    }
    let deletes: Vec<_> = results
        .iter()
        .filter(|(tool, _)| *tool == "delete_task")
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(outcome(&deletes[0].1), "ok");
    let listed = b.call_ok("list_tasks", json!({})).await;
    assert_eq!(listed["tasks"], json!([]));
    support::reliability::record(support::reliability::Evidence {
        class: &format!("parallel mutations of one task ({})", db.name()),
        test: "tests/it/concurrency.rs",
        cases: results.len(),
        clear_errors: results.len(),
        writes_lost: 0,
        cross_user: 0,
        outcome: "24 completes/updates/a delete at once from 2 servers: each succeeds or finds the task deleted; exactly one delete",
    });
    a.close().await;
    b.close().await;
}

/// 40 appends to one conversation from two servers at once: all stored, once each, ids
/// strictly increasing in history order, and times never going back as ids grow.
async fn parallel_appends_keep_one_order(db: TestDb) {
    let (a, b) = two_servers(&db).await;
    let conversation =
        a.call_ok("start_conversation", json!({})).await["conversation"]["id"].clone();
    let calls = (0..40).map(|i| {
        let client = if i % 2 == 0 { &a } else { &b };
        let args = json!({"conversation_id": conversation, "role": "user", "content": format!("message {i}")});
        async move { client.call_ok("append_message", args).await["message"].clone() }
    });
    let acknowledged: Vec<Value> = join_all(calls).await;
    let history = a
        .call_ok(
            "get_conversation_history",
            json!({"conversation_id": conversation, "limit": 200}),
        )
        .await;
    let messages = history["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 40);
    let ids: Vec<i64> = messages
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let times: Vec<&str> = messages
        .iter()
        .map(|m| m["created_at"].as_str().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let mut acknowledged_ids: Vec<i64> = acknowledged
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect();
    acknowledged_ids.sort();
    assert_eq!(
        acknowledged_ids, ids,
        "what was acknowledged is what is stored"
    );
    support::reliability::record(support::reliability::Evidence {
        class: &format!("parallel appends to one conversation ({})", db.name()),
        test: "tests/it/concurrency.rs",
        cases: acknowledged.len(),
        clear_errors: acknowledged.len(),
        writes_lost: acknowledged.len() - messages.len().min(acknowledged.len()),
        cross_user: 0,
        outcome: "40 appends at once from 2 servers: all stored once, ids strictly increasing in commit order",
    });
    a.close().await;
    b.close().await;
}

/// 20 add_task calls with one idempotency_key at once from two servers: all succeed with
/// the same task, and exactly one task exists.
async fn parallel_adds_with_one_key_make_one_task(db: TestDb) {
    let (a, b) = two_servers(&db).await;
    let calls = (0..20).map(|i| {
        let client = if i % 2 == 0 { &a } else { &b };
        let args = json!({"title": "water the plants", "idempotency_key": "turn-7"});
        async move { client.call_ok("add_task", args).await["task"]["id"].clone() }
    });
    let ids: Vec<Value> = join_all(calls).await;
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "different tasks: {ids:?}"
    );
    let listed = a.call_ok("list_tasks", json!({})).await;
    let tasks = listed["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1, "{listed}");
    assert_eq!(tasks[0]["id"], ids[0]);
    support::reliability::record(support::reliability::Evidence {
        class: &format!("parallel idempotent adds with one key ({})", db.name()),
        test: "tests/it/concurrency.rs",
        cases: ids.len(),
        clear_errors: ids.len(),
        writes_lost: 0,
        cross_user: 0,
        outcome: "20 add_task with one idempotency_key at once from 2 servers: one task, every call answers with it",
    });
    a.close().await;
    b.close().await;
}

both_backends!(
    parallel_adds_with_one_key_make_one_task,
    stale_expected_updated_at_is_a_conflict,
    racing_optimistic_updates_let_exactly_one_win,
    parallel_mutations_of_one_task,
    parallel_appends_keep_one_order,
);
