//! Migrations on both backends: up, down to zero, up again, redo; concurrent starts apply
//! each migration once; `--no-migrate` refuses an unmigrated database.

use crate::support;

use serde_json::json;
use std::process::{Command, Stdio};
use support::{Backend, PgTestDb, SqliteTestDb, TestDb, connect_in_process, todo_mcp};

/// A database with no migration applied.
async fn empty(backend: Backend) -> TestDb {
    match backend {
        Backend::Postgres => TestDb::Pg(PgTestDb::empty().await),
        Backend::Sqlite => TestDb::Sqlite(SqliteTestDb::new()),
    }
}

fn migrate(db: &TestDb, action: &[&str]) -> std::process::Output {
    let mut args = vec!["migrate"];
    args.extend_from_slice(action);
    let out = todo_mcp(&args, &[("DATABASE_URL", db.url())]);
    assert!(
        out.status.success(),
        "todo-mcp {args:?} failed on {}:\n{}",
        db.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `migrate status` as (state, name) pairs, oldest first.
fn status(db: &TestDb) -> Vec<(String, String)> {
    let out = migrate(db, &["status"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (state, name) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("unexpected status line {line:?}"));
            (state.to_owned(), name.to_owned())
        })
        .collect()
}

fn states(db: &TestDb) -> Vec<String> {
    status(db).into_iter().map(|(state, _)| state).collect()
}

/// Tables other than diesel's bookkeeping (PostgreSQL only).
async fn user_tables(db: &PgTestDb) -> Vec<String> {
    db.query_json(
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
         ORDER BY table_name",
    )
    .await
    .into_iter()
    .map(|row| row["table_name"].as_str().unwrap_or_default().to_owned())
    .collect()
}

async fn task_titles(db: &TestDb) -> Vec<String> {
    let client = connect_in_process(db.url(), None, &[]).await;
    let listed = client.call_ok("list_tasks", json!({})).await;
    client.close().await;
    listed["tasks"]
        .as_array()
        .expect("tasks is an array")
        .iter()
        .map(|t| t["title"].as_str().expect("title").to_owned())
        .collect()
}

async fn add_task(db: &TestDb, title: &str) {
    let client = connect_in_process(db.url(), None, &[]).await;
    client.call_ok("add_task", json!({ "title": title })).await;
    client.close().await;
}

async fn up_down_up(backend: Backend) {
    let db = empty(backend).await;
    let initial = status(&db);
    assert!(!initial.is_empty(), "no migrations listed");
    assert!(
        initial.iter().all(|(state, _)| state == "pending"),
        "{initial:?}"
    );

    let out = migrate(&db, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("applied"));
    assert!(states(&db).iter().all(|s| s == "applied"));
    if let TestDb::Pg(pg) = &db {
        assert_eq!(
            user_tables(pg).await,
            [
                "agent_states",
                "api_tokens",
                "conversations",
                "failure_budgets",
                "mcp_sessions",
                "messages",
                "server_secrets",
                "task_labels",
                "task_requests",
                "tasks",
                "turns",
                "users"
            ]
        );
    }
    add_task(&db, "written at version 1").await;
    assert_eq!(task_titles(&db).await, ["written at version 1"]);

    // Down, one migration at a time, to zero.
    for _ in 0..initial.len() {
        let out = migrate(&db, &["down"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("reverted"));
    }
    assert!(states(&db).iter().all(|s| s == "pending"));
    let out = migrate(&db, &["down"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no migration is applied"));
    if let TestDb::Pg(pg) = &db {
        assert_eq!(user_tables(pg).await, Vec::<String>::new());
    }

    // Up again: a working, empty schema.
    migrate(&db, &["run"]);
    assert!(states(&db).iter().all(|s| s == "applied"));
    assert_eq!(task_titles(&db).await, Vec::<String>::new());
    add_task(&db, "after the round trip").await;

    // Redo reverts and re-applies the latest migration.
    let out = migrate(&db, &["redo"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("reverted") && log.contains("applied"), "{log}");
    assert!(states(&db).iter().all(|s| s == "applied"));
    add_task(&db, "after redo").await;
    // Redo touched only the latest migration: rows of the tables before it survive.
    assert_eq!(
        task_titles(&db).await,
        ["after redo", "after the round trip"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_down_to_zero_up_again_on_postgres() {
    up_down_up(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_down_to_zero_up_again_on_sqlite() {
    up_down_up(Backend::Sqlite).await;
}

/// Several processes migrating one empty database at once: all succeed, and each migration
/// is applied exactly once (the others wait on the lock, then find nothing pending).
async fn concurrent_migrations(backend: Backend) {
    let db = empty(backend).await;
    let migration_count = status(&db).len();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(support::bin_path())
                .arg("migrate")
                .env("DATABASE_URL", db.url())
                .env_remove("TODO_MCP_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn todo-mcp migrate")
        })
        .collect();
    let mut applied_lines = 0;
    for child in children {
        let out = child.wait_with_output().expect("wait for todo-mcp migrate");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a concurrent migrate failed:\n{log}");
        applied_lines += log.lines().filter(|l| l.starts_with("applied ")).count();
    }
    assert_eq!(
        applied_lines, migration_count,
        "each migration applied once in all"
    );
    assert!(states(&db).iter().all(|s| s == "applied"));
    if let TestDb::Pg(pg) = &db {
        let rows = pg
            .query_json("SELECT count(*) AS n FROM __diesel_schema_migrations")
            .await;
        assert_eq!(rows[0]["n"], json!(migration_count));
    }

    // Two servers starting together on a fresh database both come up and serve.
    let fresh = empty(backend).await;
    let (first, second) = tokio::join!(
        connect_in_process(fresh.url(), None, &[]),
        connect_in_process(fresh.url(), None, &[])
    );
    first
        .call_ok("add_task", json!({ "title": "from the first" }))
        .await;
    second
        .call_ok("add_task", json!({ "title": "from the second" }))
        .await;
    let listed = first.call_ok("list_tasks", json!({})).await;
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(2));
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_apply_each_migration_once_on_postgres() {
    concurrent_migrations(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_apply_each_migration_once_on_sqlite() {
    concurrent_migrations(Backend::Sqlite).await;
}

async fn no_migrate_refuses_pending(backend: Backend) {
    let db = empty(backend).await;
    let out = todo_mcp(&["stdio", "--no-migrate"], &[("DATABASE_URL", db.url())]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "stdio --no-migrate served an unmigrated database"
    );
    assert!(log.contains("migrations pending"), "{log}");
    assert!(
        states(&db).iter().all(|s| s == "pending"),
        "--no-migrate migrated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_migrate_refuses_an_unmigrated_postgres() {
    no_migrate_refuses_pending(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_migrate_refuses_an_unmigrated_sqlite() {
    no_migrate_refuses_pending(Backend::Sqlite).await;
}

/// Every task of a user, subtasks included, as `list_tasks` shows them.
async fn every_task(client: &support::McpClient) -> serde_json::Value {
    client
        .call_ok("list_tasks", json!({ "status": "all", "limit": 100 }))
        .await["tasks"]
        .clone()
}

/// 000018 rebuilds SQLite's tasks, task_labels and task_requests under new keys (and
/// back): going down past it and up again keeps every task, label, subtask and request,
/// and the keys still act (a keyed add replays, deleting a parent deletes its subtask).
async fn the_tasks_rebuild_keeps_everything(backend: Backend) {
    let db = empty(backend).await;
    migrate(&db, &[]);
    let client = connect_in_process(db.url(), None, &[]).await;
    let keyed = json!({
        "title": "parent", "idempotency_key": "k-1", "labels": ["home", "Urgent"],
        "due": "2030-01-02", "priority": "high", "estimate_minutes": 30,
        "repeat": "FREQ=WEEKLY", "description": "with everything set"
    });
    let parent = client.call_ok("add_task", keyed.clone()).await["task"]["id"].clone();
    let child = client
        .call_ok(
            "add_task",
            json!({ "title": "child", "parent_task_id": parent, "labels": ["home"] }),
        )
        .await["task"]["id"]
        .clone();
    client
        .call_ok("complete_task", json!({ "task_id": child }))
        .await;
    client
        .call_ok("add_task", json!({ "title": "plain" }))
        .await;
    let before = every_task(&client).await;
    assert_eq!(before.as_array().map(Vec::len), Some(3), "{before}");
    client.close().await;

    let names = status(&db);
    let at = names
        .iter()
        .position(|(_, name)| name.ends_with("_tasks_keyed_by_user"))
        .expect("the tasks_keyed_by_user migration is listed");
    for _ in at..names.len() {
        migrate(&db, &["down"]);
    }
    // (A server would apply the migrations again on start: nothing reads in between.)
    assert_eq!(states(&db)[at], "pending");
    migrate(&db, &["run"]);

    let client = connect_in_process(db.url(), None, &[]).await;
    assert_eq!(every_task(&client).await, before, "after coming back up");
    let replay = client.call_ok("add_task", keyed).await;
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["task"]["id"], parent, "{replay}");
    let deleted = client
        .call_ok("delete_task", json!({ "task_id": parent }))
        .await;
    assert_eq!(deleted["subtasks_deleted"], 1, "{deleted}");
    let left = every_task(&client).await;
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["title"], "plain");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_rebuild_keeps_everything_on_sqlite() {
    the_tasks_rebuild_keeps_everything(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_rebuild_keeps_everything_on_postgres() {
    the_tasks_rebuild_keeps_everything(Backend::Postgres).await;
}
