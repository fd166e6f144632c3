//! The install paths, each run the way a user runs it:
//!
//! * **MCP bundle** (Claude Desktop): `packaging/mcpb/manifest.json` passes the official
//!   packer's `mcpb validate`; `packaging/mcpb/pack` packs a binary with `mcpb pack`; the bundle
//!   unpacks with `mcpb unpack`, and its binary, started as the packer's own library says a
//!   host starts it (`${__dirname}` and `${user_config.*}` substituted), lists every tool over
//!   stdio, with the settings left empty and with them filled in.
//! * **MCP registry**: `server.json`, and the one `pack` writes for a release, are valid against
//!   the registry's published schema (vendored in `packaging/registry/`).
//! * **crates.io**: `cargo package` builds the crate file, and `cargo install --locked --path`
//!   of its contents (what `cargo install todo-mcp` does once it is published) installs a
//!   working binary, built in the suite's debug profile and build directory so that nothing
//!   is compiled twice; the packaged manifest still strips release builds.
//!
//! The Node packages and the Python venv are the harness's (tests/support); nothing is skipped.

#[path = "../support/mod.rs"]
#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::mcp::connect_command;
use support::{TOOL_NAMES, bin_path, cli, create_token, node, python};

const MANIFEST: &str = "packaging/mcpb/manifest.json";
const PACK_SCRIPT: &str = "packaging/mcpb/pack";
const SERVER_JSON: &str = "server.json";
const REGISTRY_SCHEMA: &str = "packaging/registry/server.schema.json";

/// Packing copies and compresses the whole binary; installing builds the packaged crate.
const PACK_TIMEOUT: Duration = Duration::from_secs(300);
/// One short step: a node or Python script, tar, `todo-mcp --version`.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const CARGO_TIMEOUT: Duration = Duration::from_secs(1200);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Runs `command`, which must succeed within `timeout`; returns its stdout.
fn run_ok(command: Command, what: &str, timeout: Duration) -> String {
    let out = cli::run_with_timeout(command, what, timeout);
    cli::assert_success(&out, what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"))
}

fn sha256_hex(path: &Path) -> String {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// MCP bundle
// ---------------------------------------------------------------------------------------------

#[test]
fn mcpb_manifest_passes_the_packers_validation_and_matches_the_server() {
    let tools = node::tools();
    let manifest_path = repo(MANIFEST);
    let manifest_arg = manifest_path.to_str().expect("UTF-8 path");
    run_ok(
        tools.mcpb_command(&["validate", manifest_arg]),
        &format!("mcpb validate {MANIFEST}"),
        STEP_TIMEOUT,
    );

    let manifest = read_json(&manifest_path);
    assert_eq!(
        manifest["version"],
        env!("CARGO_PKG_VERSION"),
        "{MANIFEST}'s version must be the crate's"
    );
    let server = &manifest["server"];
    assert_eq!(server["type"], "binary");
    assert_eq!(server["entry_point"], "server/todo-mcp");
    assert_eq!(
        server["mcp_config"],
        json!({
            "command": "${__dirname}/server/todo-mcp",
            "args": ["stdio"],
            "env": {
                "DATABASE_URL": "${user_config.database_url}",
                "TODO_MCP_TOKEN": "${user_config.token}",
            },
        }),
        "{MANIFEST}: the host must run `todo-mcp stdio` from the bundle with the two settings"
    );
    // Both settings are secrets, and optional: empty means the embedded SQLite file and the
    // local user. The empty default matters: a host leaves `${user_config.X}` as it is when X
    // has neither a value nor a default, and the server would take that text for a file path.
    for key in ["database_url", "token"] {
        let option = &manifest["user_config"][key];
        assert_eq!(option["type"], "string", "user_config.{key}");
        assert_eq!(
            option["sensitive"], true,
            "user_config.{key} must be sensitive"
        );
        assert_eq!(
            option["required"], false,
            "user_config.{key} must be optional"
        );
        assert_eq!(
            option["default"], "",
            "user_config.{key} must default to empty"
        );
    }

    // The tools Claude Desktop shows before installing are the server's.
    let generated = read_json(&repo("mcp-manifest.json"));
    let expected: Vec<Value> = generated["tools"]
        .as_array()
        .expect("mcp-manifest.json has tools")
        .iter()
        .map(|tool| json!({"name": tool["name"], "description": tool["description"]}))
        .collect();
    assert!(
        manifest["tools"] == Value::from(expected.clone()),
        "{MANIFEST}'s tools differ from mcp-manifest.json's; they should be:\n{}",
        serde_json::to_string_pretty(&expected).expect("serializes")
    );
}

/// A bundle packed by `packaging/mcpb/pack` from the binary under test, once per process.
struct Packed {
    /// Holds the bundle, the server.json written with it and the stage.
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    server_json: PathBuf,
}

fn packed() -> &'static Packed {
    static PACKED: OnceLock<Packed> = OnceLock::new();
    PACKED.get_or_init(|| {
        let tools = node::tools();
        let dir = temp_dir("todo-mcp-mcpb-");
        // The debug binary under test is ~300 MB, mostly debug info, which the packer takes
        // half a minute to compress: bundle a copy without it, as a release binary is.
        let binary = dir.path().join("todo-mcp");
        let mut strip = Command::new("strip");
        strip
            .arg("--strip-debug")
            .arg("-o")
            .arg(&binary)
            .arg(bin_path());
        run_ok(
            strip,
            "strip --strip-debug (binutils) of the binary under test",
            STEP_TIMEOUT,
        );
        let mut command = Command::new(repo(PACK_SCRIPT));
        command.arg(&binary);
        cli::scrub_env(&mut command);
        command
            .env("OUT_DIR", dir.path())
            .env("MCPB_JS", &tools.mcpb_js)
            .env("FORCE_COLOR", "0");
        // The script runs `node` from PATH: make it the harness's.
        if let Some(node_dir) = tools.node.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut paths = vec![node_dir.to_path_buf()];
            paths.extend(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ));
            command.env("PATH", std::env::join_paths(paths).expect("PATH entries"));
        }
        let started = Instant::now();
        let stdout = run_ok(command, PACK_SCRIPT, PACK_TIMEOUT);
        eprintln!("install: {PACK_SCRIPT} took {:.1?}", started.elapsed());
        let line = |prefix: &str| -> PathBuf {
            let value = stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("{PACK_SCRIPT} printed no `{prefix}` line:\n{stdout}"));
            // `bundle: PATH (N bytes)`
            PathBuf::from(value.split(" (").next().unwrap_or(value).trim())
        };
        let bundle = line("bundle: ");
        let server_json = line("server.json: ");
        for file in [&bundle, &server_json] {
            assert!(
                file.starts_with(dir.path()) && file.is_file(),
                "{PACK_SCRIPT} should have written {} into OUT_DIR\n{stdout}",
                file.display()
            );
        }
        let platform = match std::env::consts::OS {
            "macos" => "darwin",
            os => os,
        };
        let name = bundle.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            name.starts_with(&format!(
                "todo-mcp-{}-{platform}-",
                env!("CARGO_PKG_VERSION")
            )) && name.ends_with(".mcpb"),
            "the bundle's name should say version and platform: {name}"
        );
        Packed {
            _dir: dir,
            bundle,
            server_json,
        }
    })
}

/// The command and environment a host runs for the unpacked bundle at `extension` with the
/// settings `user_config`, computed by the packer's library (`getMcpConfigForManifest`).
fn host_config(extension: &Path, user_config: &Value) -> Value {
    let tools = node::tools();
    let package = tools.dir.join("node_modules/@anthropic-ai/mcpb");
    let script = repo("tests/clients/mcpb_config.mjs");
    let args = [
        package.to_str().expect("UTF-8 path"),
        extension.to_str().expect("UTF-8 path"),
        &user_config.to_string(),
    ];
    let stdout = run_ok(
        tools.node_command(&script, &args),
        &format!("mcpb_config.mjs with {user_config}"),
        STEP_TIMEOUT,
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("mcpb_config.mjs printed non-JSON ({e}): {stdout}"))
}

/// Starts the server as `config` says, with only `HOME` besides (so the default SQLite file
/// lands in `home`), and checks that tools/list names every tool.
async fn serve_as_host(config: &Value, home: &Path, label: &str) -> support::McpClient {
    let program = config["command"].as_str().expect("command is a string");
    let mut command = tokio::process::Command::new(program);
    for arg in config["args"].as_array().expect("args is a list") {
        command.arg(arg.as_str().expect("args are strings"));
    }
    cli::scrub_env(&mut command);
    command.env("HOME", home).env_remove("XDG_DATA_HOME");
    for (key, value) in config["env"].as_object().expect("env is an object") {
        command.env(key, value.as_str().expect("env values are strings"));
    }
    command.kill_on_drop(true);
    let client = connect_command(command, label).await;
    let mut names: Vec<String> = client
        .list_tools()
        .await
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names, *TOOL_NAMES,
        "tools/list of the bundled server ({label})"
    );
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_unpacks_and_serves_every_tool_as_a_host_starts_it() {
    let tools = node::tools_async().await;
    let packed = tokio::task::spawn_blocking(packed)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    let extension = temp_dir("todo-mcp-extension-");
    let bundle_arg = packed.bundle.to_str().expect("UTF-8 path");
    let extension_arg = extension.path().to_str().expect("UTF-8 path");
    run_ok(
        tools.mcpb_command(&["unpack", bundle_arg, extension_arg]),
        "mcpb unpack",
        STEP_TIMEOUT,
    );
    let unpacked = read_json(&extension.path().join("manifest.json"));
    let platforms = &unpacked["compatibility"]["platforms"];
    assert_eq!(
        platforms.as_array().map(Vec::len),
        Some(1),
        "a bundle holds one platform's binary and should say which: {platforms}"
    );

    // Settings left empty: the embedded SQLite file under HOME, the local user.
    let home = temp_dir("todo-mcp-home-");
    let config = host_config(extension.path(), &json!({}));
    assert_eq!(
        config["env"],
        json!({"DATABASE_URL": "", "TODO_MCP_TOKEN": ""}),
        "empty settings should reach the server as empty variables"
    );
    let client = serve_as_host(&config, home.path(), "bundle, empty settings").await;
    let task = client.call_ok("add_task", json!({"title": "milk"})).await;
    assert_eq!(task["task"]["title"], "milk");
    let stderr = client.close().await;
    let default_db = home.path().join(".local/share/todo-mcp/todo.db");
    assert!(
        default_db.is_file(),
        "with DATABASE_URL empty the server should use the embedded SQLite file {}\n\
         --- server stderr ---\n{stderr}",
        default_db.display()
    );

    // Settings filled in: a database and a token naming its user.
    let db = support::SqliteTestDb::new();
    db.migrate();
    let token = create_token(db.url(), "alice");
    let config = host_config(
        extension.path(),
        &json!({"database_url": db.url(), "token": token}),
    );
    let client = serve_as_host(&config, home.path(), "bundle, database and token").await;
    client.call_ok("add_task", json!({"title": "eggs"})).await;
    client.close().await;

    // The token named the user: on the same database without it, the local user sees none
    // of alice's tasks.
    let config = host_config(extension.path(), &json!({"database_url": db.url()}));
    let client = serve_as_host(&config, home.path(), "bundle, database only").await;
    let listed = client.call_ok("list_tasks", json!({})).await;
    assert_eq!(listed["tasks"], json!([]), "the local user's tasks");
    client.close().await;
}

// ---------------------------------------------------------------------------------------------
// MCP registry
// ---------------------------------------------------------------------------------------------

/// Validates `files` against the vendored registry schema with Python's `jsonschema` (a
/// dependency of the MCP SDK in the harness's venv); returns the violations it printed.
fn registry_schema_violations(files: &[&Path]) -> (bool, String) {
    let mut command = Command::new(python::python());
    command
        .arg(repo("tests/clients/validate_json.py"))
        .arg(repo(REGISTRY_SCHEMA))
        .args(files);
    let out = cli::run_with_timeout(command, "validate_json.py", STEP_TIMEOUT);
    match out.status.code() {
        Some(0) | Some(1) => {}
        _ => panic!(
            "validate_json.py could not run\n{}",
            cli::describe_output(&out)
        ),
    }
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn server_json_is_valid_against_the_registry_schema() {
    let schema = read_json(&repo(REGISTRY_SCHEMA));
    let committed_path = repo(SERVER_JSON);
    let committed = read_json(&committed_path);
    assert_eq!(
        committed["$schema"], schema["$id"],
        "server.json must name the schema it is checked against"
    );
    assert_eq!(committed["version"], env!("CARGO_PKG_VERSION"));

    // The crate, run as `todo-mcp stdio`.
    let cargo = committed["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["registryType"] == "cargo"))
        .expect("server.json has a cargo package");
    assert_eq!(cargo["identifier"], env!("CARGO_PKG_NAME"));
    assert_eq!(cargo["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(cargo["registryBaseUrl"], "https://crates.io");
    assert_eq!(
        cargo["packageArguments"],
        json!([{"type": "positional", "value": "stdio"}])
    );

    // The HTTP deployment: Streamable HTTP at /mcp with a bearer credential.
    let remote = &committed["remotes"][0];
    assert_eq!(remote["type"], "streamable-http");
    assert!(
        remote["url"].as_str().is_some_and(|u| u.ends_with("/mcp")),
        "the remote is the /mcp endpoint: {remote}"
    );
    let header = &remote["headers"][0];
    assert_eq!(header["name"], "Authorization");
    assert_eq!(header["value"], "Bearer {token}");
    assert_eq!(header["isSecret"], true);

    // The release's server.json adds the bundle, with its download URL and hash.
    let packed = packed();
    let release = read_json(&packed.server_json);
    let mcpb = release["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["registryType"] == "mcpb"))
        .expect("pack's server.json has an mcpb package");
    let url = mcpb["identifier"].as_str().expect("identifier is a string");
    let bundle_name = packed
        .bundle
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert!(
        url.starts_with("https://")
            && url.ends_with(&format!(
                "/releases/download/v{}/{bundle_name}",
                env!("CARGO_PKG_VERSION")
            )),
        "the registry takes bundles from GitHub or GitLab releases: {url}"
    );
    assert_eq!(
        mcpb["fileSha256"],
        sha256_hex(&packed.bundle),
        "fileSha256 of the bundle"
    );

    let (valid, violations) = registry_schema_violations(&[&committed_path, &packed.server_json]);
    assert!(
        valid,
        "server.json violates the registry's schema:\n{violations}"
    );

    // The check has teeth: the registry's limits are enforced.
    let broken_dir = temp_dir("todo-mcp-server-json-");
    let broken_path = broken_dir.path().join("server.json");
    let mut broken = committed.clone();
    broken["description"] = Value::from("x".repeat(101));
    broken["packages"][0]["fileSha256"] = Value::from("not a hash");
    std::fs::write(&broken_path, broken.to_string())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", broken_path.display()));
    let (valid, violations) = registry_schema_violations(&[&broken_path]);
    assert!(
        !valid && violations.contains("description") && violations.contains("fileSha256"),
        "the schema should reject a long description and a malformed hash, it said:\n{violations}"
    );
}

// ---------------------------------------------------------------------------------------------
// crates.io
// ---------------------------------------------------------------------------------------------

/// The suite's own build directory (intermediate artifacts), which the binary under test
/// was built in: `target/debug/todo-mcp` → `target`.
fn suite_build_dir() -> PathBuf {
    Path::new(bin_path())
        .ancestors()
        .nth(2)
        .unwrap_or_else(|| panic!("{} is not in a target directory", bin_path()))
        .to_path_buf()
}

/// `cargo` as the outer `cargo test` runs it. Its final artifacts go to `target_dir`, a temp
/// dir of the test's, so nothing overwrites the binary under test; its intermediate ones to
/// the suite's own build directory, whose dependencies are already built in the same
/// profile (cargo releases its lock there before it runs the tests).
fn nested_cargo(args: &[&str], target_dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // At a lower priority: scripts/test runs the other test targets meanwhile, whose
    // timeouts should not pay for this build.
    let mut command = Command::new("nice");
    command
        .args(["-n", "10"])
        .arg(cargo)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_BUILD_BUILD_DIR", suite_build_dir())
        .env("CARGO_TERM_COLOR", "never");
    command
}

/// What `cargo install todo-mcp` does once it is published: `cargo package` makes the crate
/// file, and `cargo install --locked --path` of its unpacked contents installs the binary.
/// It installs the debug profile, in the suite's build directory, so that the dependencies
/// the suite has just built are not built a second time in release: what that proves is the
/// crate (its files, its lock file, its build script), and what a release build adds, a
/// stripped binary, is checked in Cargo.toml below and built by `packaging/mcpb/pack`.
#[test]
fn crate_packages_and_installs() {
    let target = temp_dir("todo-mcp-install-target-");
    let started = Instant::now();
    let listed = run_ok(
        nested_cargo(
            &["package", "--locked", "--allow-dirty", "--list"],
            target.path(),
        ),
        "cargo package --list",
        CARGO_TIMEOUT,
    );
    let files: Vec<&str> = listed.lines().collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "build.rs",
        "src/bin/todo-mcp/main.rs",
        "migrations/postgres/2026-11-24-000001_initial/up.sql",
        "migrations/sqlite/2026-11-24-000001_initial/up.sql",
    ] {
        assert!(
            files.contains(&needed),
            "the crate should hold {needed}:\n{listed}"
        );
    }
    let stray: Vec<&&str> = files
        .iter()
        .filter(|f| {
            ["tests/", "benches/", "load-generator/", "target/"]
                .iter()
                .any(|d| f.starts_with(d))
        })
        .collect();
    assert!(stray.is_empty(), "the crate should not ship {stray:?}");

    // Without --no-verify cargo would build the crate's sources once more; installing them
    // below builds them anyway.
    run_ok(
        nested_cargo(
            &["package", "--locked", "--allow-dirty", "--no-verify"],
            target.path(),
        ),
        "cargo package",
        CARGO_TIMEOUT,
    );
    let crate_file = target
        .path()
        .join("package")
        .join(format!("todo-mcp-{}.crate", env!("CARGO_PKG_VERSION")));
    assert!(
        crate_file.is_file(),
        "cargo package wrote no {}",
        crate_file.display()
    );
    let packaged_in = started.elapsed();

    let unpacked = temp_dir("todo-mcp-crate-");
    let mut tar = Command::new("tar");
    tar.arg("-xzf")
        .arg(&crate_file)
        .arg("-C")
        .arg(unpacked.path());
    run_ok(tar, "tar -xzf todo-mcp.crate", STEP_TIMEOUT);
    let source = unpacked
        .path()
        .join(format!("todo-mcp-{}", env!("CARGO_PKG_VERSION")));

    let root = temp_dir("todo-mcp-install-");
    let install_started = Instant::now();
    run_ok(
        nested_cargo(
            &[
                "install",
                "--locked",
                "--debug",
                "--path",
                source.to_str().expect("UTF-8 path"),
                "--root",
                root.path().to_str().expect("UTF-8 path"),
            ],
            target.path(),
        ),
        "cargo install --locked --debug --path <packaged crate>",
        CARGO_TIMEOUT,
    );
    let installed = root.path().join("bin/todo-mcp");
    let mut command = Command::new(&installed);
    command.arg("--version");
    let version = run_ok(command, "installed todo-mcp --version", STEP_TIMEOUT);
    assert_eq!(
        version.trim(),
        format!("todo-mcp {}", env!("CARGO_PKG_VERSION"))
    );
    eprintln!(
        "install: cargo package {packaged_in:.1?}, cargo install --debug {:.1?}",
        install_started.elapsed()
    );

    // The packaged crate still says what a release build is: stripped, so lean.
    let manifest = std::fs::read_to_string(source.join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("cannot read the packaged Cargo.toml: {e}"));
    let release = manifest
        .split("[profile.release]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_else(|| panic!("the packaged Cargo.toml has no [profile.release]:\n{manifest}"));
    assert!(
        release.lines().any(|l| l.trim() == "strip = true"),
        "the packaged Cargo.toml's [profile.release] should strip the binary:\n{release}"
    );
}
