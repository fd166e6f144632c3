//! Users are isolated from each other: another user's task or conversation id behaves exactly
//! like an id that does not exist, and no list ever shows another user's rows.
//!
//! Every test runs one server per user (in process) on one shared database.

use crate::support;

use serde_json::{Value, json};
use support::jwt::sign_hs256;
use support::samples::{self, Seed};
use support::{McpClient, TestDb, connect_in_process, create_token};
use uuid::Uuid;

const JWT_SECRET: &str = "isolation-test-jwt-secret-32-bytes-at-least";

/// An HS256 JWT for `sub`, valid for an hour, signed with [`JWT_SECRET`].
fn jwt_for(sub: &str) -> String {
    let claims = json!({ "sub": sub, "exp": chrono::Utc::now().timestamp() + 3600 });
    sign_hs256(&claims, JWT_SECRET)
}

/// A server for `user`, authenticated by an API token issued for them.
async fn connect_as(db: &TestDb, user: &str) -> McpClient {
    let token = create_token(db.url(), user);
    connect_in_process(db.url(), Some(&token), &[]).await
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {items}"))
        .iter()
        .map(|item| str_at(item, "/id").to_string())
        .collect()
}

/// The id of the caller's conversation titled `title`, from a `list_conversations` result.
fn conversation_titled(list: &Value, title: &str) -> String {
    list["conversations"]
        .as_array()
        .expect("list_conversations returns a `conversations` array")
        .iter()
        .find(|c| c["title"] == title)
        .map(|c| str_at(c, "/id").to_string())
        .unwrap_or_else(|| panic!("no conversation titled {title:?} in {list}"))
}

/// Calls `tool` twice as `client`: once with `make(foreign_id)` (an id that exists, but is
/// another user's) and once with `make(unknown_id)` (a random uuid nobody has). Both must fail
/// with `not_found`, and their messages must be identical once the id is swapped: a caller
/// cannot tell another user's id from one that does not exist.
async fn assert_like_unknown(
    client: &McpClient,
    tool: &str,
    foreign_id: &str,
    make: impl Fn(&str) -> Value,
) {
    let unknown_id = Uuid::new_v4().to_string();
    let foreign = client.call_err(tool, make(foreign_id)).await;
    let unknown = client.call_err(tool, make(&unknown_id)).await;
    assert!(
        unknown.starts_with("not_found: ") && unknown.contains(&unknown_id),
        "{tool} with an unknown id should fail with `not_found: ...` naming the id, got {unknown:?}"
    );
    assert_eq!(
        foreign,
        unknown.replace(&unknown_id, foreign_id),
        "{tool} with another user's id must fail exactly like with an unknown id"
    );
}

/// What alice sees of the rows of `seed`: her task, the conversation's entry, history and
/// agent state.
async fn seen_by_owner(owner: &McpClient, seed: &Seed) -> Vec<Value> {
    let conversations = owner
        .call_ok("list_conversations", json!({ "include_archived": true }))
        .await;
    let entry = conversations["conversations"]
        .as_array()
        .expect("list_conversations returns a `conversations` array")
        .iter()
        .find(|c| c["id"] == seed.conversation.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the seeded conversation is not listed: {conversations}"));
    vec![
        owner
            .call_ok("get_task", json!({ "task_id": seed.task }))
            .await,
        entry,
        owner
            .call_ok(
                "get_conversation_history",
                json!({ "conversation_id": seed.conversation }),
            )
            .await,
        owner
            .call_ok(
                "get_agent_state",
                json!({ "conversation_id": seed.conversation }),
            )
            .await,
    ]
}

/// Bob makes every tool's sample call (tests/support/samples.rs, so a new tool is tried
/// too) on alice's rows: each call that names one of them fails exactly as the same call on
/// ids nobody has, and nothing of hers changes.
async fn every_tool_on_another_users_rows_behaves_like_unknown_ids(db: TestDb) {
    let alice = connect_as(&db, "alice").await;
    let bob = connect_as(&db, "bob").await;
    let seed = Seed::plant(&alice).await;
    let before = seen_by_owner(&alice, &seed).await;
    let unknown = Seed {
        task: Uuid::new_v4().to_string(),
        conversation: Uuid::new_v4().to_string(),
        message: json!(9_000_000_001_i64),
    };
    let mut naming_no_row = Vec::new();
    for (tool, on_hers) in samples::all(&seed) {
        let on_unknown = samples::sample(tool, &unknown).expect("every tool has a sample");
        if on_hers == on_unknown {
            // A call that names no row acts on bob's own.
            bob.call_ok(tool, on_hers).await;
            naming_no_row.push(tool);
            continue;
        }
        let foreign = bob.call_err(tool, on_hers).await;
        let expected = bob
            .call_err(tool, on_unknown)
            .await
            .replace(&unknown.task, &seed.task)
            .replace(&unknown.conversation, &seed.conversation)
            .replace(&unknown.message.to_string(), &seed.message.to_string());
        assert_eq!(
            foreign, expected,
            "{tool} on another user's rows must fail exactly as on ids nobody has"
        );
    }
    // Every other sample named her rows: a new tool's sample that names none is a choice
    // to make here, not a silent pass.
    assert_eq!(
        naming_no_row,
        [
            "add_task",
            "list_tasks",
            "list_labels",
            "start_conversation",
            "list_conversations"
        ],
        "the samples that name none of the seeded rows"
    );
    assert_eq!(
        seen_by_owner(&alice, &seed).await,
        before,
        "bob's calls changed alice's rows"
    );
    alice.close().await;
    bob.close().await;
}

/// Bob tries every tool on alice's ids: each attempt fails like an unknown id, nothing of
/// alice's changes (not even her activity log), and bob's lists never show her rows.
async fn other_users_ids_behave_like_unknown_ids(db: TestDb) {
    let alice = connect_as(&db, "alice").await;
    let bob = connect_as(&db, "bob").await;

    // Alice's data: a pending task in a conversation with messages and a summary, a completed
    // task, and an archived conversation.
    let plans = alice
        .call_ok("start_conversation", json!({ "title": "alice's plans" }))
        .await;
    let plans = str_at(&plans, "/conversation/id").to_string();
    let message = alice
        .call_ok(
            "append_message",
            json!({ "conversation_id": plans, "role": "user", "content": "buy a ring" }),
        )
        .await;
    let message_id = message["message"]["id"]
        .as_i64()
        .expect("a message id is an integer");
    alice
        .call_ok(
            "set_conversation_summary",
            json!({ "conversation_id": plans, "summary": "a secret", "through_message_id": message_id }),
        )
        .await;
    let pending = alice
        .call_ok(
            "add_task",
            json!({ "title": "ring", "description": "gold", "conversation_id": plans, "idempotency_key": "key-1" }),
        )
        .await;
    let pending = str_at(&pending, "/task/id").to_string();
    let done = alice
        .call_ok("add_task", json!({ "title": "flowers" }))
        .await;
    let done = str_at(&done, "/task/id").to_string();
    alice
        .call_ok("complete_task", json!({ "task_id": done }))
        .await;
    let old = alice
        .call_ok("start_conversation", json!({ "title": "alice's old chat" }))
        .await;
    let old = str_at(&old, "/conversation/id").to_string();
    alice
        .call_ok("archive_conversation", json!({ "conversation_id": old }))
        .await;

    // Alice's view before bob acts. Reading "Tool activity" last: that read is recorded in
    // the reads log, so re-reading it later shows only what happened in between.
    let alice_tasks = alice.call_ok("list_tasks", json!({})).await;
    let alice_conversations = alice
        .call_ok("list_conversations", json!({ "include_archived": true }))
        .await;
    let activity = conversation_titled(&alice_conversations, "Tool activity");
    let reads = conversation_titled(
        &alice_conversations,
        "Tool activity: reads of the activity log",
    );
    let plans_history = alice
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": plans }),
        )
        .await;
    let old_history = alice
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": old }),
        )
        .await;
    let activity_history = alice
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": activity, "limit": 200 }),
        )
        .await;
    assert_eq!(
        ids(&alice_tasks["tasks"]),
        [done.as_str(), pending.as_str()]
    );
    let roles: Vec<&Value> = plans_history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["role"])
        .collect();
    assert_eq!(roles, ["user", "tool"], "the message and add_task's record");
    assert_eq!(plans_history["summary"], "a secret");

    // Bob's own task and conversation, to use alongside alice's ids. Idempotency keys are
    // per user: alice's key creates a new task for bob, not a copy of hers.
    let bob_task = bob
        .call_ok(
            "add_task",
            json!({ "title": "bob's task", "idempotency_key": "key-1" }),
        )
        .await;
    assert_eq!(bob_task["task"]["title"], "bob's task");
    let bob_task = str_at(&bob_task, "/task/id").to_string();
    assert_ne!(bob_task, pending);
    let bob_chat = bob
        .call_ok("start_conversation", json!({ "title": "bob's chat" }))
        .await;
    let bob_chat = str_at(&bob_chat, "/conversation/id").to_string();

    // Task tools on alice's tasks.
    for task in [&pending, &done] {
        assert_like_unknown(&bob, "get_task", task, |id| json!({ "task_id": id })).await;
        assert_like_unknown(&bob, "complete_task", task, |id| json!({ "task_id": id })).await;
        assert_like_unknown(&bob, "update_task", task, |id| {
            json!({ "task_id": id, "title": "bob was here", "description": "", "completed": false })
        })
        .await;
        assert_like_unknown(
            &bob,
            "update_task",
            task,
            |id| json!({ "task_id": id, "completed": true, "conversation_id": bob_chat }),
        )
        .await;
        assert_like_unknown(&bob, "delete_task", task, |id| json!({ "task_id": id })).await;
        assert_like_unknown(
            &bob,
            "delete_task",
            task,
            |id| json!({ "task_id": id, "conversation_id": bob_chat }),
        )
        .await;
    }

    // Task tools recording into alice's conversation, even on bob's own task.
    assert_like_unknown(
        &bob,
        "add_task",
        &plans,
        |id| json!({ "title": "bob's intrusion", "conversation_id": id }),
    )
    .await;
    assert_like_unknown(
        &bob,
        "list_tasks",
        &plans,
        |id| json!({ "conversation_id": id }),
    )
    .await;
    assert_like_unknown(
        &bob,
        "complete_task",
        &plans,
        |id| json!({ "task_id": bob_task, "conversation_id": id }),
    )
    .await;
    assert_like_unknown(
        &bob,
        "update_task",
        &plans,
        |id| json!({ "task_id": bob_task, "title": "renamed", "conversation_id": id }),
    )
    .await;
    assert_like_unknown(
        &bob,
        "delete_task",
        &plans,
        |id| json!({ "task_id": bob_task, "conversation_id": id }),
    )
    .await;

    // Conversation tools on each of alice's conversations, her activity logs included (their
    // ids are fixed per user, so they are the easiest to guess).
    for conversation in [&plans, &old, &activity, &reads] {
        assert_like_unknown(
            &bob,
            "append_message",
            conversation,
            |id| json!({ "conversation_id": id, "role": "user", "content": "hi from bob" }),
        )
        .await;
        assert_like_unknown(
            &bob,
            "get_conversation_history",
            conversation,
            |id| json!({ "conversation_id": id }),
        )
        .await;
        assert_like_unknown(
            &bob,
            "set_conversation_summary",
            conversation,
            |id| json!({ "conversation_id": id, "summary": "bob's summary" }),
        )
        .await;
        assert_like_unknown(
            &bob,
            "archive_conversation",
            conversation,
            |id| json!({ "conversation_id": id }),
        )
        .await;
    }
    assert_like_unknown(&bob, "set_conversation_summary", &plans, |id| {
        json!({ "conversation_id": id, "summary": "bob's summary", "through_message_id": message_id })
    })
    .await;

    // Alice's message id in bob's own conversation is "not in this conversation", exactly
    // like a message id nobody has.
    let unknown_message = 9_000_000_000_i64;
    let foreign = bob
        .call_err(
            "set_conversation_summary",
            json!({ "conversation_id": bob_chat, "summary": "s", "through_message_id": message_id }),
        )
        .await;
    let unknown = bob
        .call_err(
            "set_conversation_summary",
            json!({ "conversation_id": bob_chat, "summary": "s", "through_message_id": unknown_message }),
        )
        .await;
    assert!(
        unknown.starts_with("invalid_argument: ") && unknown.contains("through_message_id"),
        "{unknown}"
    );
    assert_eq!(
        foreign,
        unknown.replace(&unknown_message.to_string(), &message_id.to_string())
    );

    // Alice's data is exactly as it was, her activity log included: bob's failed calls were
    // recorded in his own logs, not hers.
    let activity_after = alice
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": activity, "limit": 200 }),
        )
        .await;
    assert_eq!(activity_after, activity_history);
    assert_eq!(alice.call_ok("list_tasks", json!({})).await, alice_tasks);
    assert_eq!(
        alice
            .call_ok("list_conversations", json!({ "include_archived": true }))
            .await,
        alice_conversations
    );
    assert_eq!(
        alice
            .call_ok(
                "get_conversation_history",
                json!({ "conversation_id": plans })
            )
            .await,
        plans_history
    );
    assert_eq!(
        alice
            .call_ok(
                "get_conversation_history",
                json!({ "conversation_id": old })
            )
            .await,
        old_history
    );

    // Bob has his own task, unchanged by the attempts that named it with alice's
    // conversation, and only his own conversations.
    let bob_tasks = bob.call_ok("list_tasks", json!({ "status": "all" })).await;
    assert_eq!(ids(&bob_tasks["tasks"]), [bob_task.as_str()]);
    assert_eq!(bob_tasks["tasks"][0]["title"], "bob's task");
    assert_eq!(bob_tasks["tasks"][0]["completed"], false);
    let bob_conversations = bob
        .call_ok("list_conversations", json!({ "include_archived": true }))
        .await;
    let mut titles: Vec<&str> = bob_conversations["conversations"]
        .as_array()
        .expect("conversations array")
        .iter()
        .map(|c| {
            c["title"]
                .as_str()
                .expect("bob's conversations have titles")
        })
        .collect();
    titles.sort_unstable();
    assert_eq!(
        titles,
        [
            "Tool activity",
            "Tool activity: reads of the activity log",
            "bob's chat"
        ]
    );
    let alice_ids = ids(&alice_conversations["conversations"]);
    for id in ids(&bob_conversations["conversations"]) {
        assert!(
            !alice_ids.contains(&id),
            "bob's list shows alice's conversation {id}"
        );
    }
    // Bob's failed calls are recorded in his own activity log: the add_task that named
    // alice's conversation among them.
    let bob_activity = conversation_titled(&bob_conversations, "Tool activity");
    let bob_activity = bob
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": bob_activity, "limit": 200 }),
        )
        .await;
    let intrusion = bob_activity["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| {
            m["tool_calls"]["tool"] == "add_task"
                && m["tool_calls"]["arguments"]["conversation_id"] == plans.as_str()
        })
        .unwrap_or_else(|| {
            panic!("no record of add_task into alice's conversation: {bob_activity}")
        });
    assert_eq!(intrusion["tool_calls"]["ok"], false);
    assert_eq!(intrusion["tool_calls"]["error"]["kind"], "not_found");
    assert_eq!(
        intrusion["tool_calls"]["error"]["message"],
        format!("conversation {plans} not found")
    );

    // Bob's chat holds only the records of his own calls that named it.
    let bob_chat_history = bob
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": bob_chat, "limit": 200 }),
        )
        .await;
    let bob_chat_messages = bob_chat_history["messages"].as_array().expect("messages");
    // update_task and delete_task, on each of alice's two tasks, with her id and a random one.
    assert_eq!(bob_chat_messages.len(), 8, "{bob_chat_history}");
    for message in bob_chat_messages {
        assert_eq!(message["role"], "tool", "{message}");
        assert_eq!(message["tool_calls"]["ok"], false, "{message}");
    }

    alice.close().await;
    bob.close().await;
}

/// Every way of listing (filters, text search, pagination, archived included) shows each
/// user only their own rows, even when the other user's rows match the filter.
async fn lists_never_show_other_users_rows(db: TestDb) {
    let alice = connect_as(&db, "alice").await;
    let bob = connect_as(&db, "bob").await;

    let mut tasks = [Vec::new(), Vec::new()];
    let mut conversations = [Vec::new(), Vec::new()];
    // Interleaved, so that each user's rows sit between the other's in id order.
    for round in 0..3 {
        for (n, (client, name)) in [(&alice, "alice"), (&bob, "bob")].into_iter().enumerate() {
            let task = client
                .call_ok(
                    "add_task",
                    json!({ "title": format!("shared word {name} {round}"), "description": "common" }),
                )
                .await;
            let task = str_at(&task, "/task/id").to_string();
            if round == 1 {
                client
                    .call_ok("complete_task", json!({ "task_id": task }))
                    .await;
            }
            tasks[n].push(task);
            let conversation = client
                .call_ok(
                    "start_conversation",
                    json!({ "title": format!("shared chat {name} {round}") }),
                )
                .await;
            let conversation = str_at(&conversation, "/conversation/id").to_string();
            if round == 2 {
                client
                    .call_ok(
                        "archive_conversation",
                        json!({ "conversation_id": conversation }),
                    )
                    .await;
            }
            conversations[n].push(conversation);
        }
    }

    for (n, client) in [&alice, &bob].into_iter().enumerate() {
        let own = &tasks[n];
        let newest_first: Vec<String> = own.iter().rev().cloned().collect();
        let list = |args: Value| async move {
            let page = client.call_ok("list_tasks", args).await;
            ids(&page["tasks"])
        };
        assert_eq!(list(json!({})).await, newest_first);
        assert_eq!(
            list(json!({ "status": "pending" })).await,
            [own[2].as_str(), own[0].as_str()]
        );
        assert_eq!(
            list(json!({ "status": "completed" })).await,
            [own[1].as_str()]
        );
        assert_eq!(list(json!({ "query": "SHARED word" })).await, newest_first);
        assert_eq!(list(json!({ "query": "common" })).await, newest_first);
        assert_eq!(list(json!({ "query": "alice" })).await.len(), 3 * (1 - n));
        assert_eq!(list(json!({ "query": "bob" })).await.len(), 3 * n);

        // One task per page: the pages together are exactly the user's tasks.
        let mut paged = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let mut args = json!({ "limit": 1 });
            if !cursor.is_null() {
                args["cursor"] = cursor.clone();
            }
            let page = client.call_ok("list_tasks", args).await;
            paged.extend(ids(&page["tasks"]));
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
            assert!(paged.len() <= 3, "more pages than the user has tasks");
        }
        assert_eq!(paged, newest_first);

        // Conversations: the user's own plus their two activity logs; archived only on request.
        let own = &conversations[n];
        let all = client
            .call_ok("list_conversations", json!({ "include_archived": true }))
            .await;
        let all = ids(&all["conversations"]);
        assert_eq!(all.len(), 5, "{all:?}");
        for id in own {
            assert!(all.contains(id), "{id} missing from {all:?}");
        }
        let other = &conversations[1 - n];
        let active = client.call_ok("list_conversations", json!({})).await;
        let active = ids(&active["conversations"]);
        assert_eq!(active.len(), 4, "{active:?}");
        assert!(!active.contains(&own[2]), "archived conversation listed");
        for id in other {
            assert!(
                !all.contains(id) && !active.contains(id),
                "another user's conversation {id} is listed"
            );
        }
        let mut paged = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let mut args = json!({ "limit": 2, "include_archived": true });
            if !cursor.is_null() {
                args["cursor"] = cursor.clone();
            }
            let page = client.call_ok("list_conversations", args).await;
            paged.extend(ids(&page["conversations"]));
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
            assert!(
                paged.len() <= 5,
                "more pages than the user has conversations"
            );
        }
        assert_eq!(paged, all);
    }

    alice.close().await;
    bob.close().await;
}

/// A JWT naming `carol` and an API token issued for `carol` are the same user: each server
/// sees and changes the other's data. A JWT naming `dave` is another user.
async fn jwt_and_api_token_with_the_same_sub_are_one_user(db: TestDb) {
    let secret = [("TODO_MCP_JWT_SECRET", JWT_SECRET)];
    let by_token = connect_as(&db, "carol").await;
    let by_jwt = connect_in_process(db.url(), Some(&jwt_for("carol")), &secret).await;
    let dave = connect_in_process(db.url(), Some(&jwt_for("dave")), &secret).await;

    let first = by_token
        .call_ok("add_task", json!({ "title": "via api token" }))
        .await;
    let first = str_at(&first, "/task/id").to_string();
    let chat = by_token
        .call_ok("start_conversation", json!({ "title": "carol's chat" }))
        .await;
    let chat = str_at(&chat, "/conversation/id").to_string();

    // The JWT session sees it all and its changes show in the token session.
    let seen = by_jwt.call_ok("list_tasks", json!({})).await;
    assert_eq!(ids(&seen["tasks"]), [first.as_str()]);
    let second = by_jwt
        .call_ok(
            "add_task",
            json!({ "title": "via jwt", "conversation_id": chat }),
        )
        .await;
    let second = str_at(&second, "/task/id").to_string();
    by_jwt
        .call_ok("complete_task", json!({ "task_id": first }))
        .await;
    by_jwt
        .call_ok(
            "append_message",
            json!({ "conversation_id": chat, "role": "user", "content": "from the jwt session" }),
        )
        .await;
    // (Filtered by status: the two tasks were created by different processes, so their
    // relative order is not the point here.)
    let completed = by_token
        .call_ok("list_tasks", json!({ "status": "completed" }))
        .await;
    assert_eq!(ids(&completed["tasks"]), [first.as_str()]);
    let pending = by_token
        .call_ok("list_tasks", json!({ "status": "pending" }))
        .await;
    assert_eq!(ids(&pending["tasks"]), [second.as_str()]);
    let history = by_token
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": chat }),
        )
        .await;
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    assert_eq!(contents, ["add_task succeeded", "from the jwt session"]);

    // One user, so one set of conversations, activity logs included.
    let token_view = by_token
        .call_ok("list_conversations", json!({ "include_archived": true }))
        .await;
    let jwt_view = by_jwt
        .call_ok("list_conversations", json!({ "include_archived": true }))
        .await;
    assert_eq!(ids(&token_view["conversations"]).len(), 3);
    assert_eq!(
        ids(&token_view["conversations"]),
        ids(&jwt_view["conversations"])
    );

    // dave (another sub, same secret) sees none of it and cannot touch it.
    let daves = dave.call_ok("list_tasks", json!({})).await;
    assert_eq!(daves["tasks"], json!([]));
    let daves = dave
        .call_ok("list_conversations", json!({ "include_archived": true }))
        .await;
    let daves = ids(&daves["conversations"]);
    assert_eq!(daves.len(), 2, "dave has only his activity logs: {daves:?}");
    for id in &daves {
        assert!(!ids(&token_view["conversations"]).contains(id));
    }
    assert_like_unknown(&dave, "delete_task", &first, |id| json!({ "task_id": id })).await;
    assert_like_unknown(
        &dave,
        "get_conversation_history",
        &chat,
        |id| json!({ "conversation_id": id }),
    )
    .await;
    let mut seen = ids(&by_jwt.call_ok("list_tasks", json!({})).await["tasks"]);
    seen.sort_unstable();
    let mut expected = [first, second];
    expected.sort_unstable();
    assert_eq!(seen, expected, "dave's attempts changed nothing");

    by_token.close().await;
    by_jwt.close().await;
    dave.close().await;
}

/// A list cursor is bound to its user and its list: another user's cursor, a cursor of
/// the other list, and a well-formed made-up one are refused with `invalid_argument`.
async fn cursors_are_bound_to_their_user_and_list(db: TestDb) {
    let alice = connect_as(&db, "alice").await;
    let bob = connect_as(&db, "bob").await;
    for title in ["one", "two", "three"] {
        alice.call_ok("add_task", json!({ "title": title })).await;
        bob.call_ok("add_task", json!({ "title": title })).await;
        alice
            .call_ok("start_conversation", json!({ "title": title }))
            .await;
    }
    let page = alice.call_ok("list_tasks", json!({ "limit": 1 })).await;
    let task_cursor = str_at(&page, "/next_cursor").to_owned();
    let page = alice
        .call_ok("list_conversations", json!({ "limit": 1 }))
        .await;
    let conversation_cursor = str_at(&page, "/next_cursor").to_owned();
    // Alice's own cursors work.
    let next = alice
        .call_ok("list_tasks", json!({ "limit": 1, "cursor": task_cursor }))
        .await;
    assert_eq!(next["tasks"][0]["title"], "two");

    let refused = "invalid_argument: invalid `cursor`: is not a cursor this list returned";
    // The shape cursors had before they were signed: `t_` and a base64url task id.
    let made_up = format!("t_{}", base64url(&[0x01; 16]));
    for (who, tool, cursor) in [
        (&bob, "list_tasks", &task_cursor),
        (&bob, "list_conversations", &conversation_cursor),
        (&alice, "list_conversations", &task_cursor),
        (&alice, "list_tasks", &made_up),
    ] {
        let error = who
            .call_err(tool, json!({ "limit": 1, "cursor": cursor }))
            .await;
        assert_eq!(error, refused, "{tool} with cursor {cursor}");
    }
    alice.close().await;
    bob.close().await;
}

/// Unpadded base64url, as cursors use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

both_backends!(
    cursors_are_bound_to_their_user_and_list,
    every_tool_on_another_users_rows_behaves_like_unknown_ids,
    other_users_ids_behave_like_unknown_ids,
    lists_never_show_other_users_rows,
    jwt_and_api_token_with_the_same_sub_are_one_user,
);
