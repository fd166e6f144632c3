//! The server in the test's process: `todo-mcp stdio`'s session on a thread and runtime of
//! its own, its log kept apart from other tests' servers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use todo_mcp::auth::{Authenticator, JwtOptions};
use todo_mcp::db::{Database, DatabaseUrl, PoolOptions, migrations};
use todo_mcp::store::Quotas;
use todo_mcp::transport::stdio;
use tokio::io::DuplexStream;
use tracing_subscriber::EnvFilter;

use super::StderrLog;

/// Bytes buffered in each direction of the duplex.
const DUPLEX_BYTES: usize = 1 << 20;

/// What the binary would take from its environment, for the settings a stdio session has.
pub(super) struct Settings {
    pool: PoolOptions,
    quotas: Quotas,
    jwt: JwtOptions,
    log: String,
    recheck_after: Duration,
}

impl Settings {
    /// The settings named by `env` (the binary's variable names), the binary's defaults
    /// otherwise. A variable a stdio session in process cannot honour panics, naming it.
    pub(super) fn from_env(env: &[(&str, &str)]) -> Settings {
        let mut settings = Settings {
            pool: PoolOptions::default(),
            quotas: Quotas::default(),
            jwt: JwtOptions::default(),
            log: todo_mcp::DEFAULT_LOG_FILTER.to_string(),
            recheck_after: stdio::RECHECK_AFTER,
        };
        for &(key, value) in env {
            let number = || -> f64 {
                value
                    .parse()
                    .unwrap_or_else(|e| panic!("{key}={value:?} is not a number: {e}"))
            };
            let seconds = || Duration::from_secs_f64(number());
            match key {
                "TODO_MCP_POOL_SIZE" => settings.pool.max_connections = number() as u32,
                "TODO_MCP_POOL_TIMEOUT" => settings.pool.acquire_timeout = seconds(),
                "TODO_MCP_STATEMENT_TIMEOUT" => settings.pool.statement_timeout = seconds(),
                "TODO_MCP_MAX_TASKS_PER_USER" => settings.quotas.tasks_per_user = number() as i32,
                "TODO_MCP_MAX_MESSAGES_PER_CONVERSATION" => {
                    settings.quotas.messages_per_conversation = number() as i32
                }
                "TODO_MCP_MAX_MESSAGE_BYTES" => settings.quotas.message_bytes = number() as usize,
                "TODO_MCP_MAX_STATE_BYTES" => settings.quotas.state_bytes = number() as usize,
                "TODO_MCP_MAX_STATE_VERSIONS" => settings.quotas.state_versions = number() as i32,
                "TODO_MCP_JWT_SECRET" => settings.jwt.secret = Some(value.to_string()),
                "TODO_MCP_JWT_ISSUER" => settings.jwt.issuer = Some(value.to_string()),
                "TODO_MCP_JWKS_URL" => settings.jwt.jwks_url = Some(value.to_string()),
                "TODO_MCP_JWT_AUDIENCE" => settings.jwt.audience = Some(value.to_string()),
                "TODO_MCP_PUBLIC_URL" => settings.jwt.public_url = Some(value.to_string()),
                "TODO_MCP_JWT_MAX_LIFETIME" => settings.jwt.max_lifetime = seconds(),
                "TODO_MCP_JWKS_CACHE_TTL" => settings.jwt.jwks_cache_ttl = seconds(),
                "TODO_MCP_JWKS_REFRESH_MIN_INTERVAL" => {
                    settings.jwt.jwks_refresh_min_interval = seconds()
                }
                "TODO_MCP_LOG" => settings.log = value.to_string(),
                // Not a setting of the binary: how soon a session checks its credential
                // again (30 s there), so that a test need not wait.
                "RECHECK_CREDENTIAL_AFTER" => settings.recheck_after = seconds(),
                other => panic!(
                    "{other} is not a setting of a stdio session in process: start the server \
                     with connect_stdio for it"
                ),
            }
        }
        settings
    }
}

/// Starts the server on a thread of its own; returns the client's end of the duplex and the
/// server's log, which ends when the server does.
pub(super) fn start(
    db_url: &str,
    token: Option<&str>,
    settings: Settings,
    label: &str,
) -> (DuplexStream, StderrLog) {
    let (client_io, server_io) = tokio::io::duplex(DUPLEX_BYTES);
    let buf = Arc::new(Mutex::new(String::new()));
    let writer = LogWriter {
        buf: buf.clone(),
        label: label.to_string(),
    };
    let filter = EnvFilter::try_new(&settings.log)
        .unwrap_or_else(|e| panic!("TODO_MCP_LOG={:?} is not a filter: {e}", settings.log));
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(false)
            .finish(),
    );
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let db_url = db_url.to_string();
    let token = token.map(str::to_string);
    let thread_label = label.to_string();
    std::thread::Builder::new()
        .name("todo-mcp in process".into())
        .spawn(move || {
            let _log = tracing::dispatcher::set_default(&dispatch);
            let served = runtime(dispatch).and_then(|runtime| {
                runtime.block_on(serve(&db_url, token.as_deref(), settings, server_io))
            });
            if let Err(error) = served {
                // The binary prints this on stderr and exits non-zero.
                tracing::error!("todo-mcp: error: {error:#}");
                eprintln!("[{thread_label}] todo-mcp: error: {error:#}");
            }
            let _ = done.send(());
        })
        .unwrap_or_else(|e| panic!("cannot start the in-process server's thread: {e}"));
    let reader = tokio::spawn(async move {
        let _ = ended.await;
    });
    (client_io, StderrLog { buf, reader })
}

/// The binary's stdio runtime (multi-threaded with one worker: diesel's migration harness
/// needs `block_in_place`), every thread of it logging to this server's log.
fn runtime(dispatch: tracing::Dispatch) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            // Held for the thread's life: the runtime's threads end with it.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()?)
}

/// What `todo-mcp stdio` does from its settings on: migrate, open the pool, name the
/// caller, serve until the input ends.
async fn serve(
    db_url: &str,
    token: Option<&str>,
    settings: Settings,
    io: DuplexStream,
) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(db_url)?;
    let authenticator = Authenticator::new(&settings.jwt)?;
    for name in migrations::run_pending(&url).await? {
        tracing::info!(migration = %name, "applied migration");
    }
    let db = Database::connect(&url, &settings.pool).await?;
    let caller = stdio::session_caller(&db, &authenticator, token)
        .await?
        .recheck_after(settings.recheck_after);
    let (input, output) = tokio::io::split(io);
    stdio::serve_streams(db, caller, settings.quotas, input, output).await
}

/// Keeps each log line, and echoes it for the test harness (shown for failing tests).
#[derive(Clone)]
struct LogWriter {
    buf: Arc<Mutex<String>>,
    label: String,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines() {
            eprintln!("[{}] {line}", self.label);
        }
        self.buf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_str(&text);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}
