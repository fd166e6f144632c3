//! The database: connection pools for PostgreSQL and SQLite, transactions, migrations.
//!
//! Query code is written once: a store function takes a [`Tx`] and runs its diesel query
//! inside [`on_backend!`], which compiles the body once per backend with `schema` naming
//! that backend's tables. Nothing above this module knows which backend it talks to.

pub mod migrations;
pub mod pg;
pub mod schema;
pub mod sql;
pub mod sqlite;
mod types;
mod url;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::bb8::PooledConnection;
use diesel_async::{
    AnsiTransactionManager, AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use types::{DbJson, DbTime, DbUuid, JsonText, sql_types_by_backend};
pub use url::DatabaseUrl;

/// Errors from the database layer, classified by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (the database is down, or the pool stayed exhausted), so
    /// nothing ran: retrying later may work.
    #[error("storage unavailable, nothing was done, retry: {0}")]
    Unavailable(String),
    /// The connection broke before the transaction committed, so nothing of it was
    /// saved: the whole transaction can safely run again on another connection.
    #[error("storage connection lost, retry: {0}")]
    ConnectionLost(String),
    /// The pooled connection turned out closed (the server restarted, or an idle reaper
    /// ended it) when the transaction's first statement went out: nothing ran, so the
    /// transaction can run again on another connection at no cost.
    #[error("storage connection was closed before the call began, retry: {0}")]
    StaleConnection(String),
    /// The connection broke while committing: the transaction may or may not be saved.
    #[error(
        "storage connection lost while committing, so the change may or may not have been saved \
         (read it back, or retry with the same idempotency_key): {0}"
    )]
    CommitOutcomeUnknown(String),
    /// The transaction lost a race (serialization failure, deadlock, SQLite busy).
    #[error("storage busy, retry: {0}")]
    Contention(String),
    /// A statement ran past the statement timeout and was cancelled.
    #[error("storage too slow, retry later: {0}")]
    Timeout(String),
    #[error("database error: {0}")]
    Query(DieselError),
    /// The database could not be reached at start (a command's own connection): wrong
    /// host, port, database name or credentials, or the server is down.
    #[error("cannot connect to the database: {0}")]
    CannotConnect(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

impl DbError {
    /// Whether running the whole transaction again may succeed, and is safe because
    /// nothing of the failed attempt was committed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DbError::ConnectionLost(_) | DbError::StaleConnection(_) | DbError::Contention(_)
        )
    }
}

impl From<DieselError> for DbError {
    fn from(error: DieselError) -> Self {
        use DatabaseErrorKind as Kind;
        if is_connection_loss(&error) {
            let message = match &error {
                DieselError::DatabaseError(_, info) => info.message().to_owned(),
                _ => "the connection's transaction state was lost".into(),
            };
            return DbError::ConnectionLost(message);
        }
        match &error {
            DieselError::DatabaseError(Kind::SerializationFailure, info) => {
                DbError::Contention(info.message().to_owned())
            }
            DieselError::DatabaseError(Kind::Unknown, info) => {
                let message = info.message();
                if is_contention_message(message) {
                    DbError::Contention(message.to_owned())
                } else if message.contains("statement timeout") {
                    DbError::Timeout(message.to_owned())
                } else {
                    DbError::Query(error)
                }
            }
            _ => DbError::Query(error),
        }
    }
}

/// Whether the connection broke under `error`: nothing more can run on it.
pub(crate) fn is_connection_loss(error: &DieselError) -> bool {
    use DatabaseErrorKind as Kind;
    match error {
        DieselError::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => true,
        DieselError::DatabaseError(Kind::Unknown, info) => {
            is_connection_loss_message(info.message())
        }
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

/// SQLite reports a held write lock, and PostgreSQL a deadlock, as plain database errors.
fn is_contention_message(message: &str) -> bool {
    message.contains("database is locked")
        || message.contains("database table is locked")
        || message.contains("deadlock detected")
        || message.contains("could not serialize access")
}

/// PostgreSQL's FATAL errors for a backend that is going away (`pg_terminate_backend`,
/// a shutdown, a crash of another backend), which diesel reports as unknown errors.
fn is_connection_loss_message(message: &str) -> bool {
    message.contains("terminating connection")
        || message.contains("server closed the connection")
        || message.contains("connection closed")
}

/// Pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a caller waits for a connection before getting "storage unavailable".
    pub acquire_timeout: Duration,
    /// PostgreSQL cancels a statement running longer than this ("storage busy").
    pub statement_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// A snapshot of the connection pool ([`Database::pool_stats`]): bb8's `State` and
/// `Statistics`, the counts since the pool was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Most connections the pool opens.
    pub max_size: u32,
    /// Connections open now, idle or in use.
    pub open: u32,
    pub idle: u32,
    /// Callers waiting for a connection now.
    pub waiting: u64,
    /// Connections handed out at once, after a wait, or never (timed out).
    pub got_directly: u64,
    pub got_after_waiting: u64,
    pub timed_out: u64,
    /// Time callers spent waiting, in all.
    pub wait_time: Duration,
    pub connections_created: u64,
    /// Connections closed because they broke, failed their check, grew too old or idled.
    pub closed_broken: u64,
    pub closed_invalid: u64,
    pub closed_max_lifetime: u64,
    pub closed_idle_timeout: u64,
}

impl PoolStats {
    /// Connections handed out now.
    pub fn in_use(&self) -> u32 {
        self.open.saturating_sub(self.idle)
    }
}

/// A pool of connections to one database, PostgreSQL or SQLite.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    connect_errors: ConnectErrors,
    statement_timeout: Duration,
    behind_pooler: bool,
    max_connections: u32,
    /// SQLite: while any clone of this database lives, its WAL checkpoint thread runs.
    _checkpoints: Option<Arc<()>>,
}

#[derive(Clone)]
enum Pool {
    Postgres(pg::Pool),
    Sqlite(sqlite::Pool),
}

/// The pool's latest failure to open a connection. bb8 retries in the background and a
/// waiting caller only learns that it timed out; this tells it why.
#[derive(Debug, Clone, Default)]
pub struct ConnectErrors(Arc<Mutex<Option<String>>>);

impl ConnectErrors {
    fn latest(&self) -> Option<String> {
        self.0.lock().map(|e| e.clone()).unwrap_or(None)
    }

    fn clear(&self) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = None;
        }
    }
}

impl<E: std::fmt::Display> bb8::ErrorSink<E> for ConnectErrors {
    fn sink(&self, error: E) {
        tracing::warn!(%error, "database connection failed");
        if let Ok(mut latest) = self.0.lock() {
            *latest = Some(error.to_string());
        }
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(self.clone())
    }
}

impl Database {
    /// Builds the pool. Connections are opened lazily, so this succeeds while the database
    /// is down; the first query then reports "storage unavailable".
    pub async fn connect(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, DbError> {
        let connect_errors = ConnectErrors::default();
        let mut behind_pooler = false;
        let mut checkpoints = None;
        let pool = match url {
            DatabaseUrl::Postgres(url) => {
                let connector = pg::Connector::new(url)?;
                behind_pooler = connector.behind_pooler();
                Pool::Postgres(pg::pool(connector, options, &connect_errors))
            }
            DatabaseUrl::Sqlite(path) => {
                let pool = sqlite::pool(path, options, &connect_errors).await?;
                let alive = Arc::new(());
                sqlite::spawn_checkpointer(path, Arc::downgrade(&alive));
                checkpoints = Some(alive);
                Pool::Sqlite(pool)
            }
        };
        Ok(Database {
            pool,
            connect_errors,
            statement_timeout: options.statement_timeout,
            behind_pooler,
            max_connections: options.max_connections,
            _checkpoints: checkpoints,
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub fn backend_name(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgresql",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    fn acquire_failed<E: std::fmt::Display>(&self, error: bb8::RunError<E>) -> DbError {
        match error {
            bb8::RunError::User(error) => DbError::Unavailable(error.to_string()),
            bb8::RunError::TimedOut => DbError::Unavailable(match self.connect_errors.latest() {
                Some(cause) => format!("cannot connect to the database: {cause}"),
                None => "no database connection became free in time".into(),
            }),
        }
    }

    /// Starts a transaction on a pooled connection, scoped to `scope`.
    ///
    /// On PostgreSQL nothing is sent yet: the `BEGIN` batch, with the transaction's
    /// settings (the statement timeout, and the user that row-level security confines it
    /// to), goes out with the first statement, in the same round trip (see
    /// [`pg::Session`]). SQLite's begins `IMMEDIATE`, taking the write lock up front, so
    /// concurrent writers wait for it instead of failing when a read transaction tries to
    /// upgrade.
    pub async fn begin(&self, scope: Scope<'_>) -> Result<Tx, DbError> {
        self.begin_as(scope, false).await
    }

    /// Starts a read-only transaction that sees one snapshot throughout, scoped to
    /// `scope`: PostgreSQL's `REPEATABLE READ, READ ONLY`; on SQLite a deferred
    /// transaction, which in WAL mode neither waits for nor blocks writers. For long
    /// reads (an export) and reads that must not write (the web page).
    pub async fn begin_snapshot(&self, scope: Scope<'_>) -> Result<Tx, DbError> {
        self.begin_as(scope, true).await
    }

    async fn begin_as(&self, scope: Scope<'_>, snapshot: bool) -> Result<Tx, DbError> {
        let mut conn = self.checkout().await?;
        let state = match &mut conn {
            Conn::Postgres(_) => TxState::Pending(pg::opening_statements(
                scope,
                self.statement_timeout,
                snapshot,
            )),
            Conn::Sqlite(c) => {
                if snapshot {
                    sqlite::begin_deferred(c).await?;
                } else {
                    sqlite::begin_immediate(c).await?;
                }
                TxState::Open
            }
        };
        Ok(Tx {
            conn,
            state,
            behind_pooler: self.behind_pooler,
        })
    }

    /// The pool's state now, for the metrics (read at scrape time: nothing is counted on
    /// the query path besides what bb8 counts anyway).
    pub fn pool_stats(&self) -> PoolStats {
        let state = match &self.pool {
            Pool::Postgres(pool) => pool.state(),
            Pool::Sqlite(pool) => pool.state(),
        };
        let stats = &state.statistics;
        PoolStats {
            max_size: self.max_connections,
            open: state.connections,
            idle: state.idle_connections,
            // Each statistic is read on its own, so a get that started and finished between
            // two reads could make the difference negative for a moment.
            waiting: stats
                .get_started
                .saturating_sub(stats.get_direct + stats.get_waited + stats.get_timed_out),
            got_directly: stats.get_direct,
            got_after_waiting: stats.get_waited,
            timed_out: stats.get_timed_out,
            wait_time: stats.get_wait_time,
            connections_created: stats.connections_created,
            closed_broken: stats.connections_closed_broken,
            closed_invalid: stats.connections_closed_invalid,
            closed_max_lifetime: stats.connections_closed_max_lifetime,
            closed_idle_timeout: stats.connections_closed_idle_timeout,
        }
    }

    /// How many connections the pool holds at most: as many as can be found closed in a
    /// row after a server restart.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// A connection for one unscoped read outside any transaction (each statement commits
    /// by itself), which saves the BEGIN and ROLLBACK round trips: for lookups such as a
    /// token check. Behind a transaction-mode pooler it is a real transaction, since only
    /// a transaction keeps a statement's parse and execution on one server connection.
    pub async fn autocommit(&self) -> Result<Tx, DbError> {
        if self.behind_pooler {
            return self.begin(Scope::System).await;
        }
        Ok(Tx {
            conn: self.checkout().await?,
            state: TxState::Autocommit,
            behind_pooler: false,
        })
    }

    async fn checkout(&self) -> Result<Conn, DbError> {
        let conn = match &self.pool {
            Pool::Postgres(pool) => {
                Conn::Postgres(pool.get_owned().await.map_err(|e| self.acquire_failed(e))?)
            }
            Pool::Sqlite(pool) => {
                Conn::Sqlite(pool.get_owned().await.map_err(|e| self.acquire_failed(e))?)
            }
        };
        self.connect_errors.clear();
        Ok(conn)
    }

    /// PostgreSQL: the connected role's name when it is a superuser or has BYPASSRLS, so
    /// that row-level security does not apply to it. SQLite: none.
    pub async fn role_bypassing_row_security(&self) -> Result<Option<String>, DbError> {
        #[derive(diesel::QueryableByName)]
        struct Role {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            bypasses: bool,
        }
        if !self.is_postgres() {
            return Ok(None);
        }
        let mut tx = self.autocommit().await?;
        let role: Role = crate::on_backend!(tx, |conn| {
            diesel_async::RunQueryDsl::get_result(
                diesel::sql_query(
                    "SELECT rolname::text AS name, (rolsuper OR rolbypassrls) AS bypasses \
                     FROM pg_roles WHERE rolname = current_user",
                ),
                conn,
            )
            .await?
        });
        tx.commit().await?;
        Ok(role.bypasses.then_some(role.name))
    }

    /// Checks that a connection can be had and answers a trivial query.
    pub async fn ping(&self) -> Result<(), DbError> {
        use crate::on_backend;
        use diesel::IntoSql;
        use diesel::sql_types::Integer;
        let mut tx = self.autocommit().await?;
        let _: i32 = on_backend!(tx, |conn| {
            diesel_async::RunQueryDsl::get_result(diesel::select(1.into_sql::<Integer>()), conn)
                .await?
        });
        tx.commit().await
    }
}

/// Whose rows a transaction may see and change. On PostgreSQL, row-level security on
/// every user table enforces it, beneath the `user_id` filter each query has anyway.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// One user's rows (every tool call).
    User(&'a str),
    /// No user: only the tables without user rows (tokens, sessions, users, migrations)
    /// are visible; user tables read as empty.
    System,
}

/// A pooled connection of either backend. (Not boxed: one lives per call, on the stack
/// of the call's future, and boxing would add an allocation per call.)
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    Postgres(PooledConnection<'static, AsyncPgConnection>),
    Sqlite(PooledConnection<'static, sqlite::Connection>),
}

/// An open transaction. It must end in [`Tx::commit`] or [`Tx::rollback`]; one that is
/// dropped (a cancelled call) leaves its connection marked broken, and the pool discards it.
pub struct Tx {
    pub conn: Conn,
    /// Where the transaction stands (advanced by [`pg::Session`] in [`on_backend!`]).
    #[doc(hidden)]
    pub state: TxState,
    /// Behind a transaction-mode pooler, each statement is prepared and closed within its
    /// transaction; a COMMIT pipelined behind one would leave its Close (and its own) for
    /// after the transaction, on whatever server connection the pooler gives next.
    behind_pooler: bool,
}

/// Where a [`Tx`] stands.
#[derive(Debug)]
pub enum TxState {
    /// [`Database::autocommit`]: no transaction, nothing to commit or roll back.
    Autocommit,
    /// PostgreSQL: `BEGIN` and its `SET LOCAL`s, not sent yet; they go out with the first
    /// statement.
    Pending([String; 3]),
    /// Begun, on the server.
    Open,
    /// PostgreSQL: begun, and the next statement run with `execute` carries the `COMMIT`
    /// in its round trip ([`Tx::commit_with_next_statement`]).
    CommitNext,
    /// PostgreSQL: the `COMMIT` went out with a statement and failed, or the connection
    /// broke before its answer ([`DbError::CommitOutcomeUnknown`]); [`Tx::commit`]
    /// reports it.
    CommitFailed(DbError),
    /// PostgreSQL: the connection was found closed when the `BEGIN` batch went out, so
    /// nothing ran on it.
    FoundDead,
    /// Committed or rolled back: the connection is clean.
    Ended,
}

impl Tx {
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Conn::Postgres(_))
    }

    /// Makes every call record findable by full-text search: SQLite indexes them in
    /// batches (in the background, and here what is left), PostgreSQL as it writes them.
    pub async fn index_call_records(&mut self) -> Result<(), DbError> {
        if let Conn::Sqlite(conn) = &mut self.conn {
            sqlite::index_call_records(conn, sqlite::ALL_CALL_RECORDS).await?;
        }
        Ok(())
    }

    /// Whether the transaction's connection turned out closed before anything ran on it;
    /// the error it gave is then [`DbError::StaleConnection`]-worthy.
    pub fn found_dead(&self) -> bool {
        matches!(self.state, TxState::FoundDead)
    }

    /// Whether the transaction's `COMMIT` went out with a statement and its outcome is
    /// unknown: the connection broke before its answer.
    pub fn commit_outcome_unknown(&self) -> bool {
        matches!(
            self.state,
            TxState::CommitFailed(DbError::CommitOutcomeUnknown(_))
        )
    }

    /// PostgreSQL: the next statement this transaction runs with `execute` (and nothing
    /// after it) carries the `COMMIT` in its round trip, pipelined; [`Tx::commit`] then
    /// reports how that went. For the last statement of a transaction that is sure to end
    /// in a commit (a call's record). If that statement fails, the `COMMIT` ends the
    /// aborted transaction as a rollback, and nothing of it is saved. SQLite: nothing
    /// changes (no round trips to save), nor behind a transaction-mode pooler.
    ///
    /// The `COMMIT` is a prepared statement like the one it follows, so the two cannot
    /// swap places on the wire: diesel-async holds the connection's statement cache
    /// locked while it prepares a statement and until it sends its Bind/Execute, and a
    /// statement pipelined behind it waits for that lock (`tests/it/transactions.rs`
    /// checks the order on fresh connections).
    pub fn commit_with_next_statement(&mut self) {
        if let (Conn::Postgres(_), TxState::Open, false) =
            (&self.conn, &self.state, self.behind_pooler)
        {
            self.state = TxState::CommitNext;
        }
    }

    /// Commits. A connection lost during COMMIT is reported as
    /// [`DbError::CommitOutcomeUnknown`], never as retryable: the server may have
    /// committed before the connection broke.
    pub async fn commit(mut self) -> Result<(), DbError> {
        // The state stays as it is until the COMMIT's answer: a call cancelled meanwhile
        // leaves the connection marked broken (see `Drop`).
        let committed: Result<(), DbError> = match (&mut self.conn, &mut self.state) {
            // No transaction, or none was sent: nothing to commit.
            (_, TxState::Autocommit | TxState::Ended)
            | (Conn::Postgres(_), TxState::Pending(_)) => Ok(()),
            (Conn::Postgres(_), TxState::FoundDead) => Err(DbError::StaleConnection(
                "the connection was closed before the transaction began".into(),
            )),
            // The COMMIT went with the last statement, and failed. (What is left in its
            // place is replaced by `Ended` below.)
            (Conn::Postgres(_), TxState::CommitFailed(error)) => {
                Err(std::mem::replace(error, DbError::Contention(String::new())))
            }
            (Conn::Postgres(c), TxState::Open | TxState::CommitNext) => {
                c.batch_execute("COMMIT").await.map_err(DbError::from)
            }
            (Conn::Sqlite(c), _) => {
                <sqlite::Connection as AsyncConnection>::TransactionManager::commit_transaction(
                    &mut **c,
                )
                .await
                .map_err(DbError::from)
            }
        };
        self.state = TxState::Ended;
        committed.map_err(|error| match error {
            DbError::ConnectionLost(message) => DbError::CommitOutcomeUnknown(message),
            other => other,
        })
    }

    pub async fn rollback(mut self) -> Result<(), DbError> {
        match (&mut self.conn, &self.state) {
            // The pipelined COMMIT ended it already (as a rollback, if its statement
            // failed).
            (_, TxState::Autocommit | TxState::Ended)
            | (
                Conn::Postgres(_),
                TxState::Pending(_) | TxState::FoundDead | TxState::CommitFailed(_),
            ) => {}
            (Conn::Postgres(c), TxState::Open | TxState::CommitNext) => {
                c.batch_execute("ROLLBACK").await?
            }
            (Conn::Sqlite(c), _) => {
                <sqlite::Connection as AsyncConnection>::TransactionManager::rollback_transaction(
                    &mut **c,
                )
                .await?
            }
        }
        self.state = TxState::Ended;
        Ok(())
    }
}

impl Drop for Tx {
    /// A PostgreSQL transaction left open (its call was cancelled, or its ROLLBACK failed)
    /// must not go back to the pool: marking the connection's transaction state broken
    /// makes the pool discard it. (SQLite's transaction manager tracks its own.)
    fn drop(&mut self) {
        if let (Conn::Postgres(c), TxState::Open | TxState::CommitNext) =
            (&mut self.conn, &self.state)
        {
            <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::transaction_manager_status_mut(&mut **c)
                .set_in_error();
        }
    }
}

/// Runs a diesel query body against whichever backend `$tx` holds.
///
/// Inside the body, `$conn` is the backend's connection (on PostgreSQL, a [`pg::Session`]
/// that sends the transaction's pending `BEGIN` with the first statement) and `schema` its
/// table module;
/// the body is compiled once per backend, so it must type-check against both.
#[macro_export]
macro_rules! on_backend {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.conn {
            $crate::db::Conn::Postgres(pooled) => {
                #[allow(unused_imports)]
                use $crate::db::schema;
                let mut session = $crate::db::pg::Session::new(&mut **pooled, &mut $tx.state);
                let $conn: &mut $crate::db::pg::Session<'_> = &mut session;
                $body
            }
            $crate::db::Conn::Sqlite(pooled) => {
                #[allow(unused_imports)]
                use $crate::db::schema;
                let $conn: &mut $crate::db::sqlite::Connection = &mut *pooled;
                $body
            }
        }
    };
}
