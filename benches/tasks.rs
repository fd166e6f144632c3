//! list_tasks at the task quota (`cargo bench --bench tasks -- --help`).
//!
//! Seeds one user with 10,000 tasks (the default quota) through the server's own tools
//! (add_task with due dates, priorities, labels and subtasks; a third completed), then
//! measures the first page of every common filter and sort of list_tasks, a walk through
//! the pages of one sort, and list_labels, with one sequential MCP client over stdio
//! against the real `todo-mcp` binary. Every answer is checked: the page is in the order
//! its sort promises and every task on it passes its filters. Reports p50/p95/p99/max
//! per operation and the target: p99 under 5 ms for each.

use anyhow::Context;
use chrono::{Duration as Days, NaiveDate, Utc};
use clap::Parser;
use database::BenchDatabase;
use options::Backend;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use run_info::RunInfo;
use serde_json::{Value, json};
use server::ServerBinary;
use shared::{markdown_table, ms};
use stats::{Latency, Samples};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use todo_mcp_load::client::{Client, Request, StdioClient};
use todo_mcp_load::{
    binaries, database, entry, options, results as shared, run_info, server, stats, system,
};

/// The target for every list_tasks query at 10,000 tasks.
const TARGET_P99: Duration = Duration::from_millis(5);
const USER: &str = "bench-tasks";
const PAGE: usize = 50;
const LABELS: [&str; 10] = [
    "work", "home", "errands", "health", "finance", "reading", "travel", "calls", "garden", "kids",
];
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
/// The same-run baseline: a round trip that reads no table (the machine's speed drifts
/// between runs; compare each query with it).
const FLOOR: &str = "protocol floor (tools/list)";

/// list_tasks at the task quota: seeds one user with 10,000 tasks through add_task, then
/// measures each common filter and sort of list_tasks (first pages, and a walk through
/// the pages of one sort) and list_labels, with one sequential MCP client over stdio.
///
/// Run it as `cargo bench --bench tasks -- [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(name = "tasks", version, about, long_about)]
struct Options {
    /// Where the server stores its data: a fresh PostgreSQL database on --admin-url, or
    /// a fresh SQLite file in a temporary directory.
    #[arg(long, value_enum, default_value_t = Backend::Postgres)]
    backend: Backend,

    /// A PostgreSQL URL the bench can create and drop databases with.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,

    /// Tasks to seed (the default quota is 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..=10_000))]
    tasks: u32,

    /// Measured calls of each operation.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,

    /// Unmeasured calls of each operation first.
    #[arg(long, default_value_t = 50)]
    warmup_calls: u64,

    /// Seed of the generated tasks.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Write the report to benches/results/<date>-stdio-tasks-<backend>.txt.
    #[arg(long)]
    save: bool,

    /// Where --save writes.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results"))]
    results_dir: PathBuf,

    /// The server binary [default: the todo-mcp that cargo built with this bench].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,

    /// Keep the database (and SQLite file) instead of dropping it, and say where it is.
    #[arg(long)]
    keep_db: bool,

    /// Passed by `cargo bench`; without it (as under `cargo test --benches`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let started_by_cargo = options.bench;
    entry::main(
        "tasks",
        todo_mcp_load::bench_paths!(),
        started_by_cargo,
        run(options),
    )
}

/// One measured operation: a label and the arguments of its first page.
struct Operation {
    label: &'static str,
    tool: &'static str,
    arguments: Value,
    /// Walks on through next_cursor instead of reading the first page each time.
    walk: bool,
}

fn operations(today: NaiveDate, parent: &str) -> Vec<Operation> {
    let day = |offset: i64| (today + Days::days(offset)).format("%Y-%m-%d").to_string();
    let list = |label, arguments: Value| Operation {
        label,
        tool: "list_tasks",
        arguments,
        walk: false,
    };
    vec![
        list("newest first", json!({})),
        list("sort due", json!({ "sort": "due" })),
        list("sort priority", json!({ "sort": "priority" })),
        list(
            "pending, sort due",
            json!({ "status": "pending", "sort": "due" }),
        ),
        list(
            "overdue, sort due",
            json!({ "overdue": true, "sort": "due" }),
        ),
        list("label", json!({ "label": "work" })),
        list(
            "label, sort due",
            json!({ "label": "errands", "sort": "due" }),
        ),
        list(
            "label + priority",
            json!({ "label": "work", "priority": "urgent" }),
        ),
        list(
            "priority, sort due",
            json!({ "priority": "urgent", "sort": "due" }),
        ),
        list(
            "due this week, sort due",
            json!({ "due_after": day(0), "due_before": day(7), "sort": "due" }),
        ),
        list(
            "pending, label, sort priority",
            json!({ "status": "pending", "label": "home", "sort": "priority" }),
        ),
        list("subtasks of one task", json!({ "parent_task_id": parent })),
        list("text", json!({ "query": "report" })),
        Operation {
            label: "sort due, next pages",
            tool: "list_tasks",
            arguments: json!({ "sort": "due" }),
            walk: true,
        },
        Operation {
            label: FLOOR,
            tool: "tools/list",
            arguments: json!({}),
            walk: false,
        },
        Operation {
            label: "list_labels",
            tool: "list_labels",
            arguments: json!({}),
            walk: false,
        },
    ]
}

async fn run(options: Options) -> anyhow::Result<bool> {
    let load_before = system::load_average();
    let log_dir = shared::log_dir("tasks", options.backend.name())?;
    let database = BenchDatabase::create(options.backend, &options.admin_url).await?;
    eprintln!("tasks: using {}", database.describe());
    let measured = measure(&options, &database, &log_dir).await;
    let removed = database.remove(options.keep_db).await;
    let (run_info, results, seeding) = measured?;
    removed?;
    let run_info = RunInfo {
        load_before,
        ..run_info
    };
    let report = Report {
        run: run_info,
        options: &options,
        results,
        seeding,
    };
    shared::print_report(
        &report.text(),
        &report.json(),
        options.save.then_some(options.results_dir.as_path()),
        report.run.date,
        &format!("stdio-tasks-{}", options.backend.name()),
    )?;
    Ok(report.passed())
}

/// What one operation measured.
struct Measured {
    label: &'static str,
    /// Whether the target applies (list_tasks: yes; list_labels has none).
    targeted: bool,
    latency: Latency,
    errors: Vec<String>,
}

impl Measured {
    fn target(&self) -> &'static str {
        match (self.targeted, self.latency.p99 < TARGET_P99) {
            (false, _) => "-",
            (true, true) => "met",
            (true, false) => "missed",
        }
    }
}

async fn measure(
    options: &Options,
    database: &BenchDatabase,
    log_dir: &std::path::Path,
) -> anyhow::Result<(RunInfo, Vec<Measured>, Duration)> {
    let server = ServerBinary::new(
        binaries::server(options.server_bin.as_deref()),
        database.url(),
        None,
        None,
        log_dir.to_owned(),
    )?;
    let version = server.version().await?;
    server.migrate().await.context("migrating the database")?;
    let token = server
        .create_tokens(&[USER.to_owned()])
        .await?
        .pop()
        .context("no token issued")?;
    let connect = |name: &str| {
        let (_, log) = server.log_file(name)?;
        let mut command = server.command();
        command.arg("stdio").env("TODO_MCP_TOKEN", &token);
        anyhow::Ok((command, log))
    };

    let started = Instant::now();
    let (command, log) = connect("server-stdio-seed.log")?;
    let mut client = Client::Stdio(StdioClient::connect(command, log).await?);
    let parent = seed(&mut client, options).await?;
    client.close().await;
    if let BenchDatabase::Postgres { url, .. } = database {
        // As autovacuum would by now: the planner's statistics of the seeded rows.
        database::connect_pg(url)
            .await?
            .batch_execute("VACUUM ANALYZE")
            .await?;
    }
    let seeding = started.elapsed();
    eprintln!(
        "tasks: seeded {} tasks in {:.1} s; measuring",
        options.tasks,
        seeding.as_secs_f64()
    );

    let (command, log) = connect("server-stdio-measure.log")?;
    let mut client = Client::Stdio(StdioClient::connect(command, log).await?);
    let operations = operations(Utc::now().date_naive(), &parent);
    let mut samples = Samples::default();
    let mut errors: Vec<Vec<String>> = vec![Vec::new(); operations.len()];
    let mut cursor: Option<Value> = None;
    for round in 0..options.warmup_calls + options.calls {
        for (index, operation) in operations.iter().enumerate() {
            let mut arguments = operation.arguments.clone();
            arguments["limit"] = json!(PAGE);
            if operation.tool != "list_tasks" {
                arguments = json!({});
            }
            if operation.walk
                && let Some(cursor) = &cursor
            {
                arguments["cursor"] = cursor.clone();
            }
            let request = if operation.label == FLOOR {
                Request::ListTools
            } else {
                Request::tool(operation.tool, arguments.clone())
            };
            let started = Instant::now();
            let answer = client.call(&request).await;
            let latency = started.elapsed();
            let checked = match &answer {
                Ok(answer) => check(operation, &arguments, answer),
                Err(error) => Err(format!("{error:?}")),
            };
            if operation.walk {
                cursor = answer
                    .as_ref()
                    .ok()
                    .map(|answer| answer["next_cursor"].clone())
                    .filter(|next| !next.is_null());
            }
            if let Err(problem) = checked
                && errors[index].len() < 5
            {
                errors[index].push(problem);
            }
            if round >= options.warmup_calls {
                samples.record(operation.label, latency);
            }
        }
    }
    client.close().await;
    let summary = samples.summarize().1;
    let results = operations
        .iter()
        .zip(errors)
        .map(|(operation, errors)| Measured {
            label: operation.label,
            targeted: operation.tool == "list_tasks",
            latency: summary.get(operation.label).copied().unwrap_or_default(),
            errors,
        })
        .collect();
    let run = RunInfo::collect(
        shared::command_line("tasks"),
        String::new(),
        &version,
        server.path(),
    );
    Ok((run, results, seeding))
}

/// Adds the tasks through add_task, a third then completed; returns the id of a task
/// with subtasks.
async fn seed(client: &mut Client, options: &Options) -> anyhow::Result<String> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let today = Utc::now().date_naive();
    let mut parents: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    for i in 0..options.tasks {
        let mut task = json!({
            "title": format!("task {i}: {}", if i % 10 == 0 { "write the report" } else { "do the thing" }),
            "priority": PRIORITIES[[0, 1, 1, 1, 1, 2, 2, 3][rng.random_range(0..8)]],
        });
        if rng.random_bool(0.75) {
            let day = today + Days::days(rng.random_range(-60..120));
            task["due"] = json!(if rng.random_bool(0.5) {
                day.format("%Y-%m-%d").to_string()
            } else {
                format!("{}T09:00:00+01:00", day.format("%Y-%m-%d"))
            });
        }
        let mut labels: Vec<&str> = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let label = LABELS[rng.random_range(0..LABELS.len())];
            if !labels.contains(&label) {
                labels.push(label);
            }
        }
        task["labels"] = json!(labels);
        if i >= 100 && rng.random_bool(0.1) {
            task["parent_task_id"] = json!(parents[rng.random_range(0..parents.len().min(20))]);
        }
        let added = client
            .call(&Request::tool("add_task", task))
            .await
            .map_err(|e| anyhow::anyhow!("seeding add_task {i}: {e:?}"))?;
        let id = added["task"]["id"]
            .as_str()
            .context("add_task returned no id")?
            .to_owned();
        if i < 100 {
            parents.push(id.clone());
        }
        ids.push(id);
    }
    for id in ids.iter().skip(100).step_by(3) {
        client
            .call(&Request::tool("complete_task", json!({ "task_id": id })))
            .await
            .map_err(|e| anyhow::anyhow!("seeding complete_task: {e:?}"))?;
    }
    parents.into_iter().next().context("no parent task seeded")
}

/// The page is in its sort's order and every task passes its filters.
fn check(operation: &Operation, arguments: &Value, answer: &Value) -> Result<(), String> {
    if operation.label == FLOOR {
        // The client checks the answer is a tools/list result.
        return Ok(());
    }
    if operation.tool == "list_labels" {
        let labels = answer["labels"].as_array().ok_or("no labels")?;
        if labels.len() != LABELS.len() {
            return Err(format!("{} labels, not {}", labels.len(), LABELS.len()));
        }
        return Ok(());
    }
    let tasks = answer["tasks"].as_array().ok_or("no tasks")?;
    if tasks.is_empty() && !operation.walk {
        return Err("an empty first page".into());
    }
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    for task in tasks {
        let field = |name: &str| task[name].as_str().unwrap_or_default().to_owned();
        let due_day = field("due").get(..10).unwrap_or_default().to_owned();
        let fails = |what: &str| Err(format!("{}: {what}: {task}", operation.label));
        if arguments["status"] == "pending" && task["completed"] != false {
            return fails("not pending");
        }
        if arguments["overdue"] == true
            && (task["completed"] != false || due_day.is_empty() || due_day > today)
        {
            return fails("not overdue");
        }
        if let Some(label) = arguments["label"].as_str()
            && !task["labels"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x == label))
        {
            return fails("label missing");
        }
        if let Some(priority) = arguments["priority"].as_str()
            && task["priority"] != priority
        {
            return fails("other priority");
        }
        if let Some(after) = arguments["due_after"].as_str()
            && (due_day.is_empty() || due_day.as_str() < after)
        {
            return fails("due too early");
        }
        if let Some(parent) = arguments["parent_task_id"].as_str()
            && task["parent_task_id"] != parent
        {
            return fails("another parent");
        }
        if let Some(text) = arguments["query"].as_str()
            && !field("title").contains(text)
        {
            return fails("text missing");
        }
    }
    let rank = |task: &Value| -> (i64, String) {
        match arguments["sort"].as_str() {
            Some("priority") => {
                let level = PRIORITIES
                    .iter()
                    .position(|p| task["priority"] == *p)
                    .unwrap_or_default();
                (-(level as i64), String::new())
            }
            Some("due") => (0, due_instant(task)),
            _ => (0, String::new()),
        }
    };
    for pair in tasks.windows(2) {
        if rank(&pair[0]) > rank(&pair[1]) {
            return Err(format!(
                "{}: out of order: {} before {}",
                operation.label, pair[0], pair[1]
            ));
        }
    }
    Ok(())
}

/// A task's due moment as sortable text (UTC); undated tasks last.
fn due_instant(task: &Value) -> String {
    match task["due"].as_str() {
        None => "~".into(),
        Some(day) if day.len() == 10 => format!("{day}T00:00:00Z"),
        Some(at) => chrono::DateTime::parse_from_rfc3339(at)
            .map(|at| {
                at.with_timezone(&Utc)
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            })
            .unwrap_or_default(),
    }
}

struct Report<'a> {
    run: RunInfo,
    options: &'a Options,
    results: Vec<Measured>,
    seeding: Duration,
}

impl Report<'_> {
    fn errors(&self) -> usize {
        self.results.iter().map(|r| r.errors.len()).sum()
    }

    fn passed(&self) -> bool {
        self.errors() == 0
    }

    /// list_tasks operations whose p99 missed the target.
    fn missed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| r.target() == "missed")
            .map(|r| r.label)
            .collect()
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# todo-mcp list_tasks at {} tasks: stdio, {}, one sequential client\n",
            self.options.tasks,
            self.options.backend.name()
        );
        self.run.write_lines(&mut out);
        let _ = writeln!(
            out,
            "seeded:   {} tasks through add_task (75% due, 1 in 10 a subtask, up to 3 of {} \
             labels), a third completed, in {:.1} s\nper operation: {} warm-up then {} \
             measured calls, pages of {PAGE}, in turn\n",
            self.options.tasks,
            LABELS.len(),
            self.seeding.as_secs_f64(),
            self.options.warmup_calls,
            self.options.calls
        );
        let floor = self
            .results
            .iter()
            .find(|r| r.label == FLOOR)
            .map(|r| r.latency.p50.as_secs_f64())
            .filter(|p50| *p50 > 0.0);
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.label.to_owned(),
                    r.latency.count.to_string(),
                    floor.map_or_else(
                        || "?".into(),
                        |floor| format!("{:.2}", r.latency.p50.as_secs_f64() / floor),
                    ),
                    ms(r.latency.p50),
                    ms(r.latency.p95),
                    ms(r.latency.p99),
                    ms(r.latency.max),
                    r.target().to_owned(),
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "## Latency (ms) as the client saw it; list_tasks' target p99 < {} ms\n",
            TARGET_P99.as_millis()
        );
        out += &markdown_table(
            &[
                "operation",
                "calls",
                "p50 ÷ floor",
                "p50",
                "p95",
                "p99",
                "max",
                "target",
            ],
            &rows,
        );
        let _ = writeln!(out);
        let missed = self.missed();
        let _ = writeln!(
            out,
            "target (every list_tasks query p99 < {} ms at {} tasks): {}",
            TARGET_P99.as_millis(),
            self.options.tasks,
            if missed.is_empty() {
                "met".to_owned()
            } else {
                format!("missed by {}", missed.join(", "))
            }
        );
        let _ = writeln!(out, "errors and wrong answers: {}", self.errors());
        for result in &self.results {
            for error in &result.errors {
                let _ = writeln!(out, "  {}: {error}", result.label);
            }
        }
        out
    }

    fn json(&self) -> Value {
        let operations: serde_json::Map<String, Value> = self
            .results
            .iter()
            .map(|r| {
                (
                    r.label.to_owned(),
                    json!({
                        "latency": r.latency.to_json(),
                        "target": r.target(),
                        "errors": r.errors.len(),
                    }),
                )
            })
            .collect();
        json!({
            "bench": "tasks",
            "date": self.run.date.to_rfc3339(),
            "commit": self.run.commit,
            "backend": self.options.backend.name(),
            "tasks": self.options.tasks,
            "calls_per_operation": self.options.calls,
            "operations": operations,
            "target_p99_ms": stats::millis(TARGET_P99),
            "errors": self.errors(),
            "passed": self.passed(),
        })
    }
}
