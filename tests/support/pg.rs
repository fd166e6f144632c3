//! PostgreSQL for tests: one server per test process, one migrated template database per test
//! process, one fresh database per test.
//!
//! Server discovery (first use, cached for the process):
//! 1. `TODO_MCP_TEST_PG_URL` (an admin URL such as `postgres://postgres@127.0.0.1:5432/postgres`)
//!    if set; an unreachable URL there is an error, not a reason to fall back.
//! 2. Unless `TODO_MCP_TEST_PG=cluster`: [`DEFAULT_ADMIN_URL`] if it answers quickly.
//! 3. A throwaway cluster ([`start_throwaway_cluster`]) from `initdb`/`pg_ctl` found under
//!    `/usr/lib/postgresql/*/bin` or on `PATH`, removed again when the test process exits.
//!
//! With none of these available the first test to need PostgreSQL panics saying what is missing.
//!
//! Database names embed the creating process id (`todo_mcp_tpl_<pid>_<rand>` for the template,
//! `todo_mcp_t_<pid>_<rand>` per test) so a later run can drop what a crashed run left behind.

use std::error::Error as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::cli;

/// The machine-wide server tried when `TODO_MCP_TEST_PG_URL` is not set.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Env var: admin URL of the PostgreSQL server to use.
pub const ENV_URL: &str = "TODO_MCP_TEST_PG_URL";
/// Env var: set to `cluster` to always start a throwaway cluster.
pub const ENV_MODE: &str = "TODO_MCP_TEST_PG";

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const SQL_TIMEOUT: Duration = Duration::from_secs(60);
const DROP_TIMEOUT: Duration = Duration::from_secs(30);
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(180);
const TEMPLATE_PREFIX: &str = "todo_mcp_tpl_";
const TEST_DB_PREFIX: &str = "todo_mcp_t_";

// ---------------------------------------------------------------------------------------------
// Server discovery
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL server this test process uses.
struct PgServer {
    admin_url: String,
    /// Held so a throwaway cluster's handle lives as long as the process (statics are never
    /// dropped; its watchdog stops it when the process exits).
    _cluster: Option<PgCluster>,
    /// Only drop leftovers of dead processes when the server is on this machine: a pid from
    /// another host says nothing about whether that run is still alive.
    local: bool,
}

// Results are cached, errors included, so every test reports the same clear message instead of
// each one retrying a slow failing discovery.
static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static TEMPLATE: OnceLock<Result<String, String>> = OnceLock::new();

fn server() -> &'static PgServer {
    match SERVER.get_or_init(discover_server) {
        Ok(server) => server,
        Err(msg) => panic!("{msg}"),
    }
}

/// Admin URL of the server used by this test process (discovering it on first use).
pub fn admin_url() -> &'static str {
    &server().admin_url
}

fn discover_server() -> Result<PgServer, String> {
    if let Some(url) = std::env::var(ENV_URL).ok().filter(|u| !u.trim().is_empty()) {
        let url = url.trim().to_string();
        let version = probe(&url).map_err(|e| {
            format!(
                "{ENV_URL}={url} is set but that PostgreSQL server cannot be used: {e}\n\
                 Fix the URL (it needs rights to CREATE DATABASE) or unset {ENV_URL} to use \
                 {DEFAULT_ADMIN_URL} or a throwaway cluster."
            )
        })?;
        eprintln!("todo-mcp tests: using PostgreSQL from {ENV_URL}={url} ({version})");
        return Ok(PgServer {
            local: is_local_url(&url),
            admin_url: url,
            _cluster: None,
        });
    }

    let force_cluster = std::env::var(ENV_MODE).is_ok_and(|m| m.trim() == "cluster");
    let default_error = if force_cluster {
        None
    } else {
        match probe(DEFAULT_ADMIN_URL) {
            Ok(version) => {
                eprintln!("todo-mcp tests: using PostgreSQL at {DEFAULT_ADMIN_URL} ({version})");
                return Ok(PgServer {
                    admin_url: DEFAULT_ADMIN_URL.to_string(),
                    _cluster: None,
                    local: true,
                });
            }
            Err(e) => Some(e),
        }
    };

    let why_cluster = match &default_error {
        None => format!("{ENV_MODE}=cluster"),
        Some(e) => format!("{DEFAULT_ADMIN_URL} is not usable ({e})"),
    };
    match try_start_throwaway_cluster() {
        Ok(cluster) => {
            eprintln!(
                "todo-mcp tests: using a throwaway PostgreSQL cluster at {} (data in {}; {why_cluster})",
                cluster.admin_url,
                cluster.root.display()
            );
            Ok(PgServer {
                admin_url: cluster.admin_url.clone(),
                _cluster: Some(cluster),
                local: true,
            })
        }
        Err(e) => Err(format!(
            "no PostgreSQL server for the tests: {why_cluster}, and starting a throwaway cluster \
             failed: {e}\n\
             Provide one of:\n\
             - {ENV_URL}=postgres://USER@HOST:PORT/postgres pointing at a server where USER may \
             CREATE DATABASE;\n\
             - a PostgreSQL server on 127.0.0.1:5432 accepting user `postgres` without a \
             password (trust auth);\n\
             - the PostgreSQL server binaries (`initdb`, `pg_ctl`) under \
             /usr/lib/postgresql/<version>/bin or on PATH (e.g. `apt-get install postgresql`)."
        )),
    }
}

/// Connect to `url` with a short timeout and return the server's version string.
fn probe(url: &str) -> Result<String, String> {
    let url = url.to_string();
    block_on_thread(move || async move {
        let mut config = Config::from_str(&url).map_err(|e| format!("bad URL: {}", pg_err(&e)))?;
        config.connect_timeout(PROBE_TIMEOUT);
        let (client, conn) = tokio::time::timeout(PROBE_TIMEOUT * 2, config.connect(NoTls))
            .await
            .map_err(|_| format!("no answer within {:?}", PROBE_TIMEOUT * 2))?
            .map_err(|e| pg_err(&e))?;
        tokio::spawn(conn);
        let row = tokio::time::timeout(
            PROBE_TIMEOUT * 2,
            client.query_one("SHOW server_version", &[]),
        )
        .await
        .map_err(|_| "`SHOW server_version` did not answer".to_string())?
        .map_err(|e| pg_err(&e))?;
        Ok(format!("PostgreSQL {}", row.get::<_, String>(0)))
    })
}

fn is_local_url(url: &str) -> bool {
    let Ok(config) = Config::from_str(url) else {
        return false;
    };
    config.get_hosts().iter().all(|host| match host {
        tokio_postgres::config::Host::Tcp(h) => {
            matches!(h.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]")
        }
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

// ---------------------------------------------------------------------------------------------
// Throwaway cluster
// ---------------------------------------------------------------------------------------------

/// A private PostgreSQL cluster in a temp dir, listening on a free 127.0.0.1 port with trust auth
/// for superuser `postgres`. Stopped and deleted by [`PgCluster::stop`], on drop, or (for a
/// handle that is never dropped, like the per-process one) by a watchdog once the test process
/// has exited.
pub struct PgCluster {
    admin_url: String,
    port: u16,
    root: PathBuf,
    pg_ctl: PathBuf,
    as_postgres_user: bool,
    stopped: bool,
}

/// Start a throwaway cluster regardless of the env vars; panics with the reason on failure.
pub fn start_throwaway_cluster() -> PgCluster {
    try_start_throwaway_cluster()
        .unwrap_or_else(|e| panic!("could not start a throwaway PostgreSQL cluster: {e}"))
}

impl PgCluster {
    /// Superuser URL, database `postgres`.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding the data directory (`data/`), the socket and the server log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stop the server (immediate mode: tests need no clean shutdown) and delete its files;
    /// panics if `pg_ctl stop` fails.
    pub fn stop(mut self) {
        if let Err(e) = self.stop_inner() {
            panic!("stopping the throwaway cluster failed: {e}");
        }
    }

    /// Stop the server but keep its files, as a database outage does; [`PgCluster::resume`]
    /// starts it again on the same port.
    pub fn pause(&self) {
        self.pg_ctl_run(
            &["stop", "-m", "fast", "-w", "-t", "60"],
            "pg_ctl stop (pause)",
        );
    }

    /// Start a paused server again, on the same port.
    pub fn resume(&self) {
        let log = self.root.join("postgres.log");
        let port_option = format!("-p {}", self.port);
        let log_arg = log.to_string_lossy().into_owned();
        self.pg_ctl_run(
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-l",
                &log_arg,
                "-o",
                &port_option,
            ],
            "pg_ctl start (resume)",
        );
    }

    fn pg_ctl_run(&self, args: &[&str], what: &str) {
        let mut cmd = pg_command(&self.pg_ctl, self.as_postgres_user);
        cmd.arg(args[0])
            .arg("-D")
            .arg(self.root.join("data"))
            .args(&args[1..])
            .current_dir(&self.root);
        let out = cli::run_with_timeout(cmd, what, Duration::from_secs(90));
        assert!(
            out.status.success(),
            "{what} failed\n{}",
            cli::describe_output(&out)
        );
    }

    fn stop_inner(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut cmd = pg_command(&self.pg_ctl, self.as_postgres_user);
        cmd.arg("stop")
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "immediate", "-w", "-t", "60"])
            .current_dir(&self.root);
        let result = cli::try_run_with_timeout(cmd, "pg_ctl stop", Duration::from_secs(90))
            .and_then(|out| {
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "pg_ctl stop failed\n{}",
                        cli::describe_output(&out)
                    ))
                }
            });
        // Remove the files even if stopping failed; the watchdog exits once the dir is gone.
        let _ = std::fs::remove_dir_all(&self.root);
        result
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("todo-mcp tests: {e}");
        }
    }
}

/// Start a throwaway cluster, returning why not instead of panicking.
pub fn try_start_throwaway_cluster() -> Result<PgCluster, String> {
    let bins = find_pg_bins().ok_or_else(|| {
        "`initdb` and `pg_ctl` were not found under /usr/lib/postgresql/*/bin or on PATH"
            .to_string()
    })?;
    let as_postgres_user = running_as_root();
    if as_postgres_user {
        let known = Command::new("id")
            .args(["-u", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            return Err(
                "running as root, where initdb refuses to run, and there is no \
                        `postgres` OS user to run it as"
                    .to_string(),
            );
        }
    }

    let dir = tempfile::Builder::new()
        .prefix("todo-mcp-pg-")
        .tempdir()
        .map_err(|e| format!("could not create a temp dir for the cluster: {e}"))?;
    let root = dir.path().to_path_buf();
    if as_postgres_user {
        let out = cli::try_run_with_timeout(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:").arg(&root);
                c
            },
            "chown postgres: <cluster dir>",
            Duration::from_secs(30),
        )?;
        if !out.status.success() {
            return Err(format!(
                "could not chown {} to postgres\n{}",
                root.display(),
                cli::describe_output(&out)
            ));
        }
    }

    let data = root.join("data");
    let mut initdb = pg_command(&bins.initdb, as_postgres_user);
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "-N",
        ])
        .current_dir(&root);
    let out = cli::try_run_with_timeout(initdb, "initdb", Duration::from_secs(180))?;
    if !out.status.success() {
        return Err(format!(
            "initdb ({}) failed\n{}",
            bins.initdb.display(),
            cli::describe_output(&out)
        ));
    }

    // Settings for a disposable test server: loopback only, socket inside our dir (the system
    // socket dir may not be writable), no durability, room for parallel tests' pools.
    let settings = format!(
        "\n# todo-mcp test harness\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n",
        root.display()
    );
    {
        use std::io::Write;
        let conf = data.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| format!("could not open {}: {e}", conf.display()))?;
        file.write_all(settings.as_bytes())
            .map_err(|e| format!("could not write {}: {e}", conf.display()))?;
    }

    // A port picked by binding port 0 can be taken before postgres binds it: retry a few times.
    let log = root.join("postgres.log");
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let mut start = pg_command(&bins.pg_ctl, as_postgres_user);
        start
            .arg("start")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port}"))
            .current_dir(&root);
        let out = cli::try_run_with_timeout(start, "pg_ctl start", Duration::from_secs(90))?;
        if out.status.success() {
            let root = dir.keep();
            let cluster = PgCluster {
                admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                port,
                root,
                pg_ctl: bins.pg_ctl.clone(),
                as_postgres_user,
                stopped: false,
            };
            spawn_watchdog(&cluster)?;
            return Ok(cluster);
        }
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        last_error = format!(
            "pg_ctl start ({}) failed\n{}\n--- server log ---\n{log_text}",
            bins.pg_ctl.display(),
            cli::describe_output(&out)
        );
        if !log_text.contains("could not bind") && !log_text.contains("already in use") {
            break;
        }
    }
    Err(last_error)
}

/// Stops the cluster once the test process is gone. A detached `sh` in its own process group
/// (so Ctrl-C on the test run does not kill it) polls the parent pid.
fn spawn_watchdog(cluster: &PgCluster) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    const SCRIPT: &str = r#"trap '' INT HUP TERM
parent="$1"; root="$2"; pg_ctl="$3"; mode="$4"
while kill -0 "$parent" 2>/dev/null && [ -d "$root" ]; do sleep 1; done
if [ -d "$root/data" ]; then
  if [ "$mode" = runuser ]; then
    runuser -u postgres -- "$pg_ctl" stop -D "$root/data" -m immediate -w -t 60
  else
    "$pg_ctl" stop -D "$root/data" -m immediate -w -t 60
  fi
fi
rm -rf "$root"
"#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("todo-mcp-pg-watchdog")
        .arg(std::process::id().to_string())
        .arg(&cluster.root)
        .arg(&cluster.pg_ctl)
        .arg(if cluster.as_postgres_user {
            "runuser"
        } else {
            "direct"
        })
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
        .map_err(|e| format!("could not spawn the cluster watchdog (sh): {e}"))
}

struct PgBins {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// `initdb` + `pg_ctl` from the highest `/usr/lib/postgresql/<version>/bin`, else from `PATH`.
fn find_pg_bins() -> Option<PgBins> {
    let in_dir = |dir: &Path| {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (initdb.is_file() && pg_ctl.is_file()).then_some(PgBins { initdb, pg_ctl })
    };
    let version_key = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    let mut versioned: Vec<(Vec<u32>, PgBins)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let key = version_key(entry.file_name().to_str()?)?;
            Some((key, in_dir(&entry.path().join("bin"))?))
        })
        .collect();
    versioned.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some((_, bins)) = versioned.pop() {
        return Some(bins);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| in_dir(&dir))
}

/// `prog` as-is, or via `runuser -u postgres --` when we are root (initdb and pg_ctl refuse root).
fn pg_command(prog: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(prog);
        cmd
    } else {
        Command::new(prog)
    }
}

fn running_as_root() -> bool {
    // Effective uid is the second field of the `Uid:` line.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
    {
        return line.split_whitespace().nth(2) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("could not find a free loopback port: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Template database
// ---------------------------------------------------------------------------------------------

/// Name of this process's migrated template database (created and migrated on first use).
pub fn template_name() -> &'static str {
    match TEMPLATE.get_or_init(create_template) {
        Ok(name) => name,
        Err(msg) => panic!("{msg}"),
    }
}

fn create_template() -> Result<String, String> {
    let server = server();
    let name = format!(
        "{TEMPLATE_PREFIX}{}_{}",
        std::process::id(),
        super::random_suffix()
    );
    let admin = server.admin_url.clone();
    let local = server.local;
    let create_name = name.clone();
    block_on_thread(move || async move {
        let client = try_connect(&admin).await?;
        if local {
            drop_stale_databases(&client).await?;
        }
        sql(
            &client,
            &format!("CREATE DATABASE {}", quote_ident(&create_name)),
        )
        .await
    })
    .map_err(|e| format!("could not create the template database {name}: {e}"))?;

    let url = database_url(&server.admin_url, &name);
    let migrate = cli::try_run_with_timeout(
        {
            let mut cmd = Command::new(cli::bin_path());
            cmd.arg("migrate");
            cli::scrub_env(&mut cmd);
            cmd.env("DATABASE_URL", &url);
            cmd
        },
        "todo-mcp migrate",
        MIGRATE_TIMEOUT,
    );
    let migrate_error = match migrate {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(cli::describe_output(&out)),
        Err(e) => Some(e),
    };
    let admin = server.admin_url.clone();
    let finish_name = name.clone();
    let failed = migrate_error.is_some();
    let finish = block_on_thread(move || async move {
        let client = try_connect(&admin).await?;
        if failed {
            sql(&client, &drop_sql(&finish_name)).await
        } else {
            // Nobody may connect to the template any more: a connection to it would make
            // `CREATE DATABASE ... TEMPLATE` fail.
            sql(
                &client,
                &format!(
                    "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                    quote_ident(&finish_name)
                ),
            )
            .await
        }
    });
    if let Some(e) = migrate_error {
        return Err(format!(
            "`todo-mcp migrate` failed on the template database (DATABASE_URL={url})\n{e}"
        ));
    }
    finish.map_err(|e| format!("could not seal the template database {name}: {e}"))?;
    Ok(name)
}

/// Drop `todo_mcp_tpl_*` / `todo_mcp_t_*` databases whose creating process no longer exists.
/// Runs automatically before the template is created (for servers on this machine only); public
/// so the harness self-test can exercise it.
pub async fn drop_stale_databases(client: &Client) -> Result<(), String> {
    let rows = timed(
        "listing databases",
        client.query(
            r"SELECT datname FROM pg_database WHERE datname LIKE 'todo\_mcp\_%'",
            &[],
        ),
    )
    .await?;
    for row in rows {
        let name: String = row.get(0);
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if !pid_alive(pid) {
            // Another process may be dropping the same leftover: ignore errors.
            if sql(client, &drop_sql(&name)).await.is_ok() {
                eprintln!("todo-mcp tests: dropped stale database {name} (pid {pid} is gone)");
            }
        }
    }
    Ok(())
}

/// The pid embedded in a harness database name, if `name` is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(TEMPLATE_PREFIX)
        .or_else(|| name.strip_prefix(TEST_DB_PREFIX))?;
    let (pid, suffix) = rest.split_once('_')?;
    let valid_suffix = !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_alphanumeric());
    valid_suffix.then(|| pid.parse().ok()).flatten()
}

fn pid_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return Path::new(&format!("/proc/{pid}")).exists();
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------------------------
// Per-test database
// ---------------------------------------------------------------------------------------------

/// A database of its own for one test, dropped (`WITH (FORCE)`) when this value is dropped.
pub struct PgTestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl PgTestDb {
    /// A fresh, migrated database: a copy of this process's template.
    pub async fn new() -> PgTestDb {
        // The first call creates and migrates the template (blocking work, off the runtime).
        let template = unblock(template_name, "creating the template database").await;
        Self::create(template).await
    }

    /// A fresh, empty (unmigrated) database, for tests of `todo-mcp migrate` itself.
    pub async fn empty() -> PgTestDb {
        Self::create("template0").await
    }

    async fn create(template: &str) -> PgTestDb {
        let admin_url = unblock(admin_url, "PostgreSQL discovery").await.to_string();
        let name = format!(
            "{TEST_DB_PREFIX}{}_{}",
            std::process::id(),
            super::random_suffix()
        );
        let client = connect(&admin_url).await;
        let create = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(template)
        );
        // Copying a template fails while anyone is connected to it ("source database is being
        // accessed by other users"), e.g. a backend that has not quite exited yet: retry.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match tokio::time::timeout(SQL_TIMEOUT, client.batch_execute(&create)).await
            {
                Ok(Ok(())) => break,
                Ok(Err(e)) if attempt < 20 && e.code() == Some(&SqlState::OBJECT_IN_USE) => {
                    tokio::time::sleep(Duration::from_millis(100 * attempt.min(10))).await;
                    continue;
                }
                Ok(Err(e)) => pg_err(&e),
                Err(_) => format!("no answer within {SQL_TIMEOUT:?}"),
            };
            panic!("could not create test database {name} from template {template}: {error}");
        }
        PgTestDb {
            url: database_url(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// The `DATABASE_URL` for the binary.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Admin URL of the server (database `postgres`).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// A new connection to this database as the admin user, for assertions and setup. Its
    /// connection task runs on the current tokio runtime.
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Run one or more SQL statements (no results) on this database.
    pub async fn execute(&self, statements: &str) {
        let client = self.client().await;
        timed(statements, client.batch_execute(statements))
            .await
            .unwrap_or_else(|e| panic!("SQL on {} failed: {e}\nSQL: {statements}", self.name));
    }

    /// Run a SELECT (no trailing `;`) and return each row as a JSON object keyed by column name
    /// (via `row_to_json`, so timestamps come back as strings, json columns as JSON).
    pub async fn query_json(&self, select: &str) -> Vec<serde_json::Value> {
        let client = self.client().await;
        let wrapped = format!("SELECT row_to_json(t)::text FROM ({select}) AS t");
        let rows = timed(select, client.query(&wrapped, &[]))
            .await
            .unwrap_or_else(|e| panic!("SQL on {} failed: {e}\nSQL: {select}", self.name));
        rows.iter()
            .map(|row| {
                let text: String = row.get(0);
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("row_to_json gave invalid JSON {text:?}: {e}"))
            })
            .collect()
    }

    /// Run `todo-mcp migrate` against this database, asserting success.
    pub fn migrate(&self) {
        cli::migrate(&self.url);
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        drop_database_blocking(&self.admin_url, &self.name);
    }
}

/// Drops database `name` on the server of `admin_url`, from synchronous code (a `Drop`) that
/// may run inside, or while unwinding out of, a tokio runtime: the async work runs on a
/// thread with its own runtime, waited for a bounded time. Failures are printed, not raised.
pub fn drop_database_blocking(admin_url: &str, name: &str) {
    let admin = admin_url.to_owned();
    let statement = drop_sql(name);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("drop-test-db".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(async {
                        let client = try_connect(&admin).await?;
                        sql(&client, &statement).await
                    })
                });
            let _ = done_tx.send(result);
        });
    if spawned.is_err() {
        eprintln!("todo-mcp tests: could not spawn a thread to drop {name}");
        return;
    }
    match done_rx.recv_timeout(DROP_TIMEOUT) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("todo-mcp tests: dropping {name} failed: {e}"),
        Err(_) => eprintln!(
            "todo-mcp tests: dropping {name} did not finish within {DROP_TIMEOUT:?}; a later run \
             will remove it"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Connect to `url`, panicking with the reason. The connection task runs on the current runtime.
pub async fn connect(url: &str) -> Client {
    try_connect(url)
        .await
        .unwrap_or_else(|e| panic!("could not connect to PostgreSQL at {url}: {e}"))
}

/// A connection to the server's admin database (`postgres`).
pub async fn admin_client() -> Client {
    connect(unblock(admin_url, "PostgreSQL discovery").await).await
}

/// Run blocking first-use setup (discovery, template) off the async runtime, re-raising its
/// panic (with its message) in the calling test.
async fn unblock<T: Send + 'static>(f: fn() -> T, what: &str) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("{what} was cancelled: {e}"),
        })
}

/// Whether a database of that name exists on the test server.
pub async fn database_exists(name: &str) -> bool {
    let client = admin_client().await;
    let row = timed(
        "SELECT FROM pg_database",
        client.query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("could not query pg_database: {e}"));
    row.get::<_, i64>(0) > 0
}

async fn try_connect(url: &str) -> Result<Client, String> {
    let mut config = Config::from_str(url).map_err(|e| format!("bad URL {url}: {}", pg_err(&e)))?;
    config.connect_timeout(CONNECT_TIMEOUT);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT * 2, config.connect(NoTls))
        .await
        .map_err(|_| {
            format!(
                "connecting to {url} did not finish within {:?}",
                CONNECT_TIMEOUT * 2
            )
        })?
        .map_err(|e| format!("connecting to {url}: {}", pg_err(&e)))?;
    // Errors here (e.g. the database being dropped under it) surface on the next query.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn sql(client: &Client, statement: &str) -> Result<(), String> {
    timed(statement, client.batch_execute(statement)).await
}

/// Await a tokio-postgres future with [`SQL_TIMEOUT`], rendering errors readably.
async fn timed<T>(
    what: &str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(SQL_TIMEOUT, fut).await {
        Ok(result) => result.map_err(|e| pg_err(&e)),
        Err(_) => Err(format!("`{what}` did not finish within {SQL_TIMEOUT:?}")),
    }
}

/// tokio-postgres' `Display` says just "db error": include message, code, detail and hint.
fn pg_err(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

fn drop_sql(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `admin_url` with its database replaced by `dbname` (URL form only). `postgresql://` is
/// normalised to `postgres://`.
pub fn database_url(admin_url: &str, dbname: &str) -> String {
    let (scheme, rest) = admin_url.split_once("://").unwrap_or_else(|| {
        panic!("PostgreSQL admin URL must look like postgres://user@host:port/db, got {admin_url}")
    });
    let scheme = if scheme == "postgresql" {
        "postgres"
    } else {
        scheme
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}://{authority}/{dbname}?{q}"),
        None => format!("{scheme}://{authority}/{dbname}"),
    }
}

/// Run an async block to completion on a fresh thread with its own runtime: usable from sync
/// code that may itself be running inside a runtime (where `block_on` would panic).
fn block_on_thread<T, F, Fut>(f: F) -> T
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("could not build a tokio runtime for a PostgreSQL helper thread")
                    .block_on(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
