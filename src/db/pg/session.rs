//! A PostgreSQL transaction's connection, whose `BEGIN` travels with its first statement.

use crate::db::sql::CachedDsl;
use crate::db::{DbError, TxState, is_connection_loss};
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel_async::{AsyncConnectionCore, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

/// The connection a PostgreSQL transaction's queries run on (`$conn` in
/// [`crate::on_backend!`]).
///
/// `Database::begin` sends nothing: `BEGIN` and its `SET LOCAL`s go out with the
/// transaction's first statement, pipelined, which saves every call a round trip.
/// They reach the server in order because a simple query is written to the connection
/// when its future is first polled, and `join!` polls them before the statement's
/// (which may first need a Parse of its own). If the order ever broke, the first statement
/// would run outside the transaction, without `todo.user_id`: `tests/it/transactions.rs`
/// checks that it sees the `SET LOCAL`s and shares the second statement's transaction.
pub struct Session<'a> {
    conn: &'a mut AsyncPgConnection,
    state: &'a mut TxState,
}

impl<'a> Session<'a> {
    pub fn new(conn: &'a mut AsyncPgConnection, state: &'a mut TxState) -> Self {
        Session { conn, state }
    }

    /// Runs what `statements` sends on the shared connection (several statements joined,
    /// so that they go out together: one round trip), preceded on the wire by the pending
    /// opening statements, if any. Statements prepared through diesel-async reach the
    /// server in the order they are first polled (see
    /// [`crate::db::Tx::commit_with_next_statement`] for why).
    pub fn pipelined<'c, R: Send + 'c>(
        &'c mut self,
        statements: impl FnOnce(&'c AsyncPgConnection) -> BoxFuture<'c, QueryResult<R>>,
    ) -> BoxFuture<'c, QueryResult<R>> {
        let conn: &'c AsyncPgConnection = self.conn;
        let statements = statements(conn);
        after_opening(conn, self.state, statements)
    }
}

/// Runs `statement`, preceded on the wire by the pending opening statements, if any. A
/// failed `BEGIN` or `SET LOCAL` is the error reported (the statement's failure follows
/// from it).
fn after_opening<'c, R: Send + 'c>(
    conn: &'c AsyncPgConnection,
    state: &'c mut TxState,
    statement: BoxFuture<'c, QueryResult<R>>,
) -> BoxFuture<'c, QueryResult<R>> {
    let [begin, timeout, user] = match std::mem::replace(state, TxState::Open) {
        TxState::Pending(opening) => opening,
        other => {
            *state = other;
            return statement;
        }
    };
    async move {
        let (mut a, mut b, mut c) = (conn, conn, conn);
        // join! polls in order, so the messages are written in order.
        let (begun, timed, named, result) = futures_util::join!(
            a.batch_execute(&begin),
            b.batch_execute(&timeout),
            c.batch_execute(&user),
            statement
        );
        match begun.and(timed).and(named) {
            Ok(()) => result,
            Err(error) => {
                if is_connection_loss(&error) {
                    *state = TxState::FoundDead;
                }
                Err(error)
            }
        }
    }
    .boxed()
}

impl SimpleAsyncConnection for Session<'_> {
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let conn: &AsyncPgConnection = self.conn;
        let statement = async move {
            let mut shared = conn;
            shared.batch_execute(query).await
        }
        .boxed();
        after_opening(conn, self.state, statement).await
    }
}

impl AsyncConnectionCore for Session<'_> {
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<Self::Stream<'conn, 'query>>>;
    type Stream<'conn, 'query> = <AsyncPgConnection as AsyncConnectionCore>::Stream<'conn, 'query>;
    type Row<'conn, 'query> = <AsyncPgConnection as AsyncConnectionCore>::Row<'conn, 'query>;
    type Backend = Pg;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Pg> + QueryId + 'query,
    {
        let conn: &'conn AsyncPgConnection = self.conn;
        // Renders the SQL and binds now; the future only sends them.
        let statement = AsyncConnectionCore::load(&mut { conn }, source);
        after_opening(conn, self.state, statement)
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Pg> + QueryId + 'query,
    {
        let conn: &'conn AsyncPgConnection = self.conn;
        let statement = AsyncConnectionCore::execute_returning_count(&mut { conn }, source);
        if matches!(self.state, TxState::CommitNext) {
            return with_commit(conn, self.state, statement);
        }
        after_opening(conn, self.state, statement)
    }
}

/// Runs `statement` with the transaction's `COMMIT` pipelined behind it, and leaves in
/// `state` how the COMMIT went ([`crate::db::Tx::commit_with_next_statement`]). The
/// statement's own result is returned; a COMMIT that failed is [`crate::db::Tx::commit`]'s
/// to report.
fn with_commit<'c>(
    conn: &'c AsyncPgConnection,
    state: &'c mut TxState,
    statement: BoxFuture<'c, QueryResult<usize>>,
) -> BoxFuture<'c, QueryResult<usize>> {
    // Prepared, like `statement`: see `commit_with_next_statement` for why the order holds.
    let commit = AsyncConnectionCore::execute_returning_count(
        &mut { conn },
        diesel::sql_query("COMMIT").cached(),
    );
    async move {
        let (result, committed) = futures_util::join!(statement, commit);
        *state = match (&result, committed) {
            // Both went out: the COMMIT may have run before the connection broke.
            (Err(error), _) if is_connection_loss(error) => {
                TxState::CommitFailed(DbError::CommitOutcomeUnknown(error.to_string()))
            }
            // The statement failed, so its transaction was aborted, and the COMMIT ended
            // it as a rollback.
            (Err(_), _) | (Ok(_), Ok(_)) => TxState::Ended,
            (Ok(_), Err(error)) => TxState::CommitFailed(DbError::from(error)),
        };
        result
    }
    .boxed()
}
