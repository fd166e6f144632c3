//! The PostgreSQL schema distributes by user on Citus the way deploy/citus/distribute.sql
//! says (docs/scaling.md), checked against the catalog of a plain PostgreSQL so that a key
//! Citus would refuse fails here, everywhere, not only where a cluster runs:
//!
//! * every table is named in distribute.sql (a new table cannot be forgotten);
//! * every unique key (primary keys included) of a distributed table holds its
//!   distribution column, so uniqueness is checked on one shard;
//! * every foreign key between distributed tables maps distribution column to distribution
//!   column (the rows it joins live on one node), and never sets that column to NULL or a
//!   default on delete (Citus refuses it);
//! * a reference table refers to reference tables only;
//! * the tables a user owns are distributed by `user_id`, co-located with `users`.
//!
//! tests/it/citus.rs runs the tools on a real cluster where one is available.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::PgTestDb;

const DISTRIBUTE_SQL: &str = include_str!("../../deploy/citus/distribute.sql");

/// How distribute.sql places a table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    Reference,
    Distributed {
        column: String,
        colocate_with: Option<String>,
    },
}

/// The placement of every table distribute.sql names, read from its
/// `create_reference_table('t')` and `create_distributed_table('t', 'c'[, colocate_with
/// => 'x'])` calls.
fn placements() -> BTreeMap<String, Placement> {
    let quoted = |text: &str| -> Vec<String> {
        text.split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut placed = BTreeMap::new();
    for line in DISTRIBUTE_SQL.lines().map(str::trim) {
        if line.starts_with("--") {
            continue;
        }
        if let Some(call) = line.strip_prefix("SELECT create_reference_table(") {
            let args = quoted(call);
            placed.insert(args[0].clone(), Placement::Reference);
        } else if let Some(call) = line.strip_prefix("SELECT create_distributed_table(") {
            let args = quoted(call);
            assert!(args.len() >= 2, "unreadable distribution: {line}");
            placed.insert(
                args[0].clone(),
                Placement::Distributed {
                    column: args[1].clone(),
                    colocate_with: args.get(2).cloned(),
                },
            );
        }
    }
    assert!(
        placed.len() >= 10,
        "distribute.sql placed only {placed:?}: is the parse still right?"
    );
    placed
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of names, got {value}"))
        .iter()
        .map(|name| name.as_str().unwrap_or("?").to_owned())
        .collect()
}

/// What is wrong with `db`'s schema for distribution as distribute.sql places it: one line
/// per problem, empty when it distributes.
async fn distribution_problems(db: &PgTestDb) -> Vec<String> {
    let placed = placements();
    let mut problems = Vec::new();

    let tables = db
        .query_json(
            "SELECT relname AS name, \
                    EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid \
                            AND a.attname = 'user_id' AND NOT a.attisdropped) AS has_user_id \
             FROM pg_class c \
             WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') \
               AND relname <> '__diesel_schema_migrations'",
        )
        .await;
    for table in &tables {
        let name = table["name"].as_str().unwrap_or("?");
        match placed.get(name) {
            None => problems.push(format!(
                "table {name} is not placed in deploy/citus/distribute.sql"
            )),
            Some(Placement::Distributed {
                column,
                colocate_with,
            }) if table["has_user_id"] == true && name != "mcp_sessions" => {
                if column != "user_id" || colocate_with.as_deref() != Some("users") {
                    problems.push(format!(
                        "{name} holds a user's rows: distribute it by user_id, co-located \
                         with users (it is by {column}, with {colocate_with:?})"
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for name in placed.keys() {
        if !tables.iter().any(|t| t["name"] == name.as_str()) {
            problems.push(format!(
                "distribute.sql places {name}, which does not exist"
            ));
        }
    }
    let column_of = |table: &str| match placed.get(table) {
        Some(Placement::Distributed { column, .. }) => Some(column.as_str()),
        _ => None,
    };

    // Unique indexes, primary keys and unique constraints among them.
    let uniques = db
        .query_json(
            "SELECT i.indexrelid::regclass::text AS name, i.indrelid::regclass::text AS tbl, \
                    ARRAY(SELECT coalesce(a.attname::text, '(expression)') \
                          FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
                          LEFT JOIN pg_attribute a \
                            ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) AS cols \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             WHERE c.relnamespace = 'public'::regnamespace AND i.indisunique \
               AND c.relname <> '__diesel_schema_migrations'",
        )
        .await;
    for unique in &uniques {
        let table = unique["tbl"].as_str().unwrap_or("?");
        let cols = strings(&unique["cols"]);
        if let Some(column) = column_of(table)
            && !cols.iter().any(|c| c == column)
        {
            problems.push(format!(
                "unique index {} on {table} {cols:?} lacks the distribution column {column}",
                unique["name"]
            ));
        }
    }

    // Foreign keys, column by column in key order.
    let foreign = db
        .query_json(
            "SELECT c.conname AS name, c.conrelid::regclass::text AS tbl, \
                    c.confrelid::regclass::text AS ref, c.confdeltype::text AS on_delete, \
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o) \
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n \
                          ORDER BY k.o) AS cols, \
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(n, o) \
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n \
                          ORDER BY k.o) AS ref_cols \
             FROM pg_constraint c \
             WHERE c.connamespace = 'public'::regnamespace AND c.contype = 'f'",
        )
        .await;
    for key in &foreign {
        let name = key["name"].as_str().unwrap_or("?");
        let (table, referenced) = (
            key["tbl"].as_str().unwrap_or("?"),
            key["ref"].as_str().unwrap_or("?"),
        );
        let (cols, ref_cols) = (strings(&key["cols"]), strings(&key["ref_cols"]));
        match (placed.get(table), placed.get(referenced)) {
            (Some(Placement::Reference), Some(Placement::Reference)) => {}
            (Some(Placement::Reference), _) => problems.push(format!(
                "{name}: reference table {table} refers to {referenced}, which is not one"
            )),
            (Some(Placement::Distributed { .. }), Some(Placement::Reference)) => {}
            (Some(Placement::Distributed { column, .. }), Some(Placement::Distributed { .. })) => {
                let ref_column = column_of(referenced).unwrap_or("?");
                let maps = cols
                    .iter()
                    .zip(&ref_cols)
                    .any(|(from, to)| from == column && to == ref_column);
                if !maps {
                    problems.push(format!(
                        "{name}: {table} {cols:?} -> {referenced} {ref_cols:?} does not map \
                         {table}.{column} to {referenced}.{ref_column}"
                    ));
                }
                // confdeltype: a no action, r restrict, c cascade, n set null, d set default.
                let on_delete = key["on_delete"].as_str().unwrap_or("?");
                if matches!(on_delete, "n" | "d") {
                    problems.push(format!(
                        "{name}: ON DELETE SET NULL/DEFAULT on a key holding {column} (Citus \
                         refuses it)"
                    ));
                }
            }
            _ => {} // Unplaced tables are reported above.
        }
    }
    problems
}

/// The migrated schema distributes as distribute.sql says.
#[tokio::test(flavor = "multi_thread")]
async fn every_key_of_a_user_owned_table_holds_its_distribution_column() {
    let db = PgTestDb::new().await;
    let problems = distribution_problems(&db).await;
    assert!(
        problems.is_empty(),
        "the schema would not distribute by user on Citus:\n{}",
        problems.join("\n")
    );
}

/// The check can fail: the schema before the distribution keys (one migration back) has the
/// keys Citus refused in the trial the issue reports.
#[tokio::test(flavor = "multi_thread")]
async fn the_schema_before_the_distribution_keys_is_refused() {
    let db = PgTestDb::new().await;
    // Down to just before the migration that made them, whatever came after it.
    let distribution_keys_applied = || {
        let out = crate::support::todo_mcp(&["migrate", "status"], &[("DATABASE_URL", db.url())]);
        crate::support::assert_success(&out, "todo-mcp migrate status");
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = status
            .lines()
            .find(|line| line.ends_with("_distribution_keys"))
            .unwrap_or_else(|| panic!("no distribution_keys migration in\n{status}"))
            .to_owned();
        line.starts_with("applied")
    };
    while distribution_keys_applied() {
        let out = crate::support::todo_mcp(&["migrate", "down"], &[("DATABASE_URL", db.url())]);
        crate::support::assert_success(&out, "todo-mcp migrate down");
    }
    let problems = distribution_problems(&db).await.join("\n");
    for expected in [
        "unique index \"tasks_pkey\" on tasks [\"id\"] lacks the distribution column user_id",
        "conversations_summary_through_message_fkey",
        "api_tokens_user_id_fkey: reference table api_tokens refers to users",
    ] {
        assert!(
            problems.contains(expected),
            "expected a problem mentioning {expected:?}, got:\n{problems}"
        );
    }
}
