//! Better Auth as the tests' authorization server: the npm package `better-auth` with its
//! JWT plugin and `@better-auth/mcp`'s OAuth provider, on node 22 (from [`super::node`]),
//! with a PostgreSQL database the test creates. `tests/clients/better_auth_server.mjs`
//! serves it; [`BetterAuth`] starts it and plays its users and their browsers.
//!
//! The packages are installed once into `target/tmp/test-better-auth` (under a file lock,
//! like [`super::node`]); a missing `npm` or a failed install fails the test with npm's
//! output: these tests are never skipped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::PgTestDb;
use super::cli;

/// The packages, at versions verified to install together (the `@better-auth/*` plugins pin
/// exact peers).
const PACKAGES: &[(&str, &str)] = &[
    ("better-auth", "1.7.5"),
    ("@better-auth/core", "1.7.5"),
    ("@better-auth/utils", "0.4.2"),
    ("@better-fetch/fetch", "1.3.2"),
    ("better-call", "1.4.0"),
    ("@better-auth/oauth-provider", "1.7.5"),
    ("@better-auth/mcp", "1.7.5"),
    ("pg", "8.23.1"),
];
const MANIFEST_NAME: &str = "todo-mcp-test-better-auth";
const SCRIPT: &str = include_str!("../clients/better_auth_server.mjs");
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
const START_TIMEOUT: Duration = Duration::from_secs(60);

static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The install directory, with the packages in it (installed on first use).
fn installed() -> PathBuf {
    match INSTALLED.get_or_init(install) {
        Ok(dir) => dir.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-better-auth");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.with_extension("lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let script = dir.join("better_auth_server.mjs");
    std::fs::write(&script, SCRIPT)
        .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
    if PACKAGES
        .iter()
        .all(|(name, version)| installed_version(&dir, name).as_deref() == Some(*version))
    {
        return Ok(dir);
    }
    let dependencies: serde_json::Map<String, Value> = PACKAGES
        .iter()
        .map(|(name, version)| ((*name).to_owned(), Value::from(*version)))
        .collect();
    let manifest = json!({
        "name": MANIFEST_NAME,
        "private": true,
        "type": "module",
        "description": "Better Auth for todo-mcp's OAuth tests (tests/support/better_auth.rs)",
        "dependencies": dependencies,
    });
    std::fs::write(dir.join("package.json"), manifest.to_string())
        .map_err(|e| format!("cannot write package.json: {e}"))?;
    eprintln!(
        "todo-mcp tests: installing Better Auth into {} (once)",
        dir.display()
    );
    let mut command = Command::new("npm");
    command
        .current_dir(&dir)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=warn"])
        .env("npm_config_update_notifier", "false");
    let out = cli::try_run_with_timeout(command, "npm install (Better Auth)", INSTALL_TIMEOUT)
        .map_err(|e| format!("{e}\nThe OAuth tests need npm (Debian: `apt-get install npm`)."))?;
    if !out.status.success() {
        return Err(format!(
            "npm install of Better Auth failed\n{}",
            cli::describe_output(&out)
        ));
    }
    for (name, version) in PACKAGES {
        let found = installed_version(&dir, name);
        if found.as_deref() != Some(*version) {
            return Err(format!(
                "after npm install, {name} is {found:?}, not {version}"
            ));
        }
    }
    Ok(dir)
}

fn installed_version(dir: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
        .ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// A running Better Auth; stopped (its stdin closed, then killed) when dropped.
pub struct BetterAuth {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    /// Better Auth's own database (dropped with it).
    db: PgTestDb,
}

/// A user signed in at Better Auth: their session cookie and id.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub cookie: String,
    pub user_id: String,
    pub email: String,
}

impl BetterAuth {
    /// Starts Better Auth for the MCP resource `resource` (todo-mcp's public URL); it also
    /// issues tokens for `other_resource`, a service that is not todo-mcp.
    pub async fn start(resource: &str, other_resource: &str) -> BetterAuth {
        let dir = tokio::task::spawn_blocking(installed)
            .await
            .expect("installing Better Auth");
        let node = super::node::tools_async().await.node22_bin.join("node");
        let db = PgTestDb::empty().await;
        let mut child = tokio::process::Command::new(&node)
            .arg(dir.join("better_auth_server.mjs"))
            .current_dir(&dir)
            .env("DATABASE_URL", db.url())
            .env("RESOURCE", resource)
            .env("OTHER_RESOURCE", other_resource)
            .env("PORT", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", node.display()));
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("Better Auth did not start within {START_TIMEOUT:?}"))
            .expect("reading Better Auth's stdout")
            .unwrap_or_else(|| panic!("Better Auth exited before listening (its stderr is above)"));
        let started: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("Better Auth printed {first:?}, not JSON: {e}"));
        let base = started["base"].as_str().expect("base").to_owned();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        BetterAuth {
            child,
            base,
            http,
            db,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The OAuth issuer (`iss` of its access tokens).
    pub fn issuer(&self) -> String {
        format!("{}/api/auth", self.base)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/api/auth/jwks", self.base)
    }

    /// Better Auth's own database.
    pub fn db(&self) -> &PgTestDb {
        &self.db
    }

    /// Signs a new user up with email and password; returns their session.
    pub async fn sign_up(&self, name: &str) -> SignedIn {
        let email = format!("{name}-{}@example.test", super::random_suffix());
        let response = self
            .http
            .post(format!("{}/api/auth/sign-up/email", self.base))
            .header("origin", &self.base)
            .json(&json!({ "email": email, "password": "correct horse battery", "name": name }))
            .send()
            .await
            .expect("POST sign-up");
        let cookie = cookies(&response);
        let status = response.status();
        let body: Value = response.json().await.expect("sign-up answers JSON");
        assert!(status.is_success(), "sign-up: {status} {body}");
        SignedIn {
            cookie,
            user_id: body["user"]["id"].as_str().expect("user id").to_owned(),
            email,
        }
    }

    /// The JWT plugin's token for the signed-in user (`GET /api/auth/token`).
    pub async fn session_jwt(&self, user: &SignedIn) -> String {
        let body = self
            .get_json(&format!("{}/api/auth/token", self.base), Some(&user.cookie))
            .await;
        body["token"].as_str().expect("token").to_owned()
    }

    /// A JWT with `payload`, signed by Better Auth's own `signJWT` with its key for `alg`
    /// (EdDSA, ES256 or RS256); Better Auth fills in `iss`, `aud` and `exp` if absent.
    pub async fn sign(&self, payload: Value, alg: &str) -> String {
        let response = self
            .http
            .post(format!("{}/test/sign", self.base))
            .json(&json!({ "payload": payload, "alg": alg }))
            .send()
            .await
            .expect("POST /test/sign");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "/test/sign: {status} {body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// How many times the JWKS has been fetched.
    pub async fn jwks_fetches(&self) -> u64 {
        self.get_json(&format!("{}/test/stats", self.base), None)
            .await["jwks_fetches"]
            .as_u64()
            .expect("jwks_fetches")
    }

    /// While down, the JWKS answers 503.
    pub async fn set_jwks_down(&self, down: bool) {
        let response = self
            .http
            .post(format!("{}/test/jwks-down", self.base))
            .json(&json!({ "down": down }))
            .send()
            .await
            .expect("POST /test/jwks-down");
        assert!(response.status().is_success());
    }

    /// Key rotation as an operator does it: the current keys are deleted from Better Auth's
    /// `jwks` table, so they leave the JWKS and the next token is signed with a new key.
    pub async fn remove_signing_keys(&self) {
        self.db.execute("DELETE FROM jwks").await;
    }

    /// The published key ids.
    pub async fn published_kids(&self) -> Vec<String> {
        let jwks = self.get_json(&self.jwks_url(), None).await;
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| key["kid"].as_str().expect("kid").to_owned())
            .collect()
    }

    /// The whole OAuth 2.1 authorization-code flow with PKCE, as a remote connector does it
    /// for `user`: register a client, authorize (Better Auth's consent accepted), exchange
    /// the code for an access token bound to `resource`, with `scope` (space-separated).
    pub async fn oauth_access_token(&self, user: &SignedIn, resource: &str, scope: &str) -> String {
        let redirect_uri = "http://127.0.0.1:9/callback";
        let client = self
            .post_json(
                &format!("{}/api/auth/oauth2/register", self.base),
                &json!({
                    "client_name": "todo-mcp tests",
                    "redirect_uris": [redirect_uri],
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                    "application_type": "native",
                }),
                None,
            )
            .await;
        let client_id = client["client_id"].as_str().expect("client_id").to_owned();
        let verifier = format!("{}{}", super::random_suffix(), super::random_suffix()).repeat(4);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = super::random_suffix();
        let mut authorize =
            reqwest::Url::parse(&format!("{}/api/auth/oauth2/authorize", self.base)).expect("URL");
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("resource", resource);
        let response = self
            .http
            .get(authorize)
            .header("cookie", &user.cookie)
            .send()
            .await
            .expect("GET authorize");
        let consent = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_else(|| panic!("authorize did not redirect: {}", response.status()))
            .to_owned();
        let consent = reqwest::Url::options()
            .base_url(Some(&reqwest::Url::parse(&self.base).expect("base")))
            .parse(&consent)
            .expect("consent URL");
        assert_eq!(consent.path(), "/consent", "authorize went to {consent}");
        let accepted = self
            .post_json(
                &format!("{}/api/auth/oauth2/consent", self.base),
                &json!({ "accept": true, "oauth_query": consent.query().unwrap_or_default() }),
                Some(&user.cookie),
            )
            .await;
        let callback = reqwest::Url::parse(accepted["url"].as_str().expect("url")).expect("URL");
        let code = callback
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no code in {callback}"));
        let response = self
            .http
            .post(format!("{}/api/auth/oauth2/token", self.base))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("client_id", &client_id),
                ("code_verifier", &verifier),
                ("resource", resource),
            ])
            .send()
            .await
            .expect("POST token");
        let status = response.status();
        let body: Value = response.json().await.expect("token answers JSON");
        assert!(status.is_success(), "token: {status} {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    async fn get_json(&self, url: &str, cookie: Option<&str>) -> Value {
        let mut request = self.http.get(url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(status.is_success(), "GET {url}: {status} {body}");
        body
    }

    async fn post_json(&self, url: &str, body: &Value, cookie: Option<&str>) -> Value {
        let mut request = self.http.post(url).header("origin", &self.base).json(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        assert!(status.is_success(), "POST {url}: {status} {answer}");
        answer
    }

    /// Stops it: its JWKS is then unreachable.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The `name=value` pairs of a response's `Set-Cookie` headers, as a `Cookie` header.
fn cookies(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A loopback port nobody listens on now, for a server whose URL must be known before it
/// starts (todo-mcp's public URL is configured in Better Auth first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
