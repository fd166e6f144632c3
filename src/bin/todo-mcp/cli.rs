//! The command line: what each command takes. Options a command has no use for are not
//! offered to it (`token create --help` lists the token's options, not the server's).

use clap::{Args, Parser, Subcommand};
use todo_mcp::auth::JwtOptions;
use todo_mcp::store::Quotas;
use todo_mcp::store::quote;
use todo_mcp::store::scopes::TodoScope;
use todo_mcp::transport::http::{AdmissionLimits, ConnectionLimits};

/// Durable tasks and conversation history for AI agents, over MCP.
///
/// Storage is PostgreSQL (DATABASE_URL=postgres://…; add ?sslmode=require for TLS, as on
/// Neon) or, by default, an embedded SQLite file at $XDG_DATA_HOME/todo-mcp/todo.db
/// (~/.local/share/todo-mcp/todo.db). Every tool call acts for the user named by the
/// caller's token (TODO_MCP_TOKEN on stdio), never by a tool argument.
#[derive(Parser)]
#[command(name = "todo-mcp", version, about, long_about)]
pub struct Cli {
    /// postgres://…, postgresql://…, sqlite://PATH or a file path [default: the embedded SQLite file].
    /// PostgreSQL takes libpq's sslmode/sslrootcert, and pgbouncer=true for a transaction-mode
    /// pooler (on by itself for Neon's `-pooler` hosts)
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// What to log on stderr, in tracing's EnvFilter syntax (`debug`, `todo_mcp=debug,warn`).
    #[arg(
        long = "log",
        env = "TODO_MCP_LOG",
        default_value = todo_mcp::DEFAULT_LOG_FILTER,
        global = true,
        value_name = "FILTER"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Serve MCP over HTTP: Streamable HTTP at /mcp, legacy HTTP+SSE at /sse + /message,
    /// and /healthz, /readyz; Prometheus metrics at /metrics only if --metrics-listen or
    /// --metrics-token asks for them.
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
        #[command(flatten)]
        connections: ConnectionArgs,
        #[command(flatten)]
        metrics: MetricsArgs,
        #[command(flatten)]
        server: ServerArgs,
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
    /// List users, or erase one (every row of theirs, tokens included).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Write a user's data, or every user's, as JSON Lines on stdout.
    ///
    /// Tasks (with labels), conversations, messages (in order), the server's call records,
    /// agent state versions and committed turns, every column as stored: ids, timestamps
    /// and idempotency keys included. Tokens are not exported. It streams, so memory stays
    /// flat for any size. Moving from SQLite to PostgreSQL:
    ///
    ///   DATABASE_URL=sqlite://old.db todo-mcp export | DATABASE_URL=postgres://… todo-mcp import
    Export {
        /// Only this user [default: every user].
        #[arg(long)]
        user: Option<String>,
    },
    /// Read an export (JSON Lines, from stdin) into this database, keeping ids and times.
    ///
    /// Each user's rows go in one transaction, so a failed import leaves that user as
    /// before. Rows already present are left as they are: importing the same export twice
    /// changes nothing. Quotas do not apply. Prints what it inserted, as JSON, on stdout.
    Import {
        /// Read the export from this file instead of stdin.
        #[arg(long, value_name = "FILE")]
        input: Option<std::path::PathBuf>,
    },
    /// Print mcp-manifest.json, generated from the tool definitions and this command line
    /// (`todo-mcp manifest > mcp-manifest.json`); with --tools-table, README's tool table.
    Manifest {
        /// Print README's tool table (Markdown) instead.
        #[arg(long)]
        tools_table: bool,
    },
}

/// How many connections `http` holds and how long: each is a file descriptor, and a
/// client that sends nothing must not keep one forever. A proxy in front should time out
/// slow requests itself and close idle upstream connections sooner than the keep-alive
/// timeout (so it never reuses one this server is closing).
#[derive(Args)]
#[command(next_help_heading = "Connections")]
pub struct ConnectionArgs {
    /// Seconds from a request's first byte to its last header line; a slower client's
    /// connection is closed.
    #[arg(
        long,
        env = "TODO_MCP_HEADER_READ_TIMEOUT",
        default_value_t = ConnectionLimits::default().header_read_timeout.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub header_read_timeout: f64,

    /// Seconds a connection may stay open with no request under way (an open SSE stream
    /// is a request under way); then it is closed.
    #[arg(
        long,
        env = "TODO_MCP_KEEP_ALIVE_TIMEOUT",
        default_value_t = ConnectionLimits::default().keep_alive_timeout.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub keep_alive_timeout: f64,

    /// Most connections open at once; past it a new connection gets 503 and is closed,
    /// while open ones keep working. Lowered to what the open-file limit allows (the
    /// server raises its soft limit to the hard one at start and logs both).
    #[arg(
        long,
        env = "TODO_MCP_MAX_CONNECTIONS",
        default_value_t = ConnectionLimits::default().max_connections,
        value_name = "N",
        value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize)
    )]
    pub max_connections: usize,

    /// Most MCP requests handled at once [default: 4 × --pool-size]. One more waits for a
    /// turn while no more than this many others wait; past that, or after
    /// --max-queue-wait, it gets 503 with Retry-After: 1 and is not run (counted in
    /// todo_mcp_overload_refusals_total), so what is admitted keeps its normal latency.
    #[arg(
        long,
        env = "TODO_MCP_MAX_IN_FLIGHT",
        value_name = "N",
        value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize)
    )]
    pub max_in_flight: Option<usize>,

    /// Seconds a request waits for a turn (see --max-in-flight) before it is refused.
    #[arg(
        long,
        env = "TODO_MCP_MAX_QUEUE_WAIT",
        default_value_t = AdmissionLimits::DEFAULT_QUEUE_WAIT.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub max_queue_wait: f64,
}

/// Where `http` serves Prometheus metrics (`GET /metrics`): nowhere unless asked, since they
/// tell anyone who reads them what the server does.
#[derive(Args)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Serve GET /metrics (Prometheus) on this separate address, and nothing else there:
    /// e.g. a private network's. The main listener then has no /metrics.
    #[arg(long, env = "TODO_MCP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Serve GET /metrics only with `Authorization: Bearer TOKEN` (401 otherwise): on the
    /// main listener, or on --metrics-listen's if given. Prefer the variable (a command
    /// line is visible to other local users). With neither option /metrics is 404.
    #[arg(
        long,
        env = "TODO_MCP_METRICS_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub metrics_token: Option<String>,
}

/// What both servers take besides their transport's own options.
#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub pool: PoolArgs,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Database connections")]
pub struct PoolArgs {
    /// Most connections to PostgreSQL this process opens.
    #[arg(long, env = "TODO_MCP_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,

    /// Seconds a call waits for a free database connection before failing with
    /// "storage unavailable, retry".
    #[arg(
        long,
        env = "TODO_MCP_POOL_TIMEOUT",
        default_value_t = 5.0,
        value_name = "SECONDS"
    )]
    pub pool_timeout: f64,

    /// Seconds PostgreSQL lets one statement run before cancelling it (the call then fails
    /// with "storage too slow, retry later" and changes nothing).
    #[arg(
        long,
        env = "TODO_MCP_STATEMENT_TIMEOUT",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub statement_timeout: f64,
}

#[derive(Args)]
#[command(next_help_heading = "Quotas")]
pub struct QuotaArgs {
    /// Quota: most tasks one user may have; add_task beyond it fails with quota_exceeded.
    #[arg(long, env = "TODO_MCP_MAX_TASKS_PER_USER", default_value_t = Quotas::default().tasks_per_user, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_tasks_per_user: i32,

    /// Quota: most messages append_message may add to one conversation (the server's own call
    /// records don't count).
    #[arg(long, env = "TODO_MCP_MAX_MESSAGES_PER_CONVERSATION", default_value_t = Quotas::default().messages_per_conversation, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_messages_per_conversation: i32,

    /// Quota: most bytes (UTF-8) of one message's content.
    #[arg(long, env = "TODO_MCP_MAX_MESSAGE_BYTES", default_value_t = Quotas::default().message_bytes)]
    pub max_message_bytes: usize,

    /// Quota: most bytes (as JSON) of one agent state (save_agent_state, commit_turn).
    #[arg(long, env = "TODO_MCP_MAX_STATE_BYTES", default_value_t = Quotas::default().state_bytes)]
    pub max_state_bytes: usize,

    /// Quota: how many versions of a conversation's agent state are kept: a save past it deletes
    /// the oldest (get_agent_state of a deleted version says which are kept).
    #[arg(long, env = "TODO_MCP_MAX_STATE_VERSIONS", default_value_t = Quotas::default().state_versions, value_parser = clap::value_parser!(i32).range(1..))]
    pub max_state_versions: i32,

    /// Quota: most failed calls recorded per user and clock hour. Past it, failures are still
    /// answered and counted (todo_mcp_failure_records_skipped_total) but not recorded, so
    /// refused calls cannot grow the database without bound. Successful calls are always
    /// recorded.
    #[arg(long, env = "TODO_MCP_MAX_FAILURE_RECORDS_PER_HOUR", default_value_t = Quotas::default().failure_records_per_hour, value_parser = clap::value_parser!(i32).range(0..))]
    pub max_failure_records_per_hour: i32,
}

impl QuotaArgs {
    pub fn quotas(&self) -> Quotas {
        Quotas {
            tasks_per_user: self.max_tasks_per_user,
            messages_per_conversation: self.max_messages_per_conversation,
            message_bytes: self.max_message_bytes.max(1),
            state_bytes: self.max_state_bytes.max(2),
            state_versions: self.max_state_versions,
            failure_records_per_hour: self.max_failure_records_per_hour,
        }
    }
}

#[derive(Args)]
#[command(next_help_heading = "Credentials (JWT)")]
pub struct JwtArgs {
    /// Secret enabling HS256 JWTs as credentials (`sub` = user id, `exp` required), at
    /// least 32 bytes (`openssl rand -base64 32`). --jwt-issuer and --jwt-audience, when
    /// set, apply to these tokens too.
    #[arg(long, env = "TODO_MCP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The longest an HS256 JWT may live, in seconds, from its `iat` (or now, without one)
    /// to its `exp`: a token minted to last longer is refused.
    #[arg(
        long,
        env = "TODO_MCP_JWT_MAX_LIFETIME",
        default_value_t = JwtOptions::default().max_lifetime.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub jwt_max_lifetime: f64,

    /// The issuer (`iss`) of the JWTs to accept, signed with its published keys (EdDSA,
    /// ES256, RS256…), such as Better Auth's `https://auth.example.com/api/auth`. Its JWKS
    /// is found from its metadata (/.well-known/oauth-authorization-server, then
    /// /.well-known/openid-configuration) unless --jwks-url names it. Needs --public-url or
    /// --jwt-audience.
    #[arg(long, env = "TODO_MCP_JWT_ISSUER", value_name = "URL")]
    pub jwt_issuer: Option<String>,

    /// The issuer's JWKS, when its metadata does not name it (Better Auth's JWT plugin:
    /// https://auth.example.com/api/auth/jwks).
    #[arg(long, env = "TODO_MCP_JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,

    /// This server's canonical URL as clients reach it (https://todo.example.com/mcp): the
    /// OAuth resource. A JWT's `aud` must contain it (RFC 8707); `http` serves its protected
    /// resource metadata at /.well-known/oauth-protected-resource (and …/mcp), and every
    /// 401 points there.
    #[arg(long, env = "TODO_MCP_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// The audience every JWT's `aud` must contain: the issuer's, instead of --public-url
    /// (for an issuer that names this server otherwise), and HS256 ones'.
    #[arg(long, env = "TODO_MCP_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Seconds the issuer's keys are cached before they are fetched again (a key that left
    /// the JWKS stops working by then at the latest).
    #[arg(
        long,
        env = "TODO_MCP_JWKS_CACHE_TTL",
        default_value_t = JwtOptions::default().jwks_cache_ttl.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub jwks_cache_ttl: f64,

    /// Fewest seconds between two fetches of the JWKS: a token with an unknown `kid` makes
    /// the keys be fetched again at most this often.
    #[arg(
        long,
        env = "TODO_MCP_JWKS_REFRESH_MIN_INTERVAL",
        default_value_t = JwtOptions::default().jwks_refresh_min_interval.as_secs_f64(),
        value_name = "SECONDS"
    )]
    pub jwks_refresh_min_interval: f64,
}

#[derive(Subcommand, Clone, Copy)]
pub enum MigrateAction {
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
pub enum TokenAction {
    /// Issue a token for a user (created if new) and print it alone on stdout.
    Create {
        /// The user id the token acts as: letters, digits and `- _ . @ : | +`, as an
        /// identity provider's `sub` is (a JWT for the same `sub` is the same user).
        #[arg(long, value_parser = parse_new_user_id)]
        user: String,
        /// What the token may do: `read` (todo:read, the read-only tools) or `write`
        /// (todo:write, every other tool). Repeat or comma-separate for both
        /// [default: both].
        #[arg(long = "scope", value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<TodoScope>,
        /// A label to recognise the token by in `token list`.
        #[arg(long)]
        name: Option<String>,
        /// Days until the token expires, 1 to 36500 [default: never].
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36_500))]
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

#[derive(Subcommand)]
pub enum UserAction {
    /// List users (id, creation time, tasks, active tokens) as JSON lines, in id order.
    List,
    /// Erase a user: every row of theirs in every table (tasks, conversations, messages,
    /// call records, agent state, turns, tokens, sessions), in one transaction. Prints
    /// what it removed, as JSON.
    Delete {
        /// The user id to erase.
        user: String,
        /// Count what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Punctuation a user id named on the command line may hold, besides letters and digits:
/// what identity providers put in a `sub` (`auth0|123`, `user@example.com`).
const USER_ID_PUNCTUATION: &str = "-_.@:|+";

/// A user id for a new token: no spaces or shell punctuation, so that a typo (`'bad user!'`)
/// is not a user of its own.
fn parse_new_user_id(raw: &str) -> Result<String, String> {
    let refused = |why: &str| format!("{} is not a user id: {why}", quote(raw));
    if raw.is_empty() {
        return Err(refused("it is empty"));
    }
    if raw.chars().count() > todo_mcp::store::limits::USER_ID {
        return Err(refused(&format!(
            "it is over {} characters",
            todo_mcp::store::limits::USER_ID
        )));
    }
    match raw
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !USER_ID_PUNCTUATION.contains(*c))
    {
        Some(c) => Err(refused(&format!(
            "{c:?} is not allowed; use letters, digits and {USER_ID_PUNCTUATION}"
        ))),
        None => Ok(raw.to_string()),
    }
}

fn parse_scope(raw: &str) -> Result<TodoScope, String> {
    TodoScope::parse(raw).ok_or_else(|| {
        format!(
            "{} is not a scope: use read or write (todo:read, todo:write)",
            quote(raw)
        )
    })
}
