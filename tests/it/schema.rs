//! src/db/schema.rs, the one hand-kept description of the tables for both backends, is
//! what the migrations make: the same tables, the same columns, the same nullability, on
//! PostgreSQL and on SQLite.

use std::collections::BTreeSet;

use crate::support::sql::texts;
use crate::support::{Backend, TestDb, connect_in_process};

/// Tables no query of diesel's names: diesel's own bookkeeping, SQLite's own
/// (`sqlite_sequence` for AUTOINCREMENT), and SQLite's full-text index of messages (its
/// virtual table and the tables FTS5 keeps).
fn is_outside_the_schema(table: &str) -> bool {
    table == "__diesel_schema_migrations"
        || table.starts_with("sqlite_")
        || table.starts_with("messages_fts")
}

/// Columns the migrations make that no query of diesel's names: PostgreSQL's generated
/// search vector (searched in SQL, never read or written as a column).
const OUTSIDE_THE_SCHEMA: &[&str] = &["messages.search_vector"];

/// `table.column: NULL|NOT NULL` for every column of src/db/schema.rs's `table!` blocks.
fn declared() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/db/schema.rs"))
        .expect("read src/db/schema.rs");
    let mut columns = BTreeSet::new();
    let mut table: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some((name, rest)) = line.split_once(" (")
            && rest.ends_with(") {")
            && !name.contains(' ')
        {
            table = Some(name.to_string());
        } else if line == "}" {
            table = None;
        } else if let (Some(table), Some((column, ty))) = (&table, line.split_once(" -> ")) {
            let null = if ty.starts_with("Nullable<") {
                "NULL"
            } else {
                "NOT NULL"
            };
            columns.insert(format!("{table}.{column}: {null}"));
        }
    }
    assert!(
        columns.len() > 50,
        "read too few columns from schema.rs: {columns:?}"
    );
    columns
}

/// The same, from the migrated database.
async fn migrated(db: &TestDb) -> BTreeSet<String> {
    let select = match db.backend() {
        Backend::Postgres => {
            "SELECT table_name || '.' || column_name || ': ' || \
             CASE WHEN is_nullable = 'YES' THEN 'NULL' ELSE 'NOT NULL' END AS j \
             FROM information_schema.columns WHERE table_schema = 'public'"
        }
        // A primary key column is NOT NULL whatever SQLite's table_info says of a non-integer
        // one (the migrations declare them so; SQLite only keeps the flag as written).
        Backend::Sqlite => {
            "SELECT m.name || '.' || p.name || ': ' || \
             CASE WHEN p.\"notnull\" = 1 OR p.pk > 0 THEN 'NOT NULL' ELSE 'NULL' END AS j \
             FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table'"
        }
    };
    texts(db, select)
        .await
        .into_iter()
        .filter(|column| {
            let (table, rest) = column.split_once('.').unwrap_or((column, ""));
            let name = format!("{table}.{}", rest.split(':').next().unwrap_or(""));
            !is_outside_the_schema(table) && !OUTSIDE_THE_SCHEMA.contains(&name.as_str())
        })
        .collect()
}

async fn schema_rs_is_what_the_migrations_make(db: TestDb) {
    // Migrated the way a server migrates at start.
    connect_in_process(db.url(), None, &[]).await.close().await;
    let declared = declared();
    let migrated = migrated(&db).await;
    let missing: Vec<&String> = migrated.difference(&declared).collect();
    let extra: Vec<&String> = declared.difference(&migrated).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "src/db/schema.rs differs from the migrated {} database:\n\
         in the database, not in schema.rs: {missing:#?}\n\
         in schema.rs, not in the database: {extra:#?}",
        db.name()
    );
}

both_backends!(schema_rs_is_what_the_migrations_make);
