//! Host and Origin validation against DNS rebinding: a web page on evil.example.com whose
//! name resolves to 127.0.0.1 must not reach a local server. Loopback names are always
//! accepted; `--allowed-host` adds the names a deployment is reached by.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::reply::{INVALID_REQUEST, refusal};
use crate::store::quote;
use std::sync::Arc;

pub struct HostGuard {
    /// Lowercase host names, or `host:port` authorities.
    allowed: Vec<String>,
}

impl HostGuard {
    pub fn new(extra: &[String]) -> Self {
        let mut allowed: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        allowed.extend(extra.iter().map(|h| h.trim().to_ascii_lowercase()));
        HostGuard { allowed }
    }

    /// Whether an authority (`host`, `host:port`, `[v6]:port`) is allowed.
    fn allows(&self, authority: &str) -> bool {
        let authority = authority.trim().to_ascii_lowercase();
        let host = host_of(&authority);
        self.allowed
            .iter()
            .any(|entry| entry == &authority || entry == host)
    }
}

/// The host part of an authority: `[::1]:8080` → `::1`, `example.com:80` → `example.com`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

pub async fn check_host_and_origin(
    State(guard): State<Arc<HostGuard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if guard.allows(host) => {}
        Some(host) => return refuse(&format!("Host {} is not allowed", quote(host))),
        None => return refuse("the request names no Host"),
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest));
        match authority {
            Some(authority) if guard.allows(authority) => {}
            _ => return refuse(&format!("Origin {} is not allowed", quote(origin))),
        }
    }
    next.run(request).await
}

fn refuse(reason: &str) -> Response {
    tracing::warn!(reason, "request refused by the Host/Origin guard");
    refusal(
        StatusCode::FORBIDDEN,
        INVALID_REQUEST,
        &format!("forbidden: {reason} (see --allowed-host)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_configured_hosts_pass_others_do_not() {
        let guard = HostGuard::new(&["todo.example.com".into(), "api.example.com:8443".into()]);
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:3000",
            "[::1]:8080",
            "TODO.example.com",
            "todo.example.com:443",
            "api.example.com:8443",
        ] {
            assert!(guard.allows(ok), "{ok} should pass");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "api.example.com:9999",
            "127.0.0.2",
            "",
        ] {
            assert!(!guard.allows(bad), "{bad} should be refused");
        }
    }
}
