//! Migrations under deployment (issue #4), on both backends:
//!
//! * **Rollback on a populated database**: data written through the real server (tasks, some
//!   completed and with idempotency keys; conversations with messages of every role, a
//!   summary, an archived one; users; API tokens, one revoked; an HTTP session) survives
//!   `migrate down` of the latest migrations in every column the older schema still has, and
//!   `migrate run` again brings back the same rows, which the server then serves. Each
//!   trailing migration that does not create a user-data table is reverted in turn, so a new
//!   latest migration is covered without this file knowing what it does.
//! * **A failed migration leaves the schema as it was**: the newest migration that can be made
//!   to fail part-way (normally the latest; a no-op such as SQLite's row-level-security
//!   placeholder is skipped) gets an object it creates after its first statement planted
//!   beforehand, chosen by reading its `up.sql`; `migrate` then fails naming it, the schema is
//!   unchanged, the migration is still pending, a replica starting meanwhile refuses to serve,
//!   and once the obstacle is removed it applies.
//! * **Concurrent replica starts**: several `todo-mcp stdio` and `todo-mcp http` processes
//!   started at once on an empty database apply each migration exactly once, and all serve.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::jsonrpc::{self, Reply, initialize, initialized, mcp_request};
use support::reliability::{Evidence, record};
use support::sql::{execute, texts};
use support::{
    Backend, PgTestDb, SqliteTestDb, TOOL_NAMES, TestDb, connect_stdio, create_token,
    expect_stdio_exit, start_http, todo_mcp,
};

const TEST_FILE: &str = "tests/it/migrations_deploy.rs";

/// The tables holding what users wrote. A migration that creates one of them cannot be
/// reverted without losing that data by definition, so the rollback test stops above it.
const USER_DATA_TABLES: [&str; 5] = ["users", "api_tokens", "tasks", "conversations", "messages"];

/// How many replicas the concurrent-start test launches at once, per kind.
const STDIO_REPLICAS: usize = 4;
const HTTP_REPLICAS: usize = 2;

// =============================================================================================
// `todo-mcp migrate` and the migrations on disk
// =============================================================================================

/// A database with no migration applied (not even diesel's bookkeeping table).
async fn empty(backend: Backend) -> TestDb {
    match backend {
        Backend::Postgres => TestDb::Pg(PgTestDb::empty().await),
        Backend::Sqlite => TestDb::Sqlite(SqliteTestDb::new()),
    }
}

/// A fully migrated database.
async fn migrated(backend: Backend) -> TestDb {
    let db = TestDb::new(backend).await;
    db.migrate();
    db
}

/// `todo-mcp migrate ACTION`, exit status unchecked.
fn migrate_cmd(db: &TestDb, action: &[&str]) -> Output {
    let mut args = vec!["migrate"];
    args.extend_from_slice(action);
    todo_mcp(&args, &[("DATABASE_URL", db.url())])
}

/// `todo-mcp migrate ACTION`, which must succeed; returns its stderr (where it reports).
fn migrate_ok(db: &TestDb, action: &[&str]) -> String {
    let out = migrate_cmd(db, action);
    assert!(
        out.status.success(),
        "todo-mcp migrate {action:?} failed on {}:\n{}",
        db.name(),
        support::cli::describe_output(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `migrate status` as (applied, name) pairs, oldest first.
fn status(db: &TestDb) -> Vec<(bool, String)> {
    let out = migrate_cmd(db, &["status"]);
    assert!(
        out.status.success(),
        "todo-mcp migrate status failed on {}:\n{}",
        db.name(),
        support::cli::describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| match line.split_once('\t') {
            Some(("applied", name)) => (true, name.to_owned()),
            Some(("pending", name)) => (false, name.to_owned()),
            _ => panic!("unexpected `migrate status` line {line:?}"),
        })
        .collect()
}

/// The names of the migrations, asserting they are all applied.
fn all_applied(db: &TestDb) -> Vec<String> {
    let listed = status(db);
    assert!(!listed.is_empty(), "`migrate status` lists no migration");
    assert!(
        listed.iter().all(|(applied, _)| *applied),
        "{}: expected every migration applied, `migrate status` says {listed:?}",
        db.name()
    );
    listed.into_iter().map(|(_, name)| name).collect()
}

/// `migrations/<backend>/`, whose directories the binary embeds.
fn migrations_dir(backend: Backend) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend.name())
}

/// Migration names from the source tree, oldest first (without touching any database).
fn migration_names_on_disk(backend: Backend) -> Vec<String> {
    let dir = migrations_dir(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| {
            let entry = entry.ok()?;
            entry
                .path()
                .join("up.sql")
                .is_file()
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no migrations under {}", dir.display());
    names
}

/// The binary's migrations (from `migrate status`) must be those in the source tree: this file
/// reads their SQL from there. `embed_migrations!` cannot tell cargo to rebuild when a
/// migration directory is added or renamed, so a stale binary is a real possibility.
fn assert_binary_matches_disk(backend: Backend, embedded: &[String]) {
    let on_disk = migration_names_on_disk(backend);
    assert_eq!(
        embedded,
        on_disk.as_slice(),
        "{}: the binary embeds other migrations than {} holds: a stale build? \
         (`embed_migrations!` does not make cargo rebuild when a migration directory is added \
         or renamed; a build.rs printing `cargo:rerun-if-changed=migrations` does)",
        backend.name(),
        migrations_dir(backend).display()
    );
}

/// The version diesel records for a migration directory name (`2026-11-24-000001_initial` ->
/// `20261124000001`).
fn diesel_version(name: &str) -> String {
    name.split('_').next().unwrap_or(name).replace('-', "")
}

fn up_sql(backend: Backend, name: &str) -> String {
    let path = migrations_dir(backend).join(name).join("up.sql");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// =============================================================================================
// SQL on either backend
// =============================================================================================

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// User tables (not diesel's bookkeeping), sorted. SQLite's full-text index (an FTS5
/// virtual table and its shadow tables) is left out: it is derived from `messages`, and
/// rebuilt from them by the migration that creates it, not data of its own.
async fn tables(db: &TestDb) -> Vec<String> {
    let select = match db.backend() {
        Backend::Postgres => {
            "SELECT table_name::text AS j FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
             AND table_name <> '__diesel_schema_migrations'"
        }
        Backend::Sqlite => {
            "SELECT name AS j FROM sqlite_master t WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '__diesel_schema_migrations' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' \
             AND NOT EXISTS (SELECT 1 FROM sqlite_master v WHERE v.type = 'table' \
                 AND v.sql LIKE 'CREATE VIRTUAL TABLE%' AND t.name LIKE v.name || '\\_%' ESCAPE '\\')"
        }
    };
    let mut names = texts(db, select).await;
    names.sort();
    names
}

/// A table's columns in declaration order.
async fn columns(db: &TestDb, table: &str) -> Vec<String> {
    let select = match db.backend() {
        Backend::Postgres => format!(
            "SELECT column_name::text AS j FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = {} ORDER BY ordinal_position",
            quote_literal(table)
        ),
        Backend::Sqlite => format!(
            "SELECT name AS j FROM pragma_table_info({}) ORDER BY cid",
            quote_literal(table)
        ),
    };
    texts(db, &select).await
}

/// Every row of a table as a JSON object of all its columns (PostgreSQL: `row_to_json`, so
/// bytea is `"\\x…"`; SQLite: blobs as `x'…'` hex strings).
async fn rows(db: &TestDb, table: &str, cols: &[String]) -> Vec<Value> {
    match db {
        TestDb::Pg(pg) => {
            pg.query_json(&format!("SELECT * FROM {}", quote_ident(table)))
                .await
        }
        TestDb::Sqlite(_) => {
            let fields: Vec<String> = cols
                .iter()
                .map(|c| {
                    let q = quote_ident(c);
                    format!(
                        "{}, CASE WHEN typeof({q}) = 'blob' THEN 'x''' || hex({q}) || '''' ELSE {q} END",
                        quote_literal(c)
                    )
                })
                .collect();
            let select = format!(
                "SELECT json_object({}) AS j FROM {}",
                fields.join(", "),
                quote_ident(table)
            );
            texts(db, &select)
                .await
                .into_iter()
                .map(|text| {
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("json_object gave invalid JSON ({e}): {text}"))
                })
                .collect()
        }
    }
}

// =============================================================================================
// Snapshots of user data
// =============================================================================================

/// All user data: every table's columns and rows.
#[derive(Debug, Clone)]
struct Snapshot {
    columns: BTreeMap<String, Vec<String>>,
    rows: BTreeMap<String, Vec<Value>>,
}

impl Snapshot {
    fn rows(&self, table: &str) -> &[Value] {
        self.rows.get(table).map_or(&[], Vec::as_slice)
    }
}

async fn snapshot(db: &TestDb) -> Snapshot {
    let mut snap = Snapshot {
        columns: BTreeMap::new(),
        rows: BTreeMap::new(),
    };
    for table in tables(db).await {
        let cols = columns(db, &table).await;
        let data = rows(db, &table, &cols).await;
        snap.columns.insert(table.clone(), cols);
        snap.rows.insert(table, data);
    }
    snap
}

/// What comparing two snapshots found.
#[derive(Debug, Default)]
struct Diff {
    /// Rows of `before` compared.
    compared: usize,
    /// Rows of `before` (projected) not found in `after`, per table.
    missing: Vec<String>,
    /// Rows of `after` (projected) not in `before`: with `missing`, shows changed values.
    extra: Vec<String>,
}

impl Diff {
    fn absorb(&mut self, other: Diff) {
        self.compared += other.compared;
        self.missing.extend(other.missing);
        self.extra.extend(other.extra);
    }

    fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }

    fn report(&self) -> String {
        let show = |rows: &[String]| {
            let mut text: String = rows.iter().take(20).map(|r| format!("  {r}\n")).collect();
            if rows.len() > 20 {
                text.push_str(&format!("  ... and {} more\n", rows.len() - 20));
            }
            text
        };
        format!(
            "{} of {} rows missing or changed:\n{}rows found instead:\n{}",
            self.missing.len(),
            self.compared,
            show(&self.missing),
            show(&self.extra)
        )
    }
}

/// Compares the tables of `scope` in `before` and `after`, on the columns `scope` names that
/// both snapshots have. A table of `scope` that `after` lacks counts all its rows missing.
fn compare(before: &Snapshot, after: &Snapshot, scope: &BTreeMap<String, Vec<String>>) -> Diff {
    let mut diff = Diff::default();
    for (table, scope_cols) in scope {
        let Some(before_rows) = before.rows.get(table) else {
            continue;
        };
        let before_cols = &before.columns[table];
        diff.compared += before_rows.len();
        let Some(after_cols) = after.columns.get(table) else {
            diff.missing.extend(
                before_rows
                    .iter()
                    .map(|row| format!("{table} (table gone): {row}")),
            );
            continue;
        };
        let cols: Vec<&String> = scope_cols
            .iter()
            .filter(|c| before_cols.contains(c) && after_cols.contains(c))
            .collect();
        let project = |row: &Value| -> String {
            let values: Vec<String> = cols
                .iter()
                .map(|c| format!("{c}={}", row.get(c.as_str()).unwrap_or(&Value::Null)))
                .collect();
            format!("{table} {{{}}}", values.join(", "))
        };
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        for row in after.rows(table) {
            *remaining.entry(project(row)).or_default() += 1;
        }
        for row in before_rows {
            let key = project(row);
            match remaining.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => diff.missing.push(key),
            }
        }
        diff.extra.extend(
            remaining
                .into_iter()
                .flat_map(|(key, n)| std::iter::repeat_n(key, n)),
        );
    }
    diff
}

// =============================================================================================
// Populating a database through the real server
// =============================================================================================

/// What `populate` wrote that the checks need to find again.
struct Fixture {
    alice_token: String,
    planning: String,
}

/// Writes a realistic mix of data through `todo-mcp` itself: the CLI for tokens, MCP over
/// stdio for tasks and conversations (for the local user and for alice, by token), and an HTTP
/// `--sessions` session.
async fn populate(db: &TestDb) -> Fixture {
    let url = db.url();

    // Tokens: alice's (used below), a named expiring one, and bob's, revoked.
    let alice_token = create_token(url, "alice");
    support::cli::create_token_with(url, "alice", &["--name", "ci", "--expires-in", "30"]);
    support::cli::create_token_with(url, "bob", &["--name", "old laptop"]);
    let listed = support::cli::todo_mcp_ok(url, &["token", "list", "--user", "bob"]);
    let bob_tokens: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("`token list` prints JSON lines"))
        .collect();
    assert_eq!(bob_tokens.len(), 1, "bob's tokens: {bob_tokens:?}");
    let bob_token_id = bob_tokens[0]["id"].as_str().expect("token id").to_owned();
    support::cli::todo_mcp_ok(url, &["token", "revoke", &bob_token_id]);

    // The local user, over stdio.
    let local = connect_stdio(url, None, &[]).await;
    let planning = local
        .call_ok("start_conversation", json!({ "title": "weekly planning" }))
        .await["conversation"]["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    let mut message_ids = Vec::new();
    for (role, content) in [
        ("system", "You keep the user's shopping list."),
        (
            "user",
            "Add milk and bread, and remind me about the dentist.",
        ),
        (
            "assistant",
            "Added milk and bread; the dentist is on Thursday.",
        ),
    ] {
        let message = local
            .call_ok(
                "append_message",
                json!({ "conversation_id": planning, "role": role, "content": content }),
            )
            .await;
        message_ids.push(message["message"]["id"].as_i64().expect("message id"));
    }
    let milk_args = json!({
        "title": "milk",
        "conversation_id": planning,
        "idempotency_key": "turn-1-milk",
    });
    let milk = local.call_ok("add_task", milk_args.clone()).await["task"]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    let retried = local.call_ok("add_task", milk_args).await;
    assert_eq!(
        retried["task"]["id"], milk,
        "an idempotent retry must return the first task"
    );
    let bread = local
        .call_ok(
            "add_task",
            json!({ "title": "bread", "description": "wholemeal, sliced",
                    "idempotency_key": "turn-1-bread" }),
        )
        .await["task"]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    let dentist = local
        .call_ok(
            "add_task",
            json!({ "title": "Zahnarzt: Termin bestätigen ☎", "description": "Donnerstag 9:30" }),
        )
        .await["task"]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    local
        .call_ok("add_task", json!({ "title": "water the plants" }))
        .await;
    let doomed = local
        .call_ok("add_task", json!({ "title": "typo, delete me" }))
        .await["task"]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    local
        .call_ok(
            "complete_task",
            json!({ "task_id": milk, "conversation_id": planning }),
        )
        .await;
    local
        .call_ok(
            "update_task",
            json!({ "task_id": bread, "completed": true }),
        )
        .await;
    local
        .call_ok(
            "update_task",
            json!({ "task_id": dentist, "title": "Zahnarzt: Termin bestätigt ☎" }),
        )
        .await;
    local
        .call_ok("delete_task", json!({ "task_id": doomed }))
        .await;
    local
        .call_ok(
            "set_conversation_summary",
            json!({ "conversation_id": planning,
                    "summary": "Shopping: milk, bread. Dentist Thursday.",
                    "through_message_id": message_ids[2] }),
        )
        .await;
    let old = local
        .call_ok("start_conversation", json!({ "title": "last month" }))
        .await["conversation"]["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    local
        .call_ok(
            "append_message",
            json!({ "conversation_id": old, "role": "user", "content": "done with this" }),
        )
        .await;
    local
        .call_ok("archive_conversation", json!({ "conversation_id": old }))
        .await;
    local.call_ok("start_conversation", json!({})).await;
    local
        .call_ok("list_tasks", json!({ "status": "completed" }))
        .await;
    local.close().await;

    // Alice, by token.
    let alice = connect_stdio(url, Some(&alice_token), &[]).await;
    let chat = alice
        .call_ok("start_conversation", json!({ "title": "alice's chat" }))
        .await["conversation"]["id"]
        .as_str()
        .expect("conversation id")
        .to_owned();
    alice
        .call_ok(
            "append_message",
            json!({ "conversation_id": chat, "role": "user", "content": "book flights" }),
        )
        .await;
    let flights = alice
        .call_ok(
            "add_task",
            json!({ "title": "book flights", "conversation_id": chat,
                    "idempotency_key": "alice-turn-1" }),
        )
        .await["task"]["id"]
        .as_str()
        .expect("task id")
        .to_owned();
    alice
        .call_ok("add_task", json!({ "title": "renew passport" }))
        .await;
    alice
        .call_ok("complete_task", json!({ "task_id": flights }))
        .await;
    alice.close().await;

    // An HTTP session of alice's (rows in mcp_sessions).
    let server = start_http(url, &["--sessions"], &[]).await;
    let mcp = server.mcp_url();
    let opened = Reply::read(
        mcp_request(&mcp, Some(&alice_token))
            .body(initialize(1).to_string())
            .send()
            .await
            .expect("POST initialize"),
    )
    .await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.body);
    let session = opened
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("initialize with --sessions returns an Mcp-Session-Id")
        .to_owned();
    let done = Reply::read(
        mcp_request(&mcp, Some(&alice_token))
            .header("mcp-session-id", &session)
            .body(initialized().to_string())
            .send()
            .await
            .expect("POST initialized"),
    )
    .await;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
    server.kill().await;

    Fixture {
        alice_token,
        planning,
    }
}

/// The populated data really is varied: otherwise "nothing lost" would prove little.
fn assert_populated(snap: &Snapshot, backend: Backend) {
    let count = |table: &str, pred: &dyn Fn(&Value) -> bool| -> usize {
        snap.rows(table).iter().filter(|r| pred(r)).count()
    };
    let truthy = |v: &Value| v == &json!(true) || v == &json!(1);
    let checks: [(&str, usize); 10] = [
        ("users", count("users", &|_| true)),
        (
            "completed tasks",
            count("tasks", &|r| truthy(&r["completed"])),
        ),
        ("open tasks", count("tasks", &|r| !truthy(&r["completed"]))),
        (
            "tasks with idempotency keys",
            count("tasks", &|r| !r["idempotency_key"].is_null()),
        ),
        (
            "archived conversations",
            count("conversations", &|r| r["status"] == "archived"),
        ),
        (
            "conversation summaries",
            count("conversations", &|r| !r["summary"].is_null()),
        ),
        (
            "revoked tokens",
            count("api_tokens", &|r| !r["revoked_at"].is_null()),
        ),
        (
            "tokens with expiry",
            count("api_tokens", &|r| !r["expires_at"].is_null()),
        ),
        ("tool records", count("messages", &|r| r["role"] == "tool")),
        ("mcp sessions", count("mcp_sessions", &|_| true)),
    ];
    for (what, n) in checks {
        assert!(
            n > 0,
            "{}: the populated database has no {what}",
            backend.name()
        );
    }
    for role in ["user", "assistant", "system", "tool"] {
        assert!(
            count("messages", &|r| r["role"] == role) > 0,
            "{}: no message with role {role}",
            backend.name()
        );
    }
}

/// The server, on the data after the round trip: each user's tasks are exactly those in the
/// snapshot, the planning conversation's history and summary are intact, alice's token still
/// authenticates, and a write succeeds.
async fn server_serves_old_data(db: &TestDb, snap: &Snapshot, fixture: &Fixture) {
    let ids_of = |user: &str| -> BTreeSet<String> {
        snap.rows("tasks")
            .iter()
            .filter(|r| r["user_id"] == user)
            .map(|r| r["id"].as_str().expect("task id").to_owned())
            .collect()
    };
    let listed_ids = |listed: &Value| -> BTreeSet<String> {
        assert!(
            listed["next_cursor"].is_null(),
            "more than one page: {listed}"
        );
        listed["tasks"]
            .as_array()
            .expect("tasks array")
            .iter()
            .map(|t| t["id"].as_str().expect("task id").to_owned())
            .collect()
    };

    let local = connect_stdio(db.url(), None, &[]).await;
    let listed = local
        .call_ok("list_tasks", json!({ "status": "all", "limit": 200 }))
        .await;
    assert_eq!(
        listed_ids(&listed),
        ids_of("local"),
        "{}: list_tasks after the round trip",
        db.name()
    );
    let history = local
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": fixture.planning, "limit": 200 }),
        )
        .await;
    let served: Vec<i64> = history["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["id"].as_i64().expect("message id"))
        .collect();
    let mut stored: Vec<i64> = snap
        .rows("messages")
        .iter()
        .filter(|m| m["conversation_id"] == fixture.planning.as_str())
        .map(|m| m["id"].as_i64().expect("message id"))
        .collect();
    stored.sort_unstable();
    assert_eq!(served, stored, "{}: planning history", db.name());
    let summary = snap
        .rows("conversations")
        .iter()
        .find(|c| c["id"] == fixture.planning.as_str())
        .map(|c| c["summary"].clone())
        .expect("planning conversation in the snapshot");
    assert_eq!(
        history["summary"],
        summary,
        "{}: planning summary",
        db.name()
    );
    local
        .call_ok("add_task", json!({ "title": "after the round trip" }))
        .await;
    local.close().await;

    let alice = connect_stdio(db.url(), Some(&fixture.alice_token), &[]).await;
    let listed = alice
        .call_ok("list_tasks", json!({ "status": "all", "limit": 200 }))
        .await;
    assert_eq!(
        listed_ids(&listed),
        ids_of("alice"),
        "{}: alice's tasks",
        db.name()
    );
    alice.close().await;
}

// =============================================================================================
// Reading migrations' SQL
// =============================================================================================

/// The statements of a SQL script, in order, with comments removed. Knows strings, quoted
/// identifiers, dollar quoting and SQLite trigger bodies (`BEGIN … END`).
pub(crate) fn split_sql(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            current.push(' ');
            continue;
        }
        if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
            current.push(' ');
            continue;
        }
        if matches!(c, '\'' | '"' | '`') {
            current.push(c);
            i += 1;
            while i < chars.len() {
                current.push(chars[i]);
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        current.push(c);
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '$' {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let is_tag = j < chars.len()
                && chars[j] == '$'
                && !chars.get(i + 1).is_some_and(char::is_ascii_digit);
            if is_tag {
                let tag: String = chars[i..=j].iter().collect();
                let rest: String = chars[j + 1..].iter().collect();
                let body_len = rest.find(&tag).map_or(rest.len(), |n| n + tag.len());
                current.push_str(&tag);
                current.push_str(&rest[..body_len]);
                i = j + 1 + rest[..body_len].chars().count();
                continue;
            }
        }
        if c == ';' && !in_trigger_body(&current) {
            let statement = current.trim();
            if !statement.is_empty() {
                statements.push(statement.to_owned());
            }
            current.clear();
        } else {
            current.push(c);
        }
        i += 1;
    }
    let statement = current.trim();
    if !statement.is_empty() {
        statements.push(statement.to_owned());
    }
    statements
}

/// Inside `CREATE TRIGGER … BEGIN` before its `END` (SQLite), where `;` ends no statement.
fn in_trigger_body(statement: &str) -> bool {
    let words = keywords(statement);
    let is_trigger = words.first().is_some_and(|w| w == "CREATE")
        && words.iter().skip(1).take(2).any(|w| w == "TRIGGER");
    is_trigger && words.iter().any(|w| w == "BEGIN") && words.last().is_none_or(|w| w != "END")
}

/// A statement's words, upper-cased (strings and quoted identifiers dropped): good enough to
/// recognise keywords.
fn keywords(statement: &str) -> Vec<String> {
    tokens(statement)
        .into_iter()
        .filter_map(|t| match t {
            Token::Word(w) => Some(w.to_uppercase()),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An unquoted word, as written.
    Word(String),
    /// A `"quoted"` (or backquoted) identifier, unquoted.
    Quoted(String),
    /// A string literal.
    Str,
    Punct(char),
}

fn tokens(statement: &str) -> Vec<Token> {
    let chars: Vec<char> = statement.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else if matches!(c, '"' | '`' | '\'') {
            let mut text = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        text.push(c);
                        i += 2;
                        continue;
                    }
                    break;
                }
                text.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(if c == '\'' {
                Token::Str
            } else {
                Token::Quoted(text)
            });
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// An object a migration statement creates by name, which a same-named object planted
/// beforehand makes fail.
#[derive(Debug, Clone, PartialEq)]
enum Created {
    /// A table, index, view, sequence or type: these share one namespace with tables
    /// (PostgreSQL: `pg_class`/`pg_type`; SQLite: tables, indexes and views).
    Relation { kind: String, name: String },
    /// `ALTER TABLE t ADD [COLUMN] c`.
    Column { table: String, column: String },
    /// `ALTER TABLE t ADD CONSTRAINT c` (PostgreSQL).
    Constraint { table: String, name: String },
    /// `CREATE POLICY p ON t` (PostgreSQL).
    Policy { table: String, name: String },
}

impl Created {
    /// The name the planted object shares with it (which the error message will quote).
    fn name(&self) -> &str {
        match self {
            Created::Relation { name, .. }
            | Created::Constraint { name, .. }
            | Created::Policy { name, .. } => name,
            Created::Column { column, .. } => column,
        }
    }

    fn describe(&self) -> String {
        match self {
            Created::Relation { kind, name } => format!("{} {name}", kind.to_lowercase()),
            Created::Column { table, column } => format!("column {table}.{column}"),
            Created::Constraint { table, name } => format!("constraint {name} on {table}"),
            Created::Policy { table, name } => format!("policy {name} on {table}"),
        }
    }

    /// SQL creating a conflicting object, and SQL removing it again.
    fn plant(&self) -> (String, String) {
        match self {
            Created::Relation { name, .. } => (
                format!("CREATE TABLE {} (planted integer)", quote_ident(name)),
                format!("DROP TABLE {}", quote_ident(name)),
            ),
            Created::Column { table, column } => (
                format!(
                    "ALTER TABLE {} ADD COLUMN {} integer",
                    quote_ident(table),
                    quote_ident(column)
                ),
                format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    quote_ident(table),
                    quote_ident(column)
                ),
            ),
            Created::Constraint { table, name } => (
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} CHECK (true)",
                    quote_ident(table),
                    quote_ident(name)
                ),
                format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    quote_ident(table),
                    quote_ident(name)
                ),
            ),
            Created::Policy { table, name } => (
                format!(
                    "CREATE POLICY {} ON {} USING (true)",
                    quote_ident(name),
                    quote_ident(table)
                ),
                format!(
                    "DROP POLICY {} ON {}",
                    quote_ident(name),
                    quote_ident(table)
                ),
            ),
        }
    }
}

/// A name at `tokens[i]` (possibly schema-qualified: the last part), folded as the database
/// folds unquoted identifiers, and the index after it.
fn parse_name(tokens: &[Token], mut i: usize) -> Option<(String, usize)> {
    loop {
        let name = match tokens.get(i)? {
            Token::Word(w) => w.to_lowercase(),
            Token::Quoted(q) => q.clone(),
            _ => return None,
        };
        i += 1;
        if tokens.get(i) == Some(&Token::Punct('.')) {
            i += 1;
        } else {
            return Some((name, i));
        }
    }
}

/// The named object a statement creates that a pre-existing object of the same name would
/// make fail; `None` for statements that cannot conflict that way (`IF NOT EXISTS`,
/// `OR REPLACE`, unnamed indexes, data changes, ...).
fn created_object(statement: &str) -> Option<Created> {
    let toks = tokens(statement);
    let kw = |i: usize| match toks.get(i) {
        Some(Token::Word(w)) => w.to_uppercase(),
        _ => String::new(),
    };
    let if_not_exists = |i: usize| kw(i) == "IF" && kw(i + 1) == "NOT" && kw(i + 2) == "EXISTS";
    match kw(0).as_str() {
        "CREATE" => {
            let mut i = 1;
            if kw(i) == "OR" {
                return None; // OR REPLACE never conflicts
            }
            while matches!(
                kw(i).as_str(),
                "UNIQUE" | "TEMP" | "TEMPORARY" | "UNLOGGED" | "GLOBAL" | "LOCAL"
            ) {
                i += 1;
            }
            let kind = match kw(i).as_str() {
                "MATERIALIZED" if kw(i + 1) == "VIEW" => {
                    i += 1;
                    "MATERIALIZED VIEW".to_owned()
                }
                k @ ("TABLE" | "INDEX" | "VIEW" | "SEQUENCE" | "TYPE" | "POLICY") => k.to_owned(),
                _ => return None,
            };
            i += 1;
            if kind == "INDEX" && kw(i) == "CONCURRENTLY" {
                i += 1;
            }
            if if_not_exists(i) || (kind == "INDEX" && kw(i) == "ON") {
                return None;
            }
            let (name, after) = parse_name(&toks, i)?;
            if kind == "POLICY" {
                if kw(after) != "ON" {
                    return None;
                }
                let (table, _) = parse_name(&toks, after + 1)?;
                return Some(Created::Policy { table, name });
            }
            Some(Created::Relation { kind, name })
        }
        "ALTER" if kw(1) == "TABLE" => {
            let mut i = 2;
            if kw(i) == "IF" && kw(i + 1) == "EXISTS" {
                i += 2;
            }
            if kw(i) == "ONLY" {
                i += 1;
            }
            let (table, mut i) = parse_name(&toks, i)?;
            if kw(i) != "ADD" {
                return None;
            }
            i += 1;
            match kw(i).as_str() {
                "CONSTRAINT" => {
                    let (name, _) = parse_name(&toks, i + 1)?;
                    Some(Created::Constraint { table, name })
                }
                "PRIMARY" | "UNIQUE" | "CHECK" | "FOREIGN" | "EXCLUDE" => None,
                _ => {
                    if kw(i) == "COLUMN" {
                        i += 1;
                    }
                    if if_not_exists(i) {
                        return None;
                    }
                    let (column, _) = parse_name(&toks, i)?;
                    Some(Created::Column { table, column })
                }
            }
        }
        _ => None,
    }
}

/// Tables a migration's `up.sql` creates (by `CREATE TABLE`, with or without `IF NOT EXISTS`).
fn created_tables(sql: &str) -> BTreeSet<String> {
    split_sql(sql)
        .iter()
        .filter_map(|statement| {
            let toks = tokens(statement);
            let words = keywords(statement);
            let create_table = words.first().is_some_and(|w| w == "CREATE")
                && words.iter().skip(1).take(3).any(|w| w == "TABLE");
            if !create_table {
                return None;
            }
            let at = toks
                .iter()
                .position(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("TABLE")))?;
            let mut i = at + 1;
            let kw = |i: usize| match toks.get(i) {
                Some(Token::Word(w)) => w.to_uppercase(),
                _ => String::new(),
            };
            if kw(i) == "IF" && kw(i + 1) == "NOT" && kw(i + 2) == "EXISTS" {
                i += 3;
            }
            parse_name(&toks, i).map(|(name, _)| name)
        })
        .collect()
}

// =============================================================================================
// Schema capture
// =============================================================================================

/// The PostgreSQL schema as sorted text lines, from the catalogs: schemas, extensions,
/// relations (kind, row-level security, grants), columns (type, nullability, default, identity),
/// constraints, indexes, views, policies, triggers, functions, types, sequences and the
/// applied migration versions.
const PG_SCHEMA: &str = r"
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_%'
), ext_member AS (
    SELECT objid FROM pg_depend WHERE deptype = 'e'
)
SELECT j FROM (
    SELECT format('schema %s', nspname) AS j FROM ns
    UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT format('relation %s.%s kind=%s rls=%s force_rls=%s acl=%s options=%s',
                  ns.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
                  c.relacl::text, c.reloptions::text)
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT format('column %s.%s.%s %s not_null=%s default=%s identity=%s generated=%s acl=%s',
                  ns.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                  a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                  a.attacl::text)
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
    UNION ALL
    SELECT format('constraint %s on %s: %s', con.conname, con.conrelid::regclass::text,
                  pg_get_constraintdef(con.oid))
    FROM pg_constraint con JOIN ns ON ns.oid = con.connamespace
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT format('view %s.%s: %s', ns.nspname, c.relname, pg_get_viewdef(c.oid))
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace WHERE c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('policy %s on %s cmd=%s permissive=%s roles=%s using=%s check=%s',
                  p.polname, p.polrelid::regclass::text, p.polcmd, p.polpermissive,
                  p.polroles::regrole[]::text, pg_get_expr(p.polqual, p.polrelid),
                  pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('function %s.%s(%s) returns %s: %s', ns.nspname, p.proname,
                  pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
                  md5(p.prosrc))
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
    WHERE p.oid NOT IN (SELECT objid FROM ext_member)
    UNION ALL
    SELECT format('type %s.%s typtype=%s', ns.nspname, t.typname, t.typtype)
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
    WHERE t.typrelid = 0 AND t.typcategory <> 'A' AND t.oid NOT IN (SELECT objid FROM ext_member)
    UNION ALL
    SELECT format('sequence %s start=%s increment=%s', s.seqrelid::regclass::text, s.seqstart,
                  s.seqincrement)
    FROM pg_sequence s
    UNION ALL
    SELECT format('applied migration %s', version) FROM __diesel_schema_migrations
) AS schema";

const SQLITE_SCHEMA: &str = "
SELECT j FROM (
    SELECT type || ' ' || name || ' on ' || tbl_name || ': ' || coalesce(sql, '') AS j
    FROM sqlite_master
    UNION ALL
    SELECT 'applied migration ' || version FROM __diesel_schema_migrations
)";

async fn schema(db: &TestDb) -> Vec<String> {
    let select = match db.backend() {
        Backend::Postgres => PG_SCHEMA,
        Backend::Sqlite => SQLITE_SCHEMA,
    };
    let mut lines = texts(db, select).await;
    lines.sort();
    lines
}

/// Lines only in `a` (`-`) and only in `b` (`+`).
fn schema_diff(a: &[String], b: &[String]) -> String {
    let a_set: BTreeSet<&String> = a.iter().collect();
    let b_set: BTreeSet<&String> = b.iter().collect();
    let mut out = String::new();
    for line in a_set.difference(&b_set) {
        out.push_str(&format!("- {line}\n"));
    }
    for line in b_set.difference(&a_set) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

/// Every name a relation-like object may take at this point (tables, indexes, views,
/// sequences, types), lower-cased.
async fn relation_names(db: &TestDb) -> BTreeSet<String> {
    let select = match db.backend() {
        Backend::Postgres => {
            "SELECT c.relname::text AS j FROM pg_class c JOIN pg_namespace n \
             ON n.oid = c.relnamespace WHERE n.nspname = 'public' \
             UNION SELECT t.typname::text FROM pg_type t JOIN pg_namespace n \
             ON n.oid = t.typnamespace WHERE n.nspname = 'public'"
        }
        Backend::Sqlite => "SELECT name AS j FROM sqlite_master",
    };
    texts(db, select)
        .await
        .into_iter()
        .map(|n| n.to_lowercase())
        .collect()
}

// =============================================================================================
// 1. Rollback of the latest migrations on a populated database
// =============================================================================================

async fn rollback_keeps_data(backend: Backend) {
    let started = Instant::now();
    let db = migrated(backend).await;
    let names = all_applied(&db);
    assert_binary_matches_disk(backend, &names);

    // The trailing migrations the data can survive: down to (not including) the first one,
    // from the latest, that creates a user-data table.
    let mut revertible: Vec<(String, BTreeSet<String>)> = Vec::new();
    for name in names.iter().rev() {
        let creates = created_tables(&up_sql(backend, name));
        if creates
            .iter()
            .any(|t| USER_DATA_TABLES.contains(&t.as_str()))
        {
            break;
        }
        revertible.push((name.clone(), creates));
    }
    assert!(
        !revertible.is_empty(),
        "{}: the latest migration {} creates a user-data table ({USER_DATA_TABLES:?}), so no \
         migration can be rolled back with user data in place",
        backend.name(),
        names.last().expect("a migration")
    );
    eprintln!(
        "{}: rolling back, one deeper each round: {:?}",
        backend.name(),
        revertible.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );

    let fixture = populate(&db).await;
    let mut total = Diff::default();
    let mut dropped_with_their_migration = 0;
    for depth in 1..=revertible.len() {
        let before = snapshot(&db).await;
        if depth == 1 {
            assert_populated(&before, backend);
        }
        let reverted = &revertible[..depth];

        // Down, one migration at a time; after each, every row is there in every column the
        // older schema still has. Only tables the reverted migrations created may be gone.
        let mut created_by_reverted: BTreeSet<String> = BTreeSet::new();
        let mut bottom = before.clone();
        for (name, creates) in reverted {
            let log = migrate_ok(&db, &["down"]);
            assert!(
                log.contains(&format!("reverted {name}")),
                "{}: `migrate down` should revert {name}:\n{log}",
                backend.name()
            );
            created_by_reverted.extend(creates.iter().cloned());
            let now = snapshot(&db).await;
            let mut diff = Diff::default();
            for (table, table_rows) in &before.rows {
                if !now.columns.contains_key(table) {
                    if created_by_reverted.contains(table) {
                        dropped_with_their_migration += table_rows.len();
                    } else {
                        diff.compared += table_rows.len();
                        diff.missing.extend(
                            table_rows
                                .iter()
                                .map(|r| format!("{table} (table dropped by {name}): {r}")),
                        );
                    }
                }
            }
            diff.absorb(compare(&before, &now, &now.columns));
            let ok = diff.is_clean();
            let report = diff.report();
            total.absorb(diff);
            assert!(
                ok,
                "{}: after `migrate down` of {name}, data the older schema has columns for \
                 was lost or changed.\n{report}",
                backend.name()
            );
            bottom = now;
        }
        let listed = status(&db);
        let pending: Vec<&String> = listed.iter().filter(|(a, _)| !a).map(|(_, n)| n).collect();
        let expected: Vec<&String> = reverted.iter().rev().map(|(n, _)| n).collect();
        assert_eq!(
            pending,
            expected,
            "{}: pending after the downs",
            backend.name()
        );

        // Up again: the same rows, in every column that survived the downs.
        let log = migrate_ok(&db, &["run"]);
        for (name, _) in reverted {
            assert!(
                log.contains(&format!("applied {name}")),
                "{}: `migrate run` should re-apply {name}:\n{log}",
                backend.name()
            );
        }
        all_applied(&db);
        let after = snapshot(&db).await;
        let diff = compare(&before, &after, &bottom.columns);
        let ok = diff.is_clean();
        let report = diff.report();
        total.absorb(diff);
        assert!(
            ok,
            "{}: after `migrate down` x{depth} and `migrate run`, data differs from before.\n{report}",
            backend.name()
        );
        // Columns the downs dropped are re-created by the re-run. The older schema could not
        // hold their values, so they must be derivable (e.g. counters) and the migration must
        // derive them again: they too must come back identical.
        let recreated: BTreeMap<String, Vec<String>> = before
            .columns
            .iter()
            .filter_map(|(table, cols)| {
                let kept = bottom.columns.get(table)?;
                let gone: Vec<String> =
                    cols.iter().filter(|c| !kept.contains(c)).cloned().collect();
                (!gone.is_empty()).then(|| (table.clone(), gone))
            })
            .collect();
        if !recreated.is_empty() {
            let mut diff = compare(&before, &after, &recreated);
            eprintln!(
                "{}: columns dropped by the downs and re-created by the run: {recreated:?}; \
                 {} of {} rows differ in them",
                backend.name(),
                diff.missing.len(),
                diff.compared
            );
            let report = diff.report();
            // Already counted above (same rows): count only what differs here.
            diff.compared = 0;
            let ok = diff.is_clean();
            total.absorb(diff);
            assert!(
                ok,
                "{}: columns {recreated:?} were dropped by `migrate down` and re-created by \
                 `migrate run` with values other than before. If they are derived data (e.g. \
                 counters), the up migration must compute them from the rows; if they hold \
                 user input, the down migration loses it.\n{report}",
                backend.name()
            );
        }

        server_serves_old_data(&db, &after, &fixture).await;
    }

    eprintln!(
        "{}: {} rows compared, {} rows went with tables their migration created; {:?}",
        backend.name(),
        total.compared,
        dropped_with_their_migration,
        started.elapsed()
    );
    let class = format!(
        "migration rollback on a populated database ({})",
        backend.name()
    );
    let outcome = format!(
        "`migrate down` of the latest {} migration(s), one at a time, then `migrate run`: every \
         row identical in every column the older schema has; the server serves it after",
        revertible.len()
    );
    record(Evidence {
        class: &class,
        test: TEST_FILE,
        cases: total.compared,
        clear_errors: total.compared.saturating_sub(total.missing.len()),
        writes_lost: total.missing.len(),
        cross_user: 0,
        outcome: &outcome,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_on_a_populated_postgres_keeps_what_the_older_schema_holds() {
    rollback_keeps_data(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_on_a_populated_sqlite_keeps_what_the_older_schema_holds() {
    rollback_keeps_data(Backend::Sqlite).await;
}

// =============================================================================================
// 2. A migration failing part-way leaves the schema as it was
// =============================================================================================

/// How to make one migration fail part-way, from its `up.sql` and the database at the version
/// before it.
struct FailurePlan {
    statements: Vec<String>,
    /// The statement that will fail.
    index: usize,
    planted: Created,
    /// What the statements before it create (they must be rolled back).
    earlier: Vec<String>,
}

/// The last object `name`'s `up.sql` creates after its first statement whose name can be taken
/// beforehand in `db` (which must be at the version before `name`); `Err` explains why none.
async fn plan_failure(db: &TestDb, name: &str) -> Result<FailurePlan, String> {
    let backend = db.backend();
    let statements = split_sql(&up_sql(backend, name));
    let tables_now: BTreeSet<String> = tables(db).await.into_iter().collect();
    let relations_now = relation_names(db).await;
    let constraints_now: BTreeSet<String> = match backend {
        Backend::Postgres => texts(
            db,
            "SELECT conname::text AS j FROM pg_constraint \
             WHERE connamespace = 'public'::regnamespace",
        )
        .await
        .into_iter()
        .map(|n| n.to_lowercase())
        .collect(),
        Backend::Sqlite => BTreeSet::new(),
    };
    let mut candidates = Vec::new();
    for (index, statement) in statements.iter().enumerate() {
        let Some(created) = created_object(statement) else {
            continue;
        };
        let plantable = match (&created, backend) {
            (Created::Relation { name, .. }, _) => !relations_now.contains(&name.to_lowercase()),
            (Created::Column { table, column }, _) => {
                tables_now.contains(table) && !columns(db, table).await.contains(column)
            }
            // A constraint the migration drops and adds again under its old name (a key
            // rebuilt) exists now: planting it would only collide with itself.
            (Created::Constraint { table, name }, Backend::Postgres) => {
                tables_now.contains(table) && !constraints_now.contains(&name.to_lowercase())
            }
            (Created::Policy { table, .. }, Backend::Postgres) => tables_now.contains(table),
            (Created::Constraint { .. } | Created::Policy { .. }, Backend::Sqlite) => false,
        };
        candidates.push((index, created, plantable));
    }
    let chosen = candidates
        .iter()
        .rev()
        .find(|(index, _, plantable)| *index >= 1 && *plantable);
    let Some((index, planted, _)) = chosen else {
        return Err(format!(
            "{name}: no object created after its first statement can be created beforehand; \
             objects found (statement index, object, plantable): {candidates:?}; statements:\n{}",
            statements
                .iter()
                .enumerate()
                .map(|(i, s)| format!("  [{i}] {s}\n"))
                .collect::<String>()
        ));
    };
    let earlier = candidates
        .iter()
        .filter(|(i, _, _)| i < index)
        .map(|(_, c, _)| c.describe())
        .collect();
    Ok(FailurePlan {
        index: *index,
        planted: planted.clone(),
        earlier,
        statements,
    })
}

async fn failed_migration_changes_nothing(backend: Backend) {
    let db = migrated(backend).await;
    let names = all_applied(&db);
    assert_binary_matches_disk(backend, &names);
    let full_schema = schema(&db).await;

    // The newest migration that can be made to fail part-way (normally the latest; a
    // migration with nothing to collide with, such as a no-op, is skipped): revert down to
    // the version before it.
    let mut reverted: Vec<String> = Vec::new();
    let mut reasons = Vec::new();
    let (target, plan) = loop {
        let Some(name) = names[..names.len() - reverted.len()].last().cloned() else {
            panic!(
                "{}: no migration can be made to fail part-way (an object it creates after its \
                 first statement, planted beforehand):\n{}",
                backend.name(),
                reasons.join("\n")
            );
        };
        let log = migrate_ok(&db, &["down"]);
        assert!(log.contains(&format!("reverted {name}")), "{log}");
        reverted.push(name.clone());
        match plan_failure(&db, &name).await {
            Ok(plan) => break (name, plan),
            Err(why) => {
                eprintln!("{}: skipping {why}", backend.name());
                reasons.push(why);
            }
        }
    };
    let FailurePlan {
        statements,
        index,
        planted,
        earlier,
    } = plan;
    // Oldest first, as `migrate status` lists them.
    let pending_expected: Vec<&String> = reverted.iter().rev().collect();
    eprintln!(
        "{}: {target} has {} statements; planting a conflict with statement [{index}], which \
         creates {} (created before it: {earlier:?})",
        backend.name(),
        statements.len(),
        planted.describe()
    );
    let latest = target.as_str();
    let (plant_sql, unplant_sql) = planted.plant();
    execute(&db, &plant_sql).await;
    let schema_before = schema(&db).await;

    // `migrate` fails, naming the migration and the conflict, and changes nothing.
    let mut attempts = 0;
    let mut clear = 0;
    let out = migrate_cmd(&db, &[]);
    attempts += 1;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{}: `migrate` succeeded despite the planted {}\n{log}",
        backend.name(),
        planted.describe()
    );
    assert!(
        log.contains(latest) && log.contains(planted.name()),
        "{}: the failure should name the migration ({latest}) and the conflicting object ({}):\n{log}",
        backend.name(),
        planted.name()
    );
    clear += 1;
    let schema_after = schema(&db).await;
    assert!(
        schema_after == schema_before,
        "{}: the failed {latest} changed the schema (statements before [{index}] created \
         {earlier:?}; they must have been rolled back):\n{}",
        backend.name(),
        schema_diff(&schema_before, &schema_after)
    );
    let listed = status(&db);
    let pending: Vec<&String> = listed.iter().filter(|(a, _)| !a).map(|(_, n)| n).collect();
    assert_eq!(
        pending,
        pending_expected,
        "{}: after the failure {latest} (and anything newer) is still pending",
        backend.name()
    );

    // A replica starting now refuses to serve, saying why, and changes nothing either.
    let out = expect_stdio_exit(db.url(), None, &[], Duration::from_secs(60)).await;
    attempts += 1;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{}: `stdio` should exit non-zero when its migration fails\n{log}",
        backend.name()
    );
    assert!(
        log.contains(latest),
        "{}: `stdio`'s failure should name {latest}:\n{log}",
        backend.name()
    );
    clear += 1;
    let schema_after_start = schema(&db).await;
    assert!(
        schema_after_start == schema_before,
        "{}: the refused start changed the schema:\n{}",
        backend.name(),
        schema_diff(&schema_before, &schema_after_start)
    );

    // Without the obstacle it applies, and the schema is the fully migrated one.
    execute(&db, &unplant_sql).await;
    let log = migrate_ok(&db, &[]);
    for name in &reverted {
        assert!(log.contains(&format!("applied {name}")), "{log}");
    }
    all_applied(&db);
    // (A column dropped from a SQLite table leaves its CREATE TABLE text reworded.)
    if !(backend == Backend::Sqlite && matches!(planted, Created::Column { .. })) {
        let final_schema = schema(&db).await;
        assert!(
            final_schema == full_schema,
            "{}: after the retry the schema differs from a straight migration:\n{}",
            backend.name(),
            schema_diff(&full_schema, &final_schema)
        );
    }
    let client = connect_stdio(db.url(), None, &[]).await;
    client
        .call_ok(
            "add_task",
            json!({ "title": "after the retried migration" }),
        )
        .await;
    client.close().await;

    let class = format!("failed migration ({})", backend.name());
    let outcome = format!(
        "{latest} made to fail at statement {} of {} ({} planted): `migrate` and `stdio` exit \
         non-zero naming it, schema unchanged, still pending, applies once the obstacle is gone",
        index + 1,
        statements.len(),
        planted.describe()
    );
    record(Evidence {
        class: &class,
        test: TEST_FILE,
        cases: attempts,
        clear_errors: clear,
        writes_lost: schema_diff(&schema_before, &schema_after).lines().count(),
        cross_user: 0,
        outcome: &outcome,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migration_leaves_the_postgres_schema_as_it_was() {
    failed_migration_changes_nothing(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migration_leaves_the_sqlite_schema_as_it_was() {
    failed_migration_changes_nothing(Backend::Sqlite).await;
}

// =============================================================================================
// 3. Replicas starting at once on an empty database
// =============================================================================================

/// How many `applied migration` log lines name `name` in `log`.
fn applied_lines(log: &str, name: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("applied migration") && line.contains(name))
        .count()
}

async fn concurrent_replica_starts(backend: Backend) {
    let started = Instant::now();
    let db = empty(backend).await;
    let names = migration_names_on_disk(backend);
    let url = db.url();

    // All at once: stdio servers (MCP initialize done) and HTTP servers (listening).
    let stdio =
        futures_util::future::join_all((0..STDIO_REPLICAS).map(|_| connect_stdio(url, None, &[])));
    let http = futures_util::future::join_all(
        (0..HTTP_REPLICAS).map(|_| start_http(url, &["--no-auth"], &[])),
    );
    let (stdio, http) = tokio::join!(stdio, http);
    let came_up = stdio.len() + http.len();

    // Each migration applied exactly once, by one of them.
    let logs: Vec<String> = stdio
        .iter()
        .map(support::McpClient::stderr)
        .chain(http.iter().map(support::HttpServer::stderr))
        .collect();
    for name in &names {
        let appliers: usize = logs.iter().map(|log| applied_lines(log, name)).sum();
        assert_eq!(
            appliers,
            1,
            "{}: {name} should be applied by exactly one of {came_up} replicas; logs:\n{}",
            backend.name(),
            logs.join("\n----\n")
        );
    }
    let recorded = texts(
        &db,
        "SELECT version AS j FROM __diesel_schema_migrations ORDER BY version",
    )
    .await;
    let expected: Vec<String> = names.iter().map(|n| diesel_version(n)).collect();
    assert_eq!(
        recorded,
        expected,
        "{}: __diesel_schema_migrations should hold each version once",
        backend.name()
    );
    assert_binary_matches_disk(backend, &all_applied(&db));

    // All of them serve: the same tools, and writes land in the one database.
    let mut serving = 0;
    for (i, client) in stdio.iter().enumerate() {
        let mut listed: Vec<String> = client
            .list_tools()
            .await
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            *TOOL_NAMES,
            "{}: stdio replica {i} tools/list",
            backend.name()
        );
        client
            .call_ok(
                "add_task",
                json!({ "title": format!("from stdio replica {i}") }),
            )
            .await;
        serving += 1;
    }
    for (i, server) in http.iter().enumerate() {
        let list = Reply::read(
            mcp_request(&server.mcp_url(), None)
                .body(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
                        .to_string(),
                )
                .send()
                .await
                .expect("POST tools/list"),
        )
        .await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        let response = list.response(1).expect("a tools/list response");
        let mut listed: Vec<String> = response["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list result: {response}"))
            .iter()
            .map(|t| t["name"].as_str().expect("tool name").to_owned())
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            *TOOL_NAMES,
            "{}: http replica {i} tools/list",
            backend.name()
        );
        let call = Reply::read(
            mcp_request(&server.mcp_url(), None)
                .body(
                    jsonrpc::tool_call(
                        2,
                        "add_task",
                        json!({ "title": format!("from http replica {i}") }),
                    )
                    .to_string(),
                )
                .send()
                .await
                .expect("POST tools/call"),
        )
        .await;
        let response = call.response(2).expect("a tools/call response");
        assert!(
            response["result"]["isError"] != json!(true) && response["result"].is_object(),
            "{}: add_task on http replica {i}: {response}",
            backend.name()
        );
        serving += 1;
    }
    let listed = stdio[0]
        .call_ok("list_tasks", json!({ "status": "all", "limit": 200 }))
        .await;
    let titles = listed["tasks"].as_array().map_or(0, Vec::len);
    assert_eq!(
        titles,
        came_up,
        "{}: one task from each replica: {listed}",
        backend.name()
    );

    for client in stdio {
        client.close().await;
    }
    for server in http {
        server.kill().await;
    }
    eprintln!(
        "{}: {came_up} replicas started at once applied {} migrations once each; {:?}",
        backend.name(),
        names.len(),
        started.elapsed()
    );
    let class = format!("concurrent migration starts ({})", backend.name());
    let outcome = format!(
        "{STDIO_REPLICAS} stdio + {HTTP_REPLICAS} http replicas started at once on an empty \
         database: each of {} migrations applied exactly once, every replica serves",
        names.len()
    );
    record(Evidence {
        class: &class,
        test: TEST_FILE,
        cases: came_up,
        clear_errors: serving,
        writes_lost: came_up - titles,
        cross_user: 0,
        outcome: &outcome,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_on_an_empty_postgres_apply_each_migration_once() {
    concurrent_replica_starts(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_on_an_empty_sqlite_apply_each_migration_once() {
    concurrent_replica_starts(Backend::Sqlite).await;
}

// =============================================================================================
// The SQL reader itself
// =============================================================================================

#[test]
fn sql_reader_finds_statements_and_created_objects() {
    let sql = "-- a comment; with a semicolon\n\
               CREATE TABLE a (x text DEFAULT 'it''s; fine');\n\
               /* block; comment */ CREATE UNIQUE INDEX IF NOT EXISTS a_x ON a (x);\n\
               CREATE INDEX ON a (x);\n\
               CREATE INDEX \"Quoted_Idx\" ON a (x);\n\
               CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n\
               CREATE POLICY own ON public.a USING (x = current_user);\n\
               ALTER TABLE a ADD COLUMN n bigint NOT NULL DEFAULT 0;\n\
               ALTER TABLE ONLY a ADD CONSTRAINT a_n CHECK (n >= 0);\n\
               ALTER TABLE a ENABLE ROW LEVEL SECURITY;\n\
               CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET n = 1; END;\n\
               CREATE TABLE IF NOT EXISTS b (y int)";
    let statements = split_sql(sql);
    assert_eq!(statements.len(), 11, "{statements:#?}");
    let created: Vec<Option<Created>> = statements.iter().map(|s| created_object(s)).collect();
    let relation = |kind: &str, name: &str| {
        Some(Created::Relation {
            kind: kind.to_owned(),
            name: name.to_owned(),
        })
    };
    assert_eq!(
        created,
        [
            relation("TABLE", "a"),
            None,
            None,
            relation("INDEX", "Quoted_Idx"),
            None,
            Some(Created::Policy {
                table: "a".to_owned(),
                name: "own".to_owned()
            }),
            Some(Created::Column {
                table: "a".to_owned(),
                column: "n".to_owned()
            }),
            Some(Created::Constraint {
                table: "a".to_owned(),
                name: "a_n".to_owned()
            }),
            None,
            None,
            None,
        ]
    );
    assert_eq!(
        created_tables(sql),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    assert_eq!(
        diesel_version("2026-11-24-000002_mcp_sessions"),
        "20261124000002"
    );
}
