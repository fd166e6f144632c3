//! Task fields on both backends, through a real MCP client: due dates (all-day or a
//! date-time with its offset, kept as given), priorities, labels, one level of subtasks;
//! list_tasks' filters and sorts with stable keyset pages; every bad value refused by
//! name with nothing written; another user's tasks never reachable.

use crate::support;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use support::{McpClient, TestDb, connect_in_process, create_token};

async fn add(client: &McpClient, args: Value) -> Value {
    client.call_ok("add_task", args).await["task"].clone()
}

fn id(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

/// Every page of a listing, following next_cursor; the titles in order.
async fn walk(client: &McpClient, args: Value, limit: usize) -> Vec<String> {
    let mut titles = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..100 {
        let mut page_args = args.clone();
        page_args["limit"] = json!(limit);
        if !cursor.is_null() {
            page_args["cursor"] = cursor.clone();
        }
        let page = client.call_ok("list_tasks", page_args).await;
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= limit, "{page}");
        titles.extend(
            tasks
                .iter()
                .map(|task| task["title"].as_str().unwrap().to_owned()),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            return titles;
        }
    }
    panic!("paging does not end: {titles:?}");
}

/// The task titled `title`.
async fn titled(client: &McpClient, title: &str) -> Value {
    let found = client
        .call_ok("list_tasks", json!({ "query": title }))
        .await;
    found["tasks"][0].clone()
}

async fn task_count(db: &TestDb) -> String {
    support::sql::texts(db, "SELECT CAST(count(*) AS TEXT) AS j FROM tasks")
        .await
        .remove(0)
}

async fn fields_are_kept_as_given(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let plain = add(&client, json!({ "title": "plain" })).await;
    assert_eq!(plain["due"], Value::Null);
    assert_eq!(plain["priority"], "normal");
    assert_eq!(plain["labels"], json!([]));
    assert_eq!(plain["parent_task_id"], Value::Null);

    let rent = add(
        &client,
        json!({
            "title": "pay rent",
            "due": "2026-12-01",
            "priority": "urgent",
            "labels": ["Home", "money", "HOME-office"],
        }),
    )
    .await;
    assert_eq!(rent["due"], "2026-12-01", "an all-day task stays a date");
    assert_eq!(rent["priority"], "urgent");
    assert_eq!(rent["labels"], json!(["Home", "money", "HOME-office"]));
    let call = add(
        &client,
        json!({ "title": "call", "due": "2026-12-01T09:00:00+01:00", "parent_task_id": id(&rent) }),
    )
    .await;
    assert_eq!(
        call["due"], "2026-12-01T09:00:00+01:00",
        "a date-time keeps its offset"
    );
    assert_eq!(call["parent_task_id"], id(&rent).as_str());
    let read = client
        .call_ok("get_task", json!({ "task_id": id(&rent) }))
        .await["task"]
        .clone();
    assert_eq!(read, rent, "get_task returns what add_task did");

    // update: each field changed, then cleared; left-out fields stay.
    let updated = client
        .call_ok(
            "update_task",
            json!({
                "task_id": id(&call),
                "due": "2026-12-02T17:30:00Z",
                "priority": "low",
                "labels": ["phone"],
                "parent_task_id": null,
            }),
        )
        .await["task"]
        .clone();
    assert_eq!(updated["due"], "2026-12-02T17:30:00Z");
    assert_eq!(updated["priority"], "low");
    assert_eq!(updated["labels"], json!(["phone"]));
    assert_eq!(updated["parent_task_id"], Value::Null);
    assert_eq!(updated["title"], "call");
    let cleared = client
        .call_ok(
            "update_task",
            json!({ "task_id": id(&call), "due": null, "labels": [] }),
        )
        .await["task"]
        .clone();
    assert_eq!(cleared["due"], Value::Null);
    assert_eq!(cleared["labels"], json!([]));
    assert_eq!(cleared["priority"], "low", "left out, kept");
    let only_title = client
        .call_ok(
            "update_task",
            json!({ "task_id": id(&rent), "title": "pay the rent" }),
        )
        .await["task"]
        .clone();
    assert_eq!(only_title["due"], "2026-12-01");
    assert_eq!(
        only_title["labels"],
        json!(["Home", "money", "HOME-office"])
    );

    // list_labels-free check of the label rows: one per label, none left for the cleared.
    let labels =
        support::sql::texts(&db, "SELECT label AS j FROM task_labels ORDER BY label_key").await;
    assert_eq!(labels, ["Home", "HOME-office", "money"]);
    client.close().await;
}

async fn bad_values_are_refused_by_name_and_write_nothing(db: TestDb) {
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let a = connect_in_process(db.url(), Some(&alice), &[]).await;
    let b = connect_in_process(db.url(), Some(&bob), &[]).await;
    let parent = add(&a, json!({ "title": "parent" })).await;
    let child = add(
        &a,
        json!({ "title": "child", "parent_task_id": id(&parent) }),
    )
    .await;
    let bobs = add(&b, json!({ "title": "bob's" })).await;
    let before = task_count(&db).await;
    let long_label = "x".repeat(61);
    let many_labels: Vec<String> = (0..21).map(|i| format!("l{i}")).collect();
    for (args, field, says) in [
        (json!({ "due": "2026-02-30" }), "due", "is not a date"),
        (
            json!({ "due": "2026-12-01T09:00:00" }),
            "due",
            "with an offset",
        ),
        (json!({ "due": "next friday" }), "due", "is not a date"),
        (json!({ "priority": "critical" }), "priority", "critical"),
        (json!({ "labels": [""] }), "labels", "must not be empty"),
        (
            json!({ "labels": [long_label] }),
            "labels",
            "the limit is 60",
        ),
        (json!({ "labels": many_labels }), "labels", "at most 20"),
        (
            json!({ "labels": ["Work", "work"] }),
            "labels",
            "given twice",
        ),
        (
            json!({ "parent_task_id": id(&bobs) }),
            "parent_task_id",
            "not one of your tasks",
        ),
        (
            json!({ "parent_task_id": id(&child) }),
            "parent_task_id",
            "is itself a subtask",
        ),
        (
            json!({ "parent_task_id": "nope" }),
            "parent_task_id",
            "not a uuid",
        ),
    ] {
        let mut add_args = args.clone();
        add_args["title"] = json!("refused");
        let error = a.call_err("add_task", add_args).await;
        assert!(
            error.starts_with("invalid_argument") && error.contains(field) && error.contains(says),
            "add_task {args}: {error}"
        );
        let mut update_args = args.clone();
        update_args["task_id"] = json!(id(&parent));
        let error = a.call_err("update_task", update_args).await;
        assert!(
            error.starts_with("invalid_argument") && error.contains(field),
            "update_task {args}: {error}"
        );
    }
    for (args, says) in [
        (
            json!({ "task_id": id(&parent), "parent_task_id": id(&parent) }),
            "its own parent",
        ),
        (
            json!({ "task_id": id(&parent), "parent_task_id": id(&bobs) }),
            "not one of your tasks",
        ),
    ] {
        let error = a.call_err("update_task", args.clone()).await;
        assert!(error.contains(says), "{args}: {error}");
    }
    let other = add(&a, json!({ "title": "other" })).await;
    let error = a
        .call_err(
            "update_task",
            json!({ "task_id": id(&parent), "parent_task_id": id(&other) }),
        )
        .await;
    assert!(error.contains("has subtasks of its own"), "{error}");
    for (args, field) in [
        (json!({ "due_before": "2026-13-01" }), "due_before"),
        (json!({ "due_after": "soon" }), "due_after"),
        (json!({ "sort": "title" }), "sort"),
        (json!({ "label": "" }), "label"),
        (json!({ "parent_task_id": "x" }), "parent_task_id"),
    ] {
        let error = a.call_err("list_tasks", args.clone()).await;
        assert!(
            error.starts_with("invalid_argument") && error.contains(field),
            "list_tasks {args}: {error}"
        );
    }
    assert_eq!(task_count(&db).await, {
        let n: i64 = before.parse().unwrap();
        (n + 1).to_string()
    });
    let unchanged = a
        .call_ok("get_task", json!({ "task_id": id(&parent) }))
        .await["task"]
        .clone();
    assert_eq!(unchanged["parent_task_id"], Value::Null);
    assert_eq!(unchanged["labels"], json!([]));
    // Bob sees nothing of Alice's by her label or her parent.
    assert!(
        b.call_ok("list_tasks", json!({ "parent_task_id": id(&parent) }))
            .await["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    a.close().await;
    b.close().await;
}

async fn lists_filter_and_sort_with_stable_pages(db: TestDb) {
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let a = connect_in_process(db.url(), Some(&alice), &[]).await;
    let b = connect_in_process(db.url(), Some(&bob), &[]).await;
    let today = Utc::now().date_naive();
    let day = |offset: i64| {
        (today + Duration::days(offset))
            .format("%Y-%m-%d")
            .to_string()
    };
    // Fixed moments around today, so that nothing depends on the hour the test runs at.
    let late_call = format!("{}T12:00:00-05:00", day(-1));
    let tomorrow_call = format!("{}T09:00:00+01:00", day(1));
    // Added in this order: "created" lists them newest first.
    for (title, args) in [
        (
            "yesterday",
            json!({ "due": day(-1), "priority": "high", "labels": ["Work"] }),
        ),
        (
            "late call",
            json!({ "due": late_call, "labels": ["work", "calls"] }),
        ),
        ("today", json!({ "due": day(0), "priority": "urgent" })),
        (
            "tomorrow call",
            json!({ "due": tomorrow_call, "priority": "low", "labels": ["calls"] }),
        ),
        (
            "next week",
            json!({ "due": day(7), "priority": "high", "labels": ["WORK"] }),
        ),
        ("undated", json!({ "priority": "urgent" })),
        ("done late", json!({ "due": day(-3) })),
        ("undated too", json!({})),
    ] {
        let mut args = args;
        args["title"] = json!(title);
        add(&a, args).await;
    }
    let done = a
        .call_ok("list_tasks", json!({ "query": "done late" }))
        .await["tasks"][0]
        .clone();
    a.call_ok("complete_task", json!({ "task_id": id(&done) }))
        .await;
    add(
        &b,
        json!({ "title": "bob's overdue", "due": day(-1), "labels": ["work"] }),
    )
    .await;

    for limit in [1, 2, 3, 50] {
        assert_eq!(
            walk(&a, json!({}), limit).await,
            [
                "undated too",
                "done late",
                "undated",
                "next week",
                "tomorrow call",
                "today",
                "late call",
                "yesterday"
            ]
        );
        // Soonest first; an all-day task sorts at its day's start (UTC); undated last,
        // newest first among them.
        assert_eq!(
            walk(&a, json!({ "sort": "due" }), limit).await,
            [
                "done late",
                "yesterday",
                "late call",
                "today",
                "tomorrow call",
                "next week",
                "undated too",
                "undated"
            ]
        );
        assert_eq!(
            walk(&a, json!({ "sort": "priority" }), limit).await,
            [
                "undated",
                "today",
                "next week",
                "yesterday",
                "undated too",
                "done late",
                "late call",
                "tomorrow call"
            ]
        );
    }
    let list = |args: Value| walk(&a, args, 2);
    assert_eq!(
        list(json!({ "overdue": true, "sort": "due" })).await,
        ["yesterday", "late call"],
        "past due and pending; today's all-day task is not overdue yet"
    );
    assert_eq!(
        list(json!({ "label": "work", "sort": "due" })).await,
        ["yesterday", "late call", "next week"],
        "labels match case-insensitively"
    );
    assert_eq!(
        list(json!({ "label": "Calls", "priority": "low" })).await,
        ["tomorrow call"]
    );
    assert_eq!(
        list(json!({ "due_before": day(0), "sort": "due" })).await,
        ["done late", "yesterday", "late call"]
    );
    assert_eq!(
        list(json!({ "due_after": day(0), "due_before": day(2), "sort": "due" })).await,
        ["today", "tomorrow call"]
    );
    assert_eq!(
        list(json!({ "due_after": tomorrow_call, "sort": "due" })).await,
        ["tomorrow call", "next week"],
        "at or after"
    );
    assert_eq!(
        list(json!({ "status": "completed", "sort": "due" })).await,
        ["done late"]
    );
    assert_eq!(
        list(json!({ "priority": "urgent", "sort": "due", "status": "pending" })).await,
        ["today", "undated"]
    );
    // Cursors belong to their sort.
    let page = a
        .call_ok("list_tasks", json!({ "sort": "due", "limit": 1 }))
        .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let error = a
        .call_err(
            "list_tasks",
            json!({ "sort": "priority", "cursor": cursor }),
        )
        .await;
    assert!(error.contains("invalid `cursor`"), "{error}");
    // list_labels: one entry per label but for case, with counts, alphabetically.
    let labels = a.call_ok("list_labels", json!({})).await;
    assert_eq!(
        labels["labels"],
        json!([{ "label": "calls", "tasks": 2, "pending": 2 }, { "label": "WORK", "tasks": 3, "pending": 3 }])
    );
    a.call_ok(
        "update_task",
        json!({ "task_id": id(&titled(&a, "next week").await), "labels": ["later"] }),
    )
    .await;
    let labels = a.call_ok("list_labels", json!({})).await;
    assert_eq!(
        labels["labels"],
        json!([
            { "label": "calls", "tasks": 2, "pending": 2 },
            { "label": "later", "tasks": 1, "pending": 1 },
            { "label": "Work", "tasks": 2, "pending": 2 },
        ])
    );
    assert_eq!(
        b.call_ok("list_labels", json!({})).await["labels"],
        json!([{ "label": "work", "tasks": 1, "pending": 1 }])
    );
    // Bob's label and overdue task stay his.
    assert_eq!(
        walk(&b, json!({ "label": "work", "overdue": true }), 5).await,
        ["bob's overdue"]
    );
    a.close().await;
    b.close().await;
}

async fn subtasks_go_with_their_parent(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let trip = add(&client, json!({ "title": "trip" })).await;
    for title in ["book flight", "pack"] {
        add(
            &client,
            json!({ "title": title, "parent_task_id": id(&trip), "labels": ["travel"] }),
        )
        .await;
    }
    add(&client, json!({ "title": "other" })).await;
    assert_eq!(
        walk(&client, json!({ "parent_task_id": id(&trip) }), 1).await,
        ["pack", "book flight"]
    );
    // Completing the parent leaves its subtasks pending.
    client
        .call_ok("complete_task", json!({ "task_id": id(&trip) }))
        .await;
    assert_eq!(
        walk(
            &client,
            json!({ "parent_task_id": id(&trip), "status": "pending" }),
            5
        )
        .await,
        ["pack", "book flight"]
    );
    let deleted = client
        .call_ok("delete_task", json!({ "task_id": id(&trip) }))
        .await;
    assert_eq!(deleted["subtasks_deleted"], 2);
    assert_eq!(walk(&client, json!({}), 5).await, ["other"]);
    assert_eq!(task_count(&db).await, "1");
    assert!(
        support::sql::texts(&db, "SELECT label AS j FROM task_labels")
            .await
            .is_empty(),
        "their labels went with them"
    );
    // The quota counts what is left: the user's count is 1.
    let counted = support::sql::texts(&db, "SELECT CAST(task_count AS TEXT) AS j FROM users").await;
    assert_eq!(counted, ["1"]);
    client.close().await;
}

/// Completing a repeating task completes this occurrence and creates the next, in the
/// same transaction, both in the result and in the call's record.
async fn repeating_tasks_roll_over_on_completion(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let rent = add(
        &client,
        json!({
            "title": "pay rent", "due": "2026-12-01", "priority": "high", "labels": ["home"],
            "repeat": "rrule:freq=monthly;bymonthday=1",
        }),
    )
    .await;
    assert_eq!(rent["repeat"], "FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=1");
    let done = client
        .call_ok("complete_task", json!({ "task_id": id(&rent) }))
        .await;
    assert_eq!(done["task"]["completed"], true);
    let next = &done["next_task"];
    assert_eq!(next["due"], "2027-01-01");
    assert_eq!(next["completed"], false);
    for field in [
        "title",
        "priority",
        "labels",
        "repeat",
        "parent_task_id",
        "description",
    ] {
        assert_eq!(next[field], rent[field], "{field} carries over");
    }
    assert_ne!(next["id"], rent["id"]);
    // The call's record holds both.
    let records = support::sql::texts(
        &db,
        "SELECT CAST(tool_calls AS TEXT) AS j FROM messages \
         WHERE kind = 'call_record' AND content LIKE 'complete_task%'",
    )
    .await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0].contains(next["id"].as_str().unwrap()) && records[0].contains(&id(&rent)),
        "{}",
        records[0]
    );
    // Completing it again creates nothing.
    let again = client
        .call_ok("complete_task", json!({ "task_id": id(&rent) }))
        .await;
    assert_eq!(again["next_task"], Value::Null);
    assert_eq!(task_count(&db).await, "2");

    // Through update_task, a date-time keeps its time and offset.
    let standup = add(
        &client,
        json!({ "title": "standup", "due": "2026-12-01T09:00:00+01:00", "repeat": "FREQ=WEEKLY;BYDAY=TU,TH" }),
    )
    .await;
    let updated = client
        .call_ok(
            "update_task",
            json!({ "task_id": id(&standup), "completed": true }),
        )
        .await;
    assert_eq!(updated["next_task"]["due"], "2026-12-03T09:00:00+01:00");
    let next_standup = id(&updated["next_task"]);

    // Bad rules and a rule without a due date: refused by name, nothing written.
    let before = task_count(&db).await;
    for (tool, args, says) in [
        (
            "add_task",
            json!({ "title": "x", "due": "2026-12-01", "repeat": "FREQ=HOURLY" }),
            "FREQ=`HOURLY`",
        ),
        (
            "add_task",
            json!({ "title": "x", "repeat": "FREQ=DAILY" }),
            "needs a due date",
        ),
        (
            "add_task",
            json!({ "title": "x", "due": "2026-12-01", "repeat": "FREQ=DAILY;COUNT=2" }),
            "`COUNT` is not supported",
        ),
        (
            "update_task",
            json!({ "task_id": next_standup, "due": null }),
            "needs a due date",
        ),
        (
            "update_task",
            json!({ "task_id": next_standup, "repeat": "FREQ=WEEKLY;BYMONTHDAY=1" }),
            "MONTHLY only",
        ),
    ] {
        let error = client.call_err(tool, args.clone()).await;
        assert!(
            error.starts_with("invalid_argument: invalid `repeat`") && error.contains(says),
            "{tool} {args}: {error}"
        );
    }
    assert_eq!(task_count(&db).await, before);
    let kept = client
        .call_ok("get_task", json!({ "task_id": next_standup }))
        .await["task"]
        .clone();
    assert_eq!(
        kept["due"], "2026-12-03T09:00:00+01:00",
        "the refused update left it"
    );
    // null stops it repeating: completing it then creates nothing.
    let stopped = client
        .call_ok(
            "update_task",
            json!({ "task_id": next_standup, "repeat": null, "completed": true }),
        )
        .await;
    assert_eq!(stopped["task"]["repeat"], Value::Null);
    assert_eq!(stopped["next_task"], Value::Null);
    client.close().await;

    // At the quota, the next occurrence does not fit: the completion fails whole.
    let tight = connect_in_process(db.url(), None, &[("TODO_MCP_MAX_TASKS_PER_USER", "5")]).await;
    let daily = add(
        &tight,
        json!({ "title": "water plants", "due": "2026-12-01", "repeat": "FREQ=DAILY" }),
    )
    .await;
    let error = tight
        .call_err("complete_task", json!({ "task_id": id(&daily) }))
        .await;
    assert!(error.starts_with("quota_exceeded"), "{error}");
    let still = tight
        .call_ok("get_task", json!({ "task_id": id(&daily) }))
        .await["task"]
        .clone();
    assert_eq!(
        still["completed"], false,
        "nothing of the completion was written"
    );
    tight.close().await;
}

/// list_labels' `pending` follows every way a task's state changes: complete_task,
/// update_task's `completed` (alone and with new labels), a repeating task's next
/// occurrence, deletion; and it equals what the tasks say.
async fn list_labels_counts_pending_tasks(db: TestDb) {
    let a = connect_in_process(db.url(), None, &[]).await;
    let labels = async || a.call_ok("list_labels", json!({})).await["labels"].clone();
    let one = add(&a, json!({ "title": "one", "labels": ["Work", "home"] })).await;
    let two = add(&a, json!({ "title": "two", "labels": ["work"] })).await;
    let daily = add(
        &a,
        json!({ "title": "daily", "labels": ["home"], "due": "2026-12-01", "repeat": "FREQ=DAILY" }),
    )
    .await;
    assert_eq!(
        labels().await,
        json!([{ "label": "home", "tasks": 2, "pending": 2 }, { "label": "Work", "tasks": 2, "pending": 2 }])
    );
    a.call_ok("complete_task", json!({ "task_id": id(&one) }))
        .await;
    assert_eq!(
        labels().await,
        json!([{ "label": "home", "tasks": 2, "pending": 1 }, { "label": "Work", "tasks": 2, "pending": 1 }])
    );
    // Completing the repeating one adds its next occurrence, pending, with the label.
    a.call_ok("complete_task", json!({ "task_id": id(&daily) }))
        .await;
    assert_eq!(
        labels().await,
        json!([{ "label": "home", "tasks": 3, "pending": 1 }, { "label": "Work", "tasks": 2, "pending": 1 }])
    );
    a.call_ok(
        "update_task",
        json!({ "task_id": id(&one), "completed": false }),
    )
    .await;
    a.call_ok(
        "update_task",
        json!({ "task_id": id(&two), "completed": true, "labels": ["work", "later"] }),
    )
    .await;
    assert_eq!(
        labels().await,
        json!([
            { "label": "home", "tasks": 3, "pending": 2 },
            { "label": "later", "tasks": 1, "pending": 0 },
            { "label": "Work", "tasks": 2, "pending": 1 },
        ])
    );
    // Relabelling a completed task keeps its labels completed.
    a.call_ok(
        "update_task",
        json!({ "task_id": id(&two), "labels": ["later"] }),
    )
    .await;
    a.call_ok("delete_task", json!({ "task_id": id(&one) }))
        .await;
    assert_eq!(
        labels().await,
        json!([
            { "label": "home", "tasks": 2, "pending": 1 },
            { "label": "later", "tasks": 1, "pending": 0 },
        ])
    );
    // The label rows' copy of the state is the tasks' own.
    let stale = support::sql::texts(
        &db,
        "SELECT CAST(count(*) AS TEXT) AS j FROM task_labels l JOIN tasks t ON t.id = l.task_id \
         WHERE l.completed <> t.completed",
    )
    .await
    .remove(0);
    assert_eq!(stale, "0");
    a.close().await;
}

/// `estimate_minutes`, the worked example of adding a column (README, "Adding a column"):
/// kept as given, changed and cleared by update_task, refused by name outside 1 to
/// 100,000 with nothing written, copied to a repeating task's next occurrence, exported.
async fn estimates_are_kept_changed_and_cleared(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let plain = add(&client, json!({ "title": "plain" })).await;
    assert_eq!(plain["estimate_minutes"], Value::Null);
    let estimated = add(
        &client,
        json!({ "title": "tax return", "estimate_minutes": 90 }),
    )
    .await;
    assert_eq!(estimated["estimate_minutes"], 90);
    let read = client
        .call_ok("get_task", json!({ "task_id": id(&estimated) }))
        .await["task"]
        .clone();
    assert_eq!(read, estimated);
    let changed = client
        .call_ok(
            "update_task",
            json!({ "task_id": id(&estimated), "estimate_minutes": 120 }),
        )
        .await["task"]
        .clone();
    assert_eq!(changed["estimate_minutes"], 120);
    let renamed = client
        .call_ok(
            "update_task",
            json!({ "task_id": id(&estimated), "title": "file the tax return" }),
        )
        .await["task"]
        .clone();
    assert_eq!(renamed["estimate_minutes"], 120, "left out, kept");
    let cleared = client
        .call_ok(
            "update_task",
            json!({ "task_id": id(&estimated), "estimate_minutes": null }),
        )
        .await["task"]
        .clone();
    assert_eq!(cleared["estimate_minutes"], Value::Null);

    let before = task_count(&db).await;
    for bad in [json!(0), json!(100_001), json!(-5), json!(1.5), json!("30")] {
        let error = client
            .call_err("add_task", json!({ "title": "x", "estimate_minutes": bad }))
            .await;
        assert!(
            error.starts_with("invalid_argument: invalid `estimate_minutes`"),
            "{bad}: {error}"
        );
        let error = client
            .call_err(
                "update_task",
                json!({ "task_id": id(&plain), "estimate_minutes": bad }),
            )
            .await;
        assert!(
            error.starts_with("invalid_argument: invalid `estimate_minutes`"),
            "{bad}: {error}"
        );
    }
    assert_eq!(task_count(&db).await, before, "nothing written");

    let weekly = add(
        &client,
        json!({ "title": "review", "due": "2026-12-01", "repeat": "FREQ=WEEKLY", "estimate_minutes": 25 }),
    )
    .await;
    let done = client
        .call_ok("complete_task", json!({ "task_id": id(&weekly) }))
        .await;
    assert_eq!(done["next_task"]["estimate_minutes"], 25);
    let stored = support::sql::texts(
        &db,
        "SELECT CAST(estimate_minutes AS TEXT) AS j FROM tasks WHERE title = 'review' ORDER BY id",
    )
    .await;
    assert_eq!(stored, ["25", "25"]);
    client.close().await;
}

both_backends!(
    estimates_are_kept_changed_and_cleared,
    list_labels_counts_pending_tasks,
    fields_are_kept_as_given,
    bad_values_are_refused_by_name_and_write_nothing,
    lists_filter_and_sort_with_stable_pages,
    subtasks_go_with_their_parent,
    repeating_tasks_roll_over_on_completion,
);
