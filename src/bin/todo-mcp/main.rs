//! The `todo-mcp` command line.

mod admin;
mod cli;

use anyhow::bail;
use clap::{CommandFactory, Parser};
use cli::{Cli, Command, ConnectionArgs, JwtArgs, MigrateAction, PoolArgs};
use std::process::ExitCode;
use todo_mcp::auth::{Authenticator, JwtOptions};
use todo_mcp::db::{Database, DatabaseUrl, PoolOptions, migrations};
use todo_mcp::store::UserId;
use todo_mcp::store::users;
use todo_mcp::transport::http::{
    AdmissionLimits, AuthMode, ConnectionLimits, HttpOptions, MetricsOptions, MetricsToken,
    ProtectedResource,
};

/// jemalloc instead of the system allocator: a call allocates many small, short-lived
/// values (JSON, strings, rows) across a multi-thread runtime's workers. Measured
/// (docs/performance.md): server CPU per call x0.82 on the HTTP agent mix, p99 at 10,000
/// clients 261 -> 16 ms; mimalloc, also tried, held 35% more memory there.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    if let Command::Manifest { tools_table } = cli.command {
        return print_manifest(tools_table);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Stdio { .. } = cli.command {
        // One client, one call at a time: a single worker spares every hop between tasks
        // (stdin reader, server, database connection, stdout writer) a cross-thread wake-up
        // and the idle worker's spinning. (Multi-threaded still: diesel's migration harness
        // needs `block_in_place`.)
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("todo-mcp: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("todo-mcp: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_manifest(tools_table: bool) -> ExitCode {
    let text = if tools_table {
        todo_mcp::manifest::tools_table()
    } else {
        let manifest = todo_mcp::manifest::manifest(&Cli::command());
        match serde_json::to_string_pretty(&manifest) {
            Ok(json) => json + "\n",
            Err(error) => {
                eprintln!("todo-mcp: cannot encode the manifest: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// Logs go to stderr, always: in stdio mode stdout belongs to the protocol.
fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|error| {
        eprintln!("todo-mcp: ignoring TODO_MCP_LOG={filter:?} ({error}); logging at info");
        tracing_subscriber::EnvFilter::new(todo_mcp::DEFAULT_LOG_FILTER)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // An empty DATABASE_URL (a client config's blank field) means the default, as unset does.
    let url = match cli.database_url.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => DatabaseUrl::parse(raw)?,
        _ => DatabaseUrl::default_sqlite()?,
    };
    match cli.command {
        Command::Stdio {
            no_migrate,
            token,
            server,
        } => {
            let authenticator = Authenticator::new(&jwt_options(&server.jwt)?)?;
            let db = prepare(&url, &pool_options(&server.pool)?, no_migrate).await?;
            warn_if_row_security_bypassed(&db).await?;
            let caller =
                todo_mcp::transport::stdio::session_caller(&db, &authenticator, token.as_deref())
                    .await?;
            todo_mcp::transport::stdio::serve(db, caller, server.quotas.quotas()).await
        }
        Command::Http {
            listen,
            no_auth,
            allowed_hosts,
            no_migrate,
            sessions,
            session_idle_timeout,
            connections,
            metrics,
            server,
        } => {
            // Refused before anything is created or migrated.
            if no_auth && !listen.ip().is_loopback() {
                bail!(
                    "--no-auth serves anyone who can connect as the local user: it only listens \
                     on a loopback address (127.0.0.1, [::1]), not {listen}"
                );
            }
            let sessions = sessions
                .then(|| seconds("--session-idle-timeout", session_idle_timeout))
                .transpose()?;
            let metrics = MetricsOptions {
                listen: metrics.metrics_listen,
                token: metrics
                    .metrics_token
                    .as_deref()
                    .map(MetricsToken::new)
                    .transpose()
                    .map_err(anyhow::Error::msg)?
                    .map(std::sync::Arc::new),
            };
            let jwt = jwt_options(&server.jwt)?;
            let authenticator = Authenticator::new(&jwt)?;
            let resource = server
                .jwt
                .public_url
                .as_deref()
                .map(|url| ProtectedResource::new(url, jwt.issuer.as_deref()))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let db = prepare(&url, &pool_options(&server.pool)?, no_migrate).await?;
            warn_if_row_security_bypassed(&db).await?;
            let auth = if no_auth {
                users::ensure(&db, &UserId::local()).await?;
                AuthMode::None
            } else {
                let warming = authenticator.clone();
                tokio::spawn(async move { warming.warm_up().await });
                AuthMode::Tokens(authenticator)
            };
            let admission = admission_limits(&connections, server.pool.pool_size)?;
            let connections = connection_limits(&connections, server.pool.pool_size)?;
            let options = HttpOptions {
                listen,
                auth,
                resource,
                allowed_hosts,
                sessions,
                quotas: server.quotas.quotas(),
                metrics,
                connections,
                admission,
            };
            todo_mcp::transport::http::serve(db, options).await
        }
        Command::Migrate { action } => {
            admin::migrate(&url, action.unwrap_or(MigrateAction::Run)).await
        }
        Command::Token { action } => {
            let db = prepare(&url, &PoolOptions::default(), false).await?;
            admin::token(&db, action).await
        }
        Command::User { action } => {
            let db = prepare(&url, &PoolOptions::default(), false).await?;
            admin::user(&db, action).await
        }
        Command::Export { user } => {
            let db = prepare(&url, &PoolOptions::default(), false).await?;
            admin::export(&db, user.as_deref()).await
        }
        Command::Import { input } => {
            let db = prepare(&url, &PoolOptions::default(), false).await?;
            admin::import(&db, input.as_deref()).await
        }
        // Printed by `main`, which needs neither a database nor a runtime for it.
        Command::Manifest { .. } => Ok(()),
    }
}

fn pool_options(pool: &PoolArgs) -> anyhow::Result<PoolOptions> {
    Ok(PoolOptions {
        max_connections: pool.pool_size.max(1),
        acquire_timeout: seconds("--pool-timeout", pool.pool_timeout)?,
        statement_timeout: seconds("--statement-timeout", pool.statement_timeout)?,
    })
}

fn jwt_options(jwt: &JwtArgs) -> anyhow::Result<JwtOptions> {
    Ok(JwtOptions {
        secret: jwt.jwt_secret.clone(),
        issuer: jwt.jwt_issuer.clone(),
        jwks_url: jwt.jwks_url.clone(),
        audience: jwt.jwt_audience.clone(),
        public_url: jwt.public_url.clone(),
        max_lifetime: seconds("--jwt-max-lifetime", jwt.jwt_max_lifetime)?,
        jwks_cache_ttl: seconds("--jwks-cache-ttl", jwt.jwks_cache_ttl)?,
        jwks_refresh_min_interval: seconds(
            "--jwks-refresh-min-interval",
            jwt.jwks_refresh_min_interval,
        )?,
    })
}

/// Applies pending migrations (unless told not to, in which case it checks there are
/// none) and opens the pool.
/// A server warns when its database role bypasses row-level security (the operator's
/// commands need no such warning: they are expected to run as the owner or an admin).
async fn warn_if_row_security_bypassed(db: &Database) -> anyhow::Result<()> {
    if let Some(role) = db.role_bypassing_row_security().await? {
        tracing::warn!(
            role = %role,
            "the database role is a superuser or has BYPASSRLS, so PostgreSQL's row-level \
             security does not apply to it: users are kept apart by the server's own filters \
             alone. Connect as an ordinary role (the tables' owner is fine) to keep both."
        );
    }
    Ok(())
}

async fn prepare(
    url: &DatabaseUrl,
    options: &PoolOptions,
    no_migrate: bool,
) -> anyhow::Result<Database> {
    tracing::info!(database = %url.redacted(), "opening database");
    if no_migrate {
        let pending: Vec<_> = migrations::status(url)
            .await?
            .into_iter()
            .filter(|m| !m.applied)
            .map(|m| m.name)
            .collect();
        if !pending.is_empty() {
            bail!(
                "migrations pending ({}); run `todo-mcp migrate` or start without --no-migrate",
                pending.join(", ")
            );
        }
    } else {
        for name in migrations::run_pending(url).await? {
            tracing::info!(migration = %name, "applied migration");
        }
    }
    Ok(Database::connect(url, options).await?)
}

/// The connection limits asked for, within what the open-file limit (raised first) allows
/// besides the database pool's connections and the process's other files.
fn connection_limits(args: &ConnectionArgs, pool_size: u32) -> anyhow::Result<ConnectionLimits> {
    let limits = ConnectionLimits {
        header_read_timeout: seconds("--header-read-timeout", args.header_read_timeout)?,
        keep_alive_timeout: seconds("--keep-alive-timeout", args.keep_alive_timeout)?,
        max_connections: args.max_connections,
    };
    // A SQLite connection holds up to three files (database, WAL, shared memory).
    let reserved = 64 + 3 * u64::from(pool_size);
    Ok(match todo_mcp::transport::http::raise_open_file_limit() {
        Some(open_files) => limits.within_open_files(open_files, reserved),
        None => limits,
    })
}

/// How many MCP requests run at once (by default a few per pooled connection), and how
/// long one waits for its turn.
fn admission_limits(args: &ConnectionArgs, pool_size: u32) -> anyhow::Result<AdmissionLimits> {
    let defaults = AdmissionLimits::for_pool(pool_size);
    Ok(AdmissionLimits {
        max_in_flight: args.max_in_flight.unwrap_or(defaults.max_in_flight),
        max_queue_wait: seconds("--max-queue-wait", args.max_queue_wait)?,
    })
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        bail!("{flag} must be a number of seconds above 0 and at most 86400, not {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}
