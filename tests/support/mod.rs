//! Shared integration-test harness for `todo-mcp`.
//!
//! Each test target (tests/it, tests/external, tests/install) includes it once as its
//! `support` module. What it gives:
//!
//! * [`pg`]: finds (or starts) a PostgreSQL server once per test process, keeps one migrated
//!   template database per process and hands each test its own copy ([`PgTestDb`]).
//! * [`sqlite`]: a fresh SQLite file per test ([`SqliteTestDb`]).
//! * [`TestDb`] / [`Backend`] / [`both_backends!`](crate::both_backends): run one test body on
//!   both backends.
//! * [`cli`]: run the `todo-mcp` binary ([`todo_mcp`], [`create_token`]).
//! * [`mcp`]: an MCP client of the server in process ([`connect_in_process`]) or of a `todo-mcp stdio`
//!   child ([`connect_stdio`]): an [`McpClient`] either way.
//! * [`proxy`]: a TCP proxy in front of PostgreSQL that cuts a connection on cue
//!   ([`proxy::FaultProxy`]).
//!
//! Every helper panics with a message saying what failed (and the server's stderr where there is
//! one): a test harness that fails quietly is worse than none.
//!
//! Environment knobs:
//! * `TODO_MCP_TEST_PG_URL`: admin URL of a PostgreSQL server to use (needs CREATE DATABASE).
//! * `TODO_MCP_TEST_PG=cluster`: skip 127.0.0.1:5432 and always start a throwaway cluster.

// Not every test file uses every helper.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod better_auth;
pub mod cli;
pub mod http;
pub mod jsonrpc;
pub mod jwt;
pub mod mcp;
use std::sync::LazyLock;

pub mod node;
pub mod pg;
pub mod pgbouncer;
pub mod proxy;
pub mod python;
pub mod reliability;
pub mod samples;
pub mod sql;
pub mod sqlite;

pub use cli::{assert_success, bin_path, create_token, todo_mcp, todo_mcp_with_timeout};
pub use http::{HttpServer, start_http, start_http_on, start_http_with_open_files};
pub use mcp::{
    McpClient, connect_in_process, connect_stdio, expect_stdio_exit, spawn_stdio_raw, stdio_command,
};
pub use pg::PgTestDb;
pub use sqlite::SqliteTestDb;

/// Every tool the server has, sorted: the public contract tests check tools/list against.
/// Read from the committed mcp-manifest.json, which `todo-mcp manifest` generates from the
/// tool definitions (tests/it/manifest.rs keeps the two equal), so no test lists tools by hand.
pub static TOOL_NAMES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut names: Vec<&'static str> = manifest_tools()
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    names.sort_unstable();
    names
});

/// The tools that only read (`readOnlyHint: true`), from the same manifest.
pub static READ_ONLY_TOOLS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    manifest_tools()
        .iter()
        .filter(|tool| tool["annotations"]["readOnlyHint"] == true)
        .filter_map(|tool| tool["name"].as_str())
        .collect()
});

fn manifest_tools() -> &'static [serde_json::Value] {
    static MANIFEST: LazyLock<serde_json::Value> = LazyLock::new(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp-manifest.json");
        let text = std::fs::read_to_string(path).expect("read mcp-manifest.json");
        serde_json::from_str(&text).expect("mcp-manifest.json is JSON")
    });
    MANIFEST["tools"]
        .as_array()
        .map(Vec::as_slice)
        .expect("mcp-manifest.json has tools")
}

/// Says that a test did not run, and why, on the process's stderr itself, past the test
/// harness's capture of a passing test's output; scripts/test lists every such line again
/// at the end. A test that cannot run here says so this way and returns; it never passes
/// quietly.
pub fn not_run(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "NOT RUN: {test}: {why}");
}

/// Which storage backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// Both backends, for loops over "the same test on each backend".
    pub const ALL: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

    /// Short name used in test output and panic messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A fresh database on either backend, so one test body can run on both.
///
/// The PostgreSQL variant is already migrated (copied from the per-process template); the SQLite
/// variant is an empty file that `todo-mcp stdio` migrates at start (call
/// [`TestDb::migrate`] first if the test runs other subcommands against it).
pub enum TestDb {
    Pg(PgTestDb),
    Sqlite(SqliteTestDb),
}

impl TestDb {
    /// A fresh database of the given backend.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Postgres => TestDb::Pg(PgTestDb::new().await),
            Backend::Sqlite => TestDb::Sqlite(SqliteTestDb::new()),
        }
    }

    /// The `DATABASE_URL` to give the binary.
    pub fn url(&self) -> &str {
        match self {
            TestDb::Pg(db) => db.url(),
            TestDb::Sqlite(db) => db.url(),
        }
    }

    /// `"postgres"` or `"sqlite"`.
    pub fn name(&self) -> &'static str {
        self.backend().name()
    }

    pub fn backend(&self) -> Backend {
        match self {
            TestDb::Pg(_) => Backend::Postgres,
            TestDb::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Run `todo-mcp migrate` against it (a no-op in effect for PostgreSQL, which is copied from a
    /// migrated template, but harmless and cheap).
    pub fn migrate(&self) {
        match self {
            TestDb::Pg(db) => db.migrate(),
            TestDb::Sqlite(db) => db.migrate(),
        }
    }

    /// The PostgreSQL database, for SQL-level assertions; panics on SQLite.
    pub fn as_pg(&self) -> &PgTestDb {
        match self {
            TestDb::Pg(db) => db,
            TestDb::Sqlite(_) => panic!("TestDb::as_pg called on a SQLite test database"),
        }
    }

    /// The SQLite database; panics on PostgreSQL.
    pub fn as_sqlite(&self) -> &SqliteTestDb {
        match self {
            TestDb::Sqlite(db) => db,
            TestDb::Pg(_) => panic!("TestDb::as_sqlite called on a PostgreSQL test database"),
        }
    }
}

/// Generate one `#[tokio::test]` per backend for an `async fn(TestDb)` test body.
///
/// ```ignore
/// async fn add_and_list(db: support::TestDb) { /* ... */ }
/// both_backends!(add_and_list);
/// // => tests `add_and_list::postgres` and `add_and_list::sqlite`
/// ```
#[macro_export]
macro_rules! both_backends {
    ($($body:ident),+ $(,)?) => {
        $(
            mod $body {
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$body(
                        $crate::support::TestDb::new($crate::support::Backend::Postgres).await,
                    )
                    .await
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$body(
                        $crate::support::TestDb::new($crate::support::Backend::Sqlite).await,
                    )
                    .await
                }
            }
        )+
    };
}

/// A short random suffix for database names, temp files and the like.
pub fn random_suffix() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_string()
}

/// Creates `dir`'s parent and takes an exclusive lock on `<dir>.lock`, so that parallel test
/// processes install into `dir` once; the lock is held until the returned file is dropped.
pub fn lock_install_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    let parent = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", dir.display()))?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("could not create {}: {e}", parent.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("could not open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("could not lock {}: {e}", lock_path.display()))?;
    Ok(lock)
}
