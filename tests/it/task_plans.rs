//! Which index serves each common list_tasks query, on both backends: the plans the store's
//! own queries get (`store::tasks::plan`, PostgreSQL's EXPLAIN and SQLite's EXPLAIN QUERY
//! PLAN of exactly what `list` runs, binds included), at 10,000 tasks of one user beside
//! another user's 10,000. No plan reads the whole tasks table. Run with `--nocapture` to
//! see them.

use crate::support;

use support::TestDb;
use todo_mcp::db::{Database, DatabaseUrl, PoolOptions};
use todo_mcp::store::task_fields::Priority;
use todo_mcp::store::tasks::{self, ListQuery, StatusFilter, TaskSort};
use todo_mcp::store::{self, UserId, UserTx, secrets};

const TASKS_PER_USER: u32 = 10_000;

/// 10,000 tasks for each of two users, a quarter undated, a third completed, each with one
/// of ten labels and a priority; then, on PostgreSQL, the statistics autovacuum would
/// have gathered by now.
async fn seed(db: &TestDb) {
    let statements = match db {
        TestDb::Pg(_) => format!(
            "INSERT INTO users (id, task_count) VALUES ('planner', {n}), ('other', {n});
             INSERT INTO tasks (id, user_id, title, completed, completed_at, created_at,
                                updated_at, due, due_at, priority)
             SELECT gen_random_uuid(), u, 'task ' || i, i % 3 = 0,
                    CASE WHEN i % 3 = 0 THEN now() END, now(), now(),
                    CASE WHEN i % 4 = 0 THEN NULL
                         ELSE to_char(current_date + (i % 180 - 60), 'YYYY-MM-DD') END,
                    CASE WHEN i % 4 = 0 THEN '9999-12-31 23:59:59+00'
                         ELSE (current_date + (i % 180 - 60))::timestamp AT TIME ZONE 'UTC' END,
                    i % 4
             FROM generate_series(1, {n}) AS i, (VALUES ('planner'), ('other')) AS users(u);
             INSERT INTO task_labels (task_id, user_id, label, label_key, position)
             SELECT id, user_id, 'label' || (abs(hashtext(id::text)) % 10),
                    'label' || (abs(hashtext(id::text)) % 10), 0 FROM tasks;
             ANALYZE;",
            n = TASKS_PER_USER
        ),
        TestDb::Sqlite(_) => format!(
            "INSERT INTO users (id, task_count) VALUES ('planner', {n}), ('other', {n});
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             INSERT INTO tasks (id, user_id, title, completed, completed_at, created_at,
                                updated_at, due, due_at, priority)
             SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-7' ||
                          substr(hex(randomblob(2)), 2) || '-8' || substr(hex(randomblob(2)), 2)
                          || '-' || hex(randomblob(6))),
                    u, 'task ' || i, i % 3 = 0,
                    CASE WHEN i % 3 = 0 THEN '2026-12-01 00:00:00+00:00' END,
                    '2026-12-01 00:00:00+00:00', '2026-12-01 00:00:00+00:00',
                    CASE WHEN i % 4 = 0 THEN NULL
                         ELSE date('now', (i % 180 - 60) || ' days') END,
                    CASE WHEN i % 4 = 0 THEN '9999-12-31 23:59:59+00:00'
                         ELSE date('now', (i % 180 - 60) || ' days') || ' 00:00:00+00:00' END,
                    i % 4
             FROM n, (SELECT 'planner' AS u UNION ALL SELECT 'other');
             INSERT INTO task_labels (task_id, user_id, label, label_key, position)
             SELECT id, user_id, 'label' || (abs(random()) % 10),
                    'label' || (abs(random()) % 10), 0 FROM tasks;",
            n = TASKS_PER_USER
        ),
    };
    support::sql::execute(db, &statements).await;
}

/// The common queries: each filter alone and with a sort, and second pages.
fn queries() -> Vec<(&'static str, ListQuery<'static>)> {
    let base = ListQuery::default();
    let by_due = ListQuery {
        sort: TaskSort::Due,
        ..base
    };
    vec![
        ("newest first", base),
        ("sort due", by_due),
        (
            "sort priority",
            ListQuery {
                sort: TaskSort::Priority,
                ..base
            },
        ),
        (
            "pending, newest first",
            ListQuery {
                status: StatusFilter::Pending,
                ..base
            },
        ),
        (
            "pending, sort due",
            ListQuery {
                status: StatusFilter::Pending,
                ..by_due
            },
        ),
        (
            "pending, sort priority",
            ListQuery {
                status: StatusFilter::Pending,
                sort: TaskSort::Priority,
                ..base
            },
        ),
        (
            "overdue, sort due",
            ListQuery {
                overdue: true,
                ..by_due
            },
        ),
        (
            "due this week, sort due",
            ListQuery {
                due_after: Some("2026-12-01"),
                due_before: Some("2026-12-08"),
                ..by_due
            },
        ),
        (
            "label",
            ListQuery {
                label: Some("label3"),
                ..base
            },
        ),
        (
            "label, sort due",
            ListQuery {
                label: Some("label3"),
                ..by_due
            },
        ),
        (
            "priority",
            ListQuery {
                priority: Some(Priority::Urgent),
                ..base
            },
        ),
        (
            "priority, sort due",
            ListQuery {
                priority: Some(Priority::Urgent),
                ..by_due
            },
        ),
        (
            "subtasks of a task",
            ListQuery {
                parent_task_id: Some(uuid::Uuid::nil()),
                ..base
            },
        ),
    ]
}

async fn list_tasks_queries_are_served_by_indexes(db: TestDb) {
    support::cli::migrate(db.url());
    seed(&db).await;
    let url = DatabaseUrl::parse(db.url()).expect("a database URL");
    let database = Database::connect(&url, &PoolOptions::default())
        .await
        .expect("connecting");
    let cursors = secrets::cursor_key(&database)
        .await
        .expect("the cursor key");
    let user = UserId::parse("planner").expect("a user id");
    let postgres = matches!(db, TestDb::Pg(_));
    let mut failures = Vec::new();
    let mut plans = Vec::new();
    for (name, query) in queries() {
        let mut tx = UserTx::begin(&database, &user).await.expect("BEGIN");
        let plan = tasks::plan(&mut tx, query, &cursors).await;
        let plan = store::end(tx, plan).await.expect("a plan");
        let text = plan.join("\n");
        let full_scan = if postgres {
            text.contains("Seq Scan on tasks")
        } else {
            plan.iter().any(|line| line.trim() == "SCAN tasks")
        };
        let indexed = if postgres {
            text.contains("Index") && text.contains("tasks_")
        } else {
            text.contains("USING INDEX")
                || text.contains("USING COVERING INDEX")
                || text.contains("PRIMARY KEY")
        };
        if full_scan || !indexed {
            failures.push(format!("{name}:\n{text}"));
        }
        plans.push(format!("## {name}\n{text}\n"));
    }
    println!(
        "# list_tasks plans, {}, {TASKS_PER_USER} tasks of the user\n\n{}",
        if postgres { "PostgreSQL" } else { "SQLite" },
        plans.join("\n")
    );
    assert!(
        failures.is_empty(),
        "queries not served by an index:\n\n{}",
        failures.join("\n\n")
    );
}

both_backends!(list_tasks_queries_are_served_by_indexes);
