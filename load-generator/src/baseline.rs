//! The pgbench baseline: the statements the server really ran for the workload, captured
//! off the wire ([`crate::capture`]) and replayed by pgbench ([`crate::replay`]) at the same
//! concurrency on the same database, so that server calls/s ÷ pgbench's rate says how
//! much the server adds on top of the database's own cost.

use crate::system::{CpuShares, CpuSnapshot};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How often CPU counters are read while pgbench runs, and from when on.
const CPU_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
const CPU_SAMPLE_DELAY: Duration = Duration::from_secs(1);

/// What pgbench replays: one cycle of each client's calls.
#[derive(Debug)]
pub struct Replay {
    /// What the cycle is, for the report.
    pub name: String,
    /// Tool calls one run of the script stands for.
    pub calls: u32,
    /// The pgbench script ([`crate::replay::script`]).
    pub text: String,
}

/// What pgbench measured.
#[derive(Debug)]
pub struct BaselineResult {
    pub script: String,
    /// Tool calls one run of the script stands for.
    pub calls_per_transaction: u32,
    pub clients: u32,
    pub threads: u32,
    pub tps: f64,
    pub failed_transactions: u64,
    pub latency_average_ms: Option<f64>,
    /// Where the machine's CPU went while pgbench ran (pgbench itself is in `other`).
    pub cpu: CpuShares,
    pub script_path: PathBuf,
    pub output: String,
    /// The floor: one durable INSERT a transaction, by as many pgbench clients.
    pub floor: Floor,
}

/// What pgbench measured for the floor, one INSERT a transaction.
#[derive(Debug)]
pub struct Floor {
    pub tps: f64,
    pub latency_average_ms: Option<f64>,
}

/// The floor's script and table: the cheapest durable write the database allows.
const FLOOR_TABLE: &str = "CREATE TABLE IF NOT EXISTS pgbench_insert_floor (id bigserial PRIMARY KEY, payload text NOT NULL)";
const FLOOR_SCRIPT: &str =
    "INSERT INTO pgbench_insert_floor (payload) VALUES ('one durable insert');\n";
/// How long the floor runs (at most the replay's duration).
const FLOOR_DURATION: Duration = Duration::from_secs(5);

impl BaselineResult {
    /// Tool calls per second pgbench's rate stands for.
    pub fn calls_per_second(&self) -> f64 {
        self.tps * f64::from(self.calls_per_transaction)
    }
}

pub struct BaselineSettings<'a> {
    pub pgbench: PathBuf,
    /// The bench database: its URL, and its name for pgbench.
    pub database_url: &'a str,
    pub database: &'a str,
    pub clients: u32,
    pub threads: u32,
    pub duration: Duration,
    pub work_dir: &'a Path,
}

/// Writes the script and runs it, then the one-INSERT floor.
pub async fn run(
    replay: Replay,
    settings: &BaselineSettings<'_>,
) -> anyhow::Result<BaselineResult> {
    let script_path = settings.work_dir.join("pgbench-replay.sql");
    std::fs::write(&script_path, &replay.text)
        .with_context(|| format!("writing {}", script_path.display()))?;
    let (stdout, cpu) = pgbench(settings, &script_path, settings.duration).await?;
    let tps = find_number(&stdout, "tps = ").context("pgbench printed no tps")?;

    crate::database::connect_pg(settings.database_url)
        .await?
        .batch_execute(FLOOR_TABLE)
        .await
        .context("creating the floor's table")?;
    let floor_path = settings.work_dir.join("pgbench-floor.sql");
    std::fs::write(&floor_path, FLOOR_SCRIPT)
        .with_context(|| format!("writing {}", floor_path.display()))?;
    let (floor_out, _) =
        pgbench(settings, &floor_path, settings.duration.min(FLOOR_DURATION)).await?;
    let floor = Floor {
        tps: find_number(&floor_out, "tps = ").context("pgbench printed no tps for the floor")?,
        latency_average_ms: find_number(&floor_out, "latency average = "),
    };
    Ok(BaselineResult {
        script: replay.name,
        calls_per_transaction: replay.calls,
        clients: settings.clients,
        threads: settings.threads,
        tps,
        failed_transactions: find_number(&stdout, "number of failed transactions: ")
            .map_or(0, |n| n as u64),
        latency_average_ms: find_number(&stdout, "latency average = "),
        cpu,
        script_path,
        output: stdout,
        floor,
    })
}

/// Runs pgbench on `script` for `duration`; its output and where the CPU went.
async fn pgbench(
    settings: &BaselineSettings<'_>,
    script: &Path,
    duration: Duration,
) -> anyhow::Result<(String, CpuShares)> {
    let config: tokio_postgres::Config = settings
        .database_url
        .parse()
        .context("parsing the database URL for pgbench")?;
    let mut command = tokio::process::Command::new(&settings.pgbench);
    command
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={}", settings.clients))
        .arg(format!("--jobs={}", settings.threads))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--file={}", script.display()))
        .arg(settings.database);
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        command.env("PGHOST", host);
    }
    if let Some(port) = config.get_ports().first() {
        command.env("PGPORT", port.to_string());
    }
    if let Some(user) = config.get_user() {
        command.env("PGUSER", user);
    }
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).into_owned());
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", settings.pgbench.display()))?;
    let (output, cpu) = wait_sampling_cpu(child).await?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench failed on {} ({}):\n{stdout}\n{}",
            script.display(),
            output.status,
            crate::server::tail(&stderr, 20)
        );
    }
    Ok((stdout, cpu))
}

/// Waits for pgbench while sampling CPU counters: from a moment after its connections
/// are open to the last sample before it exits, so that its PostgreSQL backends (which
/// start and end with it) are counted.
async fn wait_sampling_cpu(
    child: tokio::process::Child,
) -> anyhow::Result<(std::process::Output, CpuShares)> {
    let started = Instant::now();
    let mut output = tokio::spawn(child.wait_with_output());
    let mut first: Option<CpuSnapshot> = None;
    let mut last: Option<CpuSnapshot> = None;
    loop {
        tokio::select! {
            result = &mut output => {
                let output = result
                    .context("the pgbench waiter panicked")?
                    .context("waiting for pgbench")?;
                let cpu = match (&first, &last) {
                    (Some(first), Some(last)) => CpuShares::between(first, last),
                    _ => CpuShares::default(),
                };
                return Ok((output, cpu));
            }
            () = tokio::time::sleep(CPU_SAMPLE_INTERVAL) => {
                if started.elapsed() >= CPU_SAMPLE_DELAY {
                    let snapshot = CpuSnapshot::take(&[]);
                    first.get_or_insert_with(|| snapshot.clone());
                    last = Some(snapshot);
                }
            }
        }
    }
}

/// The first number after `label` in pgbench's output.
fn find_number(output: &str, label: &str) -> Option<f64> {
    let start = output.find(label)? + label.len();
    output[start..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}
