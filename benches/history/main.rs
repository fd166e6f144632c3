//! History at scale (`cargo bench --bench history -- --help`).
//!
//! Seeds one user, in stages, with a long conversation (1k, 10k, 100k messages by
//! default) and many conversations (1k, 10k, 10k), by bulk SQL straight into a fresh
//! database, and at each stage measures the reads an agent makes with one sequential MCP
//! client over stdio against the real `todo-mcp` binary: `get_conversation_history` (limit
//! 50: the latest page, and paging back with `before` from random points) and
//! `list_conversations` (limit 50: the first page, and walking the whole list with its
//! cursor). Every answer is checked against the seeded data. Reports p50/p95/p99/max per
//! operation per stage, how flat they stay (p50 at the last stage ÷ p50 at the first), and
//! the target: the latest page's p99 under 5 ms at 100,000 messages and 10,000
//! conversations.

mod measure;
mod seed;

use anyhow::{Context, bail};
use clap::Parser;
use database::BenchDatabase;
use measure::{Operation, StageOutcome, StageSettings};
use options::Backend;
use rand::SeedableRng;
use run_info::RunInfo;
use seed::{Seeded, Seeder};
use serde_json::{Value, json};
use server::ServerBinary;
use shared::{markdown_table, ms};
use stats::Latency;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use todo_mcp_load::{
    binaries, client, database, entry, options, results as shared, run_info, server, stats, system,
};

/// The target: the latest page's p99 at 100,000 messages and 10,000 conversations.
const TARGET_P99: Duration = Duration::from_millis(5);
/// The target for search_messages at 100,000 messages for one user.
const SEARCH_TARGET_P99: Duration = Duration::from_millis(20);
const TARGET_MESSAGES: u64 = 100_000;
const TARGET_CONVERSATIONS: u64 = 10_000;

/// History at scale: seeds one user with a long conversation and many conversations, in
/// growing stages, and measures get_conversation_history (limit 50: latest page, and
/// paging back with `before`) and list_conversations (first page, and paging) at each
/// stage with one sequential MCP client over stdio against the real server binary.
///
/// Run it as `cargo bench --bench history -- [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(name = "history", version, about, long_about)]
struct Options {
    /// Where the server stores its data: a fresh PostgreSQL database on --admin-url, or
    /// a fresh SQLite file in a temporary directory.
    #[arg(long, value_enum, default_value_t = Backend::Postgres)]
    backend: Backend,

    /// A PostgreSQL URL the bench can create and drop databases with.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,

    /// Messages in the long conversation at each stage (growing).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    messages: Vec<u64>,

    /// The user's seeded conversations at each stage (growing; the long one included, the
    /// two activity logs not).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,10000")]
    conversations: Vec<u64>,

    /// Messages in each seeded conversation other than the long one.
    #[arg(long, default_value_t = 4)]
    messages_per_conversation: u64,

    /// Measured calls of each operation at each stage.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,

    /// Unmeasured calls of each operation first, at each stage.
    #[arg(long, default_value_t = 50)]
    warmup_calls: u64,

    /// Pages each walk back through the history with `before` reads, from a random
    /// message, before starting again elsewhere.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    walk_pages: u32,

    /// The operations to measure, each round calling them in turn [default: all]. One
    /// alone shows it without the others' effect on caches (a search of a common word
    /// reads far more than a history page).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Operation::ALL)]
    operations: Vec<Operation>,

    /// Seed of the random points the walks back start from.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Give up on a single call after this many seconds (it counts as an error).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    call_timeout: f64,

    /// Write the report to benches/results/<date>-stdio-history-<backend>.txt.
    #[arg(long)]
    save: bool,

    /// Where --save writes.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results"))]
    results_dir: PathBuf,

    /// The server binary [default: the todo-mcp that cargo built with this bench,
    /// target/release/todo-mcp].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,

    /// TODO_MCP_LOG for the server [default: the server's own, one info line per call,
    /// which the report's server-side times come from].
    #[arg(long, value_name = "FILTER")]
    server_log: Option<String>,

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
        "history",
        todo_mcp_load::bench_paths!(),
        started_by_cargo,
        run(options),
    )
}

/// One stage: what was seeded and what was measured.
struct Stage {
    seeded: Seeded,
    outcome: StageOutcome,
}

/// Runs the bench; `Ok(false)` when it ran but a call failed or an answer was wrong.
async fn run(options: Options) -> anyhow::Result<bool> {
    let stages = stage_sizes(&options)?;
    let load_before = system::load_average();
    let log_dir = shared::log_dir("history", options.backend.name())?;
    let database = BenchDatabase::create(options.backend, &options.admin_url).await?;
    eprintln!("history: using {}", database.describe());
    let measured = measure_stages(&options, &stages, &database, &log_dir).await;
    let removed = database.remove(options.keep_db).await;
    let (header, stages) = measured?;
    removed?;

    let report = Report {
        header: Header {
            run: RunInfo {
                load_before,
                ..header.run
            },
            log_dir,
            ..header
        },
        stages,
        options: &options,
    };
    shared::print_report(
        &report.text(),
        &report.json(),
        options.save.then_some(options.results_dir.as_path()),
        report.header.run.date,
        &format!("stdio-history-{}", options.backend.name()),
    )?;
    Ok(report.passed())
}

fn stage_sizes(options: &Options) -> anyhow::Result<Vec<(u64, u64)>> {
    if options.messages.len() != options.conversations.len() {
        bail!(
            "--messages has {} stages and --conversations {}: give both the same number",
            options.messages.len(),
            options.conversations.len()
        );
    }
    let stages: Vec<(u64, u64)> = options
        .messages
        .iter()
        .copied()
        .zip(options.conversations.iter().copied())
        .collect();
    if stages.is_empty() {
        bail!("no stages");
    }
    if stages
        .iter()
        .any(|(messages, conversations)| *messages < measure::PAGE as u64 || *conversations < 1)
    {
        bail!(
            "every stage needs at least {} messages and one conversation",
            measure::PAGE
        );
    }
    if stages
        .windows(2)
        .any(|pair| pair[1].0 < pair[0].0 || pair[1].1 < pair[0].1)
    {
        bail!("stages must grow: --messages and --conversations never decrease");
    }
    Ok(stages)
}

async fn measure_stages(
    options: &Options,
    stages: &[(u64, u64)],
    database: &BenchDatabase,
    log_dir: &Path,
) -> anyhow::Result<(Header, Vec<Stage>)> {
    let server = ServerBinary::new(
        binaries::server(options.server_bin.as_deref()),
        database.url(),
        None,
        options.server_log.clone(),
        log_dir.to_owned(),
    )?;
    let server_version = server.version().await?;
    server.migrate().await.context("migrating the database")?;
    let token = server
        .create_tokens(&[seed::USER.to_owned()])
        .await?
        .pop()
        .context("no token issued")?;
    let call_timeout = Duration::try_from_secs_f64(options.call_timeout)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--call-timeout must be a positive number of seconds")?;

    let mut seeder = Seeder::new(database).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut results = Vec::with_capacity(stages.len());
    for (index, &(messages, conversations)) in stages.iter().enumerate() {
        eprintln!(
            "history: stage {}: seeding {messages} messages in the long conversation, \
             {conversations} conversations",
            index + 1
        );
        let seeded = seeder
            .grow_to(messages, conversations, options.messages_per_conversation)
            .await
            .with_context(|| format!("seeding stage {}", index + 1))?;
        eprintln!(
            "history: stage {}: seeded in {:.1} s ({} messages in the database); measuring \
             {} calls of each of {} operations",
            index + 1,
            seeded.took.as_secs_f64(),
            seeded.all_messages,
            options.calls,
            options.operations.len()
        );
        let name = format!("stage-{}", index + 1);
        let settings = StageSettings {
            name: &name,
            server: &server,
            token: &token,
            seeded: &seeded,
            calls: options.calls,
            warmup: options.warmup_calls,
            walk_pages: options.walk_pages,
            call_timeout,
            operations: &options.operations,
        };
        let outcome = measure::run_stage(&settings, &mut rng)
            .await
            .with_context(|| format!("measuring stage {}", index + 1))?;
        results.push(Stage { seeded, outcome });
    }

    let database_version = database.inspect().await?.server_version().await?;
    let header = Header {
        run: RunInfo::collect(
            shared::command_line("history"),
            String::new(),
            &server_version,
            server.path(),
        ),
        database: format!("{}, {}", database.describe(), database_version),
        log_dir: PathBuf::new(),
    };
    Ok((header, results))
}

struct Header {
    run: RunInfo,
    database: String,
    log_dir: PathBuf,
}

struct Report<'a> {
    header: Header,
    stages: Vec<Stage>,
    options: &'a Options,
}

impl Report<'_> {
    fn errors(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| s.outcome.errors.count + s.outcome.warmup_errors.count)
            .sum()
    }

    fn passed(&self) -> bool {
        self.errors() == 0
    }

    /// The latency of `operation` at each stage, as the client saw it and as the server
    /// logged it.
    fn latency(stage: &Stage, operation: Operation) -> (Latency, Option<Latency>) {
        let client = stage.outcome.samples.summarize().1;
        let server = stage.outcome.server_time.summarize().1;
        (
            client.get(operation.label()).copied().unwrap_or_default(),
            server.get(operation.label()).copied(),
        )
    }

    /// The stage the target is judged at: 100,000 messages and 10,000 conversations (the
    /// first with at least as many of both).
    fn target_stage(&self) -> Option<&Stage> {
        self.stages.iter().find(|stage| {
            stage.seeded.messages >= TARGET_MESSAGES as i64
                && stage.seeded.conversations >= TARGET_CONVERSATIONS as i64
        })
    }

    /// The targets, for the operations measured: a p99 limit each.
    fn targets(&self) -> Vec<(Operation, Duration)> {
        [
            (Operation::HistoryLatest, TARGET_P99),
            (Operation::SearchRare, SEARCH_TARGET_P99),
            (Operation::SearchCommon, SEARCH_TARGET_P99),
        ]
        .into_iter()
        .filter(|(operation, _)| self.options.operations.contains(operation))
        .collect()
    }

    /// p50 at the last stage ÷ p50 at the first, per operation.
    fn flatness(&self) -> BTreeMap<&'static str, (Latency, Latency, f64)> {
        let (Some(first), Some(last)) = (self.stages.first(), self.stages.last()) else {
            return BTreeMap::new();
        };
        self.options
            .operations
            .iter()
            .map(|&operation| {
                let (a, _) = Self::latency(first, operation);
                let (b, _) = Self::latency(last, operation);
                let ratio = if a.p50.is_zero() {
                    f64::NAN
                } else {
                    b.p50.as_secs_f64() / a.p50.as_secs_f64()
                };
                (operation.key(), (a, b, ratio))
            })
            .collect()
    }

    fn text(&self) -> String {
        let h = &self.header;
        let o = self.options;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# todo-mcp history at scale: stdio, {}, one sequential client",
            o.backend.name()
        );
        let _ = writeln!(out);
        h.run.write_lines(&mut out);
        let _ = writeln!(out, "database: {}", h.database);
        let _ = writeln!(
            out,
            "per stage: {} warm-up then {} measured calls of each operation, in turn; walks \
             back with `before` read {} pages from a random message; list walks follow \
             next_cursor to the end",
            o.warmup_calls, o.calls, o.walk_pages
        );
        let _ = writeln!(out);

        let _ = writeln!(out, "## Seeded data");
        let _ = writeln!(out);
        let rows: Vec<Vec<String>> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let s = &stage.seeded;
                vec![
                    format!("{}", i + 1),
                    s.messages.to_string(),
                    s.conversations.to_string(),
                    s.all_messages.to_string(),
                    format!("{:.1}", s.took.as_secs_f64()),
                    stage
                        .outcome
                        .server_peak_rss_kib
                        .map_or_else(|| "?".into(), |kib| format!("{:.1}", kib as f64 / 1024.0)),
                ]
            })
            .collect();
        out += &markdown_table(
            &[
                "stage",
                "messages in the long conversation",
                "active conversations (2 activity logs incl.)",
                "messages in the database",
                "seeding s",
                "server peak RSS MiB",
            ],
            &rows,
        );
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "## Latency (ms): as the client saw it, and inside the tool call as the server \
             logged it"
        );
        let _ = writeln!(out);
        let mut rows = Vec::new();
        for &operation in &self.options.operations {
            for stage in &self.stages {
                let (client, server) = Self::latency(stage, operation);
                rows.push(vec![
                    operation.label().to_owned(),
                    stage.seeded.messages.to_string(),
                    stage.seeded.conversations.to_string(),
                    client.count.to_string(),
                    ms(client.p50),
                    ms(client.p95),
                    ms(client.p99),
                    ms(client.max),
                    server.map_or_else(|| "?".into(), |s| ms(s.p50)),
                    server.map_or_else(|| "?".into(), |s| ms(s.p99)),
                ]);
            }
        }
        out += &markdown_table(
            &[
                "operation",
                "messages",
                "conversations",
                "calls",
                "p50",
                "p95",
                "p99",
                "max",
                "server p50",
                "server p99",
            ],
            &rows,
        );
        let _ = writeln!(out);

        if self.stages.len() > 1 {
            let _ = writeln!(out, "## Flatness: p50 at the last stage ÷ p50 at the first");
            let _ = writeln!(out);
            let rows: Vec<Vec<String>> = self
                .options
                .operations
                .iter()
                .filter_map(|operation| {
                    let (first, last, ratio) = *self.flatness().get(operation.key())?;
                    Some(vec![
                        operation.label().to_owned(),
                        ms(first.p50),
                        ms(last.p50),
                        format!("{ratio:.2}"),
                    ])
                })
                .collect();
            out += &markdown_table(
                &["operation", "first stage p50", "last stage p50", "ratio"],
                &rows,
            );
            let _ = writeln!(out);
        }

        let _ = writeln!(out, "## Target");
        let _ = writeln!(out);
        match self.target_stage() {
            Some(stage) => {
                for (operation, limit) in self.targets() {
                    let (latency, _) = Self::latency(stage, operation);
                    let _ = writeln!(
                        out,
                        "{} p99 < {} ms at {} messages in the long conversation and {} active \
                         conversations (2 activity logs incl.): p99 {} ms: {}",
                        operation.label(),
                        limit.as_millis(),
                        stage.seeded.messages,
                        stage.seeded.conversations,
                        ms(latency.p99),
                        if latency.p99 < limit { "met" } else { "missed" }
                    );
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "no stage reached {TARGET_MESSAGES} messages and {TARGET_CONVERSATIONS} \
                     conversations: the target is not judged"
                );
            }
        }
        let _ = writeln!(out);

        let _ = writeln!(out, "errors and wrong answers: {}", self.errors());
        for (i, stage) in self.stages.iter().enumerate() {
            for (phase, errors) in [
                ("", &stage.outcome.errors),
                (" (warm-up)", &stage.outcome.warmup_errors),
            ] {
                for (kind, n) in &errors.by_kind {
                    let _ = writeln!(out, "  stage {}{phase}: {kind}: {n}", i + 1);
                }
                for example in &errors.examples {
                    let _ = writeln!(out, "  e.g. {example}");
                }
            }
        }
        let walks: Vec<String> = self
            .stages
            .iter()
            .map(|s| s.outcome.list_walks.to_string())
            .collect();
        let _ = writeln!(
            out,
            "complete list walks checked (every conversation once, newest first), per stage: {}",
            walks.join(", ")
        );
        let _ = writeln!(out, "server logs: {}", h.log_dir.display());
        out
    }

    fn json(&self) -> Value {
        let h = &self.header;
        let stages: Vec<Value> = self
            .stages
            .iter()
            .map(|stage| {
                let operations: serde_json::Map<String, Value> = self
                    .options
                    .operations
                    .iter()
                    .map(|&operation| {
                        let (client, server) = Self::latency(stage, operation);
                        (
                            operation.key().to_owned(),
                            json!({
                                "client": client.to_json(),
                                "server": server.map(Latency::to_json),
                            }),
                        )
                    })
                    .collect();
                json!({
                    "messages": stage.seeded.messages,
                    "conversations": stage.seeded.conversations,
                    "all_messages": stage.seeded.all_messages,
                    "seeding_s": stage.seeded.took.as_secs_f64(),
                    "server_peak_rss_kib": stage.outcome.server_peak_rss_kib,
                    "errors": stage.outcome.errors.count,
                    "warmup_errors": stage.outcome.warmup_errors.count,
                    "list_walks": stage.outcome.list_walks,
                    "operations": operations,
                })
            })
            .collect();
        let flatness: serde_json::Map<String, Value> = self
            .flatness()
            .into_iter()
            .map(|(key, (_, _, ratio))| (key.to_owned(), json!(ratio)))
            .collect();
        let targets = self.target_stage().map(|stage| {
            self.targets()
                .into_iter()
                .map(|(operation, limit)| {
                    let (latency, _) = Self::latency(stage, operation);
                    (
                        operation.key().to_owned(),
                        json!({
                            "p99_ms": stats::millis(latency.p99),
                            "limit_ms": stats::millis(limit),
                            "met": latency.p99 < limit,
                        }),
                    )
                })
                .collect::<serde_json::Map<String, Value>>()
        });
        json!({
            "date": h.run.date.to_rfc3339(),
            "commit": h.run.commit,
            "load_before": h.run.load_before,
            "transport": "stdio",
            "bench": "history",
            "backend": self.options.backend.name(),
            "calls_per_operation": self.options.calls,
            "stages": stages,
            "flatness_p50": flatness,
            "targets_p99": targets,
            "errors": self.errors(),
            "passed": self.passed(),
        })
    }
}
