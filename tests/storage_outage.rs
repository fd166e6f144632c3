//! PostgreSQL going away under a running server: calls fail fast with a clear retryable
//! error, nothing half-written survives, the server stays up and recovers by itself.

mod support;

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
            error.starts_with("unavailable: storage unavailable, retry: cannot connect"),
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
        test: "tests/storage_outage.rs",
        cases: 3,
        clear_errors: 3,
        writes_lost: 2 - stored,
        cross_user: 0,
        outcome: "calls during the outage fail `unavailable: … cannot connect` within the pool timeout; the same process serves again once the server is back",
    });
}
