//! What the machine says: peak memory of the server, CPU time by process, the hardware.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Peak resident set size (`VmHWM`) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Clock ticks per second in /proc (USER_HZ, fixed at 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time counters (clock ticks) at one moment.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    /// Idle time of all CPUs, from /proc/stat.
    idle: u64,
    server: u64,
    generator: u64,
    /// Each `postgres` process's ticks: backends come and go (other users' too), so
    /// their time is compared process by process.
    postgres: HashMap<u32, u64>,
}

impl CpuSnapshot {
    /// Reads the counters; `servers` are the server processes under test.
    pub fn take(servers: &[u32]) -> Self {
        CpuSnapshot {
            at: Instant::now(),
            idle: idle_ticks().unwrap_or(0),
            server: servers.iter().filter_map(|pid| process_ticks(*pid)).sum(),
            generator: process_ticks(std::process::id()).unwrap_or(0),
            postgres: postgres_ticks(),
        }
    }
}

/// Where the machine's CPU went between two snapshots, as shares of all of it (the
/// elapsed time on every CPU: /proc/stat's busy counters lag behind the processes' own
/// in virtual machines, so they are not used).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuShares {
    pub server: f64,
    pub generator: f64,
    /// Every `postgres` process on the machine (other users of it included).
    pub postgres: f64,
    /// Everything else that ran.
    pub other: f64,
    pub idle: f64,
}

impl CpuShares {
    pub fn between(start: &CpuSnapshot, end: &CpuSnapshot) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = end.at.duration_since(start.at).as_secs_f64() * TICKS_PER_SECOND * cpus;
        if capacity == 0.0 {
            return CpuShares::default();
        }
        let share = |a: u64, b: u64| b.saturating_sub(a) as f64 / capacity;
        let server = share(start.server, end.server);
        let generator = share(start.generator, end.generator);
        let postgres_ticks: u64 = end
            .postgres
            .iter()
            .map(|(pid, ticks)| ticks.saturating_sub(start.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        let postgres = share(0, postgres_ticks);
        let idle = share(start.idle, end.idle).min(1.0);
        CpuShares {
            server,
            generator,
            postgres,
            other: (1.0 - server - generator - postgres - idle).max(0.0),
            idle,
        }
    }
}

/// CPU time per call of a process that used `share` of the machine while calls went at
/// `calls_per_second`.
pub fn cpu_per_call(share: f64, calls_per_second: f64) -> Duration {
    if calls_per_second <= 0.0 {
        return Duration::ZERO;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Duration::try_from_secs_f64(share * cpus / calls_per_second).unwrap_or_default()
}

/// Idle ticks (idle + iowait) of all CPUs, from the `cpu` line of /proc/stat.
fn idle_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some(fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0))
}

/// utime + stime of a process.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of every process named `postgres`, by pid.
fn postgres_ticks() -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(|pid| Some((pid, process_ticks(pid)?)))
        .collect()
}

/// The 1, 5 and 15 minute load averages: how busy the machine was besides the run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// "2 CPUs (model), 23.5 GiB RAM, Linux 6.1.0".
pub fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown RAM".into(),
            |kib| format!("{:.1} GiB RAM", kib / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| format!("Linux {}", r.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.into());
    format!("{cpus} CPUs ({model}), {memory}, {kernel}")
}

/// The repository's commit, with `-dirty` when the work tree has changes.
pub fn git_revision(repo: &Path) -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"])?;
    let dirty = run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}
