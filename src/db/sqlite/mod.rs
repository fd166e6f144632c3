//! SQLite, the embedded default: one file, WAL mode, foreign keys on.

pub mod schema;

use super::{ConnectErrors, DbError, PoolOptions};
use diesel::connection::AnsiTransactionManager;
use diesel::{ConnectionError, SqliteConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use std::path::Path;

pub type Connection = SyncConnectionWrapper<SqliteConnection>;
pub type Pool = diesel_async::pooled_connection::bb8::Pool<Connection>;

/// Applied to every new connection. The busy timeout lets writers from several
/// processes queue for the file's write lock instead of failing at once.
const CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;";

/// Opens one connection outside the pool (for migrations), creating the file's folder.
pub async fn establish(path: &Path) -> Result<Connection, DbError> {
    ensure_parent_dir(path)?;
    let mut conn = Connection::establish(&path_str(path)?)
        .await
        .map_err(|e| DbError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.batch_execute(CONNECTION_PRAGMAS).await?;
    Ok(conn)
}

/// Every tool call writes (at least its audit record), and SQLite has one writer at a
/// time, so more than one connection per process only adds lock polling.
pub async fn pool(
    path: &Path,
    options: &PoolOptions,
    errors: &ConnectErrors,
) -> Result<Pool, DbError> {
    ensure_parent_dir(path)?;
    let mut config = ManagerConfig::<Connection>::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_owned();
        async move {
            let mut conn = Connection::establish(&url).await?;
            conn.batch_execute(CONNECTION_PRAGMAS)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            conn.spawn_blocking(register_unicode_lower)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(path_str(path)?, config);
    Ok(bb8::Pool::builder()
        .max_size(1)
        .connection_timeout(options.acquire_timeout)
        .error_sink(Box::new(errors.clone()))
        .build_unchecked(manager))
}

/// SQLite's built-in `lower()` folds ASCII only; replacing it makes case-insensitive
/// search fold "BRÛLÉE" to "brûlée" as PostgreSQL does in a UTF-8 locale.
fn register_unicode_lower(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    crate::db::sql::lower_utils::register_impl(conn, |text: Option<String>| {
        text.map(|t| t.to_lowercase())
    })
}

/// `BEGIN IMMEDIATE` takes the write lock up front (see `Database::begin`).
pub async fn begin_immediate(conn: &mut Connection) -> diesel::QueryResult<()> {
    conn.spawn_blocking(|inner| {
        AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")
    })
    .await
}

fn ensure_parent_dir(path: &Path) -> Result<(), DbError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            DbError::Unavailable(format!("cannot create folder {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<String, DbError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| DbError::InvalidUrl(format!("{} is not valid UTF-8", path.display())))
}
