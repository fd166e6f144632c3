//! search_messages on both backends: the same web-search syntax (words, "phrases", `or`,
//! -exclusions, case-insensitive), ranked, filtered by conversation and role, call records
//! only on request, popped messages not found, signed cursors bound to the search and the
//! user, and another user's messages never found.

use crate::support;

use serde_json::{Value, json};
use support::{McpClient, TestDb, connect_in_process, create_token};

async fn start(client: &McpClient, title: &str) -> String {
    let started = client
        .call_ok("start_conversation", json!({ "title": title }))
        .await;
    started["conversation"]["id"].as_str().unwrap().to_owned()
}

async fn say(client: &McpClient, conversation: &str, role: &str, content: &str) -> i64 {
    let message = client
        .call_ok(
            "append_message",
            json!({ "conversation_id": conversation, "role": role, "content": content }),
        )
        .await;
    message["message"]["id"].as_i64().unwrap()
}

async fn found(client: &McpClient, args: Value) -> Vec<String> {
    let result = client.call_ok("search_messages", args).await;
    result["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["message"]["content"].as_str().unwrap().to_owned())
        .collect()
}

async fn search_finds_what_web_searches_would(db: TestDb) {
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let a = connect_in_process(db.url(), Some(&alice), &[]).await;
    let trip = start(&a, "trip").await;
    let work = start(&a, "work").await;
    say(
        &a,
        &trip,
        "user",
        "Find a cheap hotel in Paris for the weekend",
    )
    .await;
    say(
        &a,
        &trip,
        "assistant",
        "The hotel is cheap but far from Paris",
    )
    .await;
    say(&a, &trip, "user", "What is the weather in Oslo?").await;
    say(
        &a,
        &trip,
        "assistant",
        "Paris weather: sunny. Paris, Paris, always Paris weather.",
    )
    .await;
    say(&a, &work, "user", "Book the Paris office for the offsite").await;
    let popped = say(&a, &work, "user", "paris secret draft").await;
    a.call_ok("pop_message", json!({ "conversation_id": work }))
        .await;
    a.call_ok(
        "add_task",
        json!({ "title": "pack", "conversation_id": trip }),
    )
    .await;

    // Every word must occur; the message with more of them ranks first.
    let weather = found(&a, json!({ "query": "paris weather" })).await;
    assert_eq!(
        weather,
        ["Paris weather: sunny. Paris, Paris, always Paris weather."]
    );
    let paris = found(&a, json!({ "query": "PARIS" })).await;
    assert_eq!(
        paris.len(),
        4,
        "case-insensitive; the popped message is not found: {paris:?}"
    );
    assert_eq!(
        paris[0],
        "Paris weather: sunny. Paris, Paris, always Paris weather."
    );
    // A phrase, in order.
    let phrase = found(&a, json!({ "query": "\"cheap hotel\"" })).await;
    assert_eq!(phrase, ["Find a cheap hotel in Paris for the weekend"]);
    // Either.
    let mut either = found(&a, json!({ "query": "oslo or office" })).await;
    either.sort();
    assert_eq!(
        either,
        [
            "Book the Paris office for the offsite",
            "What is the weather in Oslo?"
        ]
    );
    // Exclusion.
    let mut hotel = found(&a, json!({ "query": "paris -hotel -weather" })).await;
    hotel.sort();
    assert_eq!(hotel, ["Book the Paris office for the offsite"]);
    // Filters: a conversation, a role.
    let in_work = found(&a, json!({ "query": "paris", "conversation_id": work })).await;
    assert_eq!(in_work, ["Book the Paris office for the offsite"]);
    let said_by_assistant = found(&a, json!({ "query": "paris", "role": "assistant" })).await;
    assert_eq!(said_by_assistant.len(), 2, "{said_by_assistant:?}");
    // The server's call records: only on request.
    assert!(found(&a, json!({ "query": "succeeded" })).await.is_empty());
    let records = found(
        &a,
        json!({ "query": "add_task succeeded", "include_call_records": true }),
    )
    .await;
    assert_eq!(records, ["add_task succeeded"]);
    // The snippet marks the words found.
    let result = a
        .call_ok("search_messages", json!({ "query": "oslo" }))
        .await;
    let hit = &result["hits"][0];
    assert!(hit["snippet"].as_str().unwrap().contains("[Oslo]"), "{hit}");
    assert_eq!(hit["conversation_id"], trip.as_str());
    // Popped messages stay in the table, unfound.
    assert!(
        found(&a, json!({ "query": "secret draft" }))
            .await
            .is_empty()
    );
    let kept = support::sql::texts(
        &db,
        &format!("SELECT content AS j FROM messages WHERE id = {popped}"),
    )
    .await;
    assert_eq!(kept, ["paris secret draft"]);

    // Bad queries name the field.
    for (query, expected) in [
        ("", "must not be empty"),
        ("-paris -oslo", "at least one word"),
        ("\"\" !!", "at least one word"),
    ] {
        let error = a
            .call_err("search_messages", json!({ "query": query }))
            .await;
        assert!(
            error.starts_with("invalid_argument: invalid `query`") && error.contains(expected),
            "{query}: {error}"
        );
    }

    // Bob finds nothing of Alice's, by any query or filter.
    let b = connect_in_process(db.url(), Some(&bob), &[]).await;
    say(&b, &start(&b, "bob's").await, "user", "my own Paris notes").await;
    assert_eq!(
        found(&b, json!({ "query": "paris" })).await,
        ["my own Paris notes"]
    );
    let other = b
        .call_err(
            "search_messages",
            json!({ "query": "paris", "conversation_id": trip }),
        )
        .await;
    assert!(
        other.starts_with(&format!("not_found: conversation {trip}")),
        "{other}"
    );
    b.close().await;
    a.close().await;
}

async fn search_pages_with_cursors_bound_to_the_search(db: TestDb) {
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let a = connect_in_process(db.url(), Some(&alice), &[]).await;
    let chat = start(&a, "chat").await;
    for i in 0..5 {
        say(&a, &chat, "user", &format!("note {i} about lunch")).await;
    }
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let mut args = json!({ "query": "lunch", "limit": 2 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = a.call_ok("search_messages", args).await;
        pages += 1;
        for hit in page["hits"].as_array().unwrap() {
            seen.push(hit["message"]["id"].as_i64().unwrap());
        }
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "every hit once: {seen:?}");

    let first = a
        .call_ok("search_messages", json!({ "query": "lunch", "limit": 2 }))
        .await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let other_query = a
        .call_err(
            "search_messages",
            json!({ "query": "note", "limit": 2, "cursor": cursor }),
        )
        .await;
    assert!(
        other_query.starts_with("invalid_argument: invalid `cursor`"),
        "{other_query}"
    );
    let made_up = a
        .call_err(
            "search_messages",
            json!({ "query": "lunch", "cursor": "s_AAAA" }),
        )
        .await;
    assert!(
        made_up.starts_with("invalid_argument: invalid `cursor`"),
        "{made_up}"
    );
    a.close().await;
    let b = connect_in_process(db.url(), Some(&bob), &[]).await;
    let stolen = b
        .call_err(
            "search_messages",
            json!({ "query": "lunch", "limit": 2, "cursor": cursor }),
        )
        .await;
    assert!(
        stolen.starts_with("invalid_argument: invalid `cursor`"),
        "{stolen}"
    );
    b.close().await;
}

/// Hits are ranked a window of the newest 1,000 matches at a time, every match is found
/// once whatever the page size, and pages already started do not shift when new matches
/// arrive.
async fn search_ranks_the_newest_matches_a_window_at_a_time(db: TestDb) {
    const MATCHES: usize = 2150;
    const WINDOW: usize = 1000;
    let client = connect_in_process(db.url(), None, &[]).await;
    let chat = start(&client, "long chat").await;
    // The strongest hits: one in the newest window, one in the oldest.
    let strong = |i: usize| i == 5 || i == MATCHES - 50;
    let contents: Vec<String> = (0..MATCHES)
        .map(|i| {
            if strong(i) {
                format!("lunch lunch lunch, lunch {i}")
            } else {
                format!("note {i}: a long note about what to do, then lunch")
            }
        })
        .collect();
    let mut ids = Vec::new();
    for batch in contents.chunks(100) {
        let messages: Vec<Value> = batch
            .iter()
            .map(|content| json!({ "role": "user", "content": content }))
            .collect();
        let turn = client
            .call_ok(
                "commit_turn",
                json!({ "conversation_id": chat, "messages": messages }),
            )
            .await;
        for message in turn["messages"].as_array().unwrap() {
            ids.push(message["id"].as_i64().unwrap());
        }
    }
    assert_eq!(ids.len(), MATCHES);

    let walk = |limit: usize, interrupt: bool| {
        let client = &client;
        let chat = &chat;
        async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut cursor = Value::Null;
            loop {
                let mut args = json!({ "query": "lunch", "limit": limit });
                if !cursor.is_null() {
                    args["cursor"] = cursor.clone();
                }
                let page = client.call_ok("search_messages", args).await;
                let hits = page["hits"].as_array().unwrap();
                assert!(hits.len() <= limit);
                seen.extend(
                    hits.iter()
                        .map(|hit| hit["message"]["id"].as_i64().unwrap()),
                );
                if interrupt && seen.len() == limit {
                    // A new match after the first page: not in this walk.
                    say(client, chat, "user", "lunch lunch lunch lunch lunch lunch").await;
                }
                cursor = page["next_cursor"].clone();
                if cursor.is_null() {
                    break;
                }
                assert!(seen.len() <= MATCHES, "paging does not end");
            }
            seen
        }
    };
    // 150 a page: pages straddle the windows; 200: they end on them.
    let straddling = walk(150, true).await;
    let aligned = walk(200, false).await;
    let seen = &straddling;
    assert_eq!(seen.len(), MATCHES, "every match once");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, ids, "exactly the matches, each once");
    // The newest window first, its best hit first; then the older windows, each from
    // its best.
    let newest: Vec<i64> = ids[MATCHES - WINDOW..].to_vec();
    let mut first_window = seen[..WINDOW].to_vec();
    first_window.sort();
    assert_eq!(
        first_window, newest,
        "the first window is the newest matches"
    );
    assert_eq!(seen[0], ids[MATCHES - 50], "the newest window's best first");
    assert_eq!(
        seen[2 * WINDOW],
        ids[5],
        "the oldest window's best opens it"
    );
    // Equal ranks go newest first within a window.
    assert!(seen[1] > seen[2] && seen[2] > seen[3], "{:?}", &seen[..4]);
    // The new match, appended while the first walk paged, is found by a fresh search,
    // first: it has the word most often.
    let mut expected = ids.clone();
    expected.push(aligned[0]);
    let mut found_again = aligned.clone();
    found_again.sort();
    assert_eq!(found_again, expected);
    assert!(!ids.contains(&aligned[0]), "the new match ranks first");
    client.close().await;
}

both_backends!(
    search_finds_what_web_searches_would,
    search_pages_with_cursors_bound_to_the_search,
    search_ranks_the_newest_matches_a_window_at_a_time,
);

/// SQLite indexes call records in batches (migration 000019): the server indexes them in
/// the background within seconds, a search that includes records first indexes what is
/// left, a user's erasure takes their records out (indexed or not) without corrupting the
/// index, and a record written with an id the index has passed (an import keeps ids) is
/// indexed as it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_records_are_indexed_in_batches_on_sqlite() {
    let db = TestDb::Sqlite(support::SqliteTestDb::new());
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let a = connect_in_process(db.url(), Some(&alice), &[]).await;
    let b = connect_in_process(db.url(), Some(&bob), &[]).await;
    let number = async |select: &str| -> i64 {
        let texts = support::sql::texts(&db, select).await;
        texts[0]
            .parse()
            .unwrap_or_else(|_| panic!("{select}: {texts:?}"))
    };
    let through = "SELECT through AS j FROM messages_fts_records";
    let newest_record = "SELECT max(id) AS j FROM messages WHERE kind = 'call_record'";
    // The index agrees with the messages table once every record is in it (FTS5 checks
    // against every row of its content table).
    let check_index = "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)";

    // In the background: `through` reaches the newest record within seconds.
    let indexed_in_the_background = async || {
        let newest = number(newest_record).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while number(through).await < newest {
            assert!(
                std::time::Instant::now() < deadline,
                "records through {newest} not indexed in the background within 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    for n in 0..5 {
        a.call_ok("add_task", json!({ "title": format!("alice task {n}") }))
            .await;
    }
    indexed_in_the_background().await;
    support::sql::execute(&db, check_index).await;

    // Records the background has not reached: the search indexes them first.
    support::sql::execute(
        &db,
        "BEGIN IMMEDIATE; \
         UPDATE messages_fts_records SET through = 0; \
         INSERT INTO messages_fts (messages_fts) VALUES ('delete-all'); \
         INSERT INTO messages_fts (rowid, content) \
             SELECT id, content FROM messages WHERE kind = 'message'; \
         COMMIT;",
    )
    .await;
    b.call_ok("list_tasks", json!({})).await;
    let listed = number("SELECT max(id) AS j FROM messages WHERE user_id = 'bob'").await;
    let hits = found(
        &b,
        json!({ "query": "list_tasks", "include_call_records": true }),
    )
    .await;
    assert_eq!(hits, ["list_tasks succeeded"], "bob's record, found once");
    assert!(number(through).await >= listed);
    indexed_in_the_background().await;
    support::sql::execute(&db, check_index).await;

    // Alice's erasure takes out her indexed records and her newest, unindexed ones.
    for _ in 0..3 {
        a.call_ok("list_tasks", json!({})).await;
    }
    let freed = number("SELECT min(id) AS j FROM messages WHERE user_id = 'alice'").await;
    support::cli::todo_mcp_ok(db.url(), &["user", "delete", "alice"]);
    let hits = found(
        &b,
        json!({ "query": "succeeded", "include_call_records": true }),
    )
    .await;
    assert_eq!(
        hits.len(),
        2,
        "bob's two records, none of alice's: {hits:?}"
    );
    indexed_in_the_background().await;
    support::sql::execute(&db, check_index).await;

    // A record written with an id below `through` is indexed at once (the search's own
    // catch-up would not reach it).
    assert!(freed <= number(through).await);
    support::sql::execute(
        &db,
        &format!(
            "INSERT INTO messages (id, conversation_id, user_id, role, content, tool_calls, \
                 created_at, kind) \
             SELECT {freed}, conversation_id, user_id, 'tool', 'imported_tool succeeded', \
                 tool_calls, created_at, 'call_record' \
             FROM messages WHERE user_id = 'bob' AND kind = 'call_record' LIMIT 1"
        ),
    )
    .await;
    let hits = found(
        &b,
        json!({ "query": "imported_tool", "include_call_records": true }),
    )
    .await;
    assert_eq!(hits, ["imported_tool succeeded"]);
    indexed_in_the_background().await;
    support::sql::execute(&db, check_index).await;
    a.close().await;
    b.close().await;
}
