//! Agent state per conversation, on both backends: versions 1, 2, … with compare-and-set
//! (`expected_version`, 0 meaning "none yet"), two writers with the same expected version
//! of which exactly one wins, earlier versions readable until the `--max-state-versions`
//! limit prunes them (then a clear error saying which are kept), the `--max-state-bytes`
//! limit (nothing written past it), archived conversations refusing saves until
//! `unarchive_conversation`, and another user's conversation looking like no conversation.

mod support;

use serde_json::{Value, json};
use support::{TestDb, connect_stdio, create_token};

async fn conversation(client: &support::StdioClient) -> String {
    let started = client
        .call_ok("start_conversation", json!({ "title": "agent" }))
        .await;
    started["conversation"]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn versions_compare_and_set_and_time_travel(db: TestDb) {
    let client = connect_stdio(db.url(), None, &[("TODO_MCP_MAX_STATE_VERSIONS", "3")]).await;
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
    let a = connect_stdio(db.url(), Some(&token), &[]).await;
    let b = connect_stdio(db.url(), Some(&token), &[]).await;
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
    let client = connect_stdio(
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
    let other = connect_stdio(db.url(), Some(&bob), &[]).await;
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
async fn contents(client: &support::StdioClient, id: &str) -> Vec<String> {
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
    let client = connect_stdio(db.url(), None, &[("TODO_MCP_MAX_MESSAGE_BYTES", "100")]).await;
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
    let a = connect_stdio(db.url(), Some(&token), &[]).await;
    let b = connect_stdio(db.url(), Some(&token), &[]).await;
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

both_backends!(
    a_turn_is_all_or_nothing,
    a_retried_turn_is_written_once,
    versions_compare_and_set_and_time_travel,
    one_of_two_concurrent_writers_wins,
    limits_archiving_and_other_users,
);
