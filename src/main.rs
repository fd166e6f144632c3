//! The `todo-mcp` command line.

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;
use todo_mcp::auth::{Authenticator, JwtOptions};
use todo_mcp::db::{Database, DatabaseUrl, PoolOptions, migrations};
use todo_mcp::store::scopes::{Caller, Scopes, TodoScope};
use todo_mcp::store::{Quotas, StoreError, UserId, quote, tokens, users};
use todo_mcp::transport::http::{AuthMode, HttpOptions, ProtectedResource};

/// Durable tasks and conversation history for AI agents, over MCP.
///
/// Storage is PostgreSQL (DATABASE_URL=postgres://…; add ?sslmode=require for TLS, as on
/// Neon) or, by default, an embedded SQLite file at $XDG_DATA_HOME/todo-mcp/todo.db
/// (~/.local/share/todo-mcp/todo.db). Every tool call acts for the user named by the
/// caller's token (TODO_MCP_TOKEN on stdio), never by a tool argument.
#[derive(Parser)]
#[command(name = "todo-mcp", version, about, long_about)]
struct Cli {
    /// postgres://…, postgresql://…, sqlite://PATH or a file path [default: the embedded SQLite file].
    /// PostgreSQL takes libpq's sslmode/sslrootcert, and pgbouncer=true for a transaction-mode
    /// pooler (on by itself for Neon's `-pooler` hosts)
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Most connections to PostgreSQL this process opens.
    #[arg(long, env = "TODO_MCP_POOL_SIZE", default_value_t = 10, global = true)]
    pool_size: u32,

    /// Seconds a call waits for a free database connection before failing with
    /// "storage unavailable, retry".
    #[arg(
        long,
        env = "TODO_MCP_POOL_TIMEOUT",
        default_value_t = 5.0,
        global = true,
        value_name = "SECONDS"
    )]
    pool_timeout: f64,

    /// Seconds PostgreSQL lets one statement run before cancelling it (the call then fails
    /// with "storage too slow, retry later" and changes nothing).
    #[arg(
        long,
        env = "TODO_MCP_STATEMENT_TIMEOUT",
        default_value_t = 10.0,
        global = true,
        value_name = "SECONDS"
    )]
    statement_timeout: f64,

    /// Quota: most tasks one user may have; add_task beyond it fails with quota_exceeded.
    #[arg(long, env = "TODO_MCP_MAX_TASKS_PER_USER", default_value_t = Quotas::default().tasks_per_user, global = true, value_parser = clap::value_parser!(i32).range(1..))]
    max_tasks_per_user: i32,

    /// Quota: most messages append_message may add to one conversation (the server's own
    /// call records don't count).
    #[arg(long, env = "TODO_MCP_MAX_MESSAGES_PER_CONVERSATION", default_value_t = Quotas::default().messages_per_conversation, global = true, value_parser = clap::value_parser!(i32).range(1..))]
    max_messages_per_conversation: i32,

    /// Quota: most bytes (UTF-8) of one message's content.
    #[arg(long, env = "TODO_MCP_MAX_MESSAGE_BYTES", default_value_t = Quotas::default().message_bytes, global = true)]
    max_message_bytes: usize,

    /// Quota: most bytes (as JSON) of one agent state (save_agent_state, commit_turn).
    #[arg(long, env = "TODO_MCP_MAX_STATE_BYTES", default_value_t = Quotas::default().state_bytes, global = true)]
    max_state_bytes: usize,

    /// How many versions of a conversation's agent state are kept: a save past it deletes
    /// the oldest (get_agent_state of a deleted version says which are kept).
    #[arg(long, env = "TODO_MCP_MAX_STATE_VERSIONS", default_value_t = Quotas::default().state_versions, global = true, value_parser = clap::value_parser!(i32).range(1..))]
    max_state_versions: i32,

    /// Secret enabling HS256 JWTs as credentials (`sub` = user id, `exp` required).
    #[arg(
        long,
        env = "TODO_MCP_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    jwt_secret: Option<String>,

    /// The issuer (`iss`) of the JWTs to accept, signed with its published keys (EdDSA,
    /// ES256, RS256…), such as Better Auth's `https://auth.example.com/api/auth`. Its JWKS
    /// is found from its metadata (/.well-known/oauth-authorization-server, then
    /// /.well-known/openid-configuration) unless --jwks-url names it. Needs --public-url or
    /// --jwt-audience.
    #[arg(long, env = "TODO_MCP_JWT_ISSUER", global = true, value_name = "URL")]
    jwt_issuer: Option<String>,

    /// The issuer's JWKS, when its metadata does not name it (Better Auth's JWT plugin:
    /// https://auth.example.com/api/auth/jwks).
    #[arg(long, env = "TODO_MCP_JWKS_URL", global = true, value_name = "URL")]
    jwks_url: Option<String>,

    /// This server's canonical URL as clients reach it (https://todo.example.com/mcp): the
    /// OAuth resource. A JWT's `aud` must contain it (RFC 8707); `http` serves its protected
    /// resource metadata at /.well-known/oauth-protected-resource (and …/mcp), and every
    /// 401 points there.
    #[arg(long, env = "TODO_MCP_PUBLIC_URL", global = true, value_name = "URL")]
    public_url: Option<String>,

    /// The audience a JWT's `aud` must contain, instead of --public-url (for an issuer
    /// that names this server otherwise).
    #[arg(long, env = "TODO_MCP_JWT_AUDIENCE", global = true)]
    jwt_audience: Option<String>,

    /// Seconds the issuer's keys are cached before they are fetched again (a key that left
    /// the JWKS stops working by then at the latest).
    #[arg(
        long,
        env = "TODO_MCP_JWKS_CACHE_TTL",
        default_value_t = 600.0,
        global = true,
        value_name = "SECONDS"
    )]
    jwks_cache_ttl: f64,

    /// Fewest seconds between two fetches of the JWKS: a token with an unknown `kid` makes
    /// the keys be fetched again at most this often.
    #[arg(
        long,
        env = "TODO_MCP_JWKS_REFRESH_MIN_INTERVAL",
        default_value_t = 5.0,
        global = true,
        value_name = "SECONDS"
    )]
    jwks_refresh_min_interval: f64,

    /// What to log on stderr, in tracing's EnvFilter syntax (`debug`, `todo_mcp=debug,warn`).
    #[arg(
        long = "log",
        env = "TODO_MCP_LOG",
        default_value = "todo_mcp=info,warn",
        global = true,
        value_name = "FILTER"
    )]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over stdin/stdout (for Claude Desktop and other local clients).
    ///
    /// The user comes from TODO_MCP_TOKEN (an API token from `todo-mcp token create`, or an
    /// HS256 JWT when TODO_MCP_JWT_SECRET is set). An invalid, expired or revoked token
    /// stops the server at start. Without a token the server acts as the single local user
    /// `local`. Pending migrations are applied first unless --no-migrate.
    Stdio {
        /// Do not apply pending migrations at start (fail instead if any are pending): for a
        /// server role without DDL rights, with migrations run by `todo-mcp migrate`.
        #[arg(long, env = "TODO_MCP_NO_MIGRATE")]
        no_migrate: bool,
        /// Bearer credential naming the user on stdio: an API token from `todo-mcp token
        /// create`, or a JWT. An invalid, expired or revoked token stops the server at start.
        #[arg(
            long = "token",
            env = "TODO_MCP_TOKEN",
            hide_env_values = true,
            hide = true
        )]
        token: Option<String>,
    },
    /// Serve MCP over HTTP: Streamable HTTP at /mcp, legacy HTTP+SSE at /sse + /message,
    /// and /healthz, /readyz.
    ///
    /// Every request acts for the user named by its own `Authorization: Bearer` header (an
    /// API token, or a JWT when TODO_MCP_JWT_SECRET is set); without one it gets 401.
    /// Nothing is kept in memory between requests, so any number of replicas can share one
    /// PostgreSQL database behind a load balancer (legacy SSE sessions stay on the replica
    /// holding their stream). SIGTERM or SIGINT stops it after in-flight requests finish.
    Http {
        /// Address to listen on.
        #[arg(long, env = "TODO_MCP_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Serve without tokens: every request acts as the local user. Only on a loopback
        /// address.
        #[arg(long)]
        no_auth: bool,
        /// A host name (or host:port) clients reach this server by, besides the loopback
        /// ones; requests whose Host or Origin names anything else get 403 (DNS rebinding
        /// protection). Repeat, or comma-separate in the variable.
        #[arg(
            long = "allowed-host",
            env = "TODO_MCP_ALLOWED_HOSTS",
            value_delimiter = ','
        )]
        allowed_hosts: Vec<String>,
        /// Do not apply pending migrations at start (fail instead if any are pending): for a
        /// server role without DDL rights, with migrations run by `todo-mcp migrate`.
        #[arg(long, env = "TODO_MCP_NO_MIGRATE")]
        no_migrate: bool,
        /// Offer `Mcp-Session-Id` sessions to clients that want them (protocol versions
        /// before 2026-07-28). Their state is kept in the database, so any replica serves
        /// any session; without this flag every request stands alone.
        #[arg(long)]
        sessions: bool,
        /// With --sessions: seconds a session may go unused before it is ended (a request
        /// naming it then gets 404, as for any ended session, and its row is deleted).
        #[arg(
            long,
            env = "TODO_MCP_SESSION_IDLE_TIMEOUT",
            default_value_t = 86_400.0,
            value_name = "SECONDS"
        )]
        session_idle_timeout: f64,
    },
    /// Database migrations (embedded in the binary): apply, inspect or revert.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Issue, list and revoke API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print mcp-manifest.json, generated from the tool definitions and this command line
    /// (`todo-mcp manifest > mcp-manifest.json`); with --tools-table, README's tool table.
    Manifest {
        /// Print README's tool table (Markdown) instead.
        #[arg(long)]
        tools_table: bool,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum MigrateAction {
    /// Apply pending migrations (the default).
    Run,
    /// List migrations and whether each is applied.
    Status,
    /// Revert the most recently applied migration.
    Down,
    /// Revert the latest migration and apply it again.
    Redo,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Issue a token for a user (created if new) and print it alone on stdout.
    Create {
        /// The user id the token acts as.
        #[arg(long)]
        user: String,
        /// What the token may do: `read` (todo:read, the read-only tools) or `write`
        /// (todo:write, every other tool). Repeat or comma-separate for both
        /// [default: both].
        #[arg(long = "scope", value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<TodoScope>,
        /// A label to recognise the token by in `token list`.
        #[arg(long)]
        name: Option<String>,
        /// Days until the token expires [default: never].
        #[arg(long, value_name = "DAYS")]
        expires_in: Option<u32>,
    },
    /// List a user's tokens (never their secrets), as JSON lines.
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke a token by id; it stops working on its next use.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
    },
}

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
        tracing_subscriber::EnvFilter::new("todo_mcp=info,warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // An empty DATABASE_URL means the default, as an unset one does: hosts such as Claude
    // Desktop's bundles pass optional settings left empty as empty variables.
    let url = match cli.database_url.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => DatabaseUrl::parse(raw)?,
        _ => DatabaseUrl::default_sqlite()?,
    };
    let quotas = Quotas {
        tasks_per_user: cli.max_tasks_per_user,
        messages_per_conversation: cli.max_messages_per_conversation,
        message_bytes: cli.max_message_bytes.max(1),
        state_bytes: cli.max_state_bytes.max(2),
        state_versions: cli.max_state_versions,
    };
    let options = PoolOptions {
        max_connections: cli.pool_size.max(1),
        acquire_timeout: seconds("--pool-timeout", cli.pool_timeout)?,
        statement_timeout: seconds("--statement-timeout", cli.statement_timeout)?,
    };
    let jwt = JwtOptions {
        secret: cli.jwt_secret.clone(),
        issuer: cli.jwt_issuer.clone(),
        jwks_url: cli.jwks_url.clone(),
        audience: cli.jwt_audience.clone().or_else(|| cli.public_url.clone()),
        jwks_cache_ttl: seconds("--jwks-cache-ttl", cli.jwks_cache_ttl)?,
        jwks_refresh_min_interval: seconds(
            "--jwks-refresh-min-interval",
            cli.jwks_refresh_min_interval,
        )?,
    };
    match cli.command {
        Command::Stdio { no_migrate, token } => {
            let authenticator = Authenticator::new(&jwt)?;
            let db = prepare(&url, &options, no_migrate).await?;
            let caller = match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(token) => authenticator
                    .authenticate(&db, token)
                    .await
                    .context("TODO_MCP_TOKEN was refused")?,
                None => {
                    tracing::warn!("no TODO_MCP_TOKEN set: serving the single local user `local`");
                    let user = UserId::local();
                    ensure_user(&db, &user).await?;
                    Caller::with_full_access(user)
                }
            };
            tracing::info!(user = %caller.user, scopes = %caller.scopes.to_oauth(), "serving MCP on stdio");
            todo_mcp::transport::stdio::serve(db, caller, quotas).await
        }
        Command::Http {
            listen,
            no_auth,
            allowed_hosts,
            no_migrate,
            sessions,
            session_idle_timeout,
        } => {
            let sessions = sessions
                .then(|| seconds("--session-idle-timeout", session_idle_timeout))
                .transpose()?;
            let authenticator = Authenticator::new(&jwt)?;
            let resource = cli
                .public_url
                .as_deref()
                .map(|url| ProtectedResource::new(url, jwt.issuer.as_deref()))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let db = prepare(&url, &options, no_migrate).await?;
            let auth = if no_auth {
                ensure_user(&db, &UserId::local()).await?;
                AuthMode::None
            } else {
                let warming = authenticator.clone();
                tokio::spawn(async move { warming.warm_up().await });
                AuthMode::Tokens(authenticator)
            };
            let options = HttpOptions {
                listen,
                auth,
                resource,
                allowed_hosts,
                sessions,
                quotas,
            };
            todo_mcp::transport::http::serve(db, options).await
        }
        Command::Migrate { action } => migrate(&url, action.unwrap_or(MigrateAction::Run)).await,
        Command::Token { action } => {
            let db = prepare(&url, &options, false).await?;
            token(&db, action).await
        }
        // Printed by `main`, which needs neither a database nor a runtime for it.
        Command::Manifest { .. } => Ok(()),
    }
}

/// Applies pending migrations (unless told not to, in which case it checks there are
/// none) and opens the pool.
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

fn parse_scope(raw: &str) -> Result<TodoScope, String> {
    TodoScope::parse(raw).ok_or_else(|| {
        format!(
            "{} is not a scope: use read or write (todo:read, todo:write)",
            quote(raw)
        )
    })
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
        bail!("{flag} must be a number of seconds above 0 and at most 86400, not {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

async fn ensure_user(db: &Database, user: &UserId) -> anyhow::Result<()> {
    Ok(users::ensure(db, user).await?)
}

async fn migrate(url: &DatabaseUrl, action: MigrateAction) -> anyhow::Result<()> {
    match action {
        MigrateAction::Run => {
            let applied = migrations::run_pending(url).await?;
            if applied.is_empty() {
                eprintln!("no pending migrations");
            }
            for name in applied {
                eprintln!("applied {name}");
            }
        }
        MigrateAction::Status => {
            for migration in migrations::status(url).await? {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state}\t{}", migration.name);
            }
        }
        MigrateAction::Down => revert(url).await?,
        MigrateAction::Redo => {
            revert(url).await?;
            for name in migrations::run_pending(url).await? {
                eprintln!("applied {name}");
            }
        }
    }
    Ok(())
}

async fn revert(url: &DatabaseUrl) -> anyhow::Result<()> {
    let reverted = migrations::revert_last(url).await?;
    if reverted.is_empty() {
        eprintln!("no migration is applied");
    }
    for name in reverted {
        eprintln!("reverted {name}");
    }
    Ok(())
}

async fn token(db: &Database, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create {
            user,
            scopes,
            name,
            expires_in,
        } => {
            let user = UserId::parse(&user)?;
            let scopes = if scopes.is_empty() {
                Scopes::FULL
            } else {
                scopes.into_iter().collect()
            };
            let expires_at =
                expires_in.map(|days| chrono::Utc::now() + chrono::Duration::days(days.into()));
            let issued = tokens::create(db, &user, name.as_deref(), scopes, expires_at).await?;
            eprintln!(
                "token {} issued for user {user}, scopes {}",
                issued.id,
                scopes.to_oauth()
            );
            println!("{}", issued.secret);
        }
        TokenAction::List { user } => {
            let user = UserId::parse(&user)?;
            let list = tokens::list(db, &user).await?;
            for token in list {
                println!("{}", serde_json::to_string(&token)?);
            }
        }
        TokenAction::Revoke { id } => {
            let id = uuid::Uuid::parse_str(id.trim()).map_err(|_| {
                StoreError::invalid("id", format!("{} is not a token id", quote(&id)))
            })?;
            let revoked = tokens::revoke(db, id).await?;
            eprintln!("token {} of user {} revoked", revoked.id, revoked.user_id);
        }
    }
    Ok(())
}
