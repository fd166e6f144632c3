//! todo-mcp's load generator and bench harness.
//!
//! `cargo bench --bench load` runs [`load`]: the real `todo-mcp` binary on a fresh
//! database, driven by N concurrent MCP clients over stdio, Streamable HTTP or legacy SSE,
//! compared with pgbench running the same SQL. The `history` and `coldstart` benches
//! (in the todo-mcp package's `benches/`) are built from the same parts: starting the
//! server ([`server`]), MCP clients ([`client`]), bench databases ([`database`]),
//! latency statistics ([`stats`]), the machine ([`system`]) and saved reports
//! ([`results`]).

pub mod baseline;
pub mod binaries;
pub mod capture;
pub mod client;
pub mod database;
pub mod entry;
pub mod load;
pub mod options;
pub mod replay;
pub mod report;
pub mod results;
pub mod run_info;
pub mod runner;
pub mod server;
pub mod stats;
pub mod system;
pub mod verify;
pub mod workload;

use std::path::PathBuf;
use std::sync::OnceLock;

/// What cargo tells a bench target and not a library: the server binary it built, the
/// repository, and a scratch directory under `target/`. [`bench_paths!`] fills it in,
/// from within a bench target; [`entry::main`] keeps it for [`paths`].
#[derive(Debug, Clone)]
pub struct BenchPaths {
    /// `target/release/todo-mcp`, built by cargo with the bench.
    pub server: PathBuf,
    /// The todo-mcp repository (its `benches/results` is where `--save` writes).
    pub repo: PathBuf,
    /// `target/tmp`: server logs and pgbench scripts of the latest run.
    pub tmp: PathBuf,
}

/// The [`BenchPaths`] of the bench target this is expanded in.
#[macro_export]
macro_rules! bench_paths {
    () => {
        $crate::BenchPaths {
            server: env!("CARGO_BIN_EXE_todo-mcp").into(),
            repo: env!("CARGO_MANIFEST_DIR").into(),
            tmp: env!("CARGO_TARGET_TMPDIR").into(),
        }
    };
}

static PATHS: OnceLock<BenchPaths> = OnceLock::new();

/// The running bench's paths (relative to the working directory if no bench set them).
pub fn paths() -> &'static BenchPaths {
    PATHS.get_or_init(|| BenchPaths {
        server: PathBuf::from("target/release/todo-mcp"),
        repo: PathBuf::from("."),
        tmp: PathBuf::from("target/tmp"),
    })
}

fn set_paths(paths: BenchPaths) {
    // The first bench entry of the process sets them; there is only ever one.
    let _ = PATHS.set(paths);
}
