//! `GET /metrics`: the process's metrics ([`crate::metrics`]) for Prometheus. Not public by
//! default: served only when asked, on a listener of its own (`--metrics-listen`, e.g. on a
//! private network) and/or behind a bearer token of its own (`--metrics-token`).

use crate::db::Database;
use crate::metrics;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The bearer token a scrape must present. Kept as its SHA-256 digest: comparing digests of
/// equal length in constant time tells a wrong guess nothing, not even the token's length.
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    pub fn new(token: &str) -> Result<Self, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("--metrics-token (TODO_MCP_METRICS_TOKEN) is empty".into());
        }
        Ok(MetricsToken(Sha256::digest(token.as_bytes()).into()))
    }

    fn admits(&self, request: &Request) -> bool {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(…)")
    }
}

/// Where and how `/metrics` is served.
#[derive(Debug, Default)]
pub struct MetricsOptions {
    /// A listener serving `/metrics` alone; the main one then has none.
    pub listen: Option<std::net::SocketAddr>,
    /// Required of every scrape, wherever `/metrics` is served.
    pub token: Option<Arc<MetricsToken>>,
}

impl MetricsOptions {
    /// Whether the main listener serves `/metrics` (a token and no listener of its own).
    pub fn on_main_listener(&self) -> bool {
        self.listen.is_none() && self.token.is_some()
    }
}

#[derive(Clone)]
struct Scrape {
    db: Database,
    token: Option<Arc<MetricsToken>>,
}

/// `GET /metrics` (and nothing else).
pub fn routes(db: Database, token: Option<Arc<MetricsToken>>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { db, token })
}

async fn scrape(State(scrape): State<Scrape>, request: Request) -> Response {
    if let Some(token) = &scrape.token
        && !token.admits(&request)
    {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer <the metrics token>`\n",
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"todo-mcp metrics\""),
        );
        return response;
    }
    match metrics::global().encode(Some(&scrape.db.pool_stats())) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn with_authorization(value: &str) -> Request {
        Request::builder()
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .expect("a request")
    }

    #[test]
    fn only_the_exact_token_is_admitted() {
        let token = MetricsToken::new("s3cret").expect("a token");
        assert!(token.admits(&with_authorization("Bearer s3cret")));
        assert!(token.admits(&with_authorization("bearer  s3cret ")));
        for wrong in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic s3cret",
            "s3cret",
            "Bearer ",
        ] {
            assert!(!token.admits(&with_authorization(wrong)), "{wrong:?}");
        }
        let none = Request::builder().body(Body::empty()).expect("a request");
        assert!(!token.admits(&none));
        assert!(MetricsToken::new("  ").is_err());
    }
}
