//! Embedded migrations, one directory per backend with matching versions.
//!
//! Every change holds a lock across processes for its whole run, so replicas starting
//! together apply each migration once: on PostgreSQL a transaction-level advisory lock,
//! with the whole run in that one transaction (a failing migration leaves the schema as it
//! was before the run); on SQLite an exclusive lock on a file beside the database, each
//! migration in its own transaction. Both backends have transactional DDL.

use super::{Database, DatabaseUrl, DbError, pg, sqlite};
use diesel::QueryableByName;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sqlite::Sqlite;
use diesel_async::{
    AnsiTransactionManager, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl,
    TransactionManager,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// An arbitrary constant naming this program's migration lock among advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x7464_6f6d_6370_0001;

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub version: String,
    pub name: String,
    pub applied: bool,
}

/// What a migration command does.
#[derive(Debug, Clone, Copy)]
enum Operation {
    RunPending,
    RevertLast,
    Status,
}

/// Applies all pending migrations; returns the names of those applied.
pub async fn run_pending(url: &DatabaseUrl) -> Result<Vec<String>, DbError> {
    let versions = run(url, Operation::RunPending).await?;
    names(url, versions)
}

/// Reverts the most recently applied migration; returns its name (none if none applied).
pub async fn revert_last(url: &DatabaseUrl) -> Result<Vec<String>, DbError> {
    let versions = run(url, Operation::RevertLast).await?;
    names(url, versions)
}

/// Every embedded migration, oldest first, and whether it is applied.
pub async fn status(url: &DatabaseUrl) -> Result<Vec<MigrationState>, DbError> {
    let applied = run(url, Operation::Status).await?;
    let all = embedded(url)?;
    Ok(all
        .into_iter()
        .map(|(version, name)| MigrationState {
            applied: applied.contains(&version),
            version,
            name,
        })
        .collect())
}

/// Names of the embedded migrations the database has not applied, asked on a pooled
/// connection: what `/readyz` wants on every probe, without opening a connection for it.
pub async fn pending(db: &Database) -> Result<Vec<String>, DbError> {
    #[derive(QueryableByName)]
    struct Applied {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    let mut tx = db.autocommit().await?;
    let applied: Vec<Applied> = crate::on_backend!(tx, |conn| {
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load(conn)
            .await?
    });
    tx.commit().await?;
    let all = if db.is_postgres() {
        describe::<Pg>(&POSTGRES)?
    } else {
        describe::<Sqlite>(&SQLITE)?
    };
    Ok(all
        .into_iter()
        .filter(|(version, _)| !applied.iter().any(|a| a.version == *version))
        .map(|(_, name)| name)
        .collect())
}

/// (version, name) of every migration embedded for the URL's backend, oldest first.
fn embedded(url: &DatabaseUrl) -> Result<Vec<(String, String)>, DbError> {
    match url {
        DatabaseUrl::Postgres(_) => describe::<Pg>(&POSTGRES),
        DatabaseUrl::Sqlite(_) => describe::<Sqlite>(&SQLITE),
    }
}

/// Versions as migration names (`2026-11-24-000002_mcp_sessions`), as `status` shows them.
fn names(url: &DatabaseUrl, versions: Vec<String>) -> Result<Vec<String>, DbError> {
    let all = embedded(url)?;
    Ok(versions
        .into_iter()
        .map(|version| {
            all.iter()
                .find(|(v, _)| *v == version)
                .map_or(version.clone(), |(_, name)| name.clone())
        })
        .collect())
}

fn describe<DB: diesel::backend::Backend>(
    source: &EmbeddedMigrations,
) -> Result<Vec<(String, String)>, DbError>
where
    EmbeddedMigrations: MigrationSource<DB>,
{
    let migrations: Vec<Box<dyn Migration<DB>>> =
        MigrationSource::<DB>::migrations(source).map_err(migration_error)?;
    Ok(migrations
        .iter()
        .map(|m| (m.name().version().to_string(), m.name().to_string()))
        .collect())
}

async fn run(url: &DatabaseUrl, operation: Operation) -> Result<Vec<String>, DbError> {
    match url {
        DatabaseUrl::Postgres(url) => {
            let mut conn = pg::Connector::new(url)?
                .establish()
                .await
                .map_err(|e| DbError::CannotConnect(e.to_string()))?;
            if let Operation::Status = operation {
                return pg_applied_versions(&mut conn).await;
            }
            // One transaction for the whole run, holding a transaction-level lock: it is
            // released however the run ends, and works behind a transaction-mode pooler
            // (a session lock could be taken on one server connection and released on
            // another). Each migration runs in a savepoint inside it.
            AnsiTransactionManager::begin_transaction(&mut conn).await?;
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
                .execute(&mut conn)
                .await?;
            let mut harness = AsyncMigrationHarness::new(conn);
            let outcome = apply(&mut harness, POSTGRES, operation);
            let mut conn = harness.into_inner();
            match outcome {
                Ok(versions) => {
                    AnsiTransactionManager::commit_transaction(&mut conn).await?;
                    Ok(versions)
                }
                Err(error) => {
                    AnsiTransactionManager::rollback_transaction(&mut conn).await?;
                    Err(error)
                }
            }
        }
        DatabaseUrl::Sqlite(path) => {
            sqlite::prepare_file(path)?;
            let lock_path = path.with_extension("migrate.lock");
            let lock = sqlite::lock_file(&lock_path).map_err(|e| {
                DbError::Migration(format!("cannot create {}: {e}", lock_path.display()))
            })?;
            let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
                .await
                .map_err(|e| DbError::Migration(e.to_string()))?
                .map_err(|e| {
                    DbError::Migration(format!("cannot lock {}: {e}", lock_path.display()))
                })?;
            // Opened under the lock: a new database's first connections switch it to WAL,
            // and two processes doing that at once can deadlock, which SQLite reports as
            // "database is locked" at once instead of waiting.
            let conn = sqlite::establish(path).await?;
            let mut harness = AsyncMigrationHarness::new(conn);
            let outcome = apply(&mut harness, SQLITE, operation);
            drop(lock);
            outcome
        }
    }
}

/// Applied versions, read without the harness: it would first try to create its table,
/// which a role without CREATE on the schema (a least-privilege server role) may not do.
async fn pg_applied_versions(conn: &mut AsyncPgConnection) -> Result<Vec<String>, DbError> {
    #[derive(QueryableByName)]
    struct Applied {
        #[diesel(sql_type = diesel::sql_types::Text)]
        version: String,
    }
    #[derive(QueryableByName)]
    struct Present {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    let table: Present = diesel::sql_query(
        "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS present",
    )
    .get_result(conn)
    .await?;
    if !table.present {
        return Ok(Vec::new());
    }
    let applied: Vec<Applied> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations ORDER BY version")
            .load(conn)
            .await?;
    Ok(applied.into_iter().map(|a| a.version).collect())
}

fn apply<DB, H>(
    harness: &mut H,
    source: EmbeddedMigrations,
    operation: Operation,
) -> Result<Vec<String>, DbError>
where
    DB: diesel::backend::Backend,
    H: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    match operation {
        Operation::RunPending => Ok(harness
            .run_pending_migrations(source)
            .map_err(migration_error)?
            .iter()
            .map(ToString::to_string)
            .collect()),
        Operation::RevertLast => {
            let applied = harness.applied_migrations().map_err(migration_error)?;
            if applied.is_empty() {
                return Ok(Vec::new());
            }
            let reverted = harness
                .revert_last_migration(source)
                .map_err(migration_error)?;
            Ok(vec![reverted.to_string()])
        }
        Operation::Status => Ok(harness
            .applied_migrations()
            .map_err(migration_error)?
            .iter()
            .map(ToString::to_string)
            .collect()),
    }
}

fn migration_error(error: Box<dyn std::error::Error + Send + Sync>) -> DbError {
    DbError::Migration(error.to_string())
}
