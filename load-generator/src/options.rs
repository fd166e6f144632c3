//! The load generator's command line.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Load generator for todo-mcp: starts the real server binary on a fresh database, drives
/// it with N concurrent MCP clients (each its own user and token), reports throughput and
/// latency, checks that every acknowledged write is in the database exactly once, and
/// optionally runs a pgbench baseline of the same SQL on the same database.
///
/// Run it as `cargo bench --bench load -- [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(name = "load", version, about, long_about)]
pub struct Options {
    /// How clients reach the server. stdio: one server process per client (each its own
    /// user), so N clients are N processes; http: Streamable HTTP at /mcp, one server;
    /// sse: the legacy HTTP+SSE transport, one server.
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,

    /// Where the server stores its data: a fresh PostgreSQL database on --admin-url, or
    /// a fresh SQLite file in a temporary directory.
    #[arg(long, value_enum, default_value_t = Backend::Postgres)]
    pub backend: Backend,

    /// A PostgreSQL URL the bench can create and drop databases with.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub admin_url: String,

    /// Concurrent clients, each with its own user and token.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,

    /// The workload. agent: per turn, append a user message, read the history (limit 50),
    /// list pending tasks, add a task (with an idempotency key) or complete the one added
    /// the turn before, append an assistant message. single: one tool, --tool, over and
    /// over. floor: tools/list, the protocol floor (no database).
    #[arg(long, value_enum, default_value_t = Mix::Agent)]
    pub mix: Mix,

    /// The tool --mix single calls.
    #[arg(long, value_enum, default_value_t = SingleTool::AddTask)]
    pub tool: SingleTool,

    /// Measure for this many seconds (after the warm-up).
    #[arg(long, value_name = "SECS", conflicts_with = "calls")]
    pub duration: Option<f64>,

    /// Measure this many calls in total, across clients (after the warm-up).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: Option<u64>,

    /// Each client pauses this many milliseconds on average between calls (uniformly
    /// 0.5x to 1.5x), as an agent thinking between tool calls. 0 (the default): closed
    /// loop, every client calls again at once, which measures capacity; with think time
    /// N clients offer about N / (think + latency) calls/s, which measures latency at a
    /// realistic load.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub think_ms: u64,

    /// Seconds of load before measuring starts (its calls are verified, not measured).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub warmup: f64,

    /// Also run pgbench (PostgreSQL only) with the SQL the measured tool calls issue, at
    /// the same concurrency on the same database, and report server calls/s ÷ its rate.
    #[arg(long)]
    pub baseline: bool,

    /// Write the full report to benches/results/<date>-<transport>-<mix>-<backend>.txt.
    #[arg(long)]
    pub save: bool,

    /// Where --save writes.
    /// Where --save writes [default: the repository's benches/results].
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,

    /// The server binary [default: the todo-mcp that cargo built with this bench,
    /// target/release/todo-mcp].
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// TODO_MCP_POOL_SIZE for the server (connections per process) [default: the
    /// server's own default].
    #[arg(long, value_name = "N")]
    pub pool_size: Option<u32>,

    /// TODO_MCP_LOG for the server [default: the server's own default, one info line per
    /// call]. Its log goes to a file named in the report.
    #[arg(long, value_name = "FILTER")]
    pub server_log: Option<String>,

    /// The pgbench binary [default: the newest /usr/lib/postgresql/*/bin/pgbench, else
    /// pgbench on PATH].
    #[arg(long, value_name = "PATH")]
    pub pgbench: Option<PathBuf>,

    /// pgbench worker threads [default: min(clients, CPUs)].
    #[arg(long, value_name = "N")]
    pub pgbench_threads: Option<u32>,

    /// Give up on a single call after this many seconds (it counts as an error).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub call_timeout: f64,

    /// Keep the database (and SQLite file) instead of dropping it, and say where it is.
    #[arg(long)]
    pub keep_db: bool,

    /// Passed by `cargo bench`; without it (as under `cargo test --benches`) nothing runs.
    #[arg(long, hide = true)]
    pub bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Stdio,
    Http,
    Sse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    Agent,
    Single,
    Floor,
}

/// The tools --mix single can call over and over (each needs no state but what its
/// client's setup makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SingleTool {
    AddTask,
    ListTasks,
    AppendMessage,
    GetConversationHistory,
    ListConversations,
    StartConversation,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Http => "http",
            Transport::Sse => "sse",
        }
    }
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl SingleTool {
    pub fn name(self) -> &'static str {
        match self {
            SingleTool::AddTask => "add_task",
            SingleTool::ListTasks => "list_tasks",
            SingleTool::AppendMessage => "append_message",
            SingleTool::GetConversationHistory => "get_conversation_history",
            SingleTool::ListConversations => "list_conversations",
            SingleTool::StartConversation => "start_conversation",
        }
    }
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Duration(Duration),
    Calls(u64),
}

impl Options {
    /// The workload's name in reports and file names: `agent`, `floor`, `single-add_task`.
    /// The workload's name, with its think time when it has one (`agent-think1000ms`).
    pub fn mix_name(&self) -> String {
        let mix = match self.mix {
            Mix::Agent => "agent".into(),
            Mix::Floor => "floor".into(),
            Mix::Single => format!("single-{}", self.tool.name()),
        };
        match self.think_ms {
            0 => mix,
            think => format!("{mix}-think{think}ms"),
        }
    }

    /// --duration or --calls; 10 seconds when neither is given.
    pub fn bound(&self) -> anyhow::Result<Bound> {
        match (self.duration, self.calls) {
            (Some(secs), _) => Ok(Bound::Duration(seconds("--duration", secs)?)),
            (None, Some(calls)) => Ok(Bound::Calls(calls)),
            (None, None) => Ok(Bound::Duration(Duration::from_secs(10))),
        }
    }

    pub fn warmup_duration(&self) -> anyhow::Result<Duration> {
        if self.warmup == 0.0 {
            return Ok(Duration::ZERO);
        }
        seconds("--warmup", self.warmup)
    }

    pub fn call_timeout_duration(&self) -> anyhow::Result<Duration> {
        seconds("--call-timeout", self.call_timeout)
    }
}

fn seconds(option: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{option} must be a positive number of seconds"))
}
