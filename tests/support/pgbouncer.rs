//! A throwaway PgBouncer in transaction pooling mode in front of a test database: the kind of
//! pooler Neon's `-pooler` endpoints are, where each transaction may run on another server
//! connection.
//!
//! [`PgBouncer::start`] writes a `pgbouncer.ini` into a temp dir (listen on a free 127.0.0.1
//! port, `pool_mode = transaction`, trust auth, few server connections per database so that many
//! clients share them), runs Debian's `pgbouncer` (`/usr/sbin/pgbouncer`, else `pgbouncer` on
//! `PATH`) in the foreground as a child process and waits until a query goes through it. It is
//! killed when the handle is dropped (or, should the test process die without dropping it, by a
//! watchdog once the test process is gone).
//!
//! Without the binary it panics: CI installs it (`.ci/run`), and a test that skipped itself
//! silently would claim a coverage it does not have.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls, SimpleQueryMessage};

use super::pg::PgTestDb;

/// Server connections PgBouncer opens per database (and user): far fewer than the clients'
/// connections, so transactions of different clients take turns on the same few.
pub const DEFAULT_POOL_SIZE: usize = 4;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running PgBouncer in front of one [`PgTestDb`]'s server; killed on drop.
pub struct PgBouncer {
    child: Child,
    port: u16,
    user: String,
    dbname: String,
    dir: PathBuf,
    /// Removed on drop, after the process is gone.
    _temp: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts a PgBouncer whose databases are those of `db`'s server, and waits until a query
    /// on `db` goes through it. Panics, with PgBouncer's log, if it does not come up.
    pub async fn start(db: &PgTestDb) -> PgBouncer {
        let binary = find_binary().unwrap_or_else(|| {
            panic!(
                "pgbouncer is not installed (looked for /usr/sbin/pgbouncer and `pgbouncer` on \
                 PATH): these tests need Debian's PgBouncer (`apt-get install pgbouncer`, as \
                 .ci/run does)"
            )
        });
        let target = Target::from_admin_url(db.admin_url());
        // PgBouncer refuses to run as root; `-u` makes it switch to an unprivileged user, which
        // must then be able to read the config and write the log.
        let run_as = running_as_root().then(unprivileged_user);
        // A port picked by binding port 0 can be taken before pgbouncer binds it: retry.
        let mut errors = Vec::new();
        for _ in 0..5 {
            let mut bouncer = spawn(&binary, run_as.as_deref(), &target, db.name());
            match bouncer.wait_ready().await {
                Ok(()) => return bouncer,
                Err(e) => {
                    let log = bouncer.log();
                    errors.push(format!("{e}\n--- pgbouncer log ---\n{log}"));
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!(
            "pgbouncer ({}) did not start: {}",
            binary.display(),
            errors.join("\n\n")
        );
    }

    /// `postgres://USER@127.0.0.1:PORT/DBNAME?pgbouncer=true`: the test database through the
    /// pooler, with the flag that tells todo-mcp a transaction-mode pooler is in the way.
    pub fn url(&self) -> String {
        format!("{}?pgbouncer=true", self.url_without_flag())
    }

    /// The same URL without `pgbouncer=true`: todo-mcp then caches prepared statements, as it
    /// does on a direct connection.
    pub fn url_without_flag(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.user, self.port, self.dbname
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What PgBouncer wrote so far (its stderr, which in the foreground repeats its log file).
    pub fn log(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        if stderr.trim().is_empty() {
            std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
        } else {
            stderr
        }
    }

    /// Runs `SHOW <what>` (CLIENTS, SERVERS, POOLS, ...) on PgBouncer's admin console; each
    /// row as column name → text.
    pub async fn show(&self, what: &str) -> Vec<BTreeMap<String, String>> {
        let url = format!("postgres://{}@127.0.0.1:{}/pgbouncer", self.user, self.port);
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("could not connect to pgbouncer's admin console: {e}"));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let messages = client
            .simple_query(&format!("SHOW {what}"))
            .await
            .unwrap_or_else(|e| panic!("SHOW {what} on pgbouncer's admin console: {e}"));
        messages
            .into_iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => Some(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(i, column)| {
                            (
                                column.name().to_string(),
                                row.get(i).unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// Rows of `SHOW <what>` that belong to this bouncer's test database.
    pub async fn show_for_db(&self, what: &str) -> Vec<BTreeMap<String, String>> {
        self.show(what)
            .await
            .into_iter()
            .filter(|row| row.get("database") == Some(&self.dbname))
            .collect()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url_without_flag();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("pgbouncer exited ({status}) while starting"));
            }
            let attempt = async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
                    .simple_query("SELECT 1")
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            let error = match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => "a query through it got no answer within 5s".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "pgbouncer on 127.0.0.1:{} did not answer within {START_TIMEOUT:?}: {error}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the config into a fresh temp dir and starts pgbouncer in the foreground.
fn spawn(binary: &Path, run_as: Option<&str>, target: &Target, dbname: &str) -> PgBouncer {
    let temp = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("todo-mcp-pgbouncer-");
        match run_as {
            // A root TMPDIR may be private; /tmp is reachable by everyone.
            Some(_) => builder.tempdir_in("/tmp"),
            None => builder.tempdir(),
        }
        .unwrap_or_else(|e| panic!("could not create a temp dir for pgbouncer: {e}"))
    };
    let dir = temp.path().to_path_buf();
    let port = free_port();
    write_file(&dir.join("pgbouncer.ini"), &config(&dir, port, target));
    write_file(
        &dir.join("users.txt"),
        &format!(
            "{} {}\n",
            quote_userlist(&target.user),
            quote_userlist(&target.password)
        ),
    );
    write_file(&dir.join("pgbouncer.log"), "");
    if run_as.is_some() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("could not chmod {}: {e}", path.display()))
        };
        chmod(&dir, 0o755);
        chmod(&dir.join("pgbouncer.ini"), 0o644);
        chmod(&dir.join("users.txt"), 0o644);
        chmod(&dir.join("pgbouncer.log"), 0o666);
    }
    let stderr = std::fs::File::create(dir.join("stderr.log"))
        .unwrap_or_else(|e| panic!("could not create pgbouncer's stderr file: {e}"));
    let mut command = Command::new(binary);
    if let Some(user) = run_as {
        command.args(["-u", user]);
    }
    let child = command
        .arg(dir.join("pgbouncer.ini"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
    spawn_watchdog(child.id(), &dir);
    PgBouncer {
        child,
        port,
        user: target.user.clone(),
        dbname: dbname.to_string(),
        dir,
        _temp: temp,
    }
}

/// Where PgBouncer should send its server connections (and how to log in there).
struct Target {
    host: String,
    port: u16,
    user: String,
    password: String,
}

impl Target {
    fn from_admin_url(admin_url: &str) -> Target {
        let config = Config::from_str(admin_url)
            .unwrap_or_else(|e| panic!("cannot parse the PostgreSQL admin URL {admin_url}: {e}"));
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => host.trim_matches(['[', ']']).to_string(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "127.0.0.1".to_string(),
        };
        Target {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            user: config.get_user().unwrap_or("postgres").to_string(),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
        }
    }
}

fn config(dir: &Path, port: u16, target: &Target) -> String {
    format!(
        "[databases]\n\
         * = host={host} port={server_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         pidfile =\n\
         logfile = {log}\n\
         auth_type = trust\n\
         auth_file = {users}\n\
         admin_users = {user}\n\
         pool_mode = transaction\n\
         max_client_conn = 1000\n\
         default_pool_size = {DEFAULT_POOL_SIZE}\n\
         min_pool_size = 0\n\
         reserve_pool_size = 0\n\
         server_round_robin = 1\n\
         log_connections = 0\n\
         log_disconnections = 0\n",
        host = target.host,
        server_port = target.port,
        log = dir.join("pgbouncer.log").display(),
        users = dir.join("users.txt").display(),
        user = target.user,
    )
}

/// `"name"` as the userlist file spells it (a `"` inside is doubled).
fn quote_userlist(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text)
        .unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
}

fn find_binary() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.is_file() {
        return Some(debian);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            Some(line.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The user PgBouncer switches to when started as root: `postgres` (Debian's PgBouncer
/// service user), else `nobody`.
fn unprivileged_user() -> String {
    for user in ["postgres", "nobody"] {
        let known = Command::new("id")
            .args(["-u", user])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if known {
            return user.to_string();
        }
    }
    panic!(
        "running as root, where pgbouncer refuses to run, and there is neither a `postgres` nor a \
         `nobody` user for it to switch to"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("could not find a free loopback port: {e}"))
}

/// Kills pgbouncer (by its pid) if the test process dies without dropping the handle. A
/// detached `sh` in its own process group polls the test process; it gives up without killing
/// anything once the temp dir is gone (the handle was dropped, which killed pgbouncer).
fn spawn_watchdog(child: u32, dir: &Path) {
    use std::os::unix::process::CommandExt;
    const SCRIPT: &str = r#"trap '' INT HUP TERM
parent="$1"; child="$2"; dir="$3"
while kill -0 "$parent" 2>/dev/null && [ -d "$dir" ]; do sleep 1; done
if [ -d "$dir" ]; then kill -KILL "$child" 2>/dev/null; rm -rf "$dir"; fi
"#;
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("todo-mcp-pgbouncer-watchdog")
        .arg(std::process::id().to_string())
        .arg(child.to_string())
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!("todo-mcp tests: could not spawn the pgbouncer watchdog (sh): {e}");
    }
}
