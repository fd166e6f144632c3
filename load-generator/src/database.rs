//! The database a run uses: a fresh PostgreSQL database or SQLite file, created before the
//! server starts and dropped at the end, and read back afterwards to verify the writes.

use crate::options::Backend;
use anyhow::{Context, bail};
use std::path::PathBuf;

/// Users the load generator creates are `bench-<n>`; the verification reads only theirs.
pub const USER_PREFIX: &str = "bench-";

/// A database made for one run.
pub enum BenchDatabase {
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
    Sqlite {
        dir: tempfile::TempDir,
        path: PathBuf,
    },
}

impl BenchDatabase {
    pub async fn create(backend: Backend, admin_url: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Postgres => {
                let name = format!(
                    "todo_mcp_bench_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                let admin = connect_pg(admin_url)
                    .await
                    .with_context(|| format!("connecting to the admin URL {admin_url}"))?;
                admin
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                let url = with_database(admin_url, &name)?;
                Ok(BenchDatabase::Postgres {
                    admin_url: admin_url.to_owned(),
                    name,
                    url,
                })
            }
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("todo-mcp-bench-")
                    .tempdir()
                    .context("creating a temporary directory for the SQLite file")?;
                let path = dir.path().join("todo.db");
                Ok(BenchDatabase::Sqlite { dir, path })
            }
        }
    }

    /// DATABASE_URL for the server.
    pub fn url(&self) -> String {
        match self {
            BenchDatabase::Postgres { url, .. } => url.clone(),
            BenchDatabase::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            BenchDatabase::Postgres { name, .. } => format!("PostgreSQL database {name}"),
            BenchDatabase::Sqlite { path, .. } => format!("SQLite file {}", path.display()),
        }
    }

    /// The PostgreSQL database's name, for pgbench.
    pub fn pg_name(&self) -> Option<&str> {
        match self {
            BenchDatabase::Postgres { name, .. } => Some(name),
            BenchDatabase::Sqlite { .. } => None,
        }
    }

    /// A connection for reading back what the run wrote.
    pub async fn inspect(&self) -> anyhow::Result<Inspector> {
        match self {
            BenchDatabase::Postgres { url, name, .. } => Ok(Inspector::Postgres(
                connect_pg(url)
                    .await
                    .with_context(|| format!("connecting to {name}"))?,
            )),
            BenchDatabase::Sqlite { path, .. } => Ok(Inspector::Sqlite(path.clone())),
        }
    }

    /// Drops the database (or deletes the SQLite file); with `keep`, leaves it and says so.
    pub async fn remove(self, keep: bool) -> anyhow::Result<()> {
        if keep {
            match self {
                BenchDatabase::Postgres { url, .. } => eprintln!("load: kept database {url}"),
                BenchDatabase::Sqlite { dir, path } => {
                    let _ = dir.keep();
                    eprintln!("load: kept SQLite file {}", path.display());
                }
            }
            return Ok(());
        }
        match self {
            BenchDatabase::Postgres {
                admin_url, name, ..
            } => {
                let admin = connect_pg(&admin_url).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .with_context(|| format!("dropping database {name}"))?;
            }
            BenchDatabase::Sqlite { dir, .. } => {
                dir.close()
                    .context("removing the SQLite file's temporary directory")?;
            }
        }
        Ok(())
    }
}

/// Connects with tokio-postgres (plain TCP: the bench talks to a loopback server).
pub async fn connect_pg(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("load: a PostgreSQL connection failed: {error}");
        }
    });
    Ok(client)
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let Some(scheme_end) = base.find("://") else {
        bail!("{url} is not a postgres:// URL");
    };
    let authority_end = base[scheme_end + 3..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + 3 + i);
    let mut result = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    Ok(result)
}

/// A task of a bench user, as stored.
#[derive(Debug)]
pub struct StoredTask {
    pub user_id: String,
    pub idempotency_key: Option<String>,
    pub id: String,
    pub completed: bool,
}

/// How many messages of one kind a conversation of a bench user holds.
#[derive(Debug)]
pub struct MessageCount {
    pub user_id: String,
    pub conversation_id: String,
    pub role: String,
    /// For `tool` messages (audit records): the tool and whether the call succeeded.
    pub tool: Option<String>,
    pub ok: Option<bool>,
    pub count: i64,
}

/// A user or assistant message of a bench user.
#[derive(Debug)]
pub struct StoredMessage {
    pub conversation_id: String,
    pub id: i64,
}

// The same SQL runs on both backends: uuids and JSON fields read as text, booleans as 0/1.
const TASKS_SQL: &str = "SELECT user_id, idempotency_key, CAST(id AS TEXT) AS id, \
     CASE WHEN completed THEN 1 ELSE 0 END AS completed \
     FROM tasks WHERE user_id LIKE 'bench-%'";
const MESSAGE_COUNTS_SQL: &str = "SELECT user_id, CAST(conversation_id AS TEXT) AS conversation_id, \
     role, CAST(tool_calls->>'tool' AS TEXT) AS tool, CAST(tool_calls->>'ok' AS TEXT) AS ok, \
     COUNT(*) AS n FROM messages WHERE user_id LIKE 'bench-%' GROUP BY 1, 2, 3, 4, 5";
const APPENDED_MESSAGES_SQL: &str = "SELECT CAST(conversation_id AS TEXT) AS conversation_id, id \
     FROM messages WHERE user_id LIKE 'bench-%' AND role IN ('user', 'assistant')";

/// Reads back what the bench users' calls stored.
pub enum Inspector {
    Postgres(tokio_postgres::Client),
    Sqlite(PathBuf),
}

impl Inspector {
    pub async fn tasks(&self) -> anyhow::Result<Vec<StoredTask>> {
        match self {
            Inspector::Postgres(client) => {
                let rows = client
                    .query(TASKS_SQL, &[])
                    .await
                    .context("reading tasks")?;
                Ok(rows
                    .iter()
                    .map(|row| StoredTask {
                        user_id: row.get(0),
                        idempotency_key: row.get(1),
                        id: row.get(2),
                        completed: row.get::<_, i32>(3) != 0,
                    })
                    .collect())
            }
            Inspector::Sqlite(path) => {
                let rows: Vec<sqlite_rows::Task> = sqlite_rows::load(path, TASKS_SQL).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| StoredTask {
                        user_id: row.user_id,
                        idempotency_key: row.idempotency_key,
                        id: row.id,
                        completed: row.completed != 0,
                    })
                    .collect())
            }
        }
    }

    pub async fn message_counts(&self) -> anyhow::Result<Vec<MessageCount>> {
        match self {
            Inspector::Postgres(client) => {
                let rows = client
                    .query(MESSAGE_COUNTS_SQL, &[])
                    .await
                    .context("counting messages")?;
                Ok(rows
                    .iter()
                    .map(|row| MessageCount {
                        user_id: row.get(0),
                        conversation_id: row.get(1),
                        role: row.get(2),
                        tool: row.get(3),
                        ok: row.get::<_, Option<String>>(4).map(|ok| json_true(&ok)),
                        count: row.get(5),
                    })
                    .collect())
            }
            Inspector::Sqlite(path) => {
                let rows: Vec<sqlite_rows::MessageCount> =
                    sqlite_rows::load(path, MESSAGE_COUNTS_SQL).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| MessageCount {
                        user_id: row.user_id,
                        conversation_id: row.conversation_id,
                        role: row.role,
                        tool: row.tool,
                        ok: row.ok.as_deref().map(json_true),
                        count: row.n,
                    })
                    .collect())
            }
        }
    }

    pub async fn appended_messages(&self) -> anyhow::Result<Vec<StoredMessage>> {
        match self {
            Inspector::Postgres(client) => {
                let rows = client
                    .query(APPENDED_MESSAGES_SQL, &[])
                    .await
                    .context("reading appended messages")?;
                Ok(rows
                    .iter()
                    .map(|row| StoredMessage {
                        conversation_id: row.get(0),
                        id: row.get(1),
                    })
                    .collect())
            }
            Inspector::Sqlite(path) => {
                let rows: Vec<sqlite_rows::Message> =
                    sqlite_rows::load(path, APPENDED_MESSAGES_SQL).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| StoredMessage {
                        conversation_id: row.conversation_id,
                        id: row.id,
                    })
                    .collect())
            }
        }
    }

    /// `SELECT version()` on PostgreSQL, `sqlite_version()` on SQLite.
    pub async fn server_version(&self) -> anyhow::Result<String> {
        match self {
            Inspector::Postgres(client) => {
                let row = client.query_one("SELECT version()", &[]).await?;
                Ok(row.get(0))
            }
            Inspector::Sqlite(path) => {
                let rows: Vec<sqlite_rows::Version> =
                    sqlite_rows::load(path, "SELECT sqlite_version() AS version").await?;
                Ok(rows
                    .into_iter()
                    .next()
                    .map(|row| format!("SQLite {}", row.version))
                    .unwrap_or_default())
            }
        }
    }
}

/// A JSON boolean read as text: PostgreSQL's `->>` gives `true`, SQLite's gives `1`.
fn json_true(text: &str) -> bool {
    matches!(text, "true" | "1")
}

/// SQLite reads through diesel's synchronous connection (the bench's only SQLite driver).
mod sqlite_rows {
    use anyhow::Context;
    use diesel::sql_types::{BigInt, Integer, Nullable, Text};
    use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
    use std::path::{Path, PathBuf};

    #[derive(QueryableByName)]
    pub struct Task {
        #[diesel(sql_type = Text)]
        pub user_id: String,
        #[diesel(sql_type = Nullable<Text>)]
        pub idempotency_key: Option<String>,
        #[diesel(sql_type = Text)]
        pub id: String,
        #[diesel(sql_type = Integer)]
        pub completed: i32,
    }

    #[derive(QueryableByName)]
    pub struct MessageCount {
        #[diesel(sql_type = Text)]
        pub user_id: String,
        #[diesel(sql_type = Text)]
        pub conversation_id: String,
        #[diesel(sql_type = Text)]
        pub role: String,
        #[diesel(sql_type = Nullable<Text>)]
        pub tool: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        pub ok: Option<String>,
        #[diesel(sql_type = BigInt)]
        pub n: i64,
    }

    #[derive(QueryableByName)]
    pub struct Message {
        #[diesel(sql_type = Text)]
        pub conversation_id: String,
        #[diesel(sql_type = BigInt)]
        pub id: i64,
    }

    #[derive(QueryableByName)]
    pub struct Version {
        #[diesel(sql_type = Text)]
        pub version: String,
    }

    pub async fn load<T>(path: &Path, sql: &'static str) -> anyhow::Result<Vec<T>>
    where
        T: QueryableByName<diesel::sqlite::Sqlite> + Send + 'static,
    {
        let path: PathBuf = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let url = path.to_string_lossy().into_owned();
            let mut conn =
                SqliteConnection::establish(&url).with_context(|| format!("opening {url}"))?;
            diesel::sql_query(sql)
                .load::<T>(&mut conn)
                .with_context(|| format!("running `{sql}` on {url}"))
        })
        .await
        .context("the SQLite reader task failed")?
    }
}
