//! Plain SQL on a test database of either backend, for checks that read or change rows
//! behind the server's back.

use super::TestDb;
use serde_json::Value;

mod sqlite_sql {
    use std::path::Path;

    use diesel::connection::SimpleConnection;
    use diesel::sql_types::{Nullable, Text};
    use diesel::sqlite::SqliteConnection;
    use diesel::{Connection, QueryableByName, RunQueryDsl};

    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Nullable<Text>)]
        j: Option<String>,
    }

    fn open(path: &Path) -> SqliteConnection {
        let url = path.to_str().expect("UTF-8 SQLite path");
        let mut conn = SqliteConnection::establish(url)
            .unwrap_or_else(|e| panic!("could not open SQLite database {url}: {e}"));
        conn.batch_execute("PRAGMA busy_timeout = 10000")
            .expect("set busy_timeout");
        conn
    }

    /// Runs `select`, whose one column is named `j`, and returns that column (NULL as "").
    pub fn texts(path: &Path, select: &str) -> Vec<String> {
        let mut conn = open(path);
        let rows: Vec<Row> = diesel::sql_query(select)
            .load(&mut conn)
            .unwrap_or_else(|e| panic!("`{select}` on {} failed: {e}", path.display()));
        rows.into_iter().map(|r| r.j.unwrap_or_default()).collect()
    }

    pub fn execute(path: &Path, statements: &str) {
        let mut conn = open(path);
        conn.batch_execute(statements)
            .unwrap_or_else(|e| panic!("SQL on {} failed: {e}\nSQL: {statements}", path.display()));
    }
}

/// Runs a SELECT whose one column is named `j`, returning that column as text.
pub async fn texts(db: &TestDb, select: &str) -> Vec<String> {
    match db {
        TestDb::Pg(pg) => pg
            .query_json(select)
            .await
            .into_iter()
            .map(|row| match &row["j"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect(),
        TestDb::Sqlite(sqlite) => {
            let path = sqlite.path().to_path_buf();
            let select = select.to_owned();
            tokio::task::spawn_blocking(move || sqlite_sql::texts(&path, &select))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
    }
}

pub async fn execute(db: &TestDb, statements: &str) {
    match db {
        TestDb::Pg(pg) => pg.execute(statements).await,
        TestDb::Sqlite(sqlite) => {
            let path = sqlite.path().to_path_buf();
            let statements = statements.to_owned();
            tokio::task::spawn_blocking(move || sqlite_sql::execute(&path, &statements))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
    }
}

/// An API token of `user`'s that has already expired, for tests of refusals: issued for a
/// day under the name `name` (`token create` refuses a lifetime under a day), then its
/// expiry moved 30 years back in the database.
pub async fn create_expired_token(db: &TestDb, user: &str, name: &str) -> String {
    let token =
        super::cli::create_token_with(db.url(), user, &["--expires-in", "1", "--name", name]);
    let name = name.replace('\'', "''");
    let expire = expire_tokens(db.backend(), &format!("name = '{name}'"));
    execute(db, &expire).await;
    token
}

/// SQL moving the expiry of the API tokens `condition` selects 30 years back, so that they
/// have expired.
pub fn expire_tokens(backend: super::Backend, condition: &str) -> String {
    match backend {
        super::Backend::Postgres => format!(
            "UPDATE api_tokens SET expires_at = expires_at - interval '30 years' \
             WHERE {condition}"
        ),
        // Stored as text that starts with the year.
        super::Backend::Sqlite => format!(
            "UPDATE api_tokens SET expires_at = \
             printf('%04d', substr(expires_at, 1, 4) - 30) || substr(expires_at, 5) \
             WHERE {condition}"
        ),
    }
}
