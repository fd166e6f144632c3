//! The tools on a real Citus cluster (a coordinator and its workers), distributed by
//! deploy/citus/distribute.sql: every tool for two users, each call routed to one shard,
//! and each user seeing only their own rows.
//!
//! Runs when `TODO_MCP_TEST_CITUS_URL` names a superuser on the coordinator (for example
//! `postgres://postgres@127.0.0.1:9700/postgres`; docs/scaling.md says how to start one);
//! otherwise it says loudly that it did not run. It makes a database of its own on every
//! node and drops it at the end.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::Client;

use crate::migrations_deploy::split_sql;
use crate::support::jsonrpc::StatelessCaller;
use crate::support::pg::{connect, database_url};
use crate::support::samples::{self, Seed};
use crate::support::{
    McpClient, cli, connect_stdio, create_token, not_run, random_suffix, start_http,
};

const DISTRIBUTE_SQL: &str = include_str!("../../deploy/citus/distribute.sql");
const APP_ROLE: &str = "todo_mcp_citus_app";

/// `url` (postgres://user@host:port/db…) with host, port and database replaced.
fn node_url(url: &str, host: &str, port: i32, db: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let user = authority
        .rsplit_once('@')
        .map_or("postgres", |(user, _)| user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// A database of its own on every node of the cluster, with Citus and the cluster's workers
/// registered in it; dropped on every node when dropped.
struct CitusDb {
    name: String,
    /// Every node's admin URL (coordinator first), for creating and dropping.
    nodes: Vec<String>,
    /// The new database on the coordinator, as the admin.
    url: String,
}

impl CitusDb {
    async fn create(coordinator: &str) -> CitusDb {
        let admin = connect(coordinator).await;
        let workers = admin
            .query(
                "SELECT nodename, nodeport FROM pg_dist_node \
                 WHERE groupid <> 0 AND noderole = 'primary' AND isactive ORDER BY nodeid",
                &[],
            )
            .await
            .unwrap_or_else(|e| {
                panic!("{coordinator} is not a Citus coordinator with workers: {e}")
            });
        assert!(
            !workers.is_empty(),
            "the Citus coordinator at {coordinator} has no active workers"
        );
        let (host, port): (String, i32) = {
            let row = admin
                .query_one(
                    "SELECT coalesce(host(inet_server_addr()), '127.0.0.1'), \
                            current_setting('port')::int",
                    &[],
                )
                .await
                .expect("reading the coordinator's address");
            (row.get(0), row.get(1))
        };
        let name = format!("todo_mcp_citus_{}", random_suffix());
        let admin_db = coordinator
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['?']).next())
            .and_then(|rest| rest.split_once('/'))
            .map_or("postgres", |(_, db)| db)
            .to_owned();
        let mut nodes = vec![node_url(coordinator, &host, port, &admin_db)];
        for worker in &workers {
            nodes.push(node_url(
                coordinator,
                worker.get(0),
                worker.get(1),
                &admin_db,
            ));
        }
        for node in &nodes {
            let client = connect(node).await;
            run(&client, &format!("CREATE DATABASE {name}"), node).await;
            let in_db = connect(&database_url(node, &name)).await;
            run(&in_db, "CREATE EXTENSION citus", node).await;
        }
        let url = database_url(&nodes[0], &name);
        let coordinator_db = connect(&url).await;
        run(
            &coordinator_db,
            &format!("SELECT citus_set_coordinator_host('{host}', {port})"),
            &url,
        )
        .await;
        for worker in &workers {
            let (worker_host, worker_port): (String, i32) = (worker.get(0), worker.get(1));
            run(
                &coordinator_db,
                &format!("SELECT citus_add_node('{worker_host}', {worker_port})"),
                &url,
            )
            .await;
        }
        CitusDb { name, nodes, url }
    }
}

/// Dropped on every node, also when the test fails half-way.
impl Drop for CitusDb {
    fn drop(&mut self) {
        for node in &self.nodes {
            crate::support::pg::drop_database_blocking(node, &self.name);
        }
    }
}

async fn run(client: &Client, sql: &str, node: &str) {
    tokio::time::timeout(Duration::from_secs(120), client.batch_execute(sql))
        .await
        .unwrap_or_else(|_| panic!("no answer within 120 s from {node} to: {sql}"))
        .unwrap_or_else(|e| panic!("on {node}: {sql}: {e:?}"));
}

/// The database's count of queries Citus ran on several shards.
async fn multi_shard_queries(admin: &Client) -> i64 {
    admin
        .query_one(
            "SELECT query_execution_multi_shard FROM citus_stat_counters \
             WHERE name = current_database()",
            &[],
        )
        .await
        .expect("reading citus_stat_counters")
        .get(0)
}

/// A server for `user` (the binary, on stdio), connecting as the least-privileged app role, the way a
/// deployment on Citus would (docs/scaling.md).
async fn serve(db: &CitusDb, app_url: &str, user: &str) -> McpClient {
    let token = create_token(&db.url, user);
    connect_stdio(app_url, Some(&token), &[("TODO_MCP_NO_MIGRATE", "true")]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tool_for_two_users_routed_to_one_shard_on_citus() {
    let Ok(coordinator) = std::env::var("TODO_MCP_TEST_CITUS_URL") else {
        not_run(
            "citus::every_tool_for_two_users_routed_to_one_shard_on_citus",
            "TODO_MCP_TEST_CITUS_URL is not set (a Citus coordinator with workers; \
             docs/scaling.md, \"Citus\")",
        );
        return;
    };
    let db = CitusDb::create(&coordinator).await;
    cli::migrate(&db.url);
    let admin = connect(&db.url).await;
    // One statement at a time, as psql sends them: Citus passes DDL on to the workers as
    // the text of the whole query it came in, which must then be one command.
    for statement in split_sql(DISTRIBUTE_SQL) {
        run(&admin, &statement, &db.url).await;
    }
    let distributed: i64 = admin
        .query_one("SELECT count(*) FROM citus_tables", &[])
        .await
        .expect("reading citus_tables")
        .get(0);
    assert!(
        distributed >= 12,
        "distribute.sql placed only {distributed} tables"
    );

    // The role the server connects as: no superuser, so row-level security holds, and
    // SET LOCAL todo.user_id passed on to the workers (else every policy refuses).
    run(
        &admin,
        &format!(
            "DO $$ BEGIN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
             GRANT USAGE ON SCHEMA public TO {APP_ROLE};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE};
             ALTER ROLE {APP_ROLE} IN DATABASE {name} SET citus.propagate_set_commands = 'local';
             ALTER DATABASE {name} SET citus.enable_stat_counters = on;",
            name = db.name
        ),
        &db.url,
    )
    .await;
    // A new admin session, which has the counters on.
    let admin = connect(&db.url).await;
    let app_url = {
        let rest = db.url.split_once('@').map_or("", |(_, rest)| rest);
        format!("postgres://{APP_ROLE}@{rest}")
    };

    let mut seeds = Vec::new();
    let mut fanned_out = Vec::new();
    for user in ["alice", "bob"] {
        let client = serve(&db, &app_url, user).await;
        let seed = Seed::plant(&client).await;
        for (tool, args) in samples::all(&seed) {
            let before = multi_shard_queries(&admin).await;
            client.call_ok(tool, args.clone()).await;
            let multi_shard = multi_shard_queries(&admin).await - before;
            if multi_shard != 0 {
                fanned_out.push(format!("{user}'s {tool} {args}: {multi_shard}"));
            }
        }
        // A fresh seed to look at from the other user.
        seeds.push((user, Seed::plant(&client).await));
        client.close().await;
    }
    assert!(
        fanned_out.is_empty(),
        "calls that ran queries on several shards (every query a tool makes must name the \
         user, docs/scaling.md):\n{}",
        fanned_out.join("\n")
    );

    // Each sees only their own rows, and the other's ids answer like unknown ones.
    for (index, (user, own)) in seeds.iter().enumerate() {
        let (_, other) = &seeds[1 - index];
        let client = serve(&db, &app_url, user).await;
        let listed = client.call_ok("list_tasks", json!({})).await;
        let ids: Vec<&str> = listed["tasks"]
            .as_array()
            .expect("list_tasks returns tasks")
            .iter()
            .filter_map(|task| task["id"].as_str())
            .collect();
        assert!(
            ids.contains(&own.task.as_str()) && !ids.contains(&other.task.as_str()),
            "{user} lists {ids:?}: their task {} and not the other's {}",
            own.task,
            other.task
        );
        for (tool, id, key) in [
            ("get_task", &other.task, "task_id"),
            (
                "get_conversation_history",
                &other.conversation,
                "conversation_id",
            ),
        ] {
            let foreign = client.call_err(tool, json!({ key: id })).await;
            let unknown_id = uuid::Uuid::new_v4().to_string();
            let unknown = client.call_err(tool, json!({ key: unknown_id })).await;
            assert_eq!(
                foreign,
                unknown.replace(&unknown_id, id),
                "{user}'s {tool} on the other user's id must read like an unknown id"
            );
        }
        client.close().await;
    }

    // Over HTTP the caller is found by the token's hash, on the reference table's copy:
    // no call fans out there either.
    let server = start_http(&app_url, &["--no-migrate"], &[]).await;
    let token = create_token(&db.url, "carol");
    let caller = StatelessCaller::new(Duration::from_secs(30));
    let before = multi_shard_queries(&admin).await;
    for (tool, args) in [
        (
            "add_task",
            json!({ "title": "over HTTP", "labels": ["web"] }),
        ),
        ("list_tasks", json!({})),
        ("start_conversation", json!({ "title": "over HTTP" })),
    ] {
        caller
            .call(&server.mcp_url(), &token, tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool} over HTTP on Citus: {e}\n{}", server.stderr()));
    }
    assert_eq!(
        multi_shard_queries(&admin).await - before,
        0,
        "calls over HTTP ran queries on several shards"
    );
    server.kill().await;

    // Every user-owned row of the two is on the shard of its user, and each has some.
    let per_user: Vec<Value> = {
        let rows = admin
            .query(
                "SELECT user_id, count(*) FROM tasks GROUP BY user_id ORDER BY user_id",
                &[],
            )
            .await
            .expect("counting tasks per user");
        rows.iter()
            .map(|row| json!([row.get::<_, String>(0), row.get::<_, i64>(1)]))
            .collect()
    };
    assert_eq!(per_user.len(), 3, "tasks per user: {per_user:?}");
    drop(admin);
}
