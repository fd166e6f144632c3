//! `todo-mcp user list` and `todo-mcp user delete`: erasing a user removes every row of
//! theirs in every table (found from the live schema, so a new table is covered), says
//! what it removed, and leaves other users untouched.

use crate::support;

use serde_json::{Value, json};
use support::cli::{self, create_token, todo_mcp, todo_mcp_ok};
use support::mcp::connect_in_process;
use support::{TestDb, sql};

both_backends!(deleting_a_user_removes_every_row_of_theirs_and_nothing_else);

async fn seed(db: &TestDb, user: &str) -> String {
    let token = create_token(db.url(), user);
    create_token(db.url(), user);
    let client = connect_in_process(db.url(), Some(&token), &[]).await;
    let task = client
        .call_ok("add_task", json!({"title": "milk", "labels": ["home"]}))
        .await;
    client
        .call_ok(
            "add_task",
            json!({"title": "oat", "parent_task_id": task["task"]["id"]}),
        )
        .await;
    let chat = client
        .call_ok("start_conversation", json!({"title": "chat"}))
        .await;
    let id = chat["conversation"]["id"].clone();
    client
        .call_ok(
            "append_message",
            json!({"conversation_id": id, "role": "user", "content": "hi"}),
        )
        .await;
    client
        .call_ok(
            "commit_turn",
            json!({"conversation_id": id, "idempotency_key": "t1",
                   "messages": [{"role": "assistant", "content": "hello"}], "state": {"n": 1}}),
        )
        .await;
    client.close().await;
    token
}

/// Every table with a `user_id` column, from the live schema.
async fn user_tables(db: &TestDb) -> Vec<String> {
    let select = match db {
        TestDb::Pg(_) => "SELECT table_name::text AS j FROM information_schema.columns \
                          WHERE table_schema = current_schema() AND column_name = 'user_id' \
                          ORDER BY 1"
            .to_owned(),
        TestDb::Sqlite(_) => {
            "SELECT m.name AS j FROM sqlite_master m, pragma_table_info(m.name) c \
                              WHERE m.type = 'table' AND c.name = 'user_id' ORDER BY 1"
                .to_owned()
        }
    };
    let tables = sql::texts(db, &select).await;
    assert!(tables.len() >= 8, "too few user tables found: {tables:?}");
    tables
}

/// `user`'s row count in every user table, and whether their users row exists.
async fn rows_of(db: &TestDb, user: &str) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in user_tables(db).await {
        let n = sql::texts(
            db,
            &format!("SELECT CAST(count(*) AS TEXT) AS j FROM {table} WHERE user_id = '{user}'"),
        )
        .await;
        counts.push((table, n[0].parse().expect("a count")));
    }
    let n = sql::texts(
        db,
        &format!("SELECT CAST(count(*) AS TEXT) AS j FROM users WHERE id = '{user}'"),
    )
    .await;
    counts.push(("users".into(), n[0].parse().expect("a count")));
    counts
}

fn json_out(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", cli::describe_output(out)))
}

async fn deleting_a_user_removes_every_row_of_theirs_and_nothing_else(db: TestDb) {
    let alice_token = seed(&db, "alice").await;
    seed(&db, "bob").await;
    let alice_before = rows_of(&db, "alice").await;
    let bob_before = rows_of(&db, "bob").await;
    let count = |rows: &[(String, i64)], table: &str| {
        rows.iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no table {table}"))
    };

    let listed = todo_mcp_ok(db.url(), &["user", "list"]);
    let listed: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["id"], "alice");
    assert_eq!(listed[0]["tasks"], 2);
    assert_eq!(listed[0]["active_tokens"], 2);
    assert_eq!(listed[1]["id"], "bob");

    // A dry run counts and removes nothing.
    let dry = json_out(&todo_mcp_ok(
        db.url(),
        &["user", "delete", "alice", "--dry-run"],
    ));
    assert_eq!(
        rows_of(&db, "alice").await,
        alice_before,
        "--dry-run removed rows"
    );

    let removed = json_out(&todo_mcp_ok(db.url(), &["user", "delete", "alice"]));
    assert_eq!(
        removed, dry,
        "the dry run must count what the deletion removes"
    );
    for (field, table) in [
        ("tasks", "tasks"),
        ("task_requests", "task_requests"),
        ("task_labels", "task_labels"),
        ("conversations", "conversations"),
        ("messages", "messages"),
        ("agent_states", "agent_states"),
        ("turns", "turns"),
        ("api_tokens", "api_tokens"),
        ("mcp_sessions", "mcp_sessions"),
        ("failure_budgets", "failure_budgets"),
    ] {
        assert_eq!(
            removed[field],
            count(&alice_before, table),
            "`user delete` must say how many {table} rows it removed: {removed}"
        );
    }
    assert!(count(&alice_before, "messages") > 0 && count(&alice_before, "api_tokens") == 2);

    let alice_after = rows_of(&db, "alice").await;
    assert!(
        alice_after.iter().all(|(_, n)| *n == 0),
        "rows of alice remain after `user delete`: {alice_after:?}"
    );
    assert_eq!(rows_of(&db, "bob").await, bob_before, "bob's rows changed");

    // Her token no longer works; a second delete says there is no such user.
    let refused = todo_mcp(
        &["stdio"],
        &[
            ("DATABASE_URL", db.url()),
            ("TODO_MCP_TOKEN", alice_token.as_str()),
        ],
    );
    assert!(
        !refused.status.success(),
        "a deleted user's token must be refused\n{}",
        cli::describe_output(&refused)
    );
    let again = todo_mcp(&["user", "delete", "alice"], &[("DATABASE_URL", db.url())]);
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not found"),
        "deleting an unknown user must fail saying so\n{}",
        cli::describe_output(&again)
    );
}
