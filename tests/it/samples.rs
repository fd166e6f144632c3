//! The table of sample calls (tests/support/samples.rs) covers the router, and each of its
//! calls works: the cross-cutting tests that iterate it can then trust it.

use todo_mcp::tools::TodoServer;

use crate::support::samples::{self, Seed, TOOLS_IN_ORDER};
use crate::support::{TestDb, connect_in_process};

/// A tool added to the router without a sample fails here, by name.
#[test]
fn every_tool_has_a_sample() {
    let router: Vec<String> = TodoServer::tools()
        .iter()
        .map(|tool| tool.name.to_string())
        .collect();
    let without: Vec<&String> = router
        .iter()
        .filter(|tool| samples::sample(tool, &Seed::unknown()).is_none())
        .collect();
    assert!(
        without.is_empty(),
        "tools without a sample call in tests/support/samples.rs: {without:?}"
    );
    let unordered: Vec<&String> = router
        .iter()
        .filter(|tool| !TOOLS_IN_ORDER.contains(&tool.as_str()))
        .collect();
    assert!(
        unordered.is_empty(),
        "tools missing from samples::TOOLS_IN_ORDER: {unordered:?}"
    );
    let stale: Vec<&&str> = TOOLS_IN_ORDER
        .iter()
        .filter(|tool| !router.iter().any(|name| name == *tool))
        .collect();
    assert!(
        stale.is_empty(),
        "samples::TOOLS_IN_ORDER names tools the router does not have: {stale:?}"
    );
}

/// Each sample, made in order on a seed of the caller's own, succeeds.
async fn every_sample_succeeds_on_its_seed(db: TestDb) {
    let client = connect_in_process(db.url(), None, &[]).await;
    let seed = Seed::plant(&client).await;
    for (tool, args) in samples::all(&seed) {
        client.call_ok(tool, args).await;
    }
    client.close().await;
}

both_backends!(every_sample_succeeds_on_its_seed);
