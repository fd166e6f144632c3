//! PostgreSQL over TLS, as on Neon: `sslmode=require` connects over TLS and verifies the
//! server's certificate; `sslrootcert` names the CA to trust. Runs against a throwaway
//! cluster given a certificate signed by a CA made for the test.

use crate::support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::pg::{connect, database_url, start_throwaway_cluster};
use support::{connect_stdio, todo_mcp};

struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA, and a certificate it signs for 127.0.0.1 and localhost, written into `dir`.
fn make_certificates(dir: &Path) -> Certificates {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "todo-mcp test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");

    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let key = KeyPair::generate().expect("server key");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("sign the server cert");

    let paths = Certificates {
        ca: dir.join("test-ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&paths.ca, ca.pem()).expect("write CA");
    std::fs::write(&paths.cert, cert.pem()).expect("write cert");
    std::fs::write(&paths.key, key.serialize_pem()).expect("write key");
    // PostgreSQL refuses a key others can read, or one its server user does not own.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&paths.key, std::fs::Permissions::from_mode(0o600))
        .expect("chmod key");
    if is_root() {
        for file in [&paths.cert, &paths.key] {
            let status = Command::new("chown").arg("postgres:").arg(file).status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chown {}",
                file.display()
            );
        }
    }
    paths
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_over_verified_tls() {
    let cluster = start_throwaway_cluster();
    let certs = make_certificates(cluster.root());
    let admin = connect(cluster.admin_url()).await;
    for statement in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}'",
            certs.cert.display()
        ),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", certs.key.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
        "CREATE DATABASE tlsdb".to_owned(),
    ] {
        admin.batch_execute(&statement).await.expect(&statement);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ssl = connect(cluster.admin_url())
            .await
            .query_one("SHOW ssl", &[])
            .await
            .map(|row| row.get::<_, String>(0))
            .unwrap_or_default();
        if ssl == "on" {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not turn ssl on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let base = database_url(cluster.admin_url(), "tlsdb");
    let verified = format!("{base}?sslmode=require&sslrootcert={}", certs.ca.display());

    // Trusting the test CA: migrations and tool calls work, over TLS only.
    let out = todo_mcp(&["migrate"], &[("DATABASE_URL", &verified)]);
    assert!(
        out.status.success(),
        "migrate over TLS failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = connect_stdio(&verified, None, &[]).await;
    let added = client
        .call_ok("add_task", json!({ "title": "over tls" }))
        .await;
    assert_eq!(added["task"]["title"], "over tls");
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl) AS tls, count(*) FILTER (WHERE NOT s.ssl) AS plain \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'tlsdb'",
            &[],
        )
        .await
        .expect("query pg_stat_ssl");
    let (tls, plain): (i64, i64) = (row.get("tls"), row.get("plain"));
    assert!(tls >= 1, "the server's pooled connection is not TLS");
    assert_eq!(plain, 0, "a connection to tlsdb is in plain text");
    client.close().await;

    // verify-full takes the same path.
    let full = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        certs.ca.display()
    );
    let out = todo_mcp(&["migrate", "status"], &[("DATABASE_URL", &full)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA, the certificate cannot be verified: refused, saying why.
    let unverified = format!("{base}?sslmode=require");
    let out = todo_mcp(&["migrate", "status"], &[("DATABASE_URL", &unverified)]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "connected to a server whose certificate is unverifiable"
    );
    assert!(
        log.to_lowercase().contains("certificate"),
        "unclear refusal: {log}"
    );
}
