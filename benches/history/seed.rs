//! Seeding the bench user's data with bulk SQL (`INSERT … SELECT` over a generated series),
//! straight into the database the server uses, in stages that only grow.
//!
//! The rows look like the server's own: conversation ids are UUIDv7 (a millisecond
//! timestamp, then random bits), so "newest first" orders them as it would; messages get
//! their ids from the table's identity (PostgreSQL) or AUTOINCREMENT (SQLite); timestamps
//! are in each backend's stored form. The long conversation alternates user and assistant
//! messages, with every fifth message a `tool` record of an `add_task` call naming it (as
//! task tools record into the conversation they name); every other conversation gets a
//! few user and assistant messages of its own.

use crate::database::{BenchDatabase, connect_pg};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The bench's one user (the `bench-` prefix marks bench users, as in `load`).
pub const USER: &str = "bench-history";
/// The title of the long conversation, whose history is read.
const LONG_TITLE: &str = "History bench: the long conversation";
const USER_TEXT: &str = "Please remember that I need to buy oat milk, and tell me what is \
     still pending on my list before Friday.";
const ASSISTANT_TEXT: &str = "Noted: I added that to your list. You still have the pending \
     tasks shown above; I will remind you about them before Friday, and mark each one done \
     as soon as you tell me it is finished.";
/// Seeded rows are dated from this long before the run on.
const SEEDED_SINCE: Duration = Duration::from_secs(60 * 24 * 3600);

/// The seeded data after a stage.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// The long conversation's id.
    pub long_conversation: String,
    /// Its first and last message ids, and how many messages it holds.
    pub first_message: i64,
    pub last_message: i64,
    pub messages: i64,
    /// The user's active conversations (the seeded ones and the two activity logs).
    pub conversations: i64,
    /// Rows in `messages` (every user's, audit records of earlier stages included).
    pub all_messages: i64,
    /// How long this stage's seeding took (inserts, and VACUUM ANALYZE on PostgreSQL).
    pub took: Duration,
}

enum Target {
    Postgres(tokio_postgres::Client),
    Sqlite(PathBuf),
}

/// Grows the bench user's data stage by stage.
pub struct Seeder {
    target: Target,
    /// Conversation ids are `base_ms + n` milliseconds for the n-th seeded conversation
    /// (0: the long one), so later stages' conversations are newer.
    base_ms: i64,
    conversations: u64,
    messages: u64,
    long_conversation: Option<String>,
}

impl Seeder {
    pub async fn new(database: &BenchDatabase) -> anyhow::Result<Self> {
        let target = match database {
            BenchDatabase::Postgres { url, .. } => Target::Postgres(
                connect_pg(url)
                    .await
                    .context("connecting to seed the database")?,
            ),
            BenchDatabase::Sqlite { path, .. } => Target::Sqlite(path.clone()),
        };
        let since = chrono::Utc::now() - chrono::Duration::from_std(SEEDED_SINCE)?;
        Ok(Seeder {
            target,
            base_ms: since.timestamp_millis(),
            conversations: 0,
            messages: 0,
            long_conversation: None,
        })
    }

    /// Grows the data to `messages` in the long conversation and `conversations` seeded
    /// conversations (the long one included), each other new one with `per_conversation`
    /// messages.
    pub async fn grow_to(
        &mut self,
        messages: u64,
        conversations: u64,
        per_conversation: u64,
    ) -> anyhow::Result<Seeded> {
        if messages < self.messages || conversations < self.conversations || conversations == 0 {
            bail!("stages must grow: at least one conversation, and never fewer than before");
        }
        let started = Instant::now();
        let postgres = matches!(self.target, Target::Postgres(_));
        let long = match &self.long_conversation {
            Some(id) => id.clone(),
            None => {
                self.execute(&format!(
                    "{};\n",
                    conversations_sql(postgres, self.base_ms, 0, 0)
                ))
                .await?;
                self.conversations = 1;
                let id = self.long_conversation_id().await?;
                self.long_conversation = Some(id.clone());
                id
            }
        };
        let mut sql = String::new();
        if conversations > self.conversations {
            let newest = self.newest_seeded().await?;
            sql += &conversations_sql(
                postgres,
                self.base_ms,
                self.conversations,
                conversations - 1,
            );
            sql += ";\n";
            if per_conversation > 0 {
                sql += &other_messages_sql(postgres, &newest, per_conversation);
                sql += ";\n";
            }
        }
        if messages > self.messages {
            sql += &long_messages_sql(
                postgres,
                &long,
                self.base_ms / 1000,
                self.messages + 1,
                messages,
            );
            sql += ";\n";
        }
        if !sql.is_empty() {
            self.execute(&sql).await?;
        }
        if let Target::Postgres(client) = &self.target {
            // As autovacuum would have by now: statistics, visibility map, hint bits.
            client
                .batch_execute("VACUUM (ANALYZE) messages, conversations")
                .await
                .context("VACUUM ANALYZE after seeding")?;
        }
        self.conversations = conversations;
        self.messages = messages;
        let mut seeded = self.read_back(&long).await?;
        seeded.took = started.elapsed();
        if seeded.messages != messages as i64 {
            bail!(
                "the long conversation holds {} messages after seeding, not {messages}",
                seeded.messages
            );
        }
        Ok(seeded)
    }

    /// Runs the statements in one transaction.
    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        match &self.target {
            Target::Postgres(client) => client
                .batch_execute(&format!("BEGIN;\n{sql}COMMIT;"))
                .await
                .with_context(|| format!("seeding with:\n{sql}")),
            Target::Sqlite(path) => {
                let sql = format!("BEGIN IMMEDIATE;\n{sql}COMMIT;");
                sqlite::execute(path.clone(), sql).await
            }
        }
    }

    async fn long_conversation_id(&self) -> anyhow::Result<String> {
        let sql = format!(
            "SELECT CAST(id AS TEXT) AS value FROM conversations \
             WHERE user_id = '{USER}' AND title = '{LONG_TITLE}'"
        );
        self.text(&sql).await
    }

    /// The id of the newest seeded conversation: the ones seeded next sort after it.
    async fn newest_seeded(&self) -> anyhow::Result<String> {
        let sql = format!(
            "SELECT CAST(id AS TEXT) AS value FROM conversations WHERE user_id = '{USER}' \
             ORDER BY id DESC LIMIT 1"
        );
        self.text(&sql).await
    }

    async fn text(&self, sql: &str) -> anyhow::Result<String> {
        match &self.target {
            Target::Postgres(client) => {
                let row = client.query_one(sql, &[]).await.context("reading back")?;
                Ok(row.get(0))
            }
            Target::Sqlite(path) => sqlite::text(path.clone(), sql.to_owned()).await,
        }
    }

    async fn read_back(&self, long: &str) -> anyhow::Result<Seeded> {
        let literal = uuid_literal(matches!(self.target, Target::Postgres(_)), long);
        let sql = format!(
            "SELECT \
               (SELECT COALESCE(min(id), 0) FROM messages WHERE conversation_id = {literal}) AS a, \
               (SELECT COALESCE(max(id), 0) FROM messages WHERE conversation_id = {literal}) AS b, \
               (SELECT count(*) FROM messages WHERE conversation_id = {literal}) AS c, \
               (SELECT count(*) FROM conversations \
                 WHERE user_id = '{USER}' AND status = 'active') AS d, \
               (SELECT count(*) FROM messages) AS e"
        );
        let [first, last, messages, conversations, all] = match &self.target {
            Target::Postgres(client) => {
                let row = client.query_one(&sql, &[]).await.context("reading back")?;
                [row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)]
            }
            Target::Sqlite(path) => sqlite::five_numbers(path.clone(), sql).await?,
        };
        Ok(Seeded {
            long_conversation: long.to_owned(),
            first_message: first,
            last_message: last,
            messages,
            conversations,
            all_messages: all,
            took: Duration::ZERO,
        })
    }
}

fn uuid_literal(postgres: bool, id: &str) -> String {
    if postgres {
        format!("'{id}'::uuid")
    } else {
        format!("'{id}'")
    }
}

/// Seeded conversations `from..=to`: number n is dated `base_ms + n` ms and its id is a
/// UUIDv7 of that time.
fn conversations_sql(postgres: bool, base_ms: i64, from: u64, to: u64) -> String {
    let title = format!("CASE WHEN g = 0 THEN '{LONG_TITLE}' ELSE 'Conversation ' || g END");
    if postgres {
        format!(
            "INSERT INTO conversations (id, user_id, title, status, created_at, updated_at) \
             SELECT (lpad(to_hex({base_ms} + g), 12, '0') || '7' \
                     || substr(md5(random()::text), 1, 3) || '8' \
                     || substr(md5(random()::text), 1, 15))::uuid, \
                    '{USER}', {title}, 'active', \
                    to_timestamp(({base_ms} + g) / 1000.0), to_timestamp(({base_ms} + g) / 1000.0) \
             FROM generate_series({from}::bigint, {to}::bigint) AS g ORDER BY g"
        )
    } else {
        format!(
            "WITH RECURSIVE s(g) AS (SELECT {from} UNION ALL SELECT g + 1 FROM s WHERE g < {to}), \
             t(g, ms, at) AS (SELECT g, {base_ms} + g, \
                 strftime('%Y-%m-%d %H:%M:%f', ({base_ms} + g) / 1000.0, 'unixepoch') || '+00:00' \
                 FROM s) \
             INSERT INTO conversations (id, user_id, title, status, created_at, updated_at) \
             SELECT printf('%08x-%04x-7%03x-%04x-%012x', ms / 65536, ms % 65536, \
                           random() & 4095, 32768 + (random() & 16383), \
                           random() & 281474976710655), \
                    '{USER}', {title}, 'active', at, at \
             FROM t ORDER BY g"
        )
    }
}

/// `per_conversation` user and assistant messages in each seeded conversation newer than
/// `newest` (the ones just added).
fn other_messages_sql(postgres: bool, newest: &str, per_conversation: u64) -> String {
    let role = "CASE WHEN k % 2 = 1 THEN 'user' ELSE 'assistant' END";
    let content = format!(
        "'Message ' || k || ' of ' || c.title || '. ' || \
         CASE WHEN k % 2 = 1 THEN '{USER_TEXT}' ELSE '{ASSISTANT_TEXT}' END"
    );
    let newest = uuid_literal(postgres, newest);
    if postgres {
        format!(
            "INSERT INTO messages (conversation_id, user_id, role, content, created_at) \
             SELECT c.id, c.user_id, {role}, {content}, c.created_at \
             FROM conversations c CROSS JOIN generate_series(1, {per_conversation}) AS k \
             WHERE c.user_id = '{USER}' AND c.id > {newest} ORDER BY c.id, k"
        )
    } else {
        format!(
            "WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s \
                 WHERE k < {per_conversation}) \
             INSERT INTO messages (conversation_id, user_id, role, content, created_at) \
             SELECT c.id, c.user_id, {role}, {content}, c.created_at \
             FROM conversations c CROSS JOIN s \
             WHERE c.user_id = '{USER}' AND c.id > {newest} ORDER BY c.id, s.k"
        )
    }
}

/// Messages `from..=to` of the long conversation, one second apart.
fn long_messages_sql(postgres: bool, long: &str, base_s: i64, from: u64, to: u64) -> String {
    let role = "CASE WHEN g % 5 = 0 THEN 'tool' WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END";
    // Every fifth message is the server's record of a call.
    let kind = "CASE WHEN g % 5 = 0 THEN 'call_record' ELSE 'message' END";
    let content = format!(
        "CASE WHEN g % 5 = 0 THEN 'add_task succeeded' \
         WHEN g % 2 = 1 THEN 'Turn ' || g || '. {USER_TEXT}' \
         ELSE 'Turn ' || g || '. {ASSISTANT_TEXT}' END"
    );
    let title = "'Task ' || g || ': buy oat milk'";
    if postgres {
        format!(
            "INSERT INTO messages (conversation_id, user_id, role, kind, content, tool_calls, created_at) \
             SELECT '{long}'::uuid, '{USER}', {role}, {kind}, {content}, \
                CASE WHEN g % 5 = 0 THEN jsonb_build_object( \
                    'tool', 'add_task', \
                    'arguments', jsonb_build_object('conversation_id', '{long}', 'title', {title}), \
                    'ok', true, \
                    'result', jsonb_build_object('task', jsonb_build_object( \
                        'id', md5(g::text)::uuid::text, 'title', {title}, 'completed', false)), \
                    'duration_ms', 0.8) END, \
                to_timestamp({base_s} + g) \
             FROM generate_series({from}::bigint, {to}::bigint) AS g ORDER BY g"
        )
    } else {
        format!(
            "WITH RECURSIVE s(g) AS (SELECT {from} UNION ALL SELECT g + 1 FROM s WHERE g < {to}) \
             INSERT INTO messages (conversation_id, user_id, role, kind, content, tool_calls, created_at) \
             SELECT '{long}', '{USER}', {role}, {kind}, {content}, \
                CASE WHEN g % 5 = 0 THEN json_object( \
                    'tool', 'add_task', \
                    'arguments', json_object('conversation_id', '{long}', 'title', {title}), \
                    'ok', json('true'), \
                    'result', json_object('task', json_object( \
                        'id', lower(hex(randomblob(16))), 'title', {title}, \
                        'completed', json('false'))), \
                    'duration_ms', 0.8) END, \
                strftime('%Y-%m-%d %H:%M:%f', {base_s} + g, 'unixepoch') || '+00:00' \
             FROM s ORDER BY g"
        )
    }
}

/// SQLite through diesel's synchronous connection, on a blocking thread.
mod sqlite {
    use anyhow::Context;
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::{BigInt, Text};
    use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
    use std::path::PathBuf;

    #[derive(QueryableByName)]
    struct TextRow {
        #[diesel(sql_type = Text)]
        value: String,
    }

    #[derive(QueryableByName)]
    struct Numbers {
        #[diesel(sql_type = BigInt)]
        a: i64,
        #[diesel(sql_type = BigInt)]
        b: i64,
        #[diesel(sql_type = BigInt)]
        c: i64,
        #[diesel(sql_type = BigInt)]
        d: i64,
        #[diesel(sql_type = BigInt)]
        e: i64,
    }

    async fn with_connection<T: Send + 'static>(
        path: PathBuf,
        work: impl FnOnce(&mut SqliteConnection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        tokio::task::spawn_blocking(move || {
            let url = path.to_string_lossy().into_owned();
            let mut conn =
                SqliteConnection::establish(&url).with_context(|| format!("opening {url}"))?;
            conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")?;
            work(&mut conn)
        })
        .await
        .context("the SQLite seeding task failed")?
    }

    pub async fn execute(path: PathBuf, sql: String) -> anyhow::Result<()> {
        with_connection(path, move |conn| {
            conn.batch_execute(&sql)
                .with_context(|| format!("seeding with:\n{sql}"))
        })
        .await
    }

    pub async fn text(path: PathBuf, sql: String) -> anyhow::Result<String> {
        with_connection(path, move |conn| {
            let row: TextRow = diesel::sql_query(&sql)
                .get_result(conn)
                .with_context(|| format!("running {sql}"))?;
            Ok(row.value)
        })
        .await
    }

    pub async fn five_numbers(path: PathBuf, sql: String) -> anyhow::Result<[i64; 5]> {
        with_connection(path, move |conn| {
            let row: Numbers = diesel::sql_query(&sql)
                .get_result(conn)
                .with_context(|| format!("running {sql}"))?;
            Ok([row.a, row.b, row.c, row.d, row.e])
        })
        .await
    }
}
