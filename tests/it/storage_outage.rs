//! PostgreSQL going away under a running server: calls fail fast with a clear retryable
//! error, nothing half-written survives, the server stays up and recovers by itself.

use crate::support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::connect_stdio;
use support::pg::{connect, database_url, start_throwaway_cluster};

fn titles(listed: &serde_json::Value) -> Vec<String> {
    listed["tasks"]
        .as_array()
        .expect("tasks array")
        .iter()
        .map(|t| t["title"].as_str().expect("title").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_gives_retryable_errors_and_the_server_recovers() {
    let cluster = start_throwaway_cluster();
    connect(cluster.admin_url())
        .await
        .batch_execute("CREATE DATABASE outage")
        .await
        .expect("create database");
    let url = database_url(cluster.admin_url(), "outage");

    let client = connect_stdio(&url, None, &[]).await;
    let pid = client.pid();
    client
        .call_ok("add_task", json!({ "title": "before" }))
        .await;

    cluster.pause();
    for tool in ["add_task", "list_tasks"] {
        let started = Instant::now();
        let args = json!({ "title": "during" });
        let args = if tool == "add_task" { args } else { json!({}) };
        let error = client.call_err(tool, args).await;
        assert!(
            error.starts_with(
                "unavailable: storage unavailable, nothing was done, retry: cannot connect"
            ),
            "{tool} during the outage said: {error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{tool} took {:?} to fail",
            started.elapsed()
        );
    }

    cluster.resume();
    // Connections the stopped server closed are discarded at check-out (and one found dead
    // at BEGIN is replaced), so the first call after the database is back already succeeds.
    client
        .call_ok("add_task", json!({ "title": "after" }))
        .await;
    let listed = client.call_ok("list_tasks", json!({})).await;
    assert_eq!(titles(&listed), ["after", "before"]);
    assert_eq!(
        client.pid(),
        pid,
        "the same server process served throughout"
    );
    let log = client.close().await;
    assert!(log.contains("call failed"), "failures were logged:\n{log}");
    let stored = titles(&listed).len();
    support::reliability::record(support::reliability::Evidence {
        class: "PostgreSQL server stopped and started",
        test: "tests/it/storage_outage.rs",
        cases: 3,
        clear_errors: 3,
        writes_lost: 2 - stored,
        cross_user: 0,
        outcome: "calls during the outage fail `unavailable: … cannot connect` within the pool timeout; the same process serves again once the server is back",
    });
}

/// The server stopped and started while calls are in flight: six clients keep adding tasks
/// (each with its own idempotency_key, retried on failure as a careful client does) across
/// the outage. No call hangs, every failure is a clear retryable error, and afterwards every
/// key has exactly one task: nothing acknowledged lost, nothing doubled by the retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_under_load_loses_and_doubles_nothing() {
    let cluster = std::sync::Arc::new(start_throwaway_cluster());
    connect(cluster.admin_url())
        .await
        .batch_execute("CREATE DATABASE outage_load")
        .await
        .expect("create database");
    let url = database_url(cluster.admin_url(), "outage_load");
    let client = connect_stdio(&url, None, &[("TODO_MCP_POOL_TIMEOUT", "1")]).await;
    let pid = client.pid();

    const WORKERS: usize = 6;
    const KEYS_PER_WORKER: usize = 40;
    let deadline = Duration::from_secs(10);
    let workers = (0..WORKERS).map(|w| {
        let client = &client;
        async move {
            let mut acknowledged = Vec::new();
            let mut errors = Vec::new();
            for k in 0..KEYS_PER_WORKER {
                let key = format!("w{w}-k{k}");
                let args = json!({ "title": format!("task {key}"), "idempotency_key": key });
                loop {
                    let started = Instant::now();
                    let result = client.call("add_task", args.clone()).await;
                    assert!(
                        started.elapsed() < deadline,
                        "add_task {key} took {:?}",
                        started.elapsed()
                    );
                    let text = support::mcp::result_text(&result);
                    if result.is_error != Some(true) {
                        let value: serde_json::Value =
                            serde_json::from_str(&text).expect("a task as JSON");
                        acknowledged.push((key.clone(), value["task"]["id"].clone()));
                        break;
                    }
                    errors.push(text);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            (acknowledged, errors)
        }
    });
    let outage = {
        let cluster = cluster.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let paused = cluster.clone();
            tokio::task::spawn_blocking(move || paused.pause())
                .await
                .expect("pausing the cluster");
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::spawn_blocking(move || cluster.resume())
                .await
                .expect("resuming the cluster");
        }
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(workers), outage);

    let mut acknowledged = Vec::new();
    let mut errors = Vec::new();
    for (acks, errs) in results {
        acknowledged.extend(acks);
        errors.extend(errs);
    }
    assert!(
        !errors.is_empty(),
        "no call failed during the outage: the test did not test an outage"
    );
    for error in &errors {
        assert!(
            error.starts_with("unavailable: ") || error.starts_with("busy: "),
            "a failure during the outage was not a clear retryable error: {error}"
        );
    }
    let rows = connect(&url)
        .await
        .query(
            "SELECT idempotency_key, id::text FROM tasks ORDER BY idempotency_key",
            &[],
        )
        .await
        .expect("reading the tasks");
    let stored: std::collections::BTreeMap<String, Vec<String>> =
        rows.iter().fold(Default::default(), |mut by_key, row| {
            by_key.entry(row.get(0)).or_default().push(row.get(1));
            by_key
        });
    let mut lost = 0;
    for (key, id) in &acknowledged {
        match stored.get(key) {
            Some(ids) if ids.len() == 1 && Some(ids[0].as_str()) == id.as_str() => {}
            Some(ids) => panic!("key {key}: acknowledged {id}, stored {ids:?}"),
            None => lost += 1,
        }
    }
    assert_eq!(lost, 0, "acknowledged tasks missing after the outage");
    assert_eq!(acknowledged.len(), WORKERS * KEYS_PER_WORKER);
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "tasks without an acknowledgement"
    );
    assert_eq!(
        client.pid(),
        pid,
        "the same server process served throughout"
    );
    client.close().await;

    support::reliability::record(support::reliability::Evidence {
        class: "PostgreSQL server stopped and started under load",
        test: "tests/it/storage_outage.rs",
        cases: acknowledged.len() + errors.len(),
        clear_errors: acknowledged.len() + errors.len(),
        writes_lost: lost,
        cross_user: 0,
        outcome: &format!(
            "6 clients adding across a 2 s outage: {} calls failed `unavailable`/`busy` and were retried with their key; every key stored exactly once",
            errors.len()
        ),
    });
}
