//! `GET /metrics` of `todo-mcp http` (issue 14), scraped while the server runs on
//! PostgreSQL: the counters move by exactly what the test did (tool calls by tool and
//! outcome, their duration histogram, auth refusals by reason), the pool's gauges are sane,
//! and the endpoint is served only when asked: behind `--metrics-token` (401 without it), on
//! `--metrics-listen`'s port alone, and nowhere (404) by default. A pool of one connection,
//! held by a call blocked on the test's row lock, makes the next call wait for the pool
//! (seen live in `todo_mcp_pool_waiting`); killing the blocked backend makes its call retry.

use crate::support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::cli::create_token_with;
use support::jsonrpc::{Reply, client, mcp_request, tool_call};
use support::jwt::sign_hs256;
use support::{HttpServer, PgTestDb, create_token, start_http};

const METRICS_TOKEN: &str = "metrics-test-scrape-token";
const JWT_SECRET: &str = "metrics-test-jwt-secret-of-32-bytes-at-least";

/// One scrape: every sample, keyed by its series as written (`name{labels}`).
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    /// Parses the OpenMetrics text format: `# …` lines are metadata; a sample is
    /// `series value` (series = name, or name{labels}, whose values never hold spaces here).
    fn parse(text: String) -> Scrape {
        assert!(
            text.ends_with("# EOF\n"),
            "an OpenMetrics exposition ends with `# EOF`:\n{text}"
        );
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "series {series} appears twice"
            );
        }
        Scrape { samples, text }
    }

    /// The value of a series that must be there.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{}", self.text))
    }

    /// Every series of metric `name` (its samples named exactly so, with any labels).
    fn family(&self, name: &str) -> BTreeMap<&str, f64> {
        self.samples
            .iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(series, value)| (series.as_str(), *value))
            .collect()
    }

    /// How much each series of `name` moved since `before` (series new since then count
    /// from 0); only the ones that moved.
    fn moved_since(&self, before: &Scrape, name: &str) -> BTreeMap<String, f64> {
        self.family(name)
            .into_iter()
            .filter_map(|(series, value)| {
                let delta = value - before.samples.get(series).copied().unwrap_or(0.0);
                (delta != 0.0).then(|| (series.to_owned(), delta))
            })
            .collect()
    }
}

async fn get_metrics(url: &str, bearer: Option<&str>) -> Reply {
    let mut request = client().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    Reply::read(request.send().await.expect("GET /metrics")).await
}

/// A successful scrape, parsed.
async fn scrape(url: &str, bearer: Option<&str>) -> Scrape {
    let reply = get_metrics(url, bearer).await;
    assert_eq!(reply.status, StatusCode::OK, "GET {url}: {}", reply.body);
    let content_type = reply.headers["content-type"].to_str().expect("ASCII");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "content type {content_type}"
    );
    Scrape::parse(reply.body)
}

/// One stateless `tools/call`; returns the HTTP status and the JSON-RPC response, if any.
async fn call(
    server: &HttpServer,
    authorization: Option<&str>,
    tool: &str,
    arguments: Value,
) -> (StatusCode, Option<Value>) {
    let mut request = mcp_request(&server.mcp_url(), None);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let reply = Reply::read(
        request
            .json(&tool_call(1, tool, arguments))
            .send()
            .await
            .expect("POST /mcp"),
    )
    .await;
    let response = (reply.status == StatusCode::OK)
        .then(|| reply.response(1))
        .flatten();
    (reply.status, response)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn labels(name: &str, pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn calls(tool: &str, outcome: &str) -> String {
    labels(
        "todo_mcp_tool_calls_total",
        &[("tool", tool), ("outcome", outcome)],
    )
}

fn refusals(reason: &str) -> String {
    labels("todo_mcp_auth_refusals_total", &[("reason", reason)])
}

/// How long the test waits to see a state it brought about (a blocked call, a waiter).
const SEE_WITHIN: Duration = Duration::from_secs(20);

/// Polls `look` every 20 ms until it gives `Some`; panics after [`SEE_WITHIN`], saying
/// `what` was awaited.
async fn wait_until<T, F, Fut>(what: &str, mut look: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + SEE_WITHIN;
    loop {
        if let Some(seen) = look().await {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "not seen within {SEE_WITHIN:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server backends waiting on a lock (only the server's calls take row locks here).
async fn lock_waiters(observer: &tokio_postgres::Client, db: &PgTestDb) -> Vec<i32> {
    observer
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            &[&db.name()],
        )
        .await
        .expect("reading pg_stat_activity")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn expected(pairs: &[(String, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_a_run_counts_exactly_what_was_done() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let reader = create_token_with(db.url(), "alice", &["--scope", "read"]);
    let server = start_http(
        db.url(),
        &["--pool-size", "4"],
        &[
            ("TODO_MCP_METRICS_TOKEN", METRICS_TOKEN),
            ("TODO_MCP_JWT_SECRET", JWT_SECRET),
        ],
    )
    .await;
    let url = format!("{}/metrics", server.base_url());

    // The token guards it: none, or a wrong one, gets 401 and not a byte of metrics.
    for bearer in [None, Some("wrong-token"), Some(&token[..])] {
        let reply = get_metrics(&url, bearer).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert!(
            reply.headers.contains_key("www-authenticate"),
            "{:?}",
            reply.headers
        );
        assert!(!reply.body.contains("todo_mcp_"), "{}", reply.body);
    }

    let before = scrape(&url, Some(METRICS_TOKEN)).await;
    let bearer = format!("Bearer {token}");
    for title in ["milk", "eggs", "bread"] {
        let (status, result) =
            call(&server, Some(&bearer), "add_task", json!({"title": title})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(result.expect("a response")["result"]["isError"], false);
    }
    let (_, result) = call(&server, Some(&bearer), "add_task", json!({"title": 42})).await;
    let result = result.expect("a response");
    assert_eq!(result["result"]["isError"], true, "{result}");
    assert!(result.to_string().contains("invalid_argument"), "{result}");
    // rmcp answers a JSON-RPC error; the server still counts (and records) the call.
    let (_, result) = call(&server, Some(&bearer), "no_such_tool", json!({})).await;
    let result = result.expect("a response");
    assert_eq!(result["error"]["code"], -32602, "{result}");
    // Refused before any tool runs: counted as refusals, not as tool calls.
    let (status, _) = call(
        &server,
        Some(&format!("Bearer {reader}")),
        "add_task",
        json!({"title": "not allowed"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &server,
        Some("Bearer tmcp_not_a_real_token"),
        "list_tasks",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let expired = sign_hs256(&json!({"sub": "alice", "exp": now() - 3600}), JWT_SECRET);
    let (status, _) = call(
        &server,
        Some(&format!("Bearer {expired}")),
        "list_tasks",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&server, None, "list_tasks", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let after = scrape(&url, Some(METRICS_TOKEN)).await;
    eprintln!("--- the scrape's first lines, then its samples that are not 0 ---");
    for line in after.text.lines().take(8) {
        eprintln!("{line}");
    }
    eprintln!("…");
    for (series, value) in after.samples.iter().filter(|(_, v)| **v != 0.0) {
        eprintln!("{series} {value}");
    }
    eprintln!("--- ({} lines in all) ---", after.text.lines().count());

    assert_eq!(
        after.moved_since(&before, "todo_mcp_tool_calls_total"),
        expected(&[
            (calls("add_task", "ok"), 3.0),
            (calls("add_task", "invalid_argument"), 1.0),
            (calls("(unknown)", "unknown_tool"), 1.0),
        ]),
        "tool calls"
    );
    assert_eq!(
        after.moved_since(&before, "todo_mcp_auth_refusals_total"),
        expected(&[
            (refusals("insufficient_scope"), 1.0),
            (refusals("invalid"), 1.0),
            (refusals("expired"), 1.0),
            (refusals("missing"), 1.0),
        ]),
        "auth refusals"
    );
    // Every refusal reason is served from the start, so a rate sees its first one.
    for reason in ["missing", "revoked", "wrong_audience", "insufficient_scope"] {
        after.get(&refusals(reason));
    }

    // The histogram: one observation per call, the +Inf bucket equal to the count.
    let histogram = |suffix: &str, extra: &[(&str, &str)], tool: &str| {
        let mut pairs = extra.to_vec();
        pairs.push(("tool", tool));
        labels(
            &format!("todo_mcp_tool_call_duration_seconds_{suffix}"),
            &pairs,
        )
    };
    for (tool, count) in [("add_task", 4.0), ("(unknown)", 1.0)] {
        let counted = after.get(&histogram("count", &[], tool))
            - before
                .samples
                .get(&histogram("count", &[], tool))
                .copied()
                .unwrap_or(0.0);
        assert_eq!(counted, count, "{tool}'s observations");
        assert_eq!(
            after.get(&histogram("bucket", &[("le", "+Inf")], tool)),
            after.get(&histogram("count", &[], tool)),
            "{tool}"
        );
        assert!(after.get(&histogram("sum", &[], tool)) > 0.0, "{tool}");
    }
    assert_eq!(
        after
            .moved_since(&before, "todo_mcp_tool_call_duration_seconds_count")
            .len(),
        2,
        "only add_task and (unknown) were called"
    );

    // No contention here: no retries, but the series are there for every tool.
    assert!(
        after
            .moved_since(&before, "todo_mcp_transaction_retries_total")
            .is_empty()
    );
    after.get(&labels(
        "todo_mcp_transaction_retries_total",
        &[("tool", "add_task"), ("reason", "contention")],
    ));

    // The pool, read at scrape time.
    let max = after.get("todo_mcp_pool_max_connections");
    let open = after.get("todo_mcp_pool_connections");
    let idle = after.get("todo_mcp_pool_idle_connections");
    let in_use = after.get("todo_mcp_pool_in_use_connections");
    assert_eq!(max, 4.0, "--pool-size 4");
    assert!(
        (1.0..=max).contains(&open) && in_use <= open && idle + in_use == open,
        "pool: max {max}, open {open}, idle {idle}, in use {in_use}"
    );
    assert_eq!(after.get("todo_mcp_pool_waiting"), 0.0);
    // Each call took at least one connection (a token check, then the call's transaction).
    let acquired: f64 = after
        .moved_since(&before, "todo_mcp_pool_acquires_total")
        .values()
        .sum();
    assert!(
        acquired >= 5.0,
        "{acquired} connections acquired for 5 calls"
    );
    assert!(after.get("todo_mcp_pool_connections_created_total") >= 1.0);

    // None are sent (see NotificationKind), but the counter is served.
    for kind in ["progress", "logging", "tools_list_changed"] {
        assert_eq!(
            after.get(&labels(
                "todo_mcp_notifications_sent_total",
                &[("kind", kind)]
            )),
            0.0
        );
    }
    after.get(&labels(
        "todo_mcp_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_served_unless_asked() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let url = format!("{}/metrics", server.base_url());
    for bearer in [None, Some(&token[..]), Some(METRICS_TOKEN)] {
        let reply = get_metrics(&url, bearer).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{bearer:?}: {}",
            reply.body
        );
        assert!(!reply.body.contains("todo_mcp_"), "{}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_listener_serves_them_on_its_own_port_only() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = start_http(db.url(), &["--metrics-listen", "127.0.0.1:0"], &[]).await;
    let metrics_addr = server
        .stderr()
        .lines()
        .filter(|line| line.contains("serving metrics"))
        .find_map(|line| {
            let start = line.find("address=")? + "address=".len();
            line[start..].split_whitespace().next().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no `serving metrics` line in\n{}", server.stderr()));
    assert_ne!(metrics_addr, server.addr().to_string());
    let url = format!("http://{metrics_addr}/metrics");

    let before = scrape(&url, None).await;
    let (status, _) = call(
        &server,
        Some(&format!("Bearer {token}")),
        "list_tasks",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let after = scrape(&url, None).await;
    assert_eq!(
        after.moved_since(&before, "todo_mcp_tool_calls_total"),
        expected(&[(calls("list_tasks", "ok"), 1.0)])
    );

    // The main listener has no /metrics; the metrics listener has nothing but.
    let main = get_metrics(&format!("{}/metrics", server.base_url()), None).await;
    assert_eq!(main.status, StatusCode::NOT_FOUND, "{}", main.body);
    for path in ["/mcp", "/healthz", "/ui"] {
        let reply = Reply::read(
            client()
                .get(format!("http://{metrics_addr}{path}"))
                .send()
                .await
                .expect("GET"),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_waits_and_transaction_retries_are_counted_as_they_happen() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "alice");
    let server = std::sync::Arc::new(
        start_http(
            db.url(),
            &["--pool-size", "1", "--pool-timeout", "30"],
            &[("TODO_MCP_METRICS_TOKEN", METRICS_TOKEN)],
        )
        .await,
    );
    let url = format!("{}/metrics", server.base_url());
    let bearer = format!("Bearer {token}");
    let (_, added) = call(&server, Some(&bearer), "add_task", json!({"title": "held"})).await;
    let added = added.expect("a response");
    let task_id = added["result"]["structuredContent"]["task"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("add_task gave no task id: {added}"))
        .to_owned();
    let before = scrape(&url, Some(METRICS_TOKEN)).await;
    assert_eq!(before.get("todo_mcp_pool_max_connections"), 1.0);

    // The test locks the task; update_task then blocks on it, holding the only connection.
    let lock = db.client().await;
    lock.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM tasks WHERE id = '{task_id}' FOR UPDATE"
    ))
    .await
    .expect("taking the row lock");
    let observer = db.client().await;
    let update = {
        let (server, bearer, task_id) = (server.clone(), bearer.clone(), task_id.clone());
        tokio::spawn(async move {
            call(
                &server,
                Some(&bearer),
                "update_task",
                json!({"task_id": task_id, "title": "updated"}),
            )
            .await
        })
    };
    let blocked = wait_until("update_task blocked on the row lock", || async {
        lock_waiters(&observer, &db).await.first().copied()
    })
    .await;

    // The next call (its token check first) must wait for the pool: seen live.
    let list = {
        let (server, bearer) = (server.clone(), bearer.clone());
        tokio::spawn(async move { call(&server, Some(&bearer), "list_tasks", json!({})).await })
    };
    let waiting = wait_until("a caller waiting for the pool", || async {
        let now = scrape(&url, Some(METRICS_TOKEN)).await;
        let waiting = now.get("todo_mcp_pool_waiting");
        (waiting >= 1.0).then_some(waiting)
    })
    .await;
    eprintln!("update_task blocked on backend {blocked}; {waiting} caller(s) waiting for the pool");

    // Killing the blocked backend fails update_task's transaction retryably: it runs again on
    // a new connection (after list_tasks, or before it and blocked again on the lock).
    let killed: bool = observer
        .query_one("SELECT pg_terminate_backend($1)", &[&blocked])
        .await
        .expect("pg_terminate_backend")
        .get(0);
    assert!(killed, "pg_terminate_backend({blocked}) failed");
    wait_until(
        "update_task's retry blocked on the row lock again",
        || async {
            lock_waiters(&observer, &db)
                .await
                .into_iter()
                .find(|pid| *pid != blocked)
        },
    )
    .await;
    lock.batch_execute("ROLLBACK")
        .await
        .expect("releasing the row lock");

    for (what, handle) in [("update_task", update), ("list_tasks", list)] {
        let (status, response) = tokio::time::timeout(SEE_WITHIN, handle)
            .await
            .unwrap_or_else(|_| panic!("{what} did not end within {SEE_WITHIN:?}"))
            .expect("the call's task");
        let response = response.unwrap_or_else(|| panic!("{what}: HTTP {status}, no response"));
        assert_eq!(response["result"]["isError"], false, "{what}: {response}");
    }
    let (_, got) = call(
        &server,
        Some(&bearer),
        "get_task",
        json!({"task_id": task_id}),
    )
    .await;
    let got = got.expect("a response");
    assert_eq!(
        got["result"]["structuredContent"]["task"]["title"], "updated",
        "{got}"
    );

    let after = scrape(&url, Some(METRICS_TOKEN)).await;
    let retries = after.moved_since(&before, "todo_mcp_transaction_retries_total");
    let connection_lost = labels(
        "todo_mcp_transaction_retries_total",
        &[("tool", "update_task"), ("reason", "connection_lost")],
    );
    assert_eq!(
        retries.get(&connection_lost),
        Some(&1.0),
        "one retry of update_task after its connection was killed: {retries:?}"
    );
    assert!(
        retries
            .keys()
            .all(|series| series.contains("tool=\"update_task\"")),
        "only update_task retried: {retries:?}"
    );
    // A retried call is one call.
    assert_eq!(
        after.moved_since(&before, "todo_mcp_tool_calls_total"),
        expected(&[
            (calls("update_task", "ok"), 1.0),
            (calls("list_tasks", "ok"), 1.0),
            (calls("get_task", "ok"), 1.0),
        ]),
        "tool calls"
    );
    let acquires = after.moved_since(&before, "todo_mcp_pool_acquires_total");
    let waited = labels("todo_mcp_pool_acquires_total", &[("result", "waited")]);
    assert!(
        acquires.get(&waited).copied().unwrap_or(0.0) >= 1.0,
        "a connection was handed out after a wait: {acquires:?}"
    );
    assert!(
        after.get("todo_mcp_pool_acquire_wait_seconds_total")
            > before.get("todo_mcp_pool_acquire_wait_seconds_total"),
        "the wait's time is counted"
    );
    assert_eq!(after.get("todo_mcp_pool_waiting"), 0.0, "nobody waits now");
    assert!(
        after.get("todo_mcp_pool_connections_created_total")
            > before.get("todo_mcp_pool_connections_created_total"),
        "the killed connection was replaced"
    );
}
