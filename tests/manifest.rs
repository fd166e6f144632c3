//! mcp-manifest.json must describe exactly what tools/list returns.

mod support;

use serde_json::Value;
use support::{SqliteTestDb, connect_stdio};

fn manifest() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/mcp-manifest.json");
    let text = std::fs::read_to_string(path).expect("read mcp-manifest.json");
    serde_json::from_str(&text).expect("mcp-manifest.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_tools_match_tools_list() {
    let db = SqliteTestDb::new();
    let client = connect_stdio(db.url(), None, &[]).await;
    let live: Vec<Value> = client
        .list_tools()
        .await
        .iter()
        .map(|tool| serde_json::to_value(tool).expect("tool serializes"))
        .collect();
    client.close().await;

    let manifest = manifest();
    let declared = manifest["tools"]
        .as_array()
        .expect("manifest has a tools array");
    let names = |tools: &[Value]| -> Vec<String> {
        let mut names: Vec<String> = tools
            .iter()
            .map(|t| t["name"].as_str().expect("tool name").to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(declared), names(&live), "tool names differ");
    assert_eq!(live.len(), 11);

    for tool in &live {
        let name = tool["name"].as_str().unwrap_or_default();
        let entry = declared
            .iter()
            .find(|t| t["name"] == tool["name"])
            .unwrap_or_else(|| panic!("{name} missing from the manifest"));
        for key in ["description", "inputSchema", "outputSchema", "annotations"] {
            assert!(!tool[key].is_null(), "tools/list gives {name} no {key}");
            assert_eq!(
                entry[key], tool[key],
                "mcp-manifest.json's {key} of {name} differs from tools/list: regenerate it"
            );
        }
    }
}

#[test]
fn manifest_names_this_version_and_the_stdio_transport() {
    let manifest = manifest();
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let transports = manifest["transports"].as_array().expect("transports");
    assert!(
        transports
            .iter()
            .any(|t| t["type"] == "stdio" && t["args"] == serde_json::json!(["stdio"]))
    );
    let variables: Vec<&str> = manifest["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for expected in ["DATABASE_URL", "TODO_MCP_TOKEN", "TODO_MCP_JWT_SECRET"] {
        assert!(
            variables.contains(&expected),
            "{expected} not in the manifest"
        );
    }
}
