//! Cold start (`cargo bench --bench coldstart -- --help`).
//!
//! Times, over many runs, how long a client waits from spawning `todo-mcp stdio` (with a
//! token, on an already migrated database, PostgreSQL and SQLite) until the `tools/list`
//! answer arrives: the MCP handshake included, as a desktop client starting the server
//! sees it. The server's own log lines split each run into phases (process start to its
//! first log line; migrations check, pool and token check; the handshake; tools/list).
//! The same run times baselines on the same machine, so the figure can be compared
//! across machines: spawning `/bin/true`, `todo-mcp --version` (the binary's own floor),
//! and `psql -c 'select 1'` (a process that connects to PostgreSQL once).

use anyhow::{Context, bail};
use clap::Parser;
use client::{Client, Request, StdioClient};
use database::BenchDatabase;
use options::Backend;
use run_info::RunInfo;
use serde_json::{Value, json};
use server::ServerBinary;
use shared::{markdown_table, ms};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};
use todo_mcp_load::{
    binaries, client, database, entry, options, results as shared, run_info, server, stats, system,
};

/// The target: a cold start under 100 ms.
const TARGET: Duration = Duration::from_millis(100);
/// How long one start may take before the run counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's log lines that mark the phases of a start.
const OPENING_LINE: &str = "opening database";
const SERVING_LINE: &str = "serving MCP on stdio";

/// Cold start: times spawning `todo-mcp stdio` until its tools/list answer, on a migrated
/// PostgreSQL database and SQLite file, against baselines timed in the same run.
///
/// Run it as `cargo bench --bench coldstart -- [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(name = "coldstart", version, about, long_about)]
struct Options {
    /// The backends to start on (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "postgres,sqlite"
    )]
    backends: Vec<Backend>,

    /// A PostgreSQL URL the bench can create and drop databases with.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    admin_url: String,

    /// Measured starts per backend (and runs of each baseline).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,

    /// Unmeasured starts first, per backend (and of each baseline).
    #[arg(long, default_value_t = 3)]
    warmup: u32,

    /// The psql of the `psql -c 'select 1'` baseline [default: the newest
    /// /usr/lib/postgresql/*/bin/psql, else psql on PATH].
    #[arg(long, value_name = "PATH")]
    psql: Option<PathBuf>,

    /// Write the report to benches/results/<date>-stdio-coldstart-<backends>.txt.
    #[arg(long)]
    save: bool,

    /// Where --save writes.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results"))]
    results_dir: PathBuf,

    /// The server binary [default: the todo-mcp that cargo built with this bench,
    /// target/release/todo-mcp].
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,

    /// TODO_MCP_LOG for the server [default: the server's own; the phases need its info
    /// lines "opening database" and "serving MCP on stdio"].
    #[arg(long, value_name = "FILTER")]
    server_log: Option<String>,

    /// Passed by `cargo bench`; without it (as under `cargo test --benches`) nothing runs.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let options = Options::parse();
    let started_by_cargo = options.bench;
    entry::main(
        "coldstart",
        todo_mcp_load::bench_paths!(),
        started_by_cargo,
        run(options),
    )
}

/// A set of timings, summarized.
#[derive(Debug, Clone, Copy, Default)]
struct Spread {
    count: usize,
    min: Duration,
    p50: Duration,
    p95: Duration,
    max: Duration,
}

impl Spread {
    fn of(values: &[Duration]) -> Self {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let Some(max) = sorted.last().copied() else {
            return Spread::default();
        };
        // Nearest rank, as the load generator's percentiles.
        let rank = |pct: f64| {
            let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        Spread {
            count: sorted.len(),
            min: sorted[0],
            p50: rank(50.0),
            p95: rank(95.0),
            max,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "runs": self.count,
            "min_ms": stats::millis(self.min),
            "p50_ms": stats::millis(self.p50),
            "p95_ms": stats::millis(self.p95),
            "max_ms": stats::millis(self.max),
        })
    }

    fn row(self, what: &str) -> Vec<String> {
        vec![
            what.to_owned(),
            self.count.to_string(),
            ms(self.min),
            ms(self.p50),
            ms(self.p95),
            ms(self.max),
        ]
    }
}

/// One start, split at the server's log lines (where they were found).
#[derive(Debug, Default, Clone)]
struct Start {
    /// Spawn until the tools/list answer.
    total: Duration,
    /// Spawn until the server's "opening database" line: exec, the runtime, logging.
    to_opening: Option<Duration>,
    /// "opening database" until "serving MCP on stdio": migrations check, pool, token.
    opening_to_serving: Option<Duration>,
    /// "serving MCP on stdio" until the initialize answer reached the client.
    serving_to_initialized: Option<Duration>,
    /// The initialize answer until the tools/list answer.
    initialized_to_listed: Duration,
}

/// A part of a start, where it could be measured.
type Part = fn(&Start) -> Option<Duration>;

/// The starts on one backend.
struct BackendResult {
    backend: Backend,
    database: String,
    starts: Vec<Start>,
}

impl BackendResult {
    fn spread(&self, part: impl Fn(&Start) -> Option<Duration>) -> Spread {
        let values: Vec<Duration> = self.starts.iter().filter_map(part).collect();
        Spread::of(&values)
    }

    fn total(&self) -> Spread {
        self.spread(|s| Some(s.total))
    }
}

async fn run(options: Options) -> anyhow::Result<bool> {
    if options.backends.is_empty() {
        bail!("no backend to start on");
    }
    let load_before = system::load_average();
    let names: Vec<&str> = options.backends.iter().map(|b| b.name()).collect();
    let log_dir = shared::log_dir("coldstart", &names.join("-"))?;
    let server_path = binaries::server(options.server_bin.as_deref());
    let mut server_version = String::new();

    let mut results = Vec::new();
    let mut psql_baseline = None;
    for &backend in &options.backends {
        let database = BenchDatabase::create(backend, &options.admin_url).await?;
        eprintln!("coldstart: using {}", database.describe());
        let measured = async {
            let server = ServerBinary::new(
                server_path.clone(),
                database.url(),
                None,
                options.server_log.clone(),
                log_dir.clone(),
            )?;
            server_version = server.version().await?;
            server.migrate().await.context("migrating the database")?;
            let token = server
                .create_tokens(&["bench-coldstart".to_owned()])
                .await?
                .pop()
                .context("no token issued")?;
            eprintln!(
                "coldstart: {} starts on {} ({} unmeasured first)",
                options.runs,
                backend.name(),
                options.warmup
            );
            let mut starts = Vec::new();
            for run in 0..options.warmup + options.runs {
                let start = start_once(&server, &token, backend, run)
                    .await
                    .with_context(|| format!("start {} on {}", run + 1, backend.name()))?;
                if run >= options.warmup {
                    starts.push(start);
                }
            }
            let version = database.inspect().await?.server_version().await?;
            if backend == Backend::Postgres {
                let psql = options
                    .psql
                    .clone()
                    .unwrap_or_else(|| binaries::postgres_tool("psql"));
                let command = ProcessCommand {
                    label: "psql -c 'select 1'".into(),
                    program: psql,
                    args: vec![
                        "-X".into(),
                        "-q".into(),
                        "-d".into(),
                        database.url(),
                        "-c".into(),
                        "select 1".into(),
                    ],
                };
                psql_baseline = Some(time_process(&command, options.warmup, options.runs).await?);
            }
            Ok::<_, anyhow::Error>(BackendResult {
                backend,
                database: format!("{}, {version}", database.describe()),
                starts,
            })
        }
        .await;
        let removed = database.remove(false).await;
        results.push(measured?);
        removed?;
    }

    eprintln!("coldstart: baselines");
    let true_baseline = time_process(
        &ProcessCommand {
            label: "/bin/true".into(),
            program: PathBuf::from("/bin/true"),
            args: Vec::new(),
        },
        options.warmup,
        options.runs,
    )
    .await?;
    let version_baseline = time_process(
        &ProcessCommand {
            label: "todo-mcp --version".into(),
            program: server_path.clone(),
            args: vec!["--version".into()],
        },
        options.warmup,
        options.runs,
    )
    .await?;

    let report = Report {
        run: RunInfo::collect(
            shared::command_line("coldstart"),
            load_before,
            &server_version,
            &server_path,
        ),
        results,
        true_baseline,
        version_baseline,
        psql_baseline,
        log_dir,
    };
    shared::print_report(
        &report.text(),
        &report.json(),
        options.save.then_some(options.results_dir.as_path()),
        report.run.date,
        &format!("stdio-coldstart-{}", names.join("-")),
    )?;
    Ok(true)
}

/// Spawns `todo-mcp stdio`, performs the MCP handshake, asks for tools/list, and closes.
async fn start_once(
    server: &ServerBinary,
    token: &str,
    backend: Backend,
    run: u32,
) -> anyhow::Result<Start> {
    let (log_path, log) = server.log_file(&format!("start-{}-{run}.log", backend.name()))?;
    let mut command = server.command();
    command.arg("stdio").env("TODO_MCP_TOKEN", token);
    let spawned_at = SystemTime::now();
    let started = Instant::now();
    let mut client = tokio::time::timeout(START_TIMEOUT, StdioClient::connect(command, log))
        .await
        .context("no initialize answer in time")?
        .map(Client::Stdio)?;
    let initialized = started.elapsed();
    let initialized_at = SystemTime::now();
    let listed = tokio::time::timeout(START_TIMEOUT, client.call(&Request::ListTools))
        .await
        .context("no tools/list answer in time")?;
    let total = started.elapsed();
    client.close().await;
    if let Err(error) = listed {
        bail!("tools/list failed: {error}");
    }

    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    let logged_at = |marker: &str| {
        text.lines()
            .find(|line| line.contains(marker))
            .and_then(shared::log_time)
            .map(SystemTime::from)
    };
    let since = |from: SystemTime, to: SystemTime| to.duration_since(from).ok();
    let opening = logged_at(OPENING_LINE);
    let serving = logged_at(SERVING_LINE);
    Ok(Start {
        total,
        to_opening: opening.and_then(|at| since(spawned_at, at)),
        opening_to_serving: opening.zip(serving).and_then(|(a, b)| since(a, b)),
        serving_to_initialized: serving.and_then(|at| since(at, initialized_at)),
        initialized_to_listed: total.saturating_sub(initialized),
    })
}

struct ProcessCommand {
    /// How the report names it.
    label: String,
    program: PathBuf,
    args: Vec<String>,
}

/// A baseline: spawning `command` and waiting for it to exit, `runs` times.
async fn time_process(
    command: &ProcessCommand,
    warmup: u32,
    runs: u32,
) -> anyhow::Result<(String, Spread)> {
    let mut times = Vec::new();
    for run in 0..warmup + runs {
        let started = Instant::now();
        let status = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .with_context(|| format!("running {}", command.program.display()))?;
        let took = started.elapsed();
        if !status.success() {
            bail!("`{}` failed: {status}", command.label);
        }
        if run >= warmup {
            times.push(took);
        }
    }
    Ok((command.label.clone(), Spread::of(&times)))
}

struct Report {
    run: RunInfo,
    results: Vec<BackendResult>,
    true_baseline: (String, Spread),
    version_baseline: (String, Spread),
    psql_baseline: Option<(String, Spread)>,
    log_dir: PathBuf,
}

impl Report {
    fn baselines(&self) -> Vec<&(String, Spread)> {
        let mut all = vec![&self.true_baseline, &self.version_baseline];
        all.extend(&self.psql_baseline);
        all
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# todo-mcp cold start: stdio, spawn to the tools/list answer"
        );
        let _ = writeln!(out);
        self.run.write_lines(&mut out);
        for result in &self.results {
            let _ = writeln!(out, "database: {}", result.database);
        }
        let _ = writeln!(out);

        let _ = writeln!(out, "## Spawn to answer (ms)");
        let _ = writeln!(out);
        let mut rows = Vec::new();
        for result in &self.results {
            rows.push(result.total().row(&format!(
                "`todo-mcp stdio` on {} (initialize + tools/list)",
                result.backend.name()
            )));
        }
        for (what, spread) in self.baselines() {
            rows.push(spread.row(&format!("baseline: `{what}` (spawn to exit)")));
        }
        out += &markdown_table(&["what", "runs", "min", "p50", "p95", "max"], &rows);
        let _ = writeln!(out);

        let _ = writeln!(
            out,
            "## Where a start goes (p50 ms; from the server's log lines and the client's clock)"
        );
        let _ = writeln!(out);
        let phases: [(&str, Part); 4] = [
            (
                "spawn → \"opening database\" (exec, runtime, logging)",
                |s| s.to_opening,
            ),
            (
                "\"opening database\" → \"serving MCP on stdio\" (migrations check, pool, token)",
                |s| s.opening_to_serving,
            ),
            ("\"serving MCP on stdio\" → initialize answered", |s| {
                s.serving_to_initialized
            }),
            ("initialize answered → tools/list answered", |s| {
                Some(s.initialized_to_listed)
            }),
        ];
        let mut header = vec!["phase"];
        header.extend(self.results.iter().map(|r| r.backend.name()));
        let rows: Vec<Vec<String>> = phases
            .iter()
            .map(|(name, part)| {
                let mut row = vec![(*name).to_owned()];
                row.extend(self.results.iter().map(|r| {
                    let spread = r.spread(part);
                    if spread.count == 0 {
                        "?".to_owned()
                    } else {
                        ms(spread.p50)
                    }
                }));
                row
            })
            .collect();
        out += &markdown_table(&header, &rows);
        let _ = writeln!(out);

        let _ = writeln!(out, "## Against the baselines and the target");
        let _ = writeln!(out);
        for result in &self.results {
            let total = result.total();
            let mut ratios = Vec::new();
            for (what, spread) in self.baselines() {
                if !spread.p50.is_zero() {
                    ratios.push(format!(
                        "{:.1}× `{what}`",
                        total.p50.as_secs_f64() / spread.p50.as_secs_f64()
                    ));
                }
            }
            let _ = writeln!(
                out,
                "- {}: p50 {} ms = {}; target < {} ms: {} (p95 {} ms)",
                result.backend.name(),
                ms(total.p50),
                ratios.join(", "),
                TARGET.as_millis(),
                if total.p95 < TARGET {
                    "met"
                } else if total.p50 < TARGET {
                    "met at p50, missed at p95"
                } else {
                    "missed"
                },
                ms(total.p95)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "server logs: {}", self.log_dir.display());
        out
    }

    fn json(&self) -> Value {
        let backends: serde_json::Map<String, Value> = self
            .results
            .iter()
            .map(|result| {
                let phase = |part: Part| result.spread(part).to_json();
                (
                    result.backend.name().to_owned(),
                    json!({
                        "total": result.total().to_json(),
                        "to_opening": phase(|s| s.to_opening),
                        "opening_to_serving": phase(|s| s.opening_to_serving),
                        "serving_to_initialized": phase(|s| s.serving_to_initialized),
                        "initialized_to_listed": phase(|s| Some(s.initialized_to_listed)),
                        "target_met": result.total().p95 < TARGET,
                    }),
                )
            })
            .collect();
        let baselines: serde_json::Map<String, Value> = self
            .baselines()
            .into_iter()
            .map(|(what, spread)| (what.clone(), spread.to_json()))
            .collect();
        json!({
            "date": self.run.date.to_rfc3339(),
            "commit": self.run.commit,
            "load_before": self.run.load_before,
            "transport": "stdio",
            "bench": "coldstart",
            "backends": backends,
            "baselines": baselines,
            "target_ms": stats::millis(TARGET),
        })
    }
}
