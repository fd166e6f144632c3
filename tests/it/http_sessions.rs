//! `http --sessions`: a session opened on one replica is served by another (its state is in
//! the database), survives the death of the replica that opened it, belongs to its user
//! alone, and is gone (404) once ended.

use crate::support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::jsonrpc::{self, Reply, initialize, initialized, mcp_request};
use support::{PgTestDb, create_token, start_http};

/// The reply to a POST, and the session it named, if any.
struct Exchange {
    reply: Reply,
    session: Option<String>,
}

async fn post(url: &str, token: &str, session: Option<&str>, message: Value) -> Exchange {
    let mut request = mcp_request(url, Some(token)).body(message.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let reply = Reply::read(request.send().await.expect("POST /mcp")).await;
    let session = reply
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Exchange { reply, session }
}

async fn open_session(url: &str, token: &str) -> String {
    let opened = post(url, token, None, initialize(1)).await;
    assert_eq!(opened.reply.status, StatusCode::OK, "{}", opened.reply.body);
    let session = opened
        .session
        .expect("initialize returns an Mcp-Session-Id");
    let done = post(url, token, Some(&session), initialized()).await.reply;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
    session
}

async fn add_task(url: &str, token: &str, session: &str, title: &str) -> Reply {
    post(url, token, Some(session), jsonrpc::add_task(2, title))
        .await
        .reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_live_in_the_database_and_belong_to_their_user() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let bob = create_token(db.url(), "bob");
    let first = start_http(db.url(), &["--sessions"], &[]).await;
    let second = start_http(db.url(), &["--sessions"], &[]).await;

    let session = open_session(&first.mcp_url(), &alice).await;
    let rows = db.query_json("SELECT id, user_id FROM mcp_sessions").await;
    assert_eq!(rows, [json!({"id": session, "user_id": "alice"})]);

    // The replica that never saw the session serves it.
    let reply = add_task(
        &second.mcp_url(),
        &alice,
        &session,
        "via the second replica",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let response = reply.response(2).expect("a response to the call");
    assert_eq!(
        response["result"]["structuredContent"]["task"]["title"],
        "via the second replica"
    );

    // ... and still does after the first one dies.
    first.kill().await;
    let reply = add_task(&second.mcp_url(), &alice, &session, "after the first died").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Another user's request naming it: 404, and nothing written.
    let reply = add_task(&second.mcp_url(), &bob, &session, "bob's attempt").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    // An unknown session: 404.
    let reply = add_task(&second.mcp_url(), &alice, "no-such-session", "lost").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);

    // Ended by DELETE: gone from the database, and 404 afterwards.
    let ended = jsonrpc::client()
        .delete(second.mcp_url())
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", jsonrpc::PROTOCOL)
        .send()
        .await
        .expect("DELETE /mcp");
    assert!(
        ended.status().is_success(),
        "DELETE gave {}",
        ended.status()
    );
    assert_eq!(
        db.query_json("SELECT id FROM mcp_sessions").await,
        Vec::<Value>::new()
    );
    let reply = add_task(&second.mcp_url(), &alice, &session, "after the end").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);

    let titles = db
        .query_json("SELECT title, user_id FROM tasks ORDER BY id")
        .await;
    assert_eq!(
        titles,
        [
            json!({"title": "via the second replica", "user_id": "alice"}),
            json!({"title": "after the first died", "user_id": "alice"}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sessions_no_session_is_handed_out() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let server = start_http(db.url(), &[], &[]).await;
    let opened = post(&server.mcp_url(), &alice, None, initialize(1)).await;
    assert_eq!(opened.reply.status, StatusCode::OK, "{}", opened.reply.body);
    assert_eq!(
        opened.session, None,
        "a stateless server handed out a session"
    );
    assert_eq!(
        db.query_json("SELECT id FROM mcp_sessions").await,
        Vec::<Value>::new()
    );
}

/// `--session-idle-timeout`: a session unused for longer is ended. Naming it gets 404 and
/// deletes its row; opening another session sweeps every expired one; a session in use
/// stays alive past the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_on_use_and_are_swept() {
    let db = PgTestDb::new().await;
    let alice = create_token(db.url(), "alice");
    let server = start_http(
        db.url(),
        &["--sessions", "--session-idle-timeout", "2"],
        &[],
    )
    .await;
    let url = server.mcp_url();
    let idle = open_session(&url, &alice).await;
    let swept = open_session(&url, &alice).await;
    let busy = open_session(&url, &alice).await;
    let reply = add_task(&url, &alice, &idle, "while fresh").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // `busy` is used every 0.6 s across 3 s; the others are not.
    for i in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let reply = add_task(&url, &alice, &busy, &format!("busy {i}")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "busy session, call {i}: {}",
            reply.body
        );
    }

    let reply = add_task(&url, &alice, &idle, "after its timeout").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    let ids = |rows: Vec<Value>| -> Vec<String> {
        rows.iter()
            .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let left = ids(db
        .query_json("SELECT id FROM mcp_sessions ORDER BY id")
        .await);
    assert!(
        !left.contains(&idle),
        "the expired session's row is deleted on use"
    );
    assert!(
        left.contains(&swept),
        "not swept before a new session is saved"
    );

    let fresh = open_session(&url, &alice).await;
    let mut expected = vec![busy.clone(), fresh];
    expected.sort();
    assert_eq!(
        ids(db
            .query_json("SELECT id FROM mcp_sessions ORDER BY id")
            .await),
        expected,
        "opening a session swept the expired one"
    );
    let titles = db.query_json("SELECT title FROM tasks ORDER BY id").await;
    assert_eq!(titles.len(), 6, "{titles:?}");
}
