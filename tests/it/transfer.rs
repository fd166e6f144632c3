//! `todo-mcp export` and `todo-mcp import`: moving users from SQLite to PostgreSQL (and
//! back) through a real pipe between the two commands, as README documents it.
//!
//! Each source database is populated through a real MCP client (every kind of row: tasks
//! with labels, subtasks and repeats, messages with the agent's tool calls, hidden
//! messages, summaries, call records of failed calls, agent state versions, committed
//! turns, an archived conversation). Then:
//! * every row is equal afterwards: the destination's export equals the source's, and
//!   each record carries every column of its table (checked against the live schema);
//! * what clients read is equal: tasks, conversations and histories, in order;
//! * importing again changes nothing, and the message ids continue above the imported;
//! * a committed turn replays on the new database under its idempotency key;
//! * an import whose message ids another user already holds fails for that user alone,
//!   leaving nothing of them behind;
//! * past a page (export reads 500 rows at a time) every table comes out whole: each kind
//!   of row past a boundary, the boundary inside one task's labels and one conversation's
//!   state versions, on SQLite and again on PostgreSQL.

use crate::support;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::cli::{self, assert_success, create_token, describe_output, scrub_env};
use support::mcp::{McpClient, connect_in_process};
use support::{Backend, TestDb, sql};
use todo_mcp::store::transfer::PAGE;

const PIPE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a populated user has, to read it back by.
struct Seeded {
    user: String,
    conversations: Vec<String>,
}

/// Gives `user` one of every kind of row, through a real MCP client.
async fn populate(db: &TestDb, user: &str) -> Seeded {
    let token = create_token(db.url(), user);
    let client = connect_in_process(db.url(), Some(&token), &[]).await;
    let parent = client
        .call_ok(
            "add_task",
            json!({"title": format!("{user}: groceries"), "description": "oat milk, bread",
                   "due": "2026-12-24", "priority": "high", "labels": ["home", "Errands"]}),
        )
        .await;
    let parent_id = parent["task"]["id"].as_str().expect("task id").to_owned();
    client
        .call_ok(
            "add_task",
            json!({"title": "bread", "parent_task_id": parent_id, "labels": ["home"]}),
        )
        .await;
    let weekly = client
        .call_ok(
            "add_task",
            json!({"title": "water the plants", "due": "2026-12-07T09:00:00+01:00",
                   "repeat": "FREQ=WEEKLY", "idempotency_key": format!("{user}-plants")}),
        )
        .await;
    // Completing a repeating task adds its next occurrence.
    client
        .call_ok(
            "complete_task",
            json!({"task_id": weekly["task"]["id"].as_str().expect("task id")}),
        )
        .await;

    let chat = client
        .call_ok(
            "start_conversation",
            json!({"title": format!("{user}'s chat")}),
        )
        .await;
    let chat_id = chat["conversation"]["id"].as_str().expect("id").to_owned();
    let asked = client
        .call_ok(
            "append_message",
            json!({"conversation_id": chat_id, "role": "user", "content": "what is on my list?"}),
        )
        .await;
    client
        .call_ok(
            "append_message",
            json!({"conversation_id": chat_id, "role": "assistant", "content": "",
                   "tool_calls": [{"id": "call_1", "name": "list_tasks",
                                   "arguments": {"status": "open", "limit": 5}}]}),
        )
        .await;
    client
        .call_ok(
            "append_message",
            json!({"conversation_id": chat_id, "role": "tool", "tool_call_id": "call_1",
                   "content": "[\"groceries\"]"}),
        )
        .await;
    client
        .call_ok(
            "set_conversation_summary",
            json!({"conversation_id": chat_id, "summary": "asked about the list",
                   "through_message_id": asked["message"]["id"]}),
        )
        .await;
    client
        .call_ok(
            "save_agent_state",
            json!({"conversation_id": chat_id, "state": {"step": 1}}),
        )
        .await;
    client
        .call_ok(
            "save_agent_state",
            json!({"conversation_id": chat_id, "state": {"step": 2, "seen": [1.5, "ü", null]}}),
        )
        .await;
    client
        .call_ok(
            "commit_turn",
            json!({"conversation_id": chat_id, "idempotency_key": "turn-1",
                   "messages": [{"role": "user", "content": "thanks"},
                                {"role": "assistant", "content": "you're welcome"}],
                   "state": {"step": 3}}),
        )
        .await;
    client
        .call_ok(
            "append_message",
            json!({"conversation_id": chat_id, "role": "user", "content": "oops, take this back"}),
        )
        .await;
    client
        .call_ok("pop_message", json!({"conversation_id": chat_id}))
        .await;
    // A failed call leaves a call record too.
    client
        .call_err("get_task", json!({"task_id": "not-a-uuid"}))
        .await;

    let old = client
        .call_ok("start_conversation", json!({"title": "old"}))
        .await;
    let old_id = old["conversation"]["id"].as_str().expect("id").to_owned();
    client
        .call_ok("archive_conversation", json!({"conversation_id": old_id}))
        .await;
    client.close().await;
    Seeded {
        user: user.to_owned(),
        conversations: vec![chat_id, old_id],
    }
}

/// `todo-mcp ARGS` with `DATABASE_URL`, output checked.
fn command(db: &TestDb, args: &[&str]) -> Command {
    let mut command = Command::new(cli::bin_path());
    command.args(args);
    scrub_env(&mut command);
    command
        .env("DATABASE_URL", db.url())
        .env("TODO_MCP_LOG", "warn");
    command
}

/// `DATABASE_URL=from todo-mcp export | DATABASE_URL=to todo-mcp import`, through an OS
/// pipe; returns import's stdout (its JSON summary), asserting both exit 0.
fn pipe(from: &TestDb, to: &TestDb) -> Value {
    let mut export = command(from, &["export"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn todo-mcp export");
    let piped = export.stdout.take().expect("export's stdout");
    let import = command(to, &["import"])
        .stdin(Stdio::from(piped))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn todo-mcp import");
    let deadline = Instant::now() + PIPE_TIMEOUT;
    let import_out = wait_before(import, deadline, "todo-mcp import");
    let export_out = wait_before(export, deadline, "todo-mcp export");
    assert_success(&export_out, &format!("todo-mcp export ({})", from.name()));
    assert_success(&import_out, &format!("todo-mcp import ({})", to.name()));
    serde_json::from_slice(&import_out.stdout).unwrap_or_else(|e| {
        panic!(
            "import's stdout is not its JSON summary: {e}\n{}",
            describe_output(&import_out)
        )
    })
}

fn wait_before(
    mut child: std::process::Child,
    deadline: Instant,
    what: &str,
) -> std::process::Output {
    loop {
        match child.try_wait().expect("wait for child") {
            Some(_) => return child.wait_with_output().expect("collect output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "{what} ran past {PIPE_TIMEOUT:?}\n{}",
                    describe_output(&out)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The export of `db` as records, the header left out (it names the source and time).
fn export(db: &TestDb, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["export"];
    full.extend_from_slice(args);
    let out = cli::run_with_timeout(command(db, &full), "todo-mcp export", PIPE_TIMEOUT);
    assert_success(&out, &format!("todo-mcp export on {}", db.name()));
    let text = String::from_utf8(out.stdout).expect("export is UTF-8");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header line")).expect("JSON");
    assert_eq!(header["record"], "header", "first line: {header}");
    assert_eq!(header["format"], "todo-mcp-export");
    assert_eq!(header["source"], db.backend().name_in_export());
    lines
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

trait ExportName {
    fn name_in_export(self) -> &'static str;
}

impl ExportName for Backend {
    fn name_in_export(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Record kinds to their tables.
const TABLES: [(&str, &str); 8] = [
    ("user", "users"),
    ("task", "tasks"),
    ("task_request", "task_requests"),
    ("task_label", "task_labels"),
    ("conversation", "conversations"),
    ("message", "messages"),
    ("agent_state", "agent_states"),
    ("turn", "turns"),
];

/// Each record has exactly its table's columns (the live schema's, so a column a migration
/// adds cannot be left out of the export), and every kind of record is there.
async fn assert_records_carry_every_column(db: &TestDb, records: &[Value]) {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in records {
        let kind = record["record"].as_str().expect("record kind").to_owned();
        let fields = record
            .as_object()
            .expect("record is an object")
            .keys()
            .filter(|k| *k != "record")
            .cloned();
        keys.entry(kind).or_default().extend(fields);
    }
    for (kind, table) in TABLES {
        let select = match db {
            TestDb::Pg(_) => format!(
                "SELECT column_name::text AS j FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{table}' \
                 AND is_generated = 'NEVER'"
            ),
            TestDb::Sqlite(_) => format!("SELECT name AS j FROM pragma_table_info('{table}')"),
        };
        let columns: BTreeSet<String> = sql::texts(db, &select).await.into_iter().collect();
        assert!(!columns.is_empty(), "no columns found for table {table}");
        let exported = keys
            .get(kind)
            .unwrap_or_else(|| panic!("the export has no {kind} record: populate one"));
        assert_eq!(
            exported,
            &columns,
            "{kind} records must carry exactly the columns of {table} on {}",
            db.name()
        );
    }
}

/// What a client reads of a user: tasks, conversations, each history with its call
/// records, each state version.
async fn read_back(db: &TestDb, seeded: &Seeded) -> Value {
    let token = create_token(db.url(), &seeded.user);
    let client = connect_in_process(db.url(), Some(&token), &[]).await;
    let tasks = client
        .call_ok("list_tasks", json!({"status": "all", "limit": 100}))
        .await;
    let conversations = client
        .call_ok(
            "list_conversations",
            json!({"include_archived": true, "limit": 100}),
        )
        .await;
    let mut histories = Vec::new();
    for id in &seeded.conversations {
        histories.push(
            client
                .call_ok(
                    "get_conversation_history",
                    json!({"conversation_id": id, "limit": 100}),
                )
                .await,
        );
        histories.push(
            client
                .call_ok("get_agent_state", json!({"conversation_id": id}))
                .await,
        );
    }
    close(client).await;
    json!({"tasks": tasks, "conversations": conversations, "histories": histories})
}

async fn close(client: McpClient) {
    client.close().await;
}

fn max_message_id(records: &[Value]) -> i64 {
    records
        .iter()
        .filter(|r| r["record"] == "message")
        .filter_map(|r| r["id"].as_i64())
        .max()
        .expect("the export has messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_through_a_pipe_keeps_every_row() {
    let source = TestDb::new(Backend::Sqlite).await;
    let alice = populate(&source, "alice").await;
    let bob = populate(&source, "bob").await;
    let exported = export(&source, &[]);
    assert_records_carry_every_column(&source, &exported).await;
    let before = [
        read_back(&source, &alice).await,
        read_back(&source, &bob).await,
    ];
    // Reading added call records: export again, the rows now to be moved.
    let exported = export(&source, &[]);

    let destination = TestDb::new(Backend::Postgres).await;
    let summary = pipe(&source, &destination);
    assert_eq!(summary["users"], json!(["alice", "bob"]), "{summary}");
    assert_eq!(summary["already_present"], json!({}), "{summary}");
    let messages = exported.iter().filter(|r| r["record"] == "message").count();
    assert_eq!(summary["inserted"]["message"], json!(messages), "{summary}");

    let moved = export(&destination, &[]);
    assert_records_carry_every_column(&destination, &moved).await;
    assert_eq!(moved, exported, "every row must be equal after the move");

    // Importing again changes nothing.
    let again = pipe(&source, &destination);
    assert_eq!(
        again["inserted"],
        json!({}),
        "a second import inserted rows: {again}"
    );
    assert_eq!(
        export(&destination, &[]),
        exported,
        "a second import changed rows"
    );

    // Clients read the same (the destination's reads are compared before they add their
    // own call records, as the source's were).
    let after = [
        read_back(&destination, &alice).await,
        read_back(&destination, &bob).await,
    ];
    assert_eq!(after, before, "clients must read the same after the move");

    // New messages continue above the imported ids; a committed turn replays.
    let token = create_token(destination.url(), "alice");
    let client = connect_in_process(destination.url(), Some(&token), &[]).await;
    let appended = client
        .call_ok(
            "append_message",
            json!({"conversation_id": alice.conversations[0], "role": "user", "content": "after"}),
        )
        .await;
    let new_id = appended["message"]["id"].as_i64().expect("message id");
    assert!(
        new_id > max_message_id(&exported),
        "a message appended after the import got id {new_id}, not above the imported {}",
        max_message_id(&exported)
    );
    let replay = client
        .call_ok(
            "commit_turn",
            json!({"conversation_id": alice.conversations[0], "idempotency_key": "turn-1",
                   "messages": [{"role": "user", "content": "thanks"},
                                {"role": "assistant", "content": "you're welcome"}],
                   "state": {"step": 3}}),
        )
        .await;
    assert_eq!(
        replay["replayed"],
        json!(true),
        "commit_turn under an imported idempotency key must replay: {replay}"
    );
    close(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_sqlite_one_user_from_a_file() {
    let source = TestDb::new(Backend::Postgres).await;
    populate(&source, "carol").await;
    populate(&source, "dave").await;
    let carol = export(&source, &["--user", "carol"]);
    assert!(
        carol
            .iter()
            .all(|r| r["user_id"] == "carol" || r["id"] == "carol"),
        "export --user carol wrote another user's rows"
    );
    // Through a file this time, as an operator keeps an export.
    let out = cli::run_with_timeout(
        command(&source, &["export", "--user", "carol"]),
        "todo-mcp export --user carol",
        PIPE_TIMEOUT,
    );
    assert_success(&out, "todo-mcp export --user carol");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &out.stdout).expect("write the export");

    let destination = TestDb::new(Backend::Sqlite).await;
    let path = file.path().to_str().expect("UTF-8 path");
    let out = cli::run_with_timeout(
        command(&destination, &["import", "--input", path]),
        "todo-mcp import --input",
        PIPE_TIMEOUT,
    );
    assert_success(&out, "todo-mcp import --input FILE");
    assert_eq!(export(&destination, &[]), carol);

    // An unknown user is an error, not an empty export.
    let out = cli::run_with_timeout(
        command(&source, &["export", "--user", "nobody"]),
        "todo-mcp export --user nobody",
        PIPE_TIMEOUT,
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"),
        "export of an unknown user must fail saying so\n{}",
        describe_output(&out)
    );
}

/// Two databases that numbered their messages from 1 alike, merged into one. PostgreSQL keys
/// messages by (user_id, id), so each user keeps their ids and the second import succeeds,
/// the first user's rows untouched and the second's new messages numbered after their
/// imported ones; SQLite's message ids are global, so there the second import fails saying
/// so and leaves nothing of that user.
async fn an_import_reusing_another_users_message_ids(destination: TestDb) {
    let backend = destination.backend();
    let first = TestDb::new(Backend::Sqlite).await;
    populate(&first, "erin").await;
    let second = TestDb::new(Backend::Sqlite).await;
    populate(&second, "frank").await;
    destination.migrate();
    pipe(&first, &destination);
    let erin_before = export(&destination, &["--user", "erin"]);
    // frank's messages were numbered from 1 in his own database, as erin's were.
    let mut export_child = command(&second, &["export"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn export");
    let import = command(&destination, &["import"])
        .stdin(Stdio::from(export_child.stdout.take().expect("stdout")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let out = wait_before(import, Instant::now() + PIPE_TIMEOUT, "todo-mcp import");
    let _ = export_child.wait();
    assert_eq!(
        export(&destination, &["--user", "erin"]),
        erin_before,
        "importing frank changed erin's rows"
    );
    if backend == Backend::Postgres {
        assert_success(&out, "importing frank, whose message ids erin also has");
        assert_eq!(
            export(&destination, &["--user", "frank"]),
            export(&second, &[]),
            "frank's rows, as imported"
        );
        // A message appended now comes after every imported one of his.
        let token = create_token(destination.url(), "frank");
        let client = connect_in_process(destination.url(), Some(&token), &[]).await;
        let listed = client.call_ok("list_conversations", json!({})).await;
        let conversation = listed["conversations"][0]["id"].clone();
        let appended = client
            .call_ok(
                "append_message",
                json!({"conversation_id": conversation, "role": "user", "content": "after"}),
            )
            .await;
        let history = client
            .call_ok(
                "get_conversation_history",
                json!({"conversation_id": conversation}),
            )
            .await;
        let last = history["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            last["id"], appended["message"]["id"],
            "the new message is the last of the history: {history}"
        );
        client.close().await;
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("already taken"),
        "an import reusing another user's message ids must fail saying so\n{}",
        describe_output(&out)
    );
    for table in [
        "tasks",
        "conversations",
        "messages",
        "agent_states",
        "turns",
        "task_labels",
    ] {
        let left = sql::texts(
            &destination,
            &format!("SELECT CAST(count(*) AS text) AS j FROM {table} WHERE user_id = 'frank'"),
        )
        .await;
        assert_eq!(
            left,
            ["0"],
            "the failed import left frank's rows in {table}"
        );
    }
}

both_backends!(an_import_reusing_another_users_message_ids);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refuses_what_is_not_an_export() {
    let db = TestDb::new(Backend::Sqlite).await;
    for (input, expected) in [
        ("", "empty"),
        (
            "{\"record\":\"user\",\"id\":\"x\",\"created_at\":\"2026-01-01T00:00:00Z\",\"task_count\":0}\n",
            "header",
        ),
        (
            "{\"record\":\"header\",\"format\":\"other\",\"version\":1,\"exported_at\":\"2026-01-01T00:00:00Z\",\"generator\":\"x\",\"source\":\"x\"}\n",
            "format",
        ),
        ("not json\n", "line 1"),
    ] {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), input).expect("write input");
        let path = file.path().to_str().expect("UTF-8 path");
        let out = cli::run_with_timeout(
            command(&db, &["import", "--input", path]),
            "todo-mcp import",
            PIPE_TIMEOUT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "import of {input:?} must fail mentioning {expected:?}\n{}",
            describe_output(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_sqlite_neither_waits_for_nor_blocks_a_writer() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let source = TestDb::new(Backend::Sqlite).await;
    populate(&source, "gina").await;
    // Another process's write transaction, held open across the export.
    let path = source
        .as_sqlite()
        .path()
        .to_str()
        .expect("UTF-8 path")
        .to_owned();
    let mut writer = diesel::sqlite::SqliteConnection::establish(&path).expect("open SQLite");
    writer
        .batch_execute(
            "BEGIN IMMEDIATE; UPDATE users SET task_count = task_count WHERE id = 'gina';",
        )
        .expect("hold the write lock");
    let started = Instant::now();
    let records = export(&source, &[]);
    let took = started.elapsed();
    writer.batch_execute("COMMIT").expect("commit");
    assert!(
        records.iter().any(|r| r["record"] == "task"),
        "the export under a held write lock is empty"
    );
    // A writer-waiting export would wait out the 5 s busy timeout, then fail.
    assert!(
        took < Duration::from_secs(3),
        "export waited {took:?} for the writer: it must read from a snapshot"
    );
}

/// Labels on a task, and turns (each saving a state version) in a conversation: under the
/// caps of 20, and not a divisor of the page size, so a page boundary falls inside one
/// task's labels and inside one conversation's versions.
const PER_PARENT: usize = 19;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_exported_whole_across_page_boundaries() {
    // Export reads each table in keyset pages of PAGE rows.
    let page = PAGE as usize;
    assert_ne!(
        page % PER_PARENT,
        0,
        "no boundary would fall inside a parent"
    );
    let filled = page / PER_PARENT + 2;
    let source = TestDb::new(Backend::Sqlite).await;
    let token = create_token(source.url(), "carol");
    let client = connect_in_process(source.url(), Some(&token), &[]).await;
    // Tasks: a page and one top-level (the first `filled` with PER_PARENT labels each:
    // more than a page of labels), and as many subtasks: more than two pages of tasks.
    let mut parents = Vec::new();
    for i in 0..=page {
        let labels: Vec<String> = if i < filled {
            (0..PER_PARENT).map(|l| format!("label {l}")).collect()
        } else {
            Vec::new()
        };
        let added = client
            .call_ok(
                "add_task",
                json!({"title": format!("task {i}"), "labels": labels}),
            )
            .await;
        parents.push(added["task"]["id"].as_str().expect("task id").to_owned());
    }
    for (i, parent) in parents.iter().enumerate() {
        client
            .call_ok(
                "add_task",
                json!({"title": format!("subtask {i}"), "parent_task_id": parent}),
            )
            .await;
    }
    // Conversations: a page and one; the first `filled` get PER_PARENT turns each (more
    // than a page of turns and of agent state versions, and over two pages of messages with
    // the calls' records), each turn on top of the one before.
    let mut conversations = Vec::new();
    for i in 0..=page {
        let started = client
            .call_ok("start_conversation", json!({"title": format!("chat {i}")}))
            .await;
        conversations.push(
            started["conversation"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    for (c, conversation) in conversations.iter().take(filled).enumerate() {
        for turn in 0..PER_PARENT {
            client
                .call_ok(
                    "commit_turn",
                    json!({"conversation_id": conversation,
                           "idempotency_key": format!("turn {c}.{turn}"),
                           "expected_version": turn,
                           "messages": [{"role": "user", "content": format!("ask {turn}")},
                                        {"role": "assistant", "content": format!("answer {turn}")}],
                           "state": {"turn": turn}}),
                )
                .await;
        }
    }
    close(client).await;

    let exported = export(&source, &[]);
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for record in &exported {
        *per_kind
            .entry(record["record"].as_str().expect("record kind"))
            .or_default() += 1;
    }
    eprintln!("exported: {per_kind:?}");
    for (kind, at_least) in [
        ("task", 2 * page + 1),
        ("task_label", filled * PER_PARENT),
        ("conversation", page + 1),
        ("message", 2 * page + 1),
        ("agent_state", filled * PER_PARENT),
        ("turn", filled * PER_PARENT),
    ] {
        assert!(
            per_kind.get(kind).copied().unwrap_or(0) >= at_least,
            "{kind}: {per_kind:?}"
        );
    }
    let keys: BTreeSet<String> = exported.iter().map(|r| r.to_string()).collect();
    assert_eq!(keys.len(), exported.len(), "a record was exported twice");

    let destination = TestDb::new(Backend::Postgres).await;
    let summary = pipe(&source, &destination);
    assert_eq!(summary["already_present"], json!({}), "{summary}");
    for (kind, count) in &per_kind {
        assert_eq!(
            summary["inserted"][*kind],
            json!(count),
            "{kind}: {summary}"
        );
    }
    assert_eq!(
        export(&destination, &[]),
        exported,
        "every row must be equal after the move, whichever page it was on"
    );
}
