//! PostgreSQL behind a transaction-mode pooler, as Neon's `-pooler` endpoints are: todo-mcp
//! through a real PgBouncer (Debian's, started by the test with `pool_mode = transaction` and
//! only [`DEFAULT_POOL_SIZE`] server connections per database), with `?pgbouncer=true` on the
//! URL.
//!
//! * Every tool works over stdio through the pooler, and so do the migrations at start (two
//!   servers starting together on an empty database, so the migration lock is taken through
//!   it too).
//! * Many clients at once (16 users over two HTTP replicas, 8 connections each, on 4 server
//!   connections, handed out round-robin): no call fails, every acknowledged task is stored
//!   exactly once, and nobody sees another's rows, not even when every user at once reaches
//!   for the next user's task and conversation.
//! * The control: the same workload without `pgbouncer=true` (prepared statements cached per
//!   connection, as on a direct connection) fails with PostgreSQL's "prepared statement ...
//!   does not exist" (or "already exists"), which is why the flag exists.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::jsonrpc::StatelessCaller;
use support::pgbouncer::{DEFAULT_POOL_SIZE, PgBouncer};
use support::reliability::{self, Evidence};
use support::{HttpServer, McpClient, PgTestDb, TOOL_NAMES, connect_in_process, start_http};

/// Users of the concurrent workload, each with its own token and its own client task.
const USERS: usize = 16;
/// `todo-mcp http` replicas the clients spread their calls over.
const REPLICAS: usize = 2;
/// Each replica's own pool (`--pool-size`): together far more than PgBouncer's server pool.
const REPLICA_POOL: &str = "8";
/// Tasks each user adds (with idempotency keys).
const TASKS_PER_USER: usize = 8;
/// Page size of the users' list_tasks paging.
const PAGE: usize = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const RUN_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Every tool over stdio
// ---------------------------------------------------------------------------------------------

fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` should be a string in {value}"))
        .to_owned()
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {items}"))
        .iter()
        .map(|item| text(item, "id"))
        .collect()
}

/// The `task` a tool call that must succeed returns (add, update and complete do).
async fn task_of(client: &McpClient, tool: &str, arguments: Value) -> Value {
    client.call_ok(tool, arguments).await["task"].clone()
}

/// Every task of `list_tasks` for `args`, following its cursor; also the page sizes.
async fn all_tasks(client: &McpClient, args: Value) -> (Vec<Value>, Vec<usize>) {
    let mut tasks = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut page_args = args.clone();
        if let Some(cursor) = &cursor {
            page_args["cursor"] = json!(cursor);
        }
        let page = client.call_ok("list_tasks", page_args).await;
        let page_tasks = page["tasks"].as_array().expect("tasks is an array");
        sizes.push(page_tasks.len());
        tasks.extend(page_tasks.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (tasks, sizes),
        }
    }
}

/// Every conversation of `list_conversations`, following its cursor.
async fn all_conversations(client: &McpClient, include_archived: bool) -> Vec<Value> {
    let mut conversations = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({ "include_archived": include_archived, "limit": 1 });
        if let Some(cursor) = &cursor {
            args["cursor"] = json!(cursor);
        }
        let page = client.call_ok("list_conversations", args).await;
        let listed = page["conversations"].as_array().expect("conversations");
        assert!(listed.len() <= 1, "page over its limit: {page}");
        conversations.extend(listed.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return conversations,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tool_and_the_migrations_work_through_pgbouncer_over_stdio() {
    let db = PgTestDb::empty().await;
    let bouncer = PgBouncer::start(&db).await;
    let url = bouncer.url();

    // Two servers start together on the empty database: both run their migrations through
    // the pooler, and the advisory lock makes them apply each migration once.
    let (a, b) = tokio::join!(
        connect_in_process(&url, None, &[]),
        connect_in_process(&url, None, &[])
    );
    let migrations_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let embedded = std::fs::read_dir(&migrations_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", migrations_dir.display()))
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count();
    let applied = db
        .query_json("SELECT version FROM __diesel_schema_migrations ORDER BY version")
        .await;
    assert_eq!(
        applied.len(),
        embedded,
        "every migration applied once, through the pooler: {applied:?}"
    );

    let mut names: Vec<String> = a
        .list_tools()
        .await
        .iter()
        .map(|tool| tool.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, *TOOL_NAMES, "tools/list through the pooler");

    // Conversations and messages.
    let conversation = a
        .call_ok("start_conversation", json!({ "title": "pooled" }))
        .await["conversation"]
        .clone();
    let cid = text(&conversation, "id");
    assert_eq!(conversation["title"], "pooled");
    assert_eq!(conversation["status"], "active");
    let mut appended = Vec::new();
    for (role, content) in [
        ("user", "add milk and eggs"),
        ("assistant", "adding them"),
        ("user", "and bread"),
    ] {
        let message = a
            .call_ok(
                "append_message",
                json!({ "conversation_id": cid, "role": role, "content": content }),
            )
            .await["message"]
            .clone();
        assert_eq!(message["role"], role);
        assert_eq!(message["content"], content);
        assert_eq!(message["conversation_id"], cid.as_str());
        appended.push(message);
    }
    let message_ids: Vec<i64> = appended.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(
        message_ids.windows(2).all(|w| w[0] < w[1]),
        "message ids increase: {message_ids:?}"
    );

    // add_task, idempotent with a key, from either server.
    let add_milk = json!({ "title": "milk", "description": "oat", "conversation_id": cid,
                           "idempotency_key": "turn-1" });
    let milk = task_of(&a, "add_task", add_milk.clone()).await;
    assert_eq!(milk["title"], "milk");
    assert_eq!(milk["description"], "oat");
    assert_eq!(milk["completed"], false);
    let retry = task_of(&b, "add_task", add_milk).await;
    assert_eq!(
        retry, milk,
        "a retry with the same key returns the same task"
    );
    let mut created = vec![milk.clone()];
    for (i, title) in ["eggs", "bread", "butter", "jam", "tea", "coffee"]
        .into_iter()
        .enumerate()
    {
        let server = if i % 2 == 0 { &a } else { &b };
        created.push(task_of(server, "add_task", json!({ "title": title })).await);
    }
    let newest_first: Vec<String> = created.iter().rev().map(|t| text(t, "id")).collect();

    // list_tasks paging with cursors: every task once, newest first, on either server.
    let (paged, sizes) = all_tasks(&a, json!({ "limit": 2 })).await;
    assert_eq!(sizes, [2, 2, 2, 1], "pages of 2");
    assert_eq!(ids(&json!(paged)), newest_first, "paged list, newest first");
    let (one_page, _) = all_tasks(&b, json!({ "limit": 50 })).await;
    assert_eq!(one_page, paged, "one big page on the other server agrees");
    let found = a.call_ok("list_tasks", json!({ "query": "MILK" })).await;
    assert_eq!(ids(&found["tasks"]), [text(&milk, "id")], "query filter");

    // update_task with expected_updated_at: applies once, then conflicts on the stale time.
    let updated = task_of(
        &a,
        "update_task",
        json!({ "task_id": milk["id"], "title": "oat milk",
                "expected_updated_at": milk["updated_at"] }),
    )
    .await;
    assert_eq!(updated["title"], "oat milk");
    assert_eq!(updated["description"], "oat");
    assert_eq!(updated["created_at"], milk["created_at"]);
    let stale = b
        .call_err(
            "update_task",
            json!({ "task_id": milk["id"], "title": "stale",
                    "expected_updated_at": milk["updated_at"] }),
        )
        .await;
    assert!(stale.starts_with("conflict: "), "a stale update: {stale}");
    let current = task_of(
        &b,
        "update_task",
        json!({ "task_id": milk["id"], "description": "",
                "expected_updated_at": updated["updated_at"] }),
    )
    .await;
    assert_eq!(current["title"], "oat milk");
    assert_eq!(current["description"], Value::Null, "\"\" clears it");

    // complete_task, idempotent.
    let eggs = &created[1];
    let done = task_of(&a, "complete_task", json!({ "task_id": eggs["id"] })).await;
    assert_eq!(done["completed"], true);
    assert!(done["completed_at"].is_string(), "{done}");
    let again = task_of(&b, "complete_task", json!({ "task_id": eggs["id"] })).await;
    assert_eq!(again, done, "completing again changes nothing");
    let (completed, _) = all_tasks(&a, json!({ "status": "completed" })).await;
    assert_eq!(completed, [done]);
    let (pending, _) = all_tasks(&b, json!({ "status": "pending", "limit": 4 })).await;
    assert_eq!(pending.len(), created.len() - 1);
    assert!(pending.iter().all(|t| t["completed"] == false));

    // delete_task: gone for good.
    let bread = text(&created[2], "id");
    let deleted = a.call_ok("delete_task", json!({ "task_id": bread })).await;
    assert_eq!(
        deleted,
        json!({ "task_id": bread, "deleted": true, "subtasks_deleted": 0 })
    );
    let gone = b.call_err("delete_task", json!({ "task_id": bread })).await;
    assert_eq!(gone, format!("not_found: task {bread} not found"));
    let (left, _) = all_tasks(&b, json!({})).await;
    assert_eq!(left.len(), created.len() - 1);
    assert!(!ids(&json!(left)).contains(&bread));

    // History, paged back to the beginning with `before`; the add_task calls naming the
    // conversation are recorded in it.
    let full = b
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": cid }),
        )
        .await;
    let messages = full["messages"].as_array().expect("messages").clone();
    assert_eq!(
        &messages[..3],
        &appended[..],
        "appended messages, oldest first"
    );
    let records: Vec<&Value> = messages[3..]
        .iter()
        .map(|m| {
            assert_eq!(m["role"], "tool", "{m}");
            &m["tool_calls"]
        })
        .collect();
    assert!(
        !records.is_empty() && records.iter().all(|r| r["tool"] == "add_task"),
        "the add_task calls are recorded: {records:?}"
    );
    assert_eq!(records[0]["result"]["task"], milk);
    let mut pages = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut args = json!({ "conversation_id": cid, "limit": 2 });
        if let Some(before) = before {
            args["before"] = json!(before);
        }
        let page = a.call_ok("get_conversation_history", args).await;
        let page_messages = page["messages"].as_array().expect("messages").clone();
        before = page["next_cursor"].as_i64();
        pages.splice(0..0, page_messages);
        if before.is_none() {
            break;
        }
    }
    assert_eq!(
        pages, messages,
        "history paged back equals the whole history"
    );

    // set_conversation_summary.
    let summarised = a
        .call_ok(
            "set_conversation_summary",
            json!({ "conversation_id": cid, "summary": "milk, eggs, bread",
                    "through_message_id": message_ids[1] }),
        )
        .await["conversation"]
        .clone();
    assert_eq!(summarised["summary"], "milk, eggs, bread");
    assert_eq!(summarised["summary_through_message_id"], message_ids[1]);
    let history = b
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": cid, "limit": 1 }),
        )
        .await;
    assert_eq!(history["summary"], "milk, eggs, bread");
    assert_eq!(history["conversation"], summarised);

    // list_conversations paging, then archive_conversation.
    let other = b
        .call_ok("start_conversation", json!({ "title": "other" }))
        .await["conversation"]
        .clone();
    let listed = all_conversations(&a, false).await;
    let listed_ids = ids(&json!(listed));
    let unique: BTreeSet<&String> = listed_ids.iter().collect();
    assert_eq!(unique.len(), listed_ids.len(), "paged without duplicates");
    assert!(listed_ids.contains(&cid) && listed_ids.contains(&text(&other, "id")));
    let archived = a
        .call_ok("archive_conversation", json!({ "conversation_id": cid }))
        .await["conversation"]
        .clone();
    assert_eq!(archived["status"], "archived");
    assert!(archived["archived_at"].is_string());
    let visible = ids(&json!(all_conversations(&b, false).await));
    assert!(!visible.contains(&cid), "archived is hidden: {visible:?}");
    let everything = ids(&json!(all_conversations(&b, true).await));
    assert!(everything.contains(&cid), "include_archived shows it");
    let refused = a
        .call_err(
            "append_message",
            json!({ "conversation_id": cid, "role": "user", "content": "late" }),
        )
        .await;
    assert!(
        refused.starts_with("conflict: "),
        "append to archived: {refused}"
    );

    let stderr = [a.close().await, b.close().await].join("\n");
    assert!(
        !stderr.contains("prepared statement"),
        "prepared statements went wrong behind the pooler:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Many clients at once over HTTP
// ---------------------------------------------------------------------------------------------

/// The workload's calls; a failure says which call it was.
struct Client(StatelessCaller);

impl Client {
    fn new() -> Client {
        Client(StatelessCaller::new(REQUEST_TIMEOUT))
    }

    /// One call: its structured content, or what went wrong (status and body, or the tool's
    /// error text).
    async fn call(
        &self,
        url: &str,
        token: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, String> {
        let shown = format!("{tool} {arguments}");
        self.0
            .call(url, token, tool, arguments)
            .await
            .map_err(|failure| format!("{shown}: {failure}"))
    }
}

/// What one user's client did.
#[derive(Default)]
struct UserRun {
    /// Acknowledged tasks: idempotency key → id.
    tasks: BTreeMap<String, String>,
    /// Acknowledged user messages: content → id.
    messages: BTreeMap<String, i64>,
    conversation: Option<String>,
    /// Task ids the user's own list_tasks paging returned (must be exactly its own).
    listed: Vec<String>,
}

/// What the whole workload did.
struct Workload {
    users: Vec<String>,
    runs: Vec<UserRun>,
    calls: usize,
    ok: usize,
    errors: Vec<String>,
    elapsed: Duration,
}

struct Shared {
    client: Client,
    urls: Vec<String>,
    round_robin: AtomicUsize,
    calls: AtomicUsize,
    ok: AtomicUsize,
}

impl Shared {
    fn new(servers: &[HttpServer]) -> Shared {
        Shared {
            client: Client::new(),
            urls: servers.iter().map(HttpServer::mcp_url).collect(),
            round_robin: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            ok: AtomicUsize::new(0),
        }
    }

    async fn call(&self, token: &str, tool: &str, arguments: Value) -> Result<Value, String> {
        let replica = self.round_robin.fetch_add(1, Ordering::Relaxed) % self.urls.len();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self
            .client
            .call(&self.urls[replica], token, tool, arguments)
            .await
            .map_err(|e| format!("replica {replica}: {e}"));
        if result.is_ok() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

/// One user's calls, each on the next replica; stops at the first failure (returned with what
/// was acknowledged before it).
async fn user_session(
    shared: &Shared,
    user: &str,
    token: &str,
    run: &mut UserRun,
) -> Result<(), String> {
    let conversation = shared
        .call(
            token,
            "start_conversation",
            json!({ "title": format!("{user} pooled") }),
        )
        .await?;
    let cid = text(&conversation["conversation"], "id");
    run.conversation = Some(cid.clone());

    let mut tasks = Vec::new();
    for i in 0..TASKS_PER_USER {
        let key = format!("{user}-k{i}");
        let added = shared
            .call(
                token,
                "add_task",
                json!({ "title": format!("{user} task {i}"), "idempotency_key": key,
                        "conversation_id": cid }),
            )
            .await?;
        let task = added["task"].clone();
        if task["title"] != format!("{user} task {i}") {
            return Err(format!("add_task for {user} returned {added}"));
        }
        run.tasks.insert(key, text(&task, "id"));
        tasks.push(task);

        if i % 3 == 0 {
            let content = format!("{user} says {i}");
            let appended = shared
                .call(
                    token,
                    "append_message",
                    json!({ "conversation_id": cid, "role": "user", "content": content }),
                )
                .await?;
            let id = appended["message"]["id"]
                .as_i64()
                .ok_or_else(|| format!("append_message for {user} returned {appended}"))?;
            run.messages.insert(content, id);
        }
    }

    // A retried add_task is recognised by its key.
    let retry = shared
        .call(
            token,
            "add_task",
            json!({ "title": format!("{user} task 0"), "idempotency_key": format!("{user}-k0"),
                    "conversation_id": cid }),
        )
        .await?;
    if retry["task"] != tasks[0] {
        return Err(format!(
            "the retried add_task for {user} returned {retry}, not {}",
            tasks[0]
        ));
    }

    // Optimistic update, then completion.
    let updated = shared
        .call(
            token,
            "update_task",
            json!({ "task_id": tasks[0]["id"], "title": format!("{user} task 0 (edited)"),
                    "expected_updated_at": tasks[0]["updated_at"] }),
        )
        .await?;
    if updated["task"]["title"] != format!("{user} task 0 (edited)") {
        return Err(format!("update_task for {user} returned {updated}"));
    }
    let completed = shared
        .call(token, "complete_task", json!({ "task_id": tasks[1]["id"] }))
        .await?;
    if completed["task"]["completed"] != true {
        return Err(format!("complete_task for {user} returned {completed}"));
    }

    // Page through the user's tasks.
    let mut cursor: Option<String> = None;
    loop {
        let mut args = json!({ "limit": PAGE });
        if let Some(cursor) = &cursor {
            args["cursor"] = json!(cursor);
        }
        let page = shared.call(token, "list_tasks", args).await?;
        run.listed.extend(ids(&page["tasks"]));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }

    let history = shared
        .call(
            token,
            "get_conversation_history",
            json!({ "conversation_id": cid }),
        )
        .await?;
    let contents: BTreeSet<String> = history["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = run.messages.keys().cloned().collect();
    if contents != expected {
        return Err(format!(
            "{user}'s history has user messages {contents:?}, not {expected:?}"
        ));
    }
    Ok(())
}

/// `USERS` clients at once, spread over `servers`, every call stateless with its user's token.
async fn run_workload(servers: &[HttpServer], users: &[String], tokens: &[String]) -> Workload {
    let shared = Arc::new(Shared::new(servers));
    let started = Instant::now();
    let tasks: Vec<_> = users
        .iter()
        .zip(tokens)
        .map(|(user, token)| {
            let shared = shared.clone();
            let (user, token) = (user.clone(), token.clone());
            tokio::spawn(async move {
                let mut run = UserRun::default();
                let outcome = user_session(&shared, &user, &token, &mut run).await;
                (run, outcome.err())
            })
        })
        .collect();
    let joined = tokio::time::timeout(RUN_LIMIT, futures_join(tasks))
        .await
        .unwrap_or_else(|_| panic!("the workload did not finish within {RUN_LIMIT:?}"));
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for (user, (run, error)) in users.iter().zip(joined) {
        if let Some(error) = error {
            errors.push(format!("{user}: {error}"));
        }
        runs.push(run);
    }
    Workload {
        users: users.to_vec(),
        runs,
        calls: shared.calls.load(Ordering::Relaxed),
        ok: shared.ok.load(Ordering::Relaxed),
        errors,
        elapsed: started.elapsed(),
    }
}

/// What the cross-user probes saw.
struct Probes {
    tried: usize,
    /// Probes answered as if the other user's rows did not exist.
    refused: usize,
    /// Probes that read or changed another user's rows.
    leaks: Vec<String>,
}

/// Every user at once tries the next user's task and conversation: behind the pooler the
/// transactions of all users share the same server connections, so a user scope that
/// outlived its transaction would show here.
async fn cross_user_probes(
    servers: &[HttpServer],
    workload: &Workload,
    tokens: &[String],
) -> Probes {
    let shared = Arc::new(Shared::new(servers));
    let handles: Vec<_> = (0..workload.users.len())
        .map(|i| {
            let j = (i + 1) % workload.users.len();
            let (other, victim) = (&workload.users[j], &workload.runs[j]);
            let task = victim
                .tasks
                .get(&format!("{other}-k2"))
                .cloned()
                .unwrap_or_default();
            let conversation = victim.conversation.clone().unwrap_or_default();
            let (shared, token, other) = (shared.clone(), tokens[i].clone(), other.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let completed = shared
                    .call(&token, "complete_task", json!({ "task_id": task }))
                    .await;
                outcomes.push(match completed {
                    Err(e) if e.contains("not_found") => Ok(()),
                    outcome => Err(format!("complete_task on {other}'s task: {outcome:?}")),
                });
                let history = shared
                    .call(
                        &token,
                        "get_conversation_history",
                        json!({ "conversation_id": conversation }),
                    )
                    .await;
                outcomes.push(match history {
                    Err(e) if e.contains("not_found") => Ok(()),
                    outcome => Err(format!("history of {other}'s conversation: {outcome:?}")),
                });
                let listed = shared
                    .call(
                        &token,
                        "list_tasks",
                        json!({ "query": format!("{other} task") }),
                    )
                    .await;
                outcomes.push(match listed {
                    Ok(page) if page["tasks"] == json!([]) => Ok(()),
                    outcome => Err(format!("list_tasks for {other}'s titles: {outcome:?}")),
                });
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<Result<(), String>> =
        futures_join(handles).await.into_iter().flatten().collect();
    Probes {
        tried: outcomes.len(),
        refused: outcomes.iter().filter(|o| o.is_ok()).count(),
        leaks: outcomes.into_iter().filter_map(Result::err).collect(),
    }
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("a client task panicked"));
    }
    out
}

fn user_names() -> Vec<String> {
    (0..USERS).map(|i| format!("user{i:02}")).collect()
}

/// Tokens for every user, created in parallel with `todo-mcp token create` on `db_url`.
async fn create_tokens(db_url: &str, users: &[String]) -> Vec<String> {
    let handles: Vec<_> = users
        .iter()
        .map(|user| {
            let (db_url, user) = (db_url.to_string(), user.clone());
            tokio::task::spawn_blocking(move || support::create_token(&db_url, &user))
        })
        .collect();
    let mut tokens = Vec::new();
    for handle in handles {
        tokens.push(handle.await.expect("token create panicked"));
    }
    tokens
}

async fn start_replicas(url: &str) -> Vec<HttpServer> {
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        servers.push(start_http(url, &["--pool-size", REPLICA_POOL], &[]).await);
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_through_pgbouncer_lose_nothing_and_see_only_their_own() {
    let db = PgTestDb::new().await;
    let bouncer = PgBouncer::start(&db).await;
    let url = bouncer.url();
    let users = user_names();
    // The CLI goes through the pooler too.
    let tokens = create_tokens(&url, &users).await;
    let servers = start_replicas(&url).await;

    let workload = run_workload(&servers, &users, &tokens).await;

    // The pooler really multiplexed: more client connections than server connections.
    let clients = bouncer.show_for_db("CLIENTS").await.len();
    let server_conns = bouncer.show_for_db("SERVERS").await.len();
    let stats = bouncer.show_for_db("STATS").await;
    let transactions = stats
        .first()
        .and_then(|row| row.get("total_xact_count"))
        .cloned()
        .unwrap_or_default();
    let report = format!(
        "{} users, {} calls ({} ok) in {:.1?} over {REPLICAS} replicas (--pool-size \
         {REPLICA_POOL}); pgbouncer: {clients} client connections on {server_conns} server \
         connections (pool {DEFAULT_POOL_SIZE}), {transactions} transactions",
        workload.users.len(),
        workload.calls,
        workload.ok,
        workload.elapsed
    );
    eprintln!("{report}");
    let logs: Vec<String> = servers.iter().map(HttpServer::stderr).collect();
    assert!(
        workload.errors.is_empty(),
        "calls failed through the pooler: {report}\n{:#?}\n--- replica stderr ---\n{}",
        workload.errors,
        logs.join("\n---\n")
    );
    assert_eq!(workload.ok, workload.calls, "{report}");
    assert!(
        server_conns <= DEFAULT_POOL_SIZE,
        "more server connections than the pool allows: {report}"
    );
    assert!(
        clients > server_conns,
        "the clients did not outnumber the server connections, so nothing was shared: {report}"
    );

    // Every acknowledged task is stored exactly once, for its user; nothing else is.
    let rows = db
        .query_json("SELECT id::text, user_id, idempotency_key FROM tasks")
        .await;
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        by_id.entry(text(row, "id")).or_default().push(row);
    }
    let mut writes_lost = 0;
    let mut acknowledged = 0;
    for (user, run) in workload.users.iter().zip(&workload.runs) {
        for (key, id) in &run.tasks {
            acknowledged += 1;
            match by_id.get(id).map(Vec::as_slice) {
                Some([row]) => assert_eq!(
                    **row,
                    json!({ "id": id, "user_id": user, "idempotency_key": key }),
                    "task {id}"
                ),
                Some(many) => panic!("task {id} is stored {} times: {many:?}", many.len()),
                None => writes_lost += 1,
            }
        }
    }
    assert_eq!(writes_lost, 0, "acknowledged tasks missing: {report}");
    assert_eq!(acknowledged, USERS * TASKS_PER_USER);
    assert_eq!(
        rows.len(),
        acknowledged,
        "tasks nobody acknowledged: {rows:?}"
    );

    // Every acknowledged message is stored once, in its user's conversation.
    let messages = db
        .query_json(
            "SELECT id, user_id, conversation_id::text AS conversation, content FROM messages \
             WHERE role = 'user'",
        )
        .await;
    let acked_messages: usize = workload.runs.iter().map(|r| r.messages.len()).sum();
    assert_eq!(
        messages.len(),
        acked_messages,
        "user messages: {messages:?}"
    );

    // Nobody saw or wrote another user's rows.
    let mut cross_user = 0;
    for (user, run) in workload.users.iter().zip(&workload.runs) {
        let own: BTreeSet<&String> = run.tasks.values().collect();
        let listed: BTreeSet<&String> = run.listed.iter().collect();
        assert_eq!(
            listed.len(),
            run.listed.len(),
            "{user} was listed a task twice"
        );
        cross_user += listed.difference(&own).count();
        assert_eq!(
            listed.intersection(&own).count(),
            own.len(),
            "{user}'s paging missed some of its tasks"
        );
        for message in messages.iter().filter(|m| m["user_id"] == user.as_str()) {
            if message["conversation"].as_str() != run.conversation.as_deref()
                || run.messages.get(&text(message, "content")) != message["id"].as_i64().as_ref()
            {
                cross_user += 1;
            }
        }
    }
    let probes = cross_user_probes(&servers, &workload, &tokens).await;
    cross_user += probes.leaks.len();
    assert!(
        probes.leaks.is_empty(),
        "a user reached another's rows through the pooler: {:#?}",
        probes.leaks
    );
    assert_eq!(probes.refused, probes.tried, "{} probes", probes.tried);
    let completed: Vec<String> = db
        .query_json("SELECT idempotency_key FROM tasks WHERE completed ORDER BY 1")
        .await
        .iter()
        .map(|row| text(row, "idempotency_key"))
        .collect();
    let expected: Vec<String> = workload.users.iter().map(|u| format!("{u}-k1")).collect();
    assert_eq!(
        completed, expected,
        "only each user's own complete_task took effect"
    );
    assert_eq!(
        cross_user, 0,
        "rows of another user were seen or written: {report}"
    );
    for log in &logs {
        assert!(
            !log.contains("prepared statement"),
            "prepared statements went wrong behind the pooler:\n{log}"
        );
    }

    let outcome = format!(
        "tool calls of {USERS} concurrent users over {REPLICAS} replicas through PgBouncer \
         (pool_mode = transaction, {server_conns} server connections for {clients} client \
         connections) with ?pgbouncer=true: every call succeeds, and every try at another \
         user's rows gets not_found"
    );
    reliability::record(Evidence {
        class: "PgBouncer transaction pooling",
        test: "tests/external/pgbouncer.rs",
        cases: workload.calls + probes.tried,
        clear_errors: workload.ok + probes.refused,
        writes_lost,
        cross_user,
        outcome: &outcome,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_pgbouncer_flag_cached_statements_break_behind_the_pooler() {
    let db = PgTestDb::new().await;
    let bouncer = PgBouncer::start(&db).await;
    let users = user_names();
    // Tokens are set-up, not the workload: created on a direct connection.
    let tokens = create_tokens(db.url(), &users).await;
    // The replicas may already fail at start (their migration check goes through the
    // pooler): that failure counts as evidence too.
    let url = bouncer.url_without_flag();
    let mut failures = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        let url = url.clone();
        let started =
            tokio::spawn(
                async move { start_http(&url, &["--pool-size", REPLICA_POOL], &[]).await },
            )
            .await;
        match started {
            Ok(server) => servers.push(server),
            Err(e) => failures.push(panic_text(e)),
        }
    }
    let workload = if servers.is_empty() {
        None
    } else {
        Some(run_workload(&servers, &users, &tokens).await)
    };
    if let Some(workload) = &workload {
        failures.extend(workload.errors.iter().cloned());
    }
    failures.extend(servers.iter().map(HttpServer::stderr));

    let evidence: Vec<&str> = failures
        .iter()
        .flat_map(|failure| failure.lines())
        .filter(|line| {
            line.contains("prepared statement")
                && (line.contains("does not exist") || line.contains("already exists"))
        })
        .collect();
    let (ok, calls) = workload.as_ref().map_or((0, 0), |w| (w.ok, w.calls));
    eprintln!(
        "without pgbouncer=true: {} of {REPLICAS} replicas started, {ok} of {calls} calls ok; \
         {} lines name a missing or duplicate prepared statement, the first: {:?}",
        servers.len(),
        evidence.len(),
        evidence.first()
    );
    assert!(
        !evidence.is_empty(),
        "without pgbouncer=true the workload should have hit PostgreSQL's \"prepared statement \
         ... does not exist/already exists\" behind a transaction pooler, but it did not: \
         {ok} of {calls} calls ok; failures: {failures:#?}"
    );
}

/// The message of a panic caught from a task.
fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string()),
        Err(e) => format!("the task was cancelled: {e}"),
    }
}
