//! The bench's pgbench baseline (issue 22): the statements the server really ran for the
//! workload, captured off the wire during the run and replayed by pgbench, so it cannot
//! drift from the server's SQL as the hand-written copy did (it aborted on the agent mix
//! once messages gained a `kind`). A small workload on each path the bench measures: the
//! agent mix over HTTP (a token lookup per call, two turns a cycle) and add_task on stdio,
//! each with the one-INSERT floor the bench measures beside it.

use crate::support;

use clap::Parser;
use todo_mcp_load::options::Options;
use todo_mcp_load::report::Baseline;

async fn baseline_of(args: &[&str]) -> todo_mcp_load::report::Report {
    let admin = support::pg::admin_url();
    let server = support::bin_path();
    let mut argv = vec![
        "load",
        "--clients",
        "2",
        "--calls",
        "40",
        "--warmup",
        "0",
        "--baseline",
        "--admin-url",
        admin,
        "--server-bin",
        server,
    ];
    argv.extend_from_slice(args);
    let options = Options::try_parse_from(&argv).expect("bench options");
    todo_mcp_load::load::report(&options)
        .await
        .unwrap_or_else(|e| panic!("the bench {args:?} failed: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_replays_what_the_server_ran() {
    for (args, calls_per_cycle) in [
        (&["--transport", "http", "--mix", "agent"][..], 10),
        (
            &[
                "--transport",
                "stdio",
                "--mix",
                "single",
                "--tool",
                "add_task",
            ][..],
            1,
        ),
    ] {
        let report = baseline_of(args).await;
        assert!(report.passed(), "{args:?}: {}", report.text());
        let Baseline::Ran(result) = &report.baseline else {
            panic!("{args:?}: the baseline did not run: {}", report.text());
        };
        assert_eq!(result.failed_transactions, 0, "{args:?}: {}", result.output);
        assert!(result.tps > 0.0, "{args:?}: {}", result.output);
        assert_eq!(result.calls_per_transaction, calls_per_cycle, "{args:?}");
        // The floor beside it: one durable INSERT a transaction.
        assert!(
            result.floor.tps > 0.0 && result.floor.latency_average_ms.is_some_and(|ms| ms > 0.0),
            "{args:?}: {:?}",
            result.floor
        );
        assert!(report.p50_over_floor().is_some_and(|r| r > 0.0), "{args:?}");
        let script = std::fs::read_to_string(&result.script_path).expect("the pgbench script");
        // Both clients replay their own statements, each as its own user.
        for client in ["bench-0", "bench-1"] {
            assert!(
                script.contains(&format!("'{client}'::text")),
                "{args:?}: no statement of {client}:\n{script}"
            );
        }
        let commits = script.matches("\nCOMMIT;").count();
        assert!(
            commits >= 2 * calls_per_cycle as usize,
            "{args:?}: {commits} transactions for 2 clients x {calls_per_cycle} calls:\n{script}"
        );
        // Rows the server made anew are made anew by each repetition.
        assert!(script.contains("\\set fresh0a random("), "{script}");
    }
}
