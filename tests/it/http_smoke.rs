//! The HTTP harness itself, and the server's simplest promises: health and readiness.

use crate::support;

use support::{PgTestDb, start_http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer() {
    let db = PgTestDb::new().await;
    let server = start_http(db.url(), &[], &[]).await;
    let client = reqwest_free_get(&format!("{}/healthz", server.base_url())).await;
    assert_eq!(client.0, 200);
    assert!(client.1.contains("\"ok\""), "{}", client.1);
    let ready = reqwest_free_get(&format!("{}/readyz", server.base_url())).await;
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert!(ready.1.contains("\"ready\""), "{}", ready.1);
    let (status, log) = server.terminate(std::time::Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM exit was {status}\n{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// A bare HTTP/1.1 GET over a TCP socket: (status, body).
async fn reqwest_free_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
