//! Three `todo-mcp http` replicas on one PostgreSQL database, one of them SIGKILLed mid-run:
//! what a client was told happened is in the database exactly once, and nothing else is.
//!
//! Several client tasks spread `add_task` (each with a unique `idempotency_key`) and
//! `append_message` calls round-robin over the replicas' `/mcp`, as stateless Streamable HTTP
//! requests (no `initialize`: the stateless server serves a bare `tools/call`), each with its
//! user's own bearer token. A call that fails is handled as a careful client would:
//!
//! * `add_task` is retried on the next replica with the same idempotency key until it is
//!   acknowledged;
//! * `append_message` has no key: a call whose request never left (connection refused) is
//!   retried on the next replica; any other failure leaves its outcome unknown, so it is
//!   recorded as "maybe" and not retried.
//!
//! At the end: every acknowledged task is in the database once, under its key and id, for
//! its user; no key has two tasks; every acknowledged message is there exactly once; and
//! the number of messages lies between the acknowledged ones and those plus the maybes.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::jsonrpc::{CallFailure, StatelessCaller};
use support::{PgTestDb, create_token, start_http};

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const WORKERS: usize = 6;
/// Calls per worker, alternating add_task and append_message: 300 in all.
const OPS_PER_WORKER: usize = 50;
/// Replica 0 is killed once this many operations have completed.
const KILL_AFTER: usize = 100;
/// Tries per operation (each on the next replica).
const MAX_ATTEMPTS: usize = 6;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    /// A 200 with a successful tool result: its structured content.
    Done(Value),
    /// The request never reached a server (the connection was refused): nothing happened.
    NotSent(String),
    /// Anything else: the call may or may not have taken effect.
    Unknown(String),
}

struct Client(StatelessCaller);

impl Client {
    fn new() -> Client {
        Client(StatelessCaller::new(REQUEST_TIMEOUT))
    }

    /// One stateless `tools/call` POST; only a refused connection proves nothing happened.
    async fn call(&self, url: &str, token: &str, tool: &str, arguments: Value) -> Outcome {
        match self.0.call(url, token, tool, arguments).await {
            Ok(content) => Outcome::Done(content),
            Err(CallFailure::Sending(e)) if e.is_connect() => Outcome::NotSent(format!("{e:?}")),
            Err(failure) => Outcome::Unknown(failure.to_string()),
        }
    }
}

/// An add_task the server acknowledged.
#[derive(Debug, Clone)]
struct AckedTask {
    user: &'static str,
    key: String,
    title: String,
    id: String,
}

/// An append_message the server acknowledged.
#[derive(Debug, Clone)]
struct AckedMessage {
    conversation: String,
    content: String,
    id: i64,
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    tasks: Vec<AckedTask>,
    messages: Vec<AckedMessage>,
    /// Contents of appends whose outcome is unknown.
    maybe: Vec<String>,
    /// Operations abandoned after MAX_ATTEMPTS (must stay empty).
    gave_up: Vec<String>,
}

/// Per-replica counters.
#[derive(Default)]
struct ReplicaStats {
    ok: AtomicUsize,
    failed: AtomicUsize,
    /// Failures of requests started after the replica was killed.
    failed_after_kill: AtomicUsize,
}

struct Run {
    client: Client,
    urls: Vec<String>,
    tokens: Vec<String>,
    conversations: Vec<String>,
    stats: Vec<ReplicaStats>,
    round_robin: AtomicUsize,
    completed: AtomicUsize,
    killed: AtomicBool,
    retries: AtomicUsize,
    ledger: Mutex<Ledger>,
}

impl Run {
    /// One call, tried on successive replicas as its outcome allows, until it is acknowledged
    /// or (an append) recorded as a maybe; after MAX_ATTEMPTS it is recorded as given up.
    async fn operation(&self, worker: usize, op: usize) {
        let user = worker % USERS.len();
        let token = &self.tokens[user];
        let is_add = op.is_multiple_of(2);
        let (tool, arguments, label) = if is_add {
            let key = format!("w{worker}-op{op}");
            (
                "add_task",
                json!({"title": format!("task {key}"), "idempotency_key": key}),
                key,
            )
        } else {
            let content = format!("message w{worker}-op{op}");
            (
                "append_message",
                json!({"conversation_id": self.conversations[user], "role": "user",
                       "content": content}),
                content,
            )
        };
        let first = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut errors = Vec::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let replica = (first + attempt) % self.urls.len();
            let dead_before = self.killed.load(Ordering::SeqCst) && replica == 0;
            let outcome = self
                .client
                .call(&self.urls[replica], token, tool, arguments.clone())
                .await;
            let stats = &self.stats[replica];
            if !matches!(outcome, Outcome::Done(_)) {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if dead_before {
                    stats.failed_after_kill.fetch_add(1, Ordering::Relaxed);
                }
            }
            match outcome {
                Outcome::Done(content) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    let mut ledger = self.ledger.lock().expect("ledger");
                    if is_add {
                        let task = &content["task"];
                        assert_eq!(task["title"], format!("task {label}"), "{content}");
                        ledger.tasks.push(AckedTask {
                            user: USERS[user],
                            title: format!("task {label}"),
                            id: task["id"].as_str().expect("task id").to_string(),
                            key: label,
                        });
                    } else {
                        let message = &content["message"];
                        assert_eq!(message["content"], label.as_str(), "{content}");
                        ledger.messages.push(AckedMessage {
                            conversation: self.conversations[user].clone(),
                            id: message["id"].as_i64().expect("message id"),
                            content: label,
                        });
                    }
                    return;
                }
                Outcome::NotSent(why) => errors.push(format!("replica {replica}: {why}")),
                Outcome::Unknown(why) if is_add => errors.push(format!("replica {replica}: {why}")),
                Outcome::Unknown(_) => {
                    self.ledger.lock().expect("ledger").maybe.push(label);
                    return;
                }
            }
        }
        self.ledger
            .lock()
            .expect("ledger")
            .gave_up
            .push(format!("{tool} {label}: {errors:#?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_calls_survive_a_replica_killed_mid_run_exactly_once() {
    let db = PgTestDb::new().await;
    let tokens: Vec<String> = USERS.iter().map(|u| create_token(db.url(), u)).collect();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start_http(db.url(), &[], &[]).await);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.mcp_url()).collect();

    // Each user's conversation, started on "their" replica.
    let client = Client::new();
    let mut conversations = Vec::new();
    for (user, token) in tokens.iter().enumerate() {
        let outcome = client
            .call(
                &urls[user],
                token,
                "start_conversation",
                json!({"title": format!("{} on replicas", USERS[user])}),
            )
            .await;
        let Outcome::Done(content) = outcome else {
            panic!("start_conversation for {}: {outcome:?}", USERS[user]);
        };
        conversations.push(
            content["conversation"]["id"]
                .as_str()
                .expect("conversation id")
                .to_string(),
        );
    }

    let run = Arc::new(Run {
        client,
        urls,
        tokens,
        conversations,
        stats: (0..3).map(|_| ReplicaStats::default()).collect(),
        round_robin: AtomicUsize::new(0),
        completed: AtomicUsize::new(0),
        killed: AtomicBool::new(false),
        retries: AtomicUsize::new(0),
        ledger: Mutex::new(Ledger::default()),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let run = run.clone();
            tokio::spawn(async move {
                for op in 0..OPS_PER_WORKER {
                    run.operation(worker, op).await;
                    run.completed.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // SIGKILL replica 0 mid-run, while requests are in flight.
    let victim = servers.remove(0);
    let kill_and_finish = async {
        while run.completed.load(Ordering::SeqCst) < KILL_AFTER {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        run.killed.store(true, Ordering::SeqCst);
        let _victim_log = victim.kill().await;
        let completed_at_kill = run.completed.load(Ordering::SeqCst);
        for worker in workers {
            worker.await.expect("client task panicked");
        }
        completed_at_kill
    };
    let completed_at_kill = tokio::time::timeout(RUN_LIMIT, kill_and_finish)
        .await
        .unwrap_or_else(|_| panic!("the run did not finish within {RUN_LIMIT:?}"));
    let elapsed = started.elapsed();

    let ledger = std::mem::take(&mut *run.ledger.lock().expect("ledger"));
    let stat = |replica: usize| {
        let s = &run.stats[replica];
        format!(
            "replica {replica}: {} ok, {} failed ({} after the kill)",
            s.ok.load(Ordering::Relaxed),
            s.failed.load(Ordering::Relaxed),
            s.failed_after_kill.load(Ordering::Relaxed)
        )
    };
    let report = format!(
        "{} operations in {elapsed:.1?}; replica 0 killed after {completed_at_kill} had \
         completed; {} retries; acknowledged: {} tasks, {} messages; maybe: {} messages\n{}\n{}\n{}",
        WORKERS * OPS_PER_WORKER,
        run.retries.load(Ordering::Relaxed),
        ledger.tasks.len(),
        ledger.messages.len(),
        ledger.maybe.len(),
        stat(0),
        stat(1),
        stat(2)
    );
    eprintln!("{report}");

    // The run did what it claims: replica 0 served before it died and refused after, and
    // every operation ended acknowledged (or, for appends, as a maybe).
    assert!(ledger.gave_up.is_empty(), "{report}\n{:#?}", ledger.gave_up);
    assert!(
        completed_at_kill < WORKERS * OPS_PER_WORKER,
        "the kill came after the run: {report}"
    );
    assert!(
        run.stats[0].ok.load(Ordering::Relaxed) > 0,
        "replica 0 served nothing before it was killed: {report}"
    );
    assert!(
        run.stats[0].failed_after_kill.load(Ordering::Relaxed) > 0,
        "no call reached the dead replica: {report}"
    );
    for replica in [1, 2] {
        assert_eq!(
            run.stats[replica].failed.load(Ordering::Relaxed),
            0,
            "a live replica failed calls: {report}"
        );
    }
    let adds = WORKERS * OPS_PER_WORKER / 2;
    assert_eq!(ledger.tasks.len(), adds, "every add_task is acknowledged");
    assert_eq!(
        ledger.messages.len() + ledger.maybe.len(),
        WORKERS * OPS_PER_WORKER - adds,
        "every append is acknowledged or a maybe"
    );

    // Tasks: one per key, the acknowledged id, the caller's user.
    let rows = db
        .query_json("SELECT id::text, user_id, title, idempotency_key FROM tasks")
        .await;
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        let key = row["idempotency_key"]
            .as_str()
            .unwrap_or_else(|| panic!("a task without an idempotency key: {row}"));
        by_key.entry(key.to_string()).or_default().push(row);
    }
    for (key, tasks) in &by_key {
        assert_eq!(
            tasks.len(),
            1,
            "idempotency key {key} has several tasks: {tasks:?}"
        );
    }
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "task ids repeat: {rows:?}");
    for acked in &ledger.tasks {
        let row = by_key
            .get(&acked.key)
            .map(|tasks| tasks[0])
            .unwrap_or_else(|| panic!("acknowledged task {acked:?} is not in the database"));
        assert_eq!(
            row,
            &json!({"id": acked.id, "user_id": acked.user, "title": acked.title,
                    "idempotency_key": acked.key}),
            "acknowledged as {acked:?}"
        );
        assert_eq!(
            rows.iter().filter(|r| r["id"] == acked.id.as_str()).count(),
            1,
            "task {} is not in the database exactly once",
            acked.id
        );
    }
    assert_eq!(
        rows.len(),
        ledger.tasks.len(),
        "tasks nobody asked for: {rows:?}"
    );

    // Messages: every acknowledged one exactly once, nothing that was never sent, and no
    // duplicate of a maybe.
    let rows = db
        .query_json(
            "SELECT id, conversation_id::text AS conversation, user_id, content FROM messages \
             WHERE role = 'user' ORDER BY id",
        )
        .await;
    let mut by_content: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        by_content
            .entry(row["content"].as_str().expect("content"))
            .or_default()
            .push(row);
    }
    for acked in &ledger.messages {
        let found = by_content
            .get(acked.content.as_str())
            .unwrap_or_else(|| panic!("acknowledged message {acked:?} is not in the database"));
        assert_eq!(found.len(), 1, "{acked:?} is there {} times", found.len());
        assert_eq!(found[0]["id"], acked.id, "{acked:?}");
        assert_eq!(found[0]["conversation"], acked.conversation.as_str());
    }
    let sent: BTreeSet<&str> = ledger
        .messages
        .iter()
        .map(|m| m.content.as_str())
        .chain(ledger.maybe.iter().map(String::as_str))
        .collect();
    for (content, found) in &by_content {
        assert!(sent.contains(content), "a message nobody sent: {found:?}");
        assert_eq!(found.len(), 1, "a message stored twice: {found:?}");
    }
    for row in &rows {
        let user = USERS
            .iter()
            .position(|u| row["user_id"] == *u)
            .unwrap_or_else(|| panic!("a message of an unknown user: {row}"));
        assert_eq!(
            row["conversation"],
            run.conversations[user].as_str(),
            "a message in another user's conversation: {row}"
        );
    }
    eprintln!(
        "of {} maybe appends, {} were stored",
        ledger.maybe.len(),
        rows.len().saturating_sub(ledger.messages.len())
    );
    assert!(
        (ledger.messages.len()..=ledger.messages.len() + ledger.maybe.len()).contains(&rows.len()),
        "{} messages stored, {} acknowledged, {} maybe\n{report}",
        rows.len(),
        ledger.messages.len(),
        ledger.maybe.len()
    );
}
