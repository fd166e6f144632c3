//! SQLite, the embedded default: one file, WAL mode, foreign keys on.
//!
//! SQLite's calls run on the calling thread ([`OnCallingThread`]): a statement on the
//! local file takes microseconds, less than handing it to a blocking thread and back
//! (which was most of an add_task's time). The one call that can wait long, taking the
//! file's write lock while another process holds it, is made not to wait: it fails at
//! once and [`begin_immediate`] waits asynchronously, holding no thread, before trying
//! again.

use super::{ConnectErrors, DbError, PoolOptions, is_contention_message};
use diesel::connection::AnsiTransactionManager;
use diesel::result::Error as DieselError;
use diesel::{ConnectionError, SqliteConnection};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::path::Path;
use std::time::{Duration, Instant};

pub type Connection = SyncConnectionWrapper<SqliteConnection, OnCallingThread>;
pub type Pool = diesel_async::pooled_connection::bb8::Pool<Connection>;

/// Runs each SQLite call on the thread that polls it (see the module's comment).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnCallingThread;

impl SpawnBlocking for OnCallingThread {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        async move { Ok(task()) }.boxed()
    }

    fn get_runtime() -> Self {
        OnCallingThread
    }
}

/// Applied to every new connection, waiting for the write lock (a migration in another
/// process, say) up to 5 s, like [`LOCK_WAIT`], while it opens.
const CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA wal_autocheckpoint = 10000;";

/// How often [`spawn_checkpointer`] copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Once open, a pooled connection never blocks its thread on a lock: SQLite reports a held
/// lock at once, and [`begin_immediate`] (the only call that takes the write lock: in WAL
/// mode reads and commits don't wait) waits for it asynchronously.
const DONT_WAIT_FOR_LOCKS: &str = "PRAGMA busy_timeout = 0;";

/// How long a transaction waits for another process to release the file's write lock
/// before the call fails with "storage busy, retry".
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens one connection outside the pool (for migrations), creating the file's folder.
pub async fn establish(path: &Path) -> Result<Connection, DbError> {
    prepare_file(path)?;
    let mut conn = Connection::establish(&path_str(path)?)
        .await
        .map_err(|e| DbError::CannotConnect(format!("cannot open {}: {e}", path.display())))?;
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
    prepare_file(path)?;
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
            conn.batch_execute(DONT_WAIT_FOR_LOCKS)
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

/// Checkpoints the WAL from a thread of its own, every [`CHECKPOINT_EVERY`] (often, so
/// each copies little and completes between writes), and every [`INDEX_RECORDS_EVERY`]
/// puts the newest call records into the full-text index ([`index_call_records`]), while
/// `alive` can be upgraded (the [`super::Database`] holds it).
///
/// SQLite's own checkpoint runs inside the commit that crosses `wal_autocheckpoint`
/// pages: every call writes its record, so one call in ~80 paid ~5 ms of copying and
/// syncing (measured: the p99 of every read). A passive checkpoint here takes no lock a
/// writer waits for; the connections' `wal_autocheckpoint` (10,000 pages) stays a safety
/// net should this thread not run. Indexing takes the write lock, never waiting for it:
/// while a call holds it, it tries again at the next tick.
pub fn spawn_checkpointer(path: &Path, alive: std::sync::Weak<()>) {
    let path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut conn: Option<SqliteConnection> = None;
            let mut last_indexed = Instant::now();
            while alive.upgrade().is_some() {
                std::thread::sleep(CHECKPOINT_EVERY);
                let Ok(url) = path_str(&path) else { return };
                if conn.is_none() {
                    conn = diesel::Connection::establish(&url).ok();
                }
                let Some(open) = conn.as_mut() else { continue };
                if last_indexed.elapsed() >= INDEX_RECORDS_EVERY {
                    let indexed = diesel::connection::SimpleConnection::batch_execute(
                        open,
                        DONT_WAIT_FOR_LOCKS,
                    )
                    .and_then(|()| {
                        open.immediate_transaction(|open| {
                            index_call_records_sync(open, INDEX_RECORDS_BATCH)
                        })
                    });
                    // Busy (a call holds the write lock): again at the next tick.
                    match indexed {
                        Ok(_) => last_indexed = Instant::now(),
                        Err(error) => tracing::debug!(%error, "call records not indexed yet"),
                    }
                }
                let checkpoint = diesel::connection::SimpleConnection::batch_execute(
                    open,
                    "PRAGMA busy_timeout = 0; PRAGMA wal_checkpoint(PASSIVE);",
                );
                if let Err(error) = checkpoint {
                    tracing::debug!(%error, "WAL checkpoint skipped");
                    conn = None;
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no WAL checkpoint thread: commits will checkpoint");
    }
}

/// How often [`spawn_checkpointer`] indexes the call records written since it last did.
const INDEX_RECORDS_EVERY: Duration = Duration::from_secs(1);

/// The most call records [`spawn_checkpointer`] indexes in one transaction, so that it
/// holds the write lock for milliseconds even after a long backlog.
const INDEX_RECORDS_BATCH: i64 = 5_000;

/// Every call record not yet indexed: what a search that includes them needs first.
pub const ALL_CALL_RECORDS: i64 = i64::MAX / 2;

/// The full-text index (`messages_fts`) takes call records in batches: it holds every
/// record whose id is at most `messages_fts_records.through` (migration 000019 says why
/// and how the triggers keep that true). These two statements index up to `batch` of the
/// newer ones and move `through` past them; they run in one write transaction.
const INDEX_CALL_RECORDS: &str = "INSERT INTO messages_fts (rowid, content) \
     SELECT m.id, m.content FROM messages_fts_records p, messages m \
     WHERE m.id > p.through AND m.id <= p.through + ? AND m.kind = 'call_record'";
const ADVANCE_INDEXED_THROUGH: &str = "UPDATE messages_fts_records SET through = \
     max(through, min(through + ?, (SELECT coalesce(max(id), 0) FROM messages)))";

/// Indexes up to `batch` call records that are not in the full-text index yet, in the
/// caller's write transaction; returns how many. (The statements run on the calling
/// thread, see [`OnCallingThread`], as [`index_call_records_sync`] does on the checkpoint
/// thread's own connection.)
pub async fn index_call_records(conn: &mut Connection, batch: i64) -> diesel::QueryResult<usize> {
    conn.spawn_blocking(move |inner| index_call_records_sync(inner, batch))
        .await
}

fn index_call_records_sync(conn: &mut SqliteConnection, batch: i64) -> diesel::QueryResult<usize> {
    use diesel::RunQueryDsl;
    let indexed = diesel::sql_query(INDEX_CALL_RECORDS)
        .bind::<diesel::sql_types::BigInt, _>(batch)
        .execute(conn)?;
    diesel::sql_query(ADVANCE_INDEXED_THROUGH)
        .bind::<diesel::sql_types::BigInt, _>(batch)
        .execute(conn)?;
    Ok(indexed)
}

/// SQLite's built-in `lower()` folds ASCII only; replacing it makes case-insensitive
/// search fold "BRÛLÉE" to "brûlée" as PostgreSQL does in a UTF-8 locale.
fn register_unicode_lower(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    crate::db::sql::lower_utils::register_impl(conn, |text: Option<String>| {
        text.map(|t| t.to_lowercase())
    })
}

/// `BEGIN IMMEDIATE` takes the write lock up front (see `Database::begin`). While another
/// process holds it, waits without holding a thread, in growing pauses, up to [`LOCK_WAIT`].
pub async fn begin_immediate(conn: &mut Connection) -> diesel::QueryResult<()> {
    begin_waiting(conn, "BEGIN IMMEDIATE").await
}

/// A read transaction: in WAL mode it takes its snapshot at its first read and neither
/// waits for nor blocks writers.
pub async fn begin_deferred(conn: &mut Connection) -> diesel::QueryResult<()> {
    begin_waiting(conn, "BEGIN DEFERRED").await
}

async fn begin_waiting(conn: &mut Connection, begin: &'static str) -> diesel::QueryResult<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let begun = conn
            .spawn_blocking(|inner| AnsiTransactionManager::begin_transaction_sql(inner, begin))
            .await;
        match begun {
            Err(DieselError::DatabaseError(_, info))
                if is_contention_message(info.message()) && Instant::now() < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            begun => return begun,
        }
    }
}

/// Readies the database file's place: a missing folder is made `0700` and a missing file
/// `0600` (SQLite gives its `-wal` and `-shm` files the database file's mode), since the
/// file holds every user's data and token hashes. An existing file that others on this
/// machine may read is used as it is, with a warning.
pub(crate) fn prepare_file(path: &Path) -> Result<(), DbError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        private_dir(dir).map_err(|e| {
            DbError::CannotConnect(format!("cannot create folder {}: {e}", dir.display()))
        })?;
    }
    match private_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_others_may_read(path);
            Ok(())
        }
        Err(e) => Err(DbError::CannotConnect(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Creates the file empty (SQLite takes an empty file for a new database), or fails with
/// `AlreadyExists`.
fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Opens (creating it `0600` if missing) the empty file beside the database whose lock
/// serializes migrations across processes: private like the rest of the folder.
pub(crate) fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(unix)]
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{mode:04o}"),
                "the database file is readable by other users of this machine (it holds every \
                 user's data and token hashes): `chmod 600` it, and its -wal and -shm files"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_others_may_read(_: &Path) {}

fn path_str(path: &Path) -> Result<String, DbError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| DbError::InvalidUrl(format!("{} is not valid UTF-8", path.display())))
}
