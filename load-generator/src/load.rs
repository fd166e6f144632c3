//! The load bench (`cargo bench --bench load -- --help`).
//!
//! Starts the real server binary on a fresh database, drives it with N concurrent MCP
//! clients (each its own user and bearer token) over stdio, Streamable HTTP or legacy SSE,
//! and reports calls/s, latency percentiles per tool, errors, the server's peak RSS and
//! where the CPU went. At the end it checks against the database that every acknowledged
//! write is there exactly once, and with --baseline has pgbench replay the statements the
//! server ran ([`crate::capture`], [`crate::replay`]) at the same concurrency on the same
//! database. Exits 0 only if there were no errors and no lost or doubled writes.

use crate::capture::CaptureProxy;
use crate::database::{BenchDatabase, USER_PREFIX};
use crate::options::{Bound, Mix, Options, Transport};
use crate::report::{Baseline, Header, Memory, Report};
use crate::run_info::RunInfo;
use crate::runner::{RunSettings, Target};
use crate::server::{HttpServer, ServerBinary};
use crate::{baseline, binaries, entry, runner, server, system, verify};
use anyhow::Context;
use clap::Parser;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Above this many stdio clients (one server process each) the machine measures process
/// count more than the server.
const STDIO_CLIENTS_WARNING: u32 = 32;
/// The shortest pgbench run when the measured phase was bounded by a number of calls.
const MIN_BASELINE: Duration = Duration::from_secs(5);

/// The bench's `main`: `paths` are the bench target's ([`crate::bench_paths!`]).
pub fn main(paths: crate::BenchPaths) -> ExitCode {
    let options = Options::parse();
    let started_by_cargo = options.bench;
    entry::main("load", paths, started_by_cargo, run(options))
}

/// Runs the bench; `Ok(false)` when it ran but found errors or lost or doubled writes.
async fn run(options: Options) -> anyhow::Result<bool> {
    if options.transport == Transport::Stdio && options.clients > STDIO_CLIENTS_WARNING {
        eprintln!(
            "load: warning: {} stdio clients are {} server processes on this machine",
            options.clients, options.clients
        );
    }
    let report = report(&options).await?;
    print!("{}", report.text());
    if options.save {
        let results_dir = options
            .results_dir
            .clone()
            .unwrap_or_else(|| crate::paths().repo.join("benches/results"));
        let path = report.save(&results_dir)?;
        println!("saved: {}", path.display());
    }
    println!("{}", report.json());
    Ok(report.passed())
}

/// Runs the bench on a database of its own (removed after, unless --keep-db) and returns
/// what it measured.
pub async fn report(options: &Options) -> anyhow::Result<Report> {
    let load_before = system::load_average();
    let log_dir = prepare_log_dir(options)?;
    let database = BenchDatabase::create(options.backend, &options.admin_url).await?;
    eprintln!("load: using {}", database.describe());
    let report = measure(options, &database, &log_dir, load_before).await;
    let removed = database.remove(options.keep_db).await;
    let report = report?;
    removed?;
    Ok(report)
}

/// A directory for this configuration's server logs and pgbench scripts (replacing the
/// previous run's).
fn prepare_log_dir(options: &Options) -> anyhow::Result<PathBuf> {
    let dir = crate::paths().tmp.as_path().join("load").join(format!(
        "{}-{}-{}",
        options.transport.name(),
        options.mix_name(),
        options.backend.name()
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn measure(
    options: &Options,
    database: &BenchDatabase,
    log_dir: &Path,
    load_before: String,
) -> anyhow::Result<Report> {
    let bound = options.bound()?;
    let server = ServerBinary::new(
        binaries::server(options.server_bin.as_deref()),
        database.url(),
        options.pool_size,
        options.server_log.clone(),
        log_dir.to_owned(),
    )?;
    let server_version = server.version().await?;
    server.migrate().await.context("migrating the database")?;

    let users: Vec<String> = (0..options.clients)
        .map(|n| format!("{USER_PREFIX}{n}"))
        .collect();
    eprintln!("load: issuing {} tokens", users.len());
    let tokens = server.create_tokens(&users).await?;
    let credentials: Vec<(String, String)> = users.iter().cloned().zip(tokens.clone()).collect();

    let http = match options.transport {
        Transport::Stdio => None,
        Transport::Http | Transport::Sse => Some(server.start_http().await?),
    };
    let target = match &http {
        Some(http) => Target::Http(http.base_url()),
        None => Target::Stdio(&server),
    };
    eprintln!(
        "load: connecting {} {} clients",
        options.clients,
        options.transport.name()
    );
    let sessions = runner::connect_all(
        options.transport,
        &target,
        users.into_iter().zip(tokens).collect(),
        options.mix,
        options.tool,
    )
    .await?;
    let server_pids: Vec<u32> = match &http {
        Some(http) => vec![http.pid()],
        None => sessions
            .iter()
            .filter_map(|s| s.client.server_pid())
            .collect(),
    };

    eprintln!("load: running ({})", describe_bound(bound));
    let settings = RunSettings {
        warmup: options.warmup_duration()?,
        bound,
        call_timeout: options.call_timeout_duration()?,
        think: Duration::from_millis(options.think_ms),
        server_pids: server_pids.clone(),
    };
    let outcome = runner::run(sessions, &settings).await?;
    let measured_since = chrono::Utc::now()
        - chrono::Duration::from_std(outcome.measure_from.elapsed()).unwrap_or_default();
    let memory = peak_memory(&server_pids);

    let refused = no_replay(options, database);
    let mut sessions = outcome.sessions;
    if refused.is_none() {
        align_to_cycles(&mut sessions).await?;
    }
    let mut scripts = Vec::with_capacity(sessions.len());
    for session in sessions {
        scripts.push(session.script);
        session.client.close().await;
    }
    let server_log = stop_server(http, &server).await?;
    let replay = match refused {
        None => Ok(capture_replay(
            options,
            database,
            &server,
            log_dir,
            &mut scripts,
            &credentials,
        )
        .await?),
        Some(reason) => Err(reason),
    };
    let ledgers: Vec<_> = scripts.into_iter().map(|script| script.ledger).collect();
    let server_tool_time = server::logged_tool_durations(&server_log, measured_since)
        .summarize()
        .1;

    eprintln!("load: verifying the writes");
    let inspector = database.inspect().await?;
    let verification = verify::verify(&inspector, ledgers.iter()).await?;
    let database_version = inspector.server_version().await?;

    let baseline = run_baseline(options, database, log_dir, outcome.window, replay).await?;
    let (latency, per_tool) = outcome.samples.summarize();
    Ok(Report {
        header: Header {
            run: RunInfo::collect(command_line(), load_before, &server_version, server.path()),
            database: format!("{}, {}", database.describe(), database_version),
            transport: options.transport.name(),
            mix: options.mix_name(),
            backend: options.backend.name(),
            clients: options.clients,
            bound: describe_bound(bound),
            warmup: settings.warmup,
        },
        calls: outcome.samples.count(),
        window: outcome.window,
        latency,
        per_tool,
        server_tool_time,
        errors: outcome.errors,
        warmup_errors: outcome.warmup_errors,
        memory,
        cpu: outcome.cpu,
        verification,
        baseline,
        log_dir: log_dir.to_owned(),
    })
}

fn describe_bound(bound: Bound) -> String {
    match bound {
        Bound::Duration(duration) => format!("{:.1} s measured", duration.as_secs_f64()),
        Bound::Calls(calls) => format!("{calls} calls measured"),
    }
}

fn peak_memory(pids: &[u32]) -> Memory {
    let peaks: Vec<u64> = pids
        .iter()
        .filter_map(|pid| system::peak_rss_kib(*pid))
        .collect();
    Memory {
        processes: peaks.len(),
        max_kib: peaks.iter().copied().max().unwrap_or(0),
        total_kib: peaks.iter().sum(),
    }
}

/// Stops the HTTP server (stdio servers exit when their clients close) and returns what
/// the servers logged.
async fn stop_server(http: Option<HttpServer>, server: &ServerBinary) -> anyhow::Result<String> {
    if let Some(http) = http {
        let log_path = http.log_path().to_owned();
        http.stop().await?;
        return std::fs::read_to_string(&log_path)
            .with_context(|| format!("reading {}", log_path.display()));
    }
    let mut logs = String::new();
    let entries = std::fs::read_dir(server.log_dir())
        .with_context(|| format!("listing {}", server.log_dir().display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            logs += &std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
        }
    }
    Ok(logs)
}

/// Why this run does not replay its statements with pgbench, if it does not.
fn no_replay(options: &Options, database: &BenchDatabase) -> Option<Baseline> {
    if !options.baseline {
        return Some(Baseline::NotRequested);
    }
    if database.pg_name().is_none() {
        return Some(Baseline::NotApplicable(
            "pgbench needs PostgreSQL; this run used SQLite".into(),
        ));
    }
    if options.mix == Mix::Floor {
        return Some(Baseline::NotApplicable(
            "the floor touches no database".into(),
        ));
    }
    None
}

/// Brings every client to the start of a workload cycle (through the measured server,
/// after the measured phase), so that a captured cycle is whole: the agent's task is added
/// and completed within it.
async fn align_to_cycles(sessions: &mut [runner::Session]) -> anyhow::Result<()> {
    futures_util::future::try_join_all(sessions.iter_mut().map(|session| async move {
        while !session.script.at_cycle_start() {
            session.script.step(&mut session.client).await?;
        }
        Ok::<_, anyhow::Error>(())
    }))
    .await
    .context("bringing the clients to the start of a cycle")?;
    Ok(())
}

/// Runs two workload cycles per client through a second server whose database connection
/// passes through the capture proxy, records the second, and builds pgbench's replay of
/// what it sent.
async fn capture_replay(
    options: &Options,
    database: &BenchDatabase,
    server: &ServerBinary,
    log_dir: &Path,
    scripts: &mut [crate::workload::ClientScript],
    credentials: &[(String, String)],
) -> anyhow::Result<baseline::Replay> {
    let url = database.url();
    let parsed: tokio_postgres::Config = url.parse().context("parsing the database URL")?;
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => anyhow::bail!("the capture proxy needs PostgreSQL over TCP"),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let proxy = CaptureProxy::start(format!("{host}:{port}")).await?;
    let capture_server = server.with_database(proxy.url_through(&url)?, log_dir.join("capture"))?;
    let http = match options.transport {
        Transport::Stdio => None,
        Transport::Http | Transport::Sse => Some(capture_server.start_http().await?),
    };
    let target = match &http {
        Some(http) => Target::Http(http.base_url()),
        None => Target::Stdio(&capture_server),
    };
    let mut clients = Vec::with_capacity(credentials.len());
    for (index, (_, token)) in credentials.iter().enumerate() {
        clients.push(runner::connect(options.transport, &target, index, token.clone()).await?);
    }
    // A first cycle unrecorded: the capture server's connections prepare their statements,
    // so the recorded one is what a warm server sends.
    for recorded in [false, true] {
        if recorded {
            proxy.start_recording();
        }
        futures_util::future::try_join_all(scripts.iter_mut().zip(clients.iter_mut()).map(
            |(script, client)| async move {
                for _ in 0..script.cycle_calls() {
                    script.step(client).await?;
                }
                Ok::<_, anyhow::Error>(())
            },
        ))
        .await
        .context("the capture cycle")?;
    }
    let cycle = scripts.first().map_or(1, |s| s.cycle_calls());
    for client in clients {
        client.close().await;
    }
    if let Some(http) = http {
        http.stop().await?;
    }
    let captured = proxy.finish()?;
    let users: Vec<(String, Vec<u8>)> = credentials
        .iter()
        .map(|(user, token)| (user.clone(), Sha256::digest(token.as_bytes()).to_vec()))
        .collect();
    let (mut by_user, unknown) = captured.by_user(&users);
    if unknown > 0 {
        eprintln!(
            "load: capture: {unknown} statements or transactions named no bench user (left out)"
        );
    }
    let per_client: Vec<_> = users
        .iter()
        .map(|(user, _)| by_user.remove(user).unwrap_or_default())
        .collect();
    let statements: usize = per_client
        .iter()
        .flat_map(|units| units.iter().map(|unit| unit.statements.len()))
        .sum();
    let calls = (cycle * per_client.len() as u64).max(1) as f64;
    let wire = captured.wire;
    let per_call = format!(
        "per call: {:.1} round trips, {:.1} statements executed, {:.1} parsed",
        wire.round_trips as f64 / calls,
        wire.executes as f64 / calls,
        wire.parses as f64 / calls
    );
    eprintln!(
        "load: captured {statements} statements in {} transactions of {} clients ({cycle} calls each); {per_call}",
        per_client.iter().map(Vec::len).sum::<usize>(),
        per_client.len()
    );
    Ok(baseline::Replay {
        name: format!(
            "{} cycle as the server ran it ({per_call})",
            options.mix_name()
        ),
        calls: u32::try_from(cycle).unwrap_or(u32::MAX),
        text: crate::replay::script(&per_client)?,
    })
}

async fn run_baseline(
    options: &Options,
    database: &BenchDatabase,
    log_dir: &Path,
    window: Duration,
    replay: Result<baseline::Replay, Baseline>,
) -> anyhow::Result<Baseline> {
    let replay = match replay {
        Ok(replay) => replay,
        Err(baseline) => return Ok(baseline),
    };
    // A replay exists only on PostgreSQL (see `no_replay`).
    let name = database
        .pg_name()
        .context("a replay was captured without PostgreSQL")?;
    let duration = match options.bound()? {
        Bound::Duration(duration) => duration,
        Bound::Calls(_) => window.max(MIN_BASELINE),
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let url = database.url();
    let settings = baseline::BaselineSettings {
        pgbench: options
            .pgbench
            .clone()
            .unwrap_or_else(|| binaries::postgres_tool("pgbench")),
        database_url: &url,
        database: name,
        clients: options.clients,
        threads: options
            .pgbench_threads
            .unwrap_or_else(|| options.clients.min(cpus)),
        duration: duration.max(Duration::from_secs(1)),
        work_dir: log_dir,
    };
    eprintln!(
        "load: pgbench baseline ({}, {} clients, {:.0} s)",
        replay.name,
        settings.clients,
        settings.duration.as_secs_f64().ceil()
    );
    let started = Instant::now();
    let result = baseline::run(replay, &settings).await?;
    eprintln!(
        "load: pgbench took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Baseline::Ran(result))
}

/// How this run was started, as a `cargo bench` command.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    format!("cargo bench --bench load -- {}", args.join(" "))
}
