//! Defense in depth: PostgreSQL row-level security confines every transaction to the user it
//! names (`SET LOCAL todo.user_id`), so even a query that forgot its `user_id` filter reads and
//! changes only that user's rows.
//!
//! Superusers bypass row-level security, so everything here runs as a least-privilege role
//! (`todo_mcp_rls_app`: LOGIN, no superuser, no BYPASSRLS, table rights only), the way a
//! production server should connect. The tests create that role on the server if missing.

use crate::support;

use serde_json::{Value, json};
use support::pg::{PgTestDb, connect, database_url};
use support::reliability::{self, Evidence};
use support::{McpClient, connect_stdio, create_token};
use tokio_postgres::Client;

const APP_ROLE: &str = "todo_mcp_rls_app";

/// Tables holding user rows, which must all be policed (`user_id` column, RLS forced).
const USER_TABLES: [&str; 8] = [
    "agent_states",
    "conversations",
    "failure_budgets",
    "messages",
    "task_labels",
    "task_requests",
    "tasks",
    "turns",
];
/// Tables with a `user_id` that are read before the caller is known, so stay unpoliced.
const IDENTITY_TABLES: [&str; 2] = ["api_tokens", "mcp_sessions"];

/// Creates the app role if missing (the role is cluster-wide; concurrent test processes may
/// race to create it) and grants it table rights in `db` only.
async fn grant_app_role(db: &PgTestDb) {
    let admin = db.client().await;
    let create = format!(
        "DO $$ BEGIN
             CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    );
    admin
        .batch_execute(&create)
        .await
        .unwrap_or_else(|e| panic!("creating role {APP_ROLE}: {e}"));
    let grants = format!(
        "GRANT USAGE ON SCHEMA public TO {APP_ROLE};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};"
    );
    admin
        .batch_execute(&grants)
        .await
        .unwrap_or_else(|e| panic!("granting {APP_ROLE} rights: {e}"));
    let row = admin
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1",
            &[&APP_ROLE],
        )
        .await
        .expect("reading the app role");
    let (superuser, bypass): (bool, bool) = (row.get(0), row.get(1));
    assert!(
        !superuser && !bypass,
        "{APP_ROLE} must be subject to row-level security (superuser {superuser}, bypassrls {bypass})"
    );
}

/// `db`'s URL with the app role as its user.
fn app_url(db: &PgTestDb) -> String {
    let url = database_url(db.admin_url(), db.name());
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{APP_ROLE}@{host}")
}

/// A server for `user` that connects to PostgreSQL as the app role.
async fn serve_as_app(db: &PgTestDb, user: &str) -> McpClient {
    let token = create_token(db.url(), user);
    connect_stdio(
        &app_url(db),
        Some(&token),
        &[("TODO_MCP_NO_MIGRATE", "true")],
    )
    .await
}

/// Gives `client`'s user a conversation with two messages, an agent state and a turn kept
/// for retries, and two tasks, one completed, one added under an idempotency key.
async fn populate(client: &McpClient, who: &str) -> String {
    let started = client
        .call_ok(
            "start_conversation",
            json!({ "title": format!("{who}'s plans") }),
        )
        .await;
    let conversation = started["conversation"]["id"]
        .as_str()
        .expect("start_conversation returns an id")
        .to_owned();
    for content in [format!("hello from {who}"), format!("{who} again")] {
        client
            .call_ok(
                "append_message",
                json!({ "conversation_id": conversation, "role": "user", "content": content }),
            )
            .await;
    }
    client
        .call_ok(
            "commit_turn",
            json!({ "conversation_id": conversation, "state": { "who": who },
                    "idempotency_key": format!("{who}-turn") }),
        )
        .await;
    let first = client
        .call_ok(
            "add_task",
            json!({ "title": format!("{who}: first"), "conversation_id": conversation,
                    "labels": [who, "shared"] }),
        )
        .await;
    client
        .call_ok(
            "add_task",
            json!({ "title": format!("{who}: second"), "idempotency_key": format!("{who}-task") }),
        )
        .await;
    client
        .call_ok("complete_task", json!({ "task_id": first["task"]["id"] }))
        .await;
    // A failure, recorded and counted against the hour's budget (`failure_budgets`).
    client
        .call_err("complete_task", json!({ "task_id": "not a task" }))
        .await;
    conversation
}

/// Rows of `table` per user, as the admin (no row-level security) sees them.
async fn rows_per_user(admin: &Client, table: &str) -> Vec<(String, i64)> {
    let sql = format!("SELECT user_id, count(*) FROM {table} GROUP BY user_id ORDER BY user_id");
    admin
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The user ids an unscoped `SELECT user_id FROM table` returns inside a transaction that
/// names `scope` (or no user at all).
async fn visible_owners(app: &mut Client, table: &str, scope: Option<&str>) -> Vec<String> {
    let tx = app.transaction().await.expect("BEGIN as the app role");
    if let Some(user) = scope {
        tx.execute("SELECT set_config('todo.user_id', $1, true)", &[&user])
            .await
            .expect("naming the transaction's user");
    }
    // Deliberately unscoped: no WHERE user_id = ….
    let sql = format!("SELECT user_id FROM {table}");
    let owners = tx
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    tx.rollback().await.expect("ROLLBACK");
    owners
}

#[tokio::test(flavor = "multi_thread")]
async fn unscoped_queries_see_and_change_only_the_named_users_rows() {
    let db = PgTestDb::new().await;
    grant_app_role(&db).await;

    // The tools themselves work under row-level security: every transaction names its user.
    let alice = serve_as_app(&db, "alice").await;
    let bob = serve_as_app(&db, "bob").await;
    let alice_conversation = populate(&alice, "alice").await;
    populate(&bob, "bob").await;
    let listed = alice.call_ok("list_tasks", json!({})).await;
    assert_eq!(
        listed["tasks"].as_array().map(Vec::len),
        Some(2),
        "alice's tasks: {listed}"
    );
    alice.close().await;
    bob.close().await;

    let admin = db.client().await;
    let mut app = connect(&app_url(&db)).await;
    let mut cases = 0;
    let mut foreign_rows_seen = 0;
    for table in USER_TABLES {
        let truth = rows_per_user(&admin, table).await;
        let count_of = |user: &str| {
            truth
                .iter()
                .find(|(owner, _)| owner == user)
                .map_or(0, |(_, n)| *n as usize)
        };
        assert!(
            count_of("alice") > 0 && count_of("bob") > 0,
            "{table} should hold rows of both users: {truth:?}"
        );

        for user in ["alice", "bob"] {
            let owners = visible_owners(&mut app, table, Some(user)).await;
            cases += 1;
            foreign_rows_seen += owners.iter().filter(|owner| *owner != user).count();
            assert!(
                owners.iter().all(|owner| owner == user),
                "an unscoped SELECT on {table} as {user} returned other users' rows: {owners:?}"
            );
            assert_eq!(
                owners.len(),
                count_of(user),
                "an unscoped SELECT on {table} as {user} must return all of {user}'s rows"
            );
        }
        let unnamed = visible_owners(&mut app, table, None).await;
        cases += 1;
        foreign_rows_seen += unnamed.len();
        assert!(
            unnamed.is_empty(),
            "a transaction naming no user must see no {table} rows, saw {unnamed:?}"
        );
    }

    // Unscoped writes: as alice, change and delete "everything"; bob's rows stay as they were.
    let bob_before = admin
        .query(
            "SELECT id::text, title FROM tasks WHERE user_id = 'bob' ORDER BY id",
            &[],
        )
        .await
        .expect("reading bob's tasks");
    let bob_messages_before = rows_per_user(&admin, "messages").await;
    let tx = app.transaction().await.expect("BEGIN");
    tx.execute("SELECT set_config('todo.user_id', 'alice', true)", &[])
        .await
        .expect("naming alice");
    let updated = tx
        .execute("UPDATE tasks SET title = 'rewritten'", &[])
        .await
        .expect("unscoped UPDATE");
    let deleted = tx
        .execute("DELETE FROM messages WHERE role = 'user'", &[])
        .await
        .expect("unscoped DELETE");
    // A row claiming to be bob's is refused outright (the policy's WITH CHECK).
    let forged = tx
        .execute(
            "INSERT INTO tasks (id, user_id, title) VALUES (gen_random_uuid(), 'bob', 'planted')",
            &[],
        )
        .await;
    cases += 3;
    assert!(
        forged.is_err(),
        "alice's transaction inserted a task for bob"
    );
    let forged_error = forged.err().map(|e| e.to_string()).unwrap_or_default();
    drop(tx); // rolled back: the INSERT's failure aborted the transaction
    assert_eq!(
        updated, 2,
        "the unscoped UPDATE must reach exactly alice's 2 tasks"
    );
    assert_eq!(
        deleted, 2,
        "the unscoped DELETE must reach exactly alice's 2 user messages"
    );

    // Same writes again, committed this time (without the forged insert).
    let tx = app.transaction().await.expect("BEGIN");
    tx.execute("SELECT set_config('todo.user_id', 'alice', true)", &[])
        .await
        .expect("naming alice");
    tx.execute("UPDATE tasks SET title = 'rewritten'", &[])
        .await
        .expect("unscoped UPDATE");
    tx.execute(
        "DELETE FROM messages WHERE conversation_id = $1::text::uuid",
        &[&alice_conversation],
    )
    .await
    .expect("DELETE of alice's conversation's messages");
    tx.commit().await.expect("COMMIT");
    let bob_after = admin
        .query(
            "SELECT id::text, title FROM tasks WHERE user_id = 'bob' ORDER BY id",
            &[],
        )
        .await
        .expect("reading bob's tasks");
    let as_pairs = |rows: &[tokio_postgres::Row]| {
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        as_pairs(&bob_before),
        as_pairs(&bob_after),
        "bob's tasks changed"
    );
    let bob_count = |rows: &[(String, i64)]| rows.iter().find(|(u, _)| u == "bob").map(|(_, n)| *n);
    assert_eq!(
        bob_count(&bob_messages_before),
        bob_count(&rows_per_user(&admin, "messages").await),
        "bob's messages changed"
    );

    reliability::record(Evidence {
        class: "unscoped queries under row-level security",
        test: "tests/it/row_level_security.rs",
        cases,
        clear_errors: cases,
        writes_lost: 0,
        cross_user: foreign_rows_seen,
        outcome: &format!(
            "only the named user's rows visible or changed; a forged owner refused ({})",
            forged_error.lines().next().unwrap_or("")
        ),
    });
}

/// Every table with a `user_id` column is either policed (RLS enabled and forced, with a
/// policy) or one of the identity tables read before a user is known: a new user table
/// cannot be added without a policy.
#[tokio::test(flavor = "multi_thread")]
async fn every_user_table_is_policed() {
    let db = PgTestDb::new().await;
    let rows = db
        .query_json(
            "SELECT c.relname AS table_name, c.relrowsecurity AS enabled,
                    c.relforcerowsecurity AS forced,
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'user_id' AND NOT a.attisdropped
             WHERE c.relkind = 'r'
             ORDER BY c.relname",
        )
        .await;
    let mut policed = Vec::new();
    for row in &rows {
        let table = row["table_name"].as_str().expect("table name");
        if IDENTITY_TABLES.contains(&table) {
            continue;
        }
        assert_eq!(
            (row["enabled"].clone(), row["forced"].clone()),
            (Value::Bool(true), Value::Bool(true)),
            "table {table} has user rows but row-level security is not enabled and forced: {row}"
        );
        assert!(
            row["policies"].as_i64().unwrap_or(0) >= 1,
            "table {table} has no policy: {row}"
        );
        policed.push(table.to_owned());
    }
    assert_eq!(policed, USER_TABLES.map(str::to_owned), "policed tables");
}

/// A server connected as a superuser (or a BYPASSRLS role) says on stderr that row-level
/// security does not apply to it; one connected as an ordinary role says nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_warns_when_its_role_bypasses_row_security() {
    const WARNING: &str = "is a superuser or has BYPASSRLS";
    let db = PgTestDb::new().await;
    grant_app_role(&db).await;
    let admin = db.client().await;
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("reading the test's role")
        .get(0);
    assert!(
        superuser,
        "the test database's own role is expected to be a superuser"
    );

    let token = create_token(db.url(), "warned");
    let as_superuser = connect_stdio(db.url(), Some(&token), &[]).await;
    let stderr = as_superuser.close().await;
    assert!(
        stderr.contains(WARNING),
        "no row-level security warning when serving as a superuser:\n{stderr}"
    );

    let as_app = serve_as_app(&db, "quiet").await;
    let stderr = as_app.close().await;
    assert!(
        !stderr.contains(WARNING),
        "a warning when serving as an ordinary role:\n{stderr}"
    );
}
