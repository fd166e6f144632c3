//! The transaction lifecycle on PostgreSQL, through the library: `Database::begin` sends
//! nothing, the `BEGIN` batch travels with the first statement, and a transaction that is
//! dropped half-way (a cancelled call) never hands its open transaction to the next user
//! of the pooled connection.

use crate::support;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use std::time::Duration;
use support::pg::PgTestDb;
use todo_mcp::db::{Database, DatabaseUrl, PoolOptions, Scope, Tx};
use todo_mcp::on_backend;

#[derive(QueryableByName, Debug)]
struct Session {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    backend: i64,
    /// The transaction's id (`txid_current()` assigns one): equal for two statements only
    /// if they ran in one transaction.
    #[diesel(sql_type = BigInt)]
    txid: i64,
}

async fn session_of(tx: &mut Tx) -> Session {
    on_backend!(tx, |conn| {
        diesel::sql_query(
            "SELECT coalesce(current_setting('todo.user_id', true), '') AS user_id, \
                    pg_backend_pid()::bigint AS backend, txid_current()::bigint AS txid",
        )
        .get_result(conn)
        .await
        .expect("reading the session's settings")
    })
}

/// One pooled connection, so every transaction below runs on the same one (unless the
/// pool discards it).
async fn single_connection_pool(db: &PgTestDb) -> Database {
    let url = DatabaseUrl::parse(db.url()).expect("test database URL");
    let options = PoolOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
        ..PoolOptions::default()
    };
    Database::connect(&url, &options).await.expect("pool")
}

#[tokio::test]
async fn the_first_statement_runs_inside_the_scoped_transaction() {
    let pg = PgTestDb::new().await;
    let db = single_connection_pool(&pg).await;

    let mut tx = db.begin(Scope::User("alice")).await.expect("begin");
    let first = session_of(&mut tx).await;
    let second = session_of(&mut tx).await;
    assert_eq!(
        first.user_id, "alice",
        "the first statement saw no SET LOCAL"
    );
    assert_eq!(
        first.txid, second.txid,
        "the first and second statements ran in different transactions: BEGIN came late"
    );
    tx.commit().await.expect("commit");

    // SET LOCAL ended with the transaction; the next one names its own scope.
    let mut tx = db.begin(Scope::System).await.expect("begin");
    let next = session_of(&mut tx).await;
    assert_eq!(next.user_id, "", "the previous transaction's user leaked");
    assert_ne!(next.txid, first.txid);
    tx.rollback().await.expect("rollback");
}

#[tokio::test]
async fn a_dropped_transaction_is_never_reused_and_a_committed_one_is() {
    let pg = PgTestDb::new().await;
    let db = single_connection_pool(&pg).await;

    // Committed: the same connection serves the next transaction.
    let mut tx = db.begin(Scope::User("alice")).await.expect("begin");
    let committed = session_of(&mut tx).await;
    tx.commit().await.expect("commit");
    let mut tx = db.begin(Scope::User("bob")).await.expect("begin");
    let after_commit = session_of(&mut tx).await;
    assert_eq!(
        after_commit.backend, committed.backend,
        "a cleanly committed connection should go back to the pool"
    );

    // Dropped half-way, as a cancelled call's is: its connection, still inside "bob"'s
    // transaction, must not serve the next caller.
    drop(tx);
    let mut tx = db.begin(Scope::User("carol")).await.expect("begin");
    let after_drop = session_of(&mut tx).await;
    assert_ne!(
        after_drop.backend, after_commit.backend,
        "the connection of a dropped transaction went back to the pool"
    );
    assert_eq!(after_drop.user_id, "carol");
    tx.commit().await.expect("commit");

    // A transaction dropped before any statement sent nothing: its connection is clean
    // and is reused.
    let unused = db.begin(Scope::User("dave")).await.expect("begin");
    drop(unused);
    let mut tx = db.begin(Scope::System).await.expect("begin");
    let after_unused = session_of(&mut tx).await;
    assert_eq!(after_unused.backend, after_drop.backend);
    tx.rollback().await.expect("rollback");

    db.ping().await.expect("ping");
}

#[tokio::test]
async fn ping_reaches_the_database() {
    let pg = PgTestDb::new().await;
    let db = single_connection_pool(&pg).await;
    db.ping().await.expect("ping of a running database");
    // Nothing listens on port 1: a ping must fail, not succeed without a round trip.
    let url = DatabaseUrl::parse("postgres://postgres@127.0.0.1:1/none").expect("URL");
    let options = PoolOptions {
        acquire_timeout: Duration::from_millis(500),
        ..PoolOptions::default()
    };
    let down = Database::connect(&url, &options).await.expect("lazy pool");
    let error = down.ping().await.expect_err("ping of nothing succeeded");
    assert!(
        error.to_string().contains("storage unavailable"),
        "unclear error: {error}"
    );
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Probe {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    txid: i64,
}

/// Writes what the statement saw (its transaction and user) into `commit_probe`, with a
/// SQL text of its own for each `variant`: a statement the connection never prepared.
async fn probe(tx: &mut Tx, variant: &str) -> Result<usize, todo_mcp::db::DbError> {
    let sql = format!(
        "INSERT INTO commit_probe (variant, user_id, txid) \
         SELECT '{variant}', coalesce(current_setting('todo.user_id', true), ''), txid_current()"
    );
    Ok(on_backend!(tx, |conn| {
        use todo_mcp::db::sql::CachedDsl;
        diesel::sql_query(sql).cached().execute(conn).await?
    }))
}

async fn probed(db: &Database, variant: &str) -> Vec<Probe> {
    let mut tx = db.begin(Scope::System).await.expect("begin");
    let rows = on_backend!(tx, |conn| {
        diesel::sql_query("SELECT user_id, txid FROM commit_probe WHERE variant = $1")
            .bind::<Text, _>(variant)
            .load(conn)
            .await
            .expect("reading the probes")
    });
    tx.rollback().await.expect("rollback");
    rows
}

/// The COMMIT that rides with a transaction's last statement goes after it on the wire,
/// whether either was prepared on the connection before: were it to overtake, the
/// statement would run in a transaction of its own, without the user's `SET LOCAL`.
#[tokio::test]
async fn the_commit_pipelined_with_the_last_statement_follows_it() {
    let pg = PgTestDb::new().await;
    let db = single_connection_pool(&pg).await;
    let mut tx = db.begin(Scope::System).await.expect("begin");
    on_backend!(tx, |conn| {
        diesel::sql_query("CREATE TABLE commit_probe (variant text, user_id text, txid bigint)")
            .execute(conn)
            .await
            .expect("probe table")
    });
    tx.commit().await.expect("commit");

    // Neither prepared yet; then both; then a new statement behind the prepared COMMIT.
    for variant in ["fresh", "fresh", "new text"] {
        let mut tx = db.begin(Scope::User("alice")).await.expect("begin");
        let opened = session_of(&mut tx).await;
        tx.commit_with_next_statement();
        assert_eq!(probe(&mut tx, variant).await.expect("probe"), 1);
        tx.commit().await.expect("the pipelined commit");
        let seen = probed(&db, variant).await;
        assert!(
            seen.contains(&Probe {
                user_id: "alice".into(),
                txid: opened.txid
            }),
            "{variant}: the last statement did not run in its transaction: {seen:?} \
             (opened as {opened:?})"
        );
    }

    // A last statement that fails: the COMMIT ends the aborted transaction, so nothing of
    // it is kept, and the connection serves the next transaction cleanly.
    let mut tx = db.begin(Scope::User("bob")).await.expect("begin");
    let opened = session_of(&mut tx).await;
    probe(&mut tx, "rolled back").await.expect("probe");
    tx.commit_with_next_statement();
    let failed = on_backend!(tx, |conn| {
        diesel::sql_query("INSERT INTO commit_probe (txid) VALUES (1 / 0)")
            .execute(conn)
            .await
    });
    assert!(failed.is_err(), "division by zero succeeded");
    tx.rollback().await.expect("nothing left to roll back");
    assert_eq!(probed(&db, "rolled back").await, vec![]);
    let mut tx = db.begin(Scope::User("carol")).await.expect("begin");
    let next = session_of(&mut tx).await;
    assert_eq!(next.backend, opened.backend, "the connection was discarded");
    assert_eq!(next.user_id, "carol");
    tx.commit().await.expect("commit");
}
