//! Self-test of the integration-test harness in tests/support.
//!
//! Most of these need only PostgreSQL (no MCP behaviour from the binary); the template test
//! needs a working `todo-mcp migrate`.

use crate::support;

use std::time::Duration;

use support::pg::{self, PgTestDb};
use support::{SqliteTestDb, TestDb};

/// Two per-test databases are distinct, isolated from each other, and gone after drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_test_databases_are_distinct_isolated_and_dropped() {
    let a = PgTestDb::empty().await;
    let b = PgTestDb::empty().await;
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    assert!(a.url().ends_with(&format!("/{}", a.name())), "{}", a.url());
    assert!(pg::database_exists(a.name()).await);
    assert!(pg::database_exists(b.name()).await);

    a.execute("CREATE TABLE only_in_a (id int); INSERT INTO only_in_a VALUES (1), (2)")
        .await;
    let rows = a.query_json("SELECT id FROM only_in_a ORDER BY id").await;
    assert_eq!(
        rows,
        vec![serde_json::json!({"id": 1}), serde_json::json!({"id": 2})]
    );
    let in_b = b
        .query_json(
            "SELECT table_name FROM information_schema.tables WHERE table_name = 'only_in_a'",
        )
        .await;
    assert!(
        in_b.is_empty(),
        "table leaked into the other database: {in_b:?}"
    );

    // An open connection must not prevent the drop (DROP ... WITH (FORCE)).
    let open = a.client().await;
    let (name_a, name_b) = (a.name().to_string(), b.name().to_string());
    drop(a);
    drop(b);
    drop(open);
    assert!(
        !pg::database_exists(&name_a).await,
        "{name_a} still exists after drop"
    );
    assert!(
        !pg::database_exists(&name_b).await,
        "{name_b} still exists after drop"
    );
}

/// Copies of the migrated template: needs `todo-mcp migrate` to work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_template_copies_are_migrated_and_dropped() {
    let a = PgTestDb::new().await;
    let b = PgTestDb::new().await;
    assert_ne!(a.name(), b.name());
    let template = pg::template_name();
    assert!(pg::database_exists(template).await);

    let sql = "SELECT table_name FROM information_schema.tables \
               WHERE table_schema = 'public' ORDER BY table_name";
    let tables_a = a.query_json(sql).await;
    let tables_b = b.query_json(sql).await;
    assert!(
        !tables_a.is_empty(),
        "template copy has no tables: migrations did not run?"
    );
    assert_eq!(tables_a, tables_b);

    let (name_a, name_b) = (a.name().to_string(), b.name().to_string());
    drop(a);
    drop(b);
    assert!(!pg::database_exists(&name_a).await);
    assert!(!pg::database_exists(&name_b).await);
}

/// A throwaway cluster can be started explicitly, used, and stopped (its files removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_cluster_starts_answers_and_stops() {
    let cluster = tokio::task::spawn_blocking(pg::start_throwaway_cluster)
        .await
        .expect("starting the throwaway cluster panicked");
    let root = cluster.root().to_path_buf();
    let port = cluster.port();
    assert!(
        cluster.admin_url().contains(&format!("127.0.0.1:{port}")),
        "{}",
        cluster.admin_url()
    );

    let client = pg::connect(cluster.admin_url()).await;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1 on the throwaway cluster")
        .get(0);
    assert_eq!(one, 1);
    let fsync: String = client
        .query_one("SHOW fsync", &[])
        .await
        .expect("SHOW fsync")
        .get(0);
    assert_eq!(fsync, "off");
    drop(client);

    tokio::task::spawn_blocking(move || cluster.stop())
        .await
        .expect("stopping the throwaway cluster panicked");
    assert!(
        !root.exists(),
        "cluster dir {} still exists",
        root.display()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on the cluster's port {port}"
    );
}

/// Leftovers of dead processes are dropped; databases of live processes are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_databases_of_dead_processes_are_dropped() {
    // A pid that certainly existed and has exited.
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn `true`");
    let dead_pid = child.id();
    child.wait().expect("wait for `true`");

    let stale = format!("todo_mcp_t_{dead_pid}_selftest{}", support::random_suffix());
    let live = format!(
        "todo_mcp_t_{}_selftest{}",
        std::process::id(),
        support::random_suffix()
    );
    let admin = pg::admin_client().await;
    for name in [&stale, &live] {
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
    }
    pg::drop_stale_databases(&admin)
        .await
        .expect("drop_stale_databases");
    let stale_left = pg::database_exists(&stale).await;
    let live_left = pg::database_exists(&live).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{live}\""))
        .await
        .expect("dropping the live test database");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{stale}\""))
        .await
        .expect("dropping the stale test database");
    assert!(
        !stale_left,
        "{stale} (pid {dead_pid} is gone) was not dropped"
    );
    assert!(live_left, "{live} (this process) was dropped");
}

#[test]
fn database_names_and_urls() {
    assert_eq!(pg::owner_pid("todo_mcp_t_123_abc9"), Some(123));
    assert_eq!(pg::owner_pid("todo_mcp_tpl_42_0f0f"), Some(42));
    assert_eq!(pg::owner_pid("todo_mcp_t_123_"), None);
    assert_eq!(pg::owner_pid("todo_mcp_other_1_a"), None);
    assert_eq!(pg::owner_pid("todo_mcp_t_x1_a"), None);

    assert_eq!(
        pg::database_url("postgres://postgres@127.0.0.1:5432/postgres", "db1"),
        "postgres://postgres@127.0.0.1:5432/db1"
    );
    assert_eq!(
        pg::database_url("postgresql://u:p@h:1?sslmode=disable", "db2"),
        "postgres://u:p@h:1/db2?sslmode=disable"
    );
    assert_eq!(
        pg::database_url("postgres://u@h/x?application_name=a/b", "db3"),
        "postgres://u@h/db3?application_name=a/b"
    );
}

#[test]
fn sqlite_test_db_is_private_and_removed_on_drop() {
    let a = SqliteTestDb::new();
    let b = SqliteTestDb::new();
    assert_ne!(a.path(), b.path());
    assert_eq!(a.url(), format!("sqlite://{}", a.path().display()));
    assert!(a.path().is_absolute());
    assert!(a.dir().is_dir());
    let dir = a.dir().to_path_buf();
    drop(a);
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

#[tokio::test]
async fn test_db_enum_names() {
    let db = TestDb::new(support::Backend::Sqlite).await;
    assert_eq!(db.name(), "sqlite");
    assert!(db.url().starts_with("sqlite://"));
}

#[test]
fn commands_that_hang_are_killed() {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("30");
    let started = std::time::Instant::now();
    let err = support::cli::try_run_with_timeout(cmd, "sleep 30", Duration::from_millis(300))
        .expect_err("sleep 30 should time out");
    assert!(err.contains("did not finish"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
