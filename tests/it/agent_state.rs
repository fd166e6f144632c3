//! Agent state per conversation, on both backends: versions 1, 2, … with compare-and-set
//! (`expected_version`, 0 meaning "none yet"), two writers with the same expected version
//! of which exactly one wins, earlier versions readable until the `--max-state-versions`
//! limit prunes them (then a clear error saying which are kept), the `--max-state-bytes`
//! limit (nothing written past it), archived conversations refusing saves until
//! `unarchive_conversation`, and another user's conversation looking like no conversation.

use crate::support;

use serde_json::{Value, json};
use support::{TestDb, connect_in_process, create_token};

async fn conversation(client: &support::McpClient) -> String {
    let started = client
        .call_ok("start_conversation", json!({ "title": "agent" }))
        .await;
    started["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn versions_compare_and_set_and_time_travel(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[("TODO_MCP_MAX_STATE_VERSIONS", "3")]).await;
    let id = conversation(&client).await;

    let none = client
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(
        none,
        json!({ "conversation_id": id, "state": null, "version": 0, "updated_at": null })
    );
    let first = client
        .call_ok(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "step": 1, "plan": ["a", "b"] }, "expected_version": 0 }),
        )
        .await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["conversation_id"], id.as_str());
    // 0 means "no state yet": now wrong.
    let stale = client
        .call_err(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "step": 99 }, "expected_version": 0 }),
        )
        .await;
    assert!(
        stale.starts_with("conflict: ") && stale.contains("at version 1, not 0"),
        "{stale}"
    );
    for step in 2..=5 {
        let saved = client
            .call_ok(
                "save_agent_state",
                json!({ "conversation_id": id, "state": { "step": step }, "expected_version": step - 1 }),
            )
            .await;
        assert_eq!(saved["version"], step);
    }
    // Without expected_version: saved unconditionally.
    let six = client
        .call_ok(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "step": 6 } }),
        )
        .await;
    assert_eq!(six["version"], 6);

    let latest = client
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(latest["state"], json!({ "step": 6 }));
    assert_eq!(latest["version"], 6);
    assert_eq!(latest["updated_at"], six["updated_at"]);
    let earlier = client
        .call_ok(
            "get_agent_state",
            json!({ "conversation_id": id, "version": 4 }),
        )
        .await;
    assert_eq!(earlier["state"], json!({ "step": 4 }));
    // Three versions kept: 4, 5, 6.
    let pruned = client
        .call_err(
            "get_agent_state",
            json!({ "conversation_id": id, "version": 3 }),
        )
        .await;
    assert!(
        pruned.starts_with("not_found: ") && pruned.contains("versions 4 to 6 are"),
        "{pruned}"
    );
    let future = client
        .call_err(
            "get_agent_state",
            json!({ "conversation_id": id, "version": 7 }),
        )
        .await;
    assert!(future.contains("the latest is 6"), "{future}");
    let kept = support::sql::texts(
        &db,
        "SELECT CAST(version AS TEXT) AS j FROM agent_states ORDER BY version",
    )
    .await;
    assert_eq!(kept, ["4", "5", "6"]);
    client.close().await;
}

/// Two writers with the same expected version at once, many times over: exactly one of
/// each pair wins, the other gets `conflict`, and the versions have no gap or duplicate.
async fn one_of_two_concurrent_writers_wins(db: TestDb) {
    let token = create_token(db.url(), "alice");
    let a = connect_in_process(db.url(), Some(&token), &[]).await;
    let b = connect_in_process(db.url(), Some(&token), &[]).await;
    let id = conversation(&a).await;
    for round in 0..10 {
        let args = |who: &str| json!({ "conversation_id": id, "state": { "writer": who, "round": round }, "expected_version": round });
        let (from_a, from_b) = tokio::join!(
            a.call("save_agent_state", args("a")),
            b.call("save_agent_state", args("b"))
        );
        let outcomes: Vec<bool> = [&from_a, &from_b]
            .iter()
            .map(|r| r.is_error != Some(true))
            .collect();
        assert_eq!(
            outcomes.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: exactly one save wins: {from_a:?} {from_b:?}"
        );
        let loser = if outcomes[0] { &from_b } else { &from_a };
        assert!(
            format!("{:?}", loser.content).contains("conflict: "),
            "{loser:?}"
        );
    }
    let latest = a
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(latest["version"], 10);
    a.close().await;
    b.close().await;
}

async fn limits_archiving_and_other_users(db: TestDb) {
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let client = connect_in_process(
        db.url(),
        Some(&alice),
        &[("TODO_MCP_MAX_STATE_BYTES", "1000")],
    )
    .await;
    let id = conversation(&client).await;
    let big = "x".repeat(1000);
    let refused = client
        .call_err(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "blob": big } }),
        )
        .await;
    assert!(
        refused.starts_with("quota_exceeded: ") && refused.contains("at most 1000 bytes"),
        "{refused}"
    );
    let not_object = client
        .call_err(
            "save_agent_state",
            json!({ "conversation_id": id, "state": [1, 2] }),
        )
        .await;
    assert!(
        not_object.starts_with("invalid_argument: ") && not_object.contains("state"),
        "{not_object}"
    );
    let none = client
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(none["version"], 0, "nothing written by refused saves");

    client
        .call_ok(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "k": "v" } }),
        )
        .await;
    client
        .call_ok("archive_conversation", json!({ "conversation_id": id }))
        .await;
    let archived = client
        .call_err(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "k": "w" } }),
        )
        .await;
    assert!(
        archived.starts_with("conflict: ") && archived.contains("unarchive_conversation"),
        "{archived}"
    );
    // Still readable while archived; writable again once unarchived.
    let read = client
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(read["state"], json!({ "k": "v" }));
    let back = client
        .call_ok("unarchive_conversation", json!({ "conversation_id": id }))
        .await;
    assert_eq!(back["conversation"]["status"], "active");
    assert_eq!(back["conversation"]["archived_at"], Value::Null);
    let again = client
        .call_ok("unarchive_conversation", json!({ "conversation_id": id }))
        .await;
    assert_eq!(
        again["conversation"], back["conversation"],
        "unarchiving an active one changes nothing"
    );
    let listed = client.call_ok("list_conversations", json!({})).await;
    assert!(
        listed["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str())
    );
    let saved = client
        .call_ok(
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "k": "w" } }),
        )
        .await;
    assert_eq!(saved["version"], 2);
    client.close().await;

    // Bob: Alice's conversation is no conversation of his, for every state tool.
    let other = connect_in_process(db.url(), Some(&bob), &[]).await;
    for (tool, args) in [
        ("get_agent_state", json!({ "conversation_id": id })),
        (
            "get_agent_state",
            json!({ "conversation_id": id, "version": 1 }),
        ),
        (
            "save_agent_state",
            json!({ "conversation_id": id, "state": { "mine": true } }),
        ),
        ("unarchive_conversation", json!({ "conversation_id": id })),
    ] {
        let error = other.call_err(tool, args).await;
        assert!(
            error.starts_with(&format!("not_found: conversation {id}")),
            "{tool}: {error}"
        );
    }
    other.close().await;
    let states = support::sql::texts(&db, "SELECT user_id AS j FROM agent_states").await;
    assert_eq!(states, ["alice", "alice"]);
}

/// The contents of a conversation's messages, oldest first.
async fn contents(client: &support::McpClient, id: &str) -> Vec<String> {
    let history = client
        .call_ok(
            "get_conversation_history",
            json!({ "conversation_id": id, "limit": 200 }),
        )
        .await;
    history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content").to_owned())
        .collect()
}

fn turn(id: &str, texts: &[&str], state: Value, expected: i64) -> Value {
    let roles = ["user", "assistant"];
    let messages: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| json!({ "role": roles[i % 2], "content": text }))
        .collect();
    json!({ "conversation_id": id, "messages": messages, "state": state, "expected_version": expected })
}

/// Messages and state together, in order; a failure anywhere leaves neither.
async fn a_turn_is_all_or_nothing(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[("TODO_MCP_MAX_MESSAGE_BYTES", "100")]).await;
    let id = conversation(&client).await;
    let first = client
        .call_ok(
            "commit_turn",
            turn(
                &id,
                &["hello", "hi there", "what next?"],
                json!({ "turn": 1 }),
                0,
            ),
        )
        .await;
    let ids: Vec<i64> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
    assert_eq!(first["state"]["version"], 1);
    assert_eq!(first["replayed"], false);
    assert_eq!(
        contents(&client, &id).await,
        ["hello", "hi there", "what next?"]
    );

    // A message over the byte quota in the middle: nothing of the turn is written.
    let big = "x".repeat(101);
    let refused = client
        .call_err(
            "commit_turn",
            turn(&id, &["fine", &big, "fine too"], json!({ "turn": 2 }), 1),
        )
        .await;
    assert!(
        refused.starts_with("quota_exceeded: messages[1]: "),
        "{refused}"
    );
    // An empty message: named by its index.
    let empty = client
        .call_err(
            "commit_turn",
            turn(&id, &["fine", " "], json!({ "turn": 2 }), 1),
        )
        .await;
    assert!(
        empty.starts_with("invalid_argument: invalid `messages`: [1].content must not be empty"),
        "{empty}"
    );
    // A stale expected version: the messages are not written either.
    let stale = client
        .call_err("commit_turn", turn(&id, &["fine"], json!({ "turn": 2 }), 0))
        .await;
    assert!(
        stale.starts_with("conflict: ") && stale.contains("at version 1, not 0"),
        "{stale}"
    );
    assert_eq!(
        contents(&client, &id).await,
        ["hello", "hi there", "what next?"]
    );
    let state = client
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(
        (state["version"].clone(), state["state"].clone()),
        (json!(1), json!({ "turn": 1 }))
    );

    // Messages only, or state only, are turns too; neither is not.
    let only_messages = client
        .call_ok(
            "commit_turn",
            json!({ "conversation_id": id, "messages": [{ "role": "user", "content": "more" }] }),
        )
        .await;
    assert_eq!(only_messages["state"], Value::Null);
    let only_state = client
        .call_ok(
            "commit_turn",
            json!({ "conversation_id": id, "state": { "turn": 3 }, "expected_version": 1 }),
        )
        .await;
    assert_eq!(only_state["messages"], json!([]));
    assert_eq!(only_state["state"]["version"], 2);
    let nothing = client
        .call_err("commit_turn", json!({ "conversation_id": id }))
        .await;
    assert!(nothing.starts_with("invalid_argument: "), "{nothing}");
    client.close().await;
}

/// A retry with the same key returns the first result and writes nothing twice, even when
/// the retry races the first attempt; the key reused for another turn is a conflict.
async fn a_retried_turn_is_written_once(db: TestDb) {
    let token = create_token(db.url(), "alice");
    let a = connect_in_process(db.url(), Some(&token), &[]).await;
    let b = connect_in_process(db.url(), Some(&token), &[]).await;
    let id = conversation(&a).await;
    let mut request = turn(&id, &["question", "answer"], json!({ "turn": 1 }), 0);
    request["idempotency_key"] = json!("turn-1");
    let first = a.call_ok("commit_turn", request.clone()).await;
    let again = b.call_ok("commit_turn", request.clone()).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["messages"], first["messages"]);
    assert_eq!(again["state"], first["state"]);
    // Racing attempts of one new turn.
    let mut racing = turn(&id, &["second question"], json!({ "turn": 2 }), 1);
    racing["idempotency_key"] = json!("turn-2");
    let (x, y) = tokio::join!(
        a.call_ok("commit_turn", racing.clone()),
        b.call_ok("commit_turn", racing.clone())
    );
    assert_eq!(x["messages"], y["messages"]);
    assert_eq!(
        [
            x["replayed"].as_bool().unwrap(),
            y["replayed"].as_bool().unwrap()
        ]
        .iter()
        .filter(|r| **r)
        .count(),
        1,
        "one committed, one replayed: {x} {y}"
    );
    assert_eq!(
        contents(&a, &id).await,
        ["question", "answer", "second question"]
    );
    let state = a
        .call_ok("get_agent_state", json!({ "conversation_id": id }))
        .await;
    assert_eq!(state["version"], 2);
    // The key again, for something else.
    let mut other = turn(&id, &["not the same"], json!({ "turn": 9 }), 2);
    other["idempotency_key"] = json!("turn-1");
    let reused = a.call_err("commit_turn", other).await;
    assert!(
        reused.starts_with("conflict: ") && reused.contains("was used for another turn"),
        "{reused}"
    );
    assert_eq!(contents(&a, &id).await.len(), 3);
    a.close().await;
    b.close().await;
}

/// A turn with the model's tool calls and their results, as an OpenAI-style conversation:
/// the history gives it back message for message, call records left out on request; the
/// refusals name the field; pop and clear hide the agent's messages (not the records) and
/// free the quota, and the rows stay.
async fn the_agents_tool_calls_round_trip_and_pop_and_clear(db: TestDb) {
    let client = connect_in_process(
        db.url(),
        None,
        &[("TODO_MCP_MAX_MESSAGES_PER_CONVERSATION", "5")],
    )
    .await;
    let id = conversation(&client).await;
    let calls = json!([
        { "id": "call_1", "name": "web_search", "arguments": { "q": "weather Paris" } },
        { "id": "call_2", "name": "calculator", "arguments": "{\"expr\":\"2+2\"}" },
    ]);
    let turn = json!({ "conversation_id": id, "messages": [
        { "role": "user", "content": "weather in Paris, and 2+2?" },
        { "role": "assistant", "content": "", "tool_calls": calls },
        { "role": "tool", "tool_call_id": "call_1", "content": "sunny, 21°C" },
        { "role": "tool", "tool_call_id": "call_2", "content": "4" },
        { "role": "assistant", "content": "Sunny and 21°C; 2+2 = 4." },
    ]});
    client.call_ok("commit_turn", turn).await;
    // A task call recorded into this conversation: a call record among the messages.
    client
        .call_ok(
            "add_task",
            json!({ "title": "pack sunglasses", "conversation_id": id }),
        )
        .await;

    let history = |include: bool| json!({ "conversation_id": id, "include_call_records": include });
    let all = client
        .call_ok("get_conversation_history", history(true))
        .await;
    let kinds: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "message",
            "message",
            "message",
            "call_record"
        ]
    );
    let agent = client
        .call_ok("get_conversation_history", history(false))
        .await;
    let messages = agent["messages"].as_array().unwrap();
    // OpenAI chat messages, rebuilt one to one.
    let openai: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut out = json!({ "role": m["role"], "content": m["content"] });
            if !m["tool_calls"].is_null() {
                out["tool_calls"] = m["tool_calls"].clone();
            }
            if !m["tool_call_id"].is_null() {
                out["tool_call_id"] = m["tool_call_id"].clone();
            }
            out
        })
        .collect();
    assert_eq!(
        openai,
        [
            json!({ "role": "user", "content": "weather in Paris, and 2+2?" }),
            json!({ "role": "assistant", "content": "", "tool_calls": calls }),
            json!({ "role": "tool", "tool_call_id": "call_1", "content": "sunny, 21°C" }),
            json!({ "role": "tool", "tool_call_id": "call_2", "content": "4" }),
            json!({ "role": "assistant", "content": "Sunny and 21°C; 2+2 = 4." }),
        ]
    );

    // Refusals name the field, and write nothing.
    for (message, expected) in [
        (
            json!({ "role": "tool", "content": "orphan" }),
            "`tool_call_id`",
        ),
        (
            json!({ "role": "user", "content": "x", "tool_call_id": "call_1" }),
            "`tool_call_id`",
        ),
        (
            json!({ "role": "user", "content": "x", "tool_calls": [{ "id": "a", "name": "n" }] }),
            "`tool_calls`",
        ),
        (
            json!({ "role": "assistant", "content": "", "tool_calls": [{ "id": "a", "name": "n" }, { "id": "a", "name": "m" }] }),
            "given twice",
        ),
        (
            json!({ "role": "assistant", "content": "", "tool_calls": [{ "id": "", "name": "n" }] }),
            "[0].id must not be empty",
        ),
        (
            json!({ "role": "assistant", "content": "" }),
            "`content`: must not be empty",
        ),
    ] {
        let mut args = message.clone();
        args["conversation_id"] = json!(id);
        let error = client.call_err("append_message", args).await;
        assert!(
            error.starts_with("invalid_argument: ") && error.contains(expected),
            "{message}: {error}"
        );
    }

    // The quota (5) is full; pop frees a place and returns the message, twice over.
    let full = client
        .call_err(
            "append_message",
            json!({ "conversation_id": id, "role": "user", "content": "one more" }),
        )
        .await;
    assert!(full.starts_with("quota_exceeded: "), "{full}");
    let popped = client
        .call_ok("pop_message", json!({ "conversation_id": id }))
        .await;
    assert_eq!(popped["message"]["content"], "Sunny and 21°C; 2+2 = 4.");
    let popped = client
        .call_ok("pop_message", json!({ "conversation_id": id }))
        .await;
    assert_eq!(popped["message"]["tool_call_id"], "call_2");
    client
        .call_ok(
            "append_message",
            json!({ "conversation_id": id, "role": "user", "content": "one more" }),
        )
        .await;
    let after_pop = client
        .call_ok("get_conversation_history", history(true))
        .await;
    let contents: Vec<&str> = after_pop["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "weather in Paris, and 2+2?",
            "",
            "sunny, 21°C",
            "add_task succeeded",
            "one more"
        ],
        "the 3 messages left, the call record, the new one"
    );

    // Clear: the agent's messages go, the call records stay; the rows are all kept.
    let cleared = client
        .call_ok("clear_conversation", json!({ "conversation_id": id }))
        .await;
    assert_eq!(cleared["cleared"], 4);
    let after_clear = client
        .call_ok("get_conversation_history", history(true))
        .await;
    let kinds: Vec<&str> = after_clear["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["call_record"]);
    let nothing = client
        .call_ok("pop_message", json!({ "conversation_id": id }))
        .await;
    assert_eq!(nothing["message"], Value::Null);
    for i in 0..5 {
        client
            .call_ok(
                "append_message",
                json!({ "conversation_id": id, "role": "user", "content": format!("fresh {i}") }),
            )
            .await;
    }
    let hidden = support::sql::texts(
        &db,
        "SELECT CAST(COUNT(*) AS TEXT) AS j FROM messages WHERE hidden_at IS NOT NULL",
    )
    .await;
    assert_eq!(
        hidden,
        ["6"],
        "popped and cleared messages are kept, hidden"
    );
    client.close().await;
}

both_backends!(
    the_agents_tool_calls_round_trip_and_pop_and_clear,
    a_turn_is_all_or_nothing,
    a_retried_turn_is_written_once,
    versions_compare_and_set_and_time_travel,
    one_of_two_concurrent_writers_wins,
    limits_archiving_and_other_users,
);
