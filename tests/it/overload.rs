//! Overload, handled rather than suffered: past `--max-in-flight` requests under way and as
//! many again waiting, `todo-mcp http` refuses a request at once (503, `Retry-After`),
//! before it touches the database; one that waited `--max-queue-wait` for its turn is
//! refused the same way; what was admitted runs and is recorded (README, "Overload"). A
//! call that got no database connection within `--pool-timeout` did nothing, says so and
//! leaves no record: `database_faults::a_call_finding_the_pool_exhausted_*`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::jsonrpc::{Reply, mcp_request, tool_call};
use crate::support::{HttpServer, PgTestDb, create_token, start_http};

const METRICS_TOKEN: &str = "overload-test-metrics-token";

/// A `tools/call` POST to `url`, answered.
async fn post_call(url: &str, token: &str, id: i64, tool: &str, args: Value) -> Reply {
    let response = mcp_request(url, Some(token))
        .json(&tool_call(id, tool, args))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {tool}: {e}"));
    Reply::read(response).await
}

/// The value of the metric line starting with `series ` (0 if absent).
async fn metric(server: &HttpServer, series: &str) -> f64 {
    let response = crate::support::jsonrpc::client()
        .get(format!("{}/metrics", server.base_url()))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, StatusCode::OK, "/metrics: {}", reply.body);
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .map_or(0.0, |value| value.trim().parse().unwrap_or(f64::NAN))
}

/// Polls `metric` until it reads `expected` (within 10 s).
async fn wait_for_metric(server: &HttpServer, series: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(server, series).await;
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {value}, not {expected}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many calls of `tool` have a success record.
async fn success_records(db: &PgTestDb, tool: &str) -> i64 {
    let rows = db
        .query_json(&format!(
            "SELECT count(*) AS n FROM messages WHERE kind = 'call_record' \
             AND tool_calls->>'tool' = '{tool}' AND tool_calls->>'ok' = 'true'"
        ))
        .await;
    rows[0]["n"].as_i64().unwrap_or(-1)
}

fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        reply.body
    );
    assert_eq!(
        reply
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "{what}: Retry-After"
    );
    let body: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("{what}: the refusal is not JSON ({e}): {}", reply.body));
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not run") && message.contains("retry"),
        "{what}: the refusal says the request did not run and to retry: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_capacity_requests_are_refused_at_once_and_what_was_admitted_is_recorded() {
    let db = PgTestDb::new().await;
    let token = create_token(db.url(), "olga");
    let server = start_http(
        db.url(),
        &[
            "--max-in-flight",
            "2",
            "--max-queue-wait",
            "2",
            "--metrics-token",
            METRICS_TOKEN,
        ],
        &[],
    )
    .await;
    let warm = post_call(
        &server.mcp_url(),
        &token,
        1,
        "add_task",
        json!({ "title": "warm" }),
    )
    .await;
    assert_eq!(warm.status, StatusCode::OK, "{}", warm.body);
    let records_before = success_records(&db, "add_task").await;

    // The database stalls: every add_task waits on a lock an operator holds.
    let admin = db.client().await;
    admin
        .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("locking tasks");

    // Two run (and wait on the lock), two more wait for their turn.
    let url = server.mcp_url();
    let spawn_call = |id: i64, title: String| {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = post_call(&url, &token, id, "add_task", json!({ "title": title })).await;
            (reply, started.elapsed())
        })
    };
    let admitted: Vec<_> = (0..2)
        .map(|i| spawn_call(10 + i, format!("admitted {i}")))
        .collect();
    wait_for_metric(&server, "todo_mcp_requests_in_flight", 2.0).await;
    let queued: Vec<_> = (0..2)
        .map(|i| spawn_call(20 + i, format!("queued {i}")))
        .collect();
    wait_for_metric(&server, "todo_mcp_requests_waiting", 2.0).await;
    // While those two wait: anything more is refused at once.
    for i in 0..3 {
        let (reply, took) = spawn_call(30 + i, format!("refused {i}"))
            .await
            .expect("a refused call");
        assert_refused(
            &reply,
            "a request past --max-in-flight with as many waiting",
        );
        assert!(
            took < Duration::from_millis(500),
            "refused at once, not after {took:?}"
        );
    }
    // The two that waited give up after --max-queue-wait (the lock is still held).
    for handle in queued {
        let (reply, took) = handle.await.expect("a queued call");
        assert_refused(&reply, "a request that waited --max-queue-wait");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
            "refused after about --max-queue-wait (2 s), not {took:?}"
        );
    }

    // The stall ends: what was admitted completes, and has its records.
    admin
        .batch_execute("COMMIT")
        .await
        .expect("unlocking tasks");
    for handle in admitted {
        let (reply, _) = handle.await.expect("an admitted call");
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(
            !reply.body.contains("\"isError\":true"),
            "an admitted call succeeds: {}",
            reply.body
        );
    }
    assert_eq!(
        success_records(&db, "add_task").await - records_before,
        2,
        "the two admitted calls, and only they, are recorded"
    );
    let titles = db
        .query_json("SELECT title FROM tasks WHERE title <> 'warm' ORDER BY title")
        .await;
    assert_eq!(
        titles,
        vec![
            json!({"title": "admitted 0"}),
            json!({"title": "admitted 1"})
        ],
        "only the admitted calls ran"
    );
    assert_eq!(
        metric(&server, "todo_mcp_overload_refusals_total{reason=\"busy\"}").await,
        3.0
    );
    assert_eq!(
        metric(
            &server,
            "todo_mcp_overload_refusals_total{reason=\"queue_timeout\"}"
        )
        .await,
        2.0
    );
    // And the server serves normally again.
    let after = post_call(&server.mcp_url(), &token, 40, "list_tasks", json!({})).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
}
