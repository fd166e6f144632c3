//! The run's report: human-readable text, a one-line JSON summary, and the saved file.

use crate::baseline::BaselineResult;
use crate::run_info::RunInfo;
use crate::stats::{Errors, Latency, millis};
use crate::system::{CpuShares, cpu_per_call};
use crate::verify::Verification;
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What was run, where, and when.
pub struct Header {
    pub run: RunInfo,
    pub database: String,
    pub transport: &'static str,
    pub mix: String,
    pub backend: &'static str,
    pub clients: u32,
    pub bound: String,
    pub warmup: Duration,
}

/// Peak memory of the server process(es).
pub struct Memory {
    pub processes: usize,
    pub max_kib: u64,
    pub total_kib: u64,
}

/// The pgbench baseline, run or not.
pub enum Baseline {
    NotRequested,
    NotApplicable(String),
    Ran(BaselineResult),
}

pub struct Report {
    pub header: Header,
    pub calls: u64,
    pub window: Duration,
    pub latency: Latency,
    pub per_tool: BTreeMap<String, Latency>,
    pub server_tool_time: BTreeMap<String, Latency>,
    pub errors: Errors,
    pub warmup_errors: Errors,
    pub memory: Memory,
    pub cpu: CpuShares,
    pub verification: Verification,
    pub baseline: Baseline,
    pub log_dir: PathBuf,
}

impl Report {
    pub fn calls_per_second(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.calls as f64 / secs
        }
    }

    /// Server calls/s ÷ the calls/s pgbench's rate stands for.
    /// The clients' p50 latency over the one-INSERT floor's average latency.
    pub fn p50_over_floor(&self) -> Option<f64> {
        match &self.baseline {
            Baseline::Ran(result) => result
                .floor
                .latency_average_ms
                .filter(|ms| *ms > 0.0)
                .map(|ms| self.latency.p50.as_secs_f64() * 1000.0 / ms),
            _ => None,
        }
    }

    pub fn baseline_ratio(&self) -> Option<f64> {
        match &self.baseline {
            Baseline::Ran(result) if result.calls_per_second() > 0.0 => {
                Some(self.calls_per_second() / result.calls_per_second())
            }
            _ => None,
        }
    }

    /// No error, nothing lost, nothing doubled.
    pub fn passed(&self) -> bool {
        self.errors.count == 0
            && self.warmup_errors.count == 0
            && self.verification.lost() == 0
            && self.verification.doubled() == 0
    }

    pub fn text(&self) -> String {
        let h = &self.header;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "todo-mcp load: {} {} on {}, {} clients, {} after {:.1} s of warm-up",
            h.transport,
            h.mix,
            h.backend,
            h.clients,
            h.bound,
            h.warmup.as_secs_f64()
        );
        h.run.write_lines(&mut out);
        let _ = writeln!(out, "database: {}", h.database);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "throughput: {:.1} calls/s ({} calls in {:.2} s)",
            self.calls_per_second(),
            self.calls,
            self.window.as_secs_f64()
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "latency as the clients saw it (ms):");
        latency_table(&mut out, &self.latency, &self.per_tool);
        if !self.server_tool_time.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "time inside the tool call as the server logged it (ms; transaction and audit \
                 record included, transport and authentication not):"
            );
            latency_table(&mut out, &Latency::default(), &self.server_tool_time);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "errors: {} (warm-up: {})",
            self.errors.count, self.warmup_errors.count
        );
        for errors in [&self.errors, &self.warmup_errors] {
            for (kind, n) in &errors.by_kind {
                let _ = writeln!(out, "  {kind}: {n}");
            }
            for example in &errors.examples {
                let _ = writeln!(out, "  e.g. {example}");
            }
        }
        let memory = &self.memory;
        if memory.processes == 1 {
            let _ = writeln!(out, "server peak RSS: {}", mib(memory.max_kib));
        } else {
            let _ = writeln!(
                out,
                "server peak RSS: {} per process at most, {} over {} processes",
                mib(memory.max_kib),
                mib(memory.total_kib),
                memory.processes
            );
        }
        let cpu = &self.cpu;
        let rate = self.calls_per_second();
        let _ = writeln!(
            out,
            "CPU during the measured phase (share of the whole machine): server {:.0}%, \
             load generator {:.0}%, postgres (all) {:.0}%, other {:.0}%, idle {:.0}%",
            cpu.server * 100.0,
            cpu.generator * 100.0,
            cpu.postgres * 100.0,
            cpu.other * 100.0,
            cpu.idle * 100.0
        );
        let _ = writeln!(
            out,
            "CPU time per call (µs): server {:.0}, postgres {:.0}, load generator {:.0}",
            micros(cpu_per_call(cpu.server, rate)),
            micros(cpu_per_call(cpu.postgres, rate)),
            micros(cpu_per_call(cpu.generator, rate))
        );
        let _ = writeln!(out);
        let v = &self.verification;
        let _ = writeln!(out, "lost writes: {}, doubled: {}", v.lost(), v.doubled());
        let _ = writeln!(
            out,
            "  tasks: {} acknowledged, {} lost, {} doubled; completions: {} acknowledged, {} lost",
            v.tasks_acknowledged,
            v.tasks_lost,
            v.tasks_doubled,
            v.completions_acknowledged,
            v.completions_lost
        );
        let _ = writeln!(
            out,
            "  messages: {} acknowledged, {} lost, {} doubled; audit records: {} expected, {} missing, {} extra",
            v.messages_acknowledged,
            v.messages_lost,
            v.messages_doubled,
            v.audit_acknowledged,
            v.audit_missing,
            v.audit_extra
        );
        if v.unacknowledged > 0 {
            let _ = writeln!(
                out,
                "  {} rows written by calls that got no answer (not counted as doubled)",
                v.unacknowledged
            );
        }
        for example in &v.examples {
            let _ = writeln!(out, "  e.g. {example}");
        }
        let _ = writeln!(out);
        match &self.baseline {
            Baseline::NotRequested => {}
            Baseline::NotApplicable(reason) => {
                let _ = writeln!(out, "baseline: none ({reason})");
            }
            Baseline::Ran(result) => {
                let _ = writeln!(
                    out,
                    "baseline: pgbench, script {} ({} tool calls per transaction), {} clients, {} threads, script {}",
                    result.script,
                    result.calls_per_transaction,
                    result.clients,
                    result.threads,
                    result.script_path.display()
                );
                let _ = writeln!(
                    out,
                    "  pgbench: {:.1} tps = {:.1} tool calls/s, latency average {} ms, {} failed transactions",
                    result.tps,
                    result.calls_per_second(),
                    result
                        .latency_average_ms
                        .map_or_else(|| "?".into(), |ms| format!("{ms:.3}")),
                    result.failed_transactions
                );
                let _ = writeln!(
                    out,
                    "  CPU while pgbench ran: postgres {:.0}% ({:.0} µs per tool call), pgbench and \
                     the rest {:.0}%, idle {:.0}%",
                    result.cpu.postgres * 100.0,
                    micros(cpu_per_call(result.cpu.postgres, result.calls_per_second())),
                    result.cpu.other * 100.0,
                    result.cpu.idle * 100.0
                );
                if let Some(ratio) = self.baseline_ratio() {
                    let _ = writeln!(
                        out,
                        "  server calls/s ÷ pgbench calls/s = {:.1} ÷ {:.1} = {ratio:.2}",
                        self.calls_per_second(),
                        result.calls_per_second()
                    );
                }
                let _ = writeln!(
                    out,
                    "  one-INSERT floor (pgbench, {} clients, one durable INSERT a transaction): \
                     {:.1} tps, latency average {} ms{}",
                    result.clients,
                    result.floor.tps,
                    result
                        .floor
                        .latency_average_ms
                        .map_or_else(|| "?".into(), |ms| format!("{ms:.3}")),
                    self.p50_over_floor()
                        .map_or_else(String::new, |r| format!("; server p50 ÷ floor = {r:.2}"))
                );
                let _ = writeln!(out, "  pgbench output:");
                for line in result.output.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        let _ = writeln!(out, "server logs and scripts: {}", self.log_dir.display());
        out
    }

    pub fn json(&self) -> Value {
        let h = &self.header;
        let per_tool: serde_json::Map<String, Value> = self
            .per_tool
            .iter()
            .map(|(tool, latency)| (tool.clone(), latency.to_json()))
            .collect();
        let server_tool_time: serde_json::Map<String, Value> = self
            .server_tool_time
            .iter()
            .map(|(tool, latency)| (tool.clone(), latency.to_json()))
            .collect();
        let baseline = match &self.baseline {
            Baseline::Ran(result) => json!({
                "script": result.script,
                "clients": result.clients,
                "pgbench_tps": result.tps,
                "pgbench_calls_per_s": result.calls_per_second(),
                "failed_transactions": result.failed_transactions,
                "postgres_cpu": result.cpu.postgres,
                "postgres_us_per_call": micros(cpu_per_call(result.cpu.postgres, result.calls_per_second())),
                "ratio": self.baseline_ratio(),
                "floor_tps": result.floor.tps,
                "floor_latency_ms": result.floor.latency_average_ms,
                "p50_over_floor": self.p50_over_floor(),
            }),
            _ => Value::Null,
        };
        json!({
            "date": h.run.date.to_rfc3339(),
            "commit": h.run.commit,
            "load_before": h.run.load_before,
            "transport": h.transport,
            "mix": h.mix,
            "backend": h.backend,
            "clients": h.clients,
            "calls": self.calls,
            "seconds": self.window.as_secs_f64(),
            "calls_per_s": self.calls_per_second(),
            "latency": self.latency.to_json(),
            "per_tool": per_tool,
            "server_tool_time": server_tool_time,
            "errors": self.errors.count,
            "warmup_errors": self.warmup_errors.count,
            "error_examples": self.errors.examples.iter().chain(&self.warmup_errors.examples).collect::<Vec<_>>(),
            "server_peak_rss_kib": self.memory.max_kib,
            "server_processes": self.memory.processes,
            "cpu": {
                "server": self.cpu.server,
                "generator": self.cpu.generator,
                "postgres": self.cpu.postgres,
                "other": self.cpu.other,
                "idle": self.cpu.idle,
                "server_us_per_call": micros(cpu_per_call(self.cpu.server, self.calls_per_second())),
                "postgres_us_per_call": micros(cpu_per_call(self.cpu.postgres, self.calls_per_second())),
            },
            "verification": self.verification.to_json(),
            "baseline": baseline,
            "passed": self.passed(),
        })
    }

    /// Writes the text report as `<dir>/<date>-<transport>-<mix>-<backend>.txt` (with a
    /// `-2`, `-3`… suffix if that exists), with the JSON summary as its last line, and the
    /// pgbench script of the baseline as `<dir>/pgbench/<transport>-<mix>-<backend>.sql`:
    /// one per configuration, replaced by each save. Only the first client's statements are
    /// kept (every client replays its own alike; 64 of them are megabytes).
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let h = &self.header;
        let stem = format!(
            "{}-{}-{}-{}",
            h.run.date.format("%Y-%m-%d"),
            h.transport,
            h.mix,
            h.backend
        );
        let mut path = dir.join(format!("{stem}.txt"));
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("{stem}-{n}.txt"));
            n += 1;
        }
        let text = format!("{}\nsummary: {}\n", self.text(), self.json());
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        if let Baseline::Ran(result) = &self.baseline {
            let scripts = dir.join("pgbench");
            std::fs::create_dir_all(&scripts)
                .with_context(|| format!("creating {}", scripts.display()))?;
            let script = scripts.join(format!("{}-{}-{}.sql", h.transport, h.mix, h.backend));
            let full = std::fs::read_to_string(&result.script_path)
                .with_context(|| format!("reading {}", result.script_path.display()))?;
            let first_client = match full.find("\n\\elif ") {
                Some(end) => format!(
                    "{}\n-- … and each of the other {} clients its own statements alike.\n",
                    &full[..end],
                    result.clients.saturating_sub(1)
                ),
                None => full,
            };
            std::fs::write(&script, first_client)
                .with_context(|| format!("writing the pgbench script to {}", script.display()))?;
        }
        Ok(path)
    }
}

fn latency_table(out: &mut String, overall: &Latency, per_tool: &BTreeMap<String, Latency>) {
    let _ = writeln!(
        out,
        "  {:<26} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "", "calls", "mean", "p50", "p95", "p99", "max"
    );
    let mut row = |name: &str, l: &Latency| {
        let _ = writeln!(
            out,
            "  {:<26} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3}",
            name,
            l.count,
            millis(l.mean),
            millis(l.p50),
            millis(l.p95),
            millis(l.p99),
            millis(l.max)
        );
    };
    if overall.count > 0 {
        row("all", overall);
    }
    for (tool, latency) in per_tool {
        row(tool, latency);
    }
}

fn micros(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000_000.0).round() / 10.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
