//! SQLite's WAL is checkpointed off the request path: the server's checkpoint thread
//! copies it back into the database file while calls go on, so no commit has to (the
//! connections' own wal_autocheckpoint, 10,000 pages, is far from reached here). Seen in
//! the WAL header's checkpoint sequence number, which grows each time a writer starts the
//! log over after a complete checkpoint.

use crate::support;

use serde_json::json;
use std::time::Duration;
use support::{SqliteTestDb, TestDb, connect_in_process};

/// The WAL header's checkpoint sequence number (bytes 12..16, big-endian).
fn checkpoint_sequence(db: &SqliteTestDb) -> u32 {
    let mut wal = db.path().as_os_str().to_owned();
    wal.push("-wal");
    let bytes = std::fs::read(&wal).unwrap_or_else(|e| panic!("reading {wal:?}: {e}"));
    assert!(bytes.len() >= 32, "a WAL header");
    u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_while_calls_go_on() {
    let db = TestDb::Sqlite(SqliteTestDb::new());
    let client = connect_in_process(db.url(), None, &[]).await;
    client
        .call_ok("add_task", json!({ "title": "first" }))
        .await;
    let TestDb::Sqlite(sqlite) = &db else {
        unreachable!()
    };
    let before = checkpoint_sequence(sqlite);
    // Bursts of calls with pauses between: a checkpoint completes in a pause (under
    // continuous writes it may not catch up with the last frames), and the next write
    // then starts the log over.
    let mut calls = 0;
    for _ in 0..4 {
        for _ in 0..50 {
            client
                .call_ok("add_task", json!({ "title": format!("task {calls}") }))
                .await;
            calls += 1;
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    client.call_ok("add_task", json!({ "title": "last" })).await;
    let after = checkpoint_sequence(sqlite);
    assert!(
        after >= before + 2,
        "the WAL was started over {} times over 4 pauses in {calls} calls: nothing \
         checkpoints it",
        after.wrapping_sub(before)
    );
    client.close().await;
}
