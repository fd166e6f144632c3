//! The issuer's published keys (its JWKS), fetched over HTTPS and cached.
//!
//! * A token whose `kid` is not cached makes the JWKS be fetched again, but never more than
//!   once per `refresh_min_interval`, so a flood of made-up kids cannot make this server
//!   hammer the issuer.
//! * The cache is also refreshed once older than `cache_ttl`: a key that left the JWKS
//!   (rotated out) stops working then, or at the next fetch for a new kid, if sooner.
//! * A failed fetch keeps the keys already cached, so the JWKS being down does not stop
//!   tokens whose key is known.
//! * Only asymmetric signing keys are taken (never a symmetric `oct` key), each allowed only
//!   the algorithms of its own type: a token cannot pick an algorithm its key was not for.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// The algorithms an RSA key allows.
const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Whether a token may be signed with `alg` by a published key (when the key allows it).
pub fn is_asymmetric(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::EdDSA | Algorithm::ES256 | Algorithm::ES384) || RSA.contains(&alg)
}

/// How long one fetch (metadata or JWKS) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS or metadata document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Where the keys are published.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `TODO_MCP_JWKS_URL`.
    Jwks(Url),
    /// The `jwks_uri` of the issuer's metadata (RFC 8414, then OpenID Connect discovery).
    Discovered { issuer: String },
}

/// Why no key verifies a token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key of the issuer's JWKS has the token's kid {0}")]
    UnknownKid(String),
    #[error("the token names no kid, and the issuer's JWKS has no single key for {0:?}")]
    NoKid(Algorithm),
    #[error("the key {kid} is not for {alg:?}")]
    AlgorithmMismatch { kid: String, alg: Algorithm },
    #[error("cannot fetch the issuer's keys: {0}")]
    Unavailable(String),
}

struct PublishedKey {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: Vec<PublishedKey>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct Fetching {
    last_attempt: Option<Instant>,
    /// The JWKS location, once discovered.
    jwks_url: Option<Url>,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
}

/// The issuer's keys, as [`PublishedKeys::key_for`] hands them out.
pub struct PublishedKeys {
    source: KeySource,
    client: reqwest::Client,
    cache_ttl: Duration,
    refresh_min_interval: Duration,
    cache: RwLock<Cache>,
    fetching: Mutex<Fetching>,
}

impl PublishedKeys {
    pub fn new(
        source: KeySource,
        cache_ttl: Duration,
        refresh_min_interval: Duration,
    ) -> Result<Self, String> {
        // Keys decide who is signed in: a redirect could send the fetch anywhere.
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("todo-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let fetching = Fetching {
            jwks_url: match &source {
                KeySource::Jwks(url) => Some(url.clone()),
                KeySource::Discovered { .. } => None,
            },
            ..Fetching::default()
        };
        Ok(PublishedKeys {
            source,
            client,
            cache_ttl,
            refresh_min_interval,
            cache: RwLock::default(),
            fetching: Mutex::new(fetching),
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Fetches the keys now (unless fetched less than `refresh_min_interval` ago).
    pub async fn prefetch(&self) -> Result<(), String> {
        let seen = self.cache.read().await.fetched_at;
        self.refresh(seen).await
    }

    /// The key that verifies a token with this header's `kid` and `alg`.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, KeyError> {
        let seen = {
            let cache = self.cache.read().await;
            let fresh = cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < self.cache_ttl);
            if fresh {
                match find(&cache.keys, kid, alg) {
                    Err(KeyError::UnknownKid(_) | KeyError::NoKid(_)) => {}
                    found => return found,
                }
            }
            cache.fetched_at
        };
        // Stale, empty, or without this kid: fetch again (rate-limited), then look again,
        // in whatever the cache holds, the old keys if the fetch failed.
        let refreshed = self.refresh(seen).await;
        let cache = self.cache.read().await;
        match (find(&cache.keys, kid, alg), refreshed) {
            (Ok(key), _) => Ok(key),
            (Err(_), Err(reason)) if cache.fetched_at.is_none() => {
                Err(KeyError::Unavailable(reason))
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Fetches the JWKS unless another task did since `seen`, or the last attempt was
    /// less than `refresh_min_interval` ago.
    async fn refresh(&self, seen: Option<Instant>) -> Result<(), String> {
        let mut fetching = self.fetching.lock().await;
        if self.cache.read().await.fetched_at != seen {
            return Ok(());
        }
        if let Some(at) = fetching.last_attempt
            && at.elapsed() < self.refresh_min_interval
        {
            return match &fetching.last_error {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            };
        }
        fetching.last_attempt = Some(Instant::now());
        match self.fetch(&mut fetching).await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "fetched the issuer's JWKS");
                fetching.last_error = None;
                *self.cache.write().await = Cache {
                    keys,
                    fetched_at: Some(Instant::now()),
                };
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the issuer's JWKS; keeping the cached keys");
                fetching.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch(&self, fetching: &mut Fetching) -> Result<Vec<PublishedKey>, String> {
        let url = match &fetching.jwks_url {
            Some(url) => url.clone(),
            None => {
                let KeySource::Discovered { issuer } = &self.source else {
                    unreachable!("a JWKS URL is known from the start");
                };
                let url = self.discover(issuer).await?;
                tracing::info!(%url, "discovered the issuer's JWKS");
                fetching.jwks_url = Some(url.clone());
                url
            }
        };
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<Value>,
        }
        let set: KeySet = self.get_json(&url).await?;
        Ok(set.keys.into_iter().filter_map(published_key).collect())
    }

    /// The `jwks_uri` of the issuer's metadata: RFC 8414's
    /// `/.well-known/oauth-authorization-server{path}`, then OpenID Connect's
    /// `{issuer}/.well-known/openid-configuration`. The metadata must name the same issuer.
    async fn discover(&self, issuer: &str) -> Result<Url, String> {
        let mut tried = Vec::new();
        for url in metadata_urls(issuer)? {
            #[derive(Deserialize)]
            struct Metadata {
                issuer: Option<String>,
                jwks_uri: Option<String>,
            }
            match self.get_json::<Metadata>(&url).await {
                Ok(Metadata {
                    issuer: Some(named),
                    jwks_uri: Some(jwks),
                }) if named == issuer => {
                    return Url::parse(&jwks)
                        .map_err(|e| format!("{url} names an invalid jwks_uri: {e}"));
                }
                Ok(Metadata { issuer, .. }) => tried.push(format!(
                    "{url}: issuer {issuer:?} and no jwks_uri for {issuer:?}",
                    issuer = issuer.unwrap_or_default()
                )),
                Err(error) => tried.push(error),
            }
        }
        Err(format!(
            "no metadata of {issuer} names its JWKS ({}); set TODO_MCP_JWKS_URL",
            tried.join("; ")
        ))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> Result<T, String> {
        check_fetchable(url)?;
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if response.status().is_redirection() {
            return Err(format!(
                "{url}: HTTP {} (redirects are not followed: give the final URL)",
                response.status()
            ));
        }
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: over {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not the JSON expected: {e}"))
    }
}

/// Keys and metadata come over `https`, or plain `http` from this machine only (a local
/// issuer, a test): anyone on the path of a plain fetch could hand out keys.
pub fn check_fetchable(url: &Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        scheme => Err(format!(
            "{url}: keys are fetched over https only ({scheme} is allowed for loopback \
             addresses alone)"
        )),
    }
}

/// Where an issuer's metadata may be, in the order tried.
fn metadata_urls(issuer: &str) -> Result<Vec<Url>, String> {
    let parsed =
        Url::parse(issuer).map_err(|e| format!("the issuer {issuer:?} is not a URL: {e}"))?;
    let path = parsed.path().trim_end_matches('/');
    let at = |path: String| {
        let mut url = parsed.clone();
        url.set_path(&path);
        url.set_query(None);
        url
    };
    Ok(vec![
        at(format!("/.well-known/oauth-authorization-server{path}")),
        at(format!("{path}/.well-known/openid-configuration")),
        at(format!("/.well-known/openid-configuration{path}")),
    ])
}

/// A JWKS entry this server can verify with, or `None` (logged) for any other.
fn published_key(entry: Value) -> Option<PublishedKey> {
    let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
    let jwk: Jwk = match serde_json::from_value(entry) {
        Ok(jwk) => jwk,
        Err(error) => {
            tracing::debug!(?kid, %error, "skipping a JWKS entry of an unknown shape");
            return None;
        }
    };
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        // Symmetric keys never come from a JWKS: that is the HS256-with-a-public-key attack.
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_) => vec![],
    };
    // A key that names its algorithm allows only that one.
    let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        None => by_type,
        Some(named) => by_type
            .into_iter()
            .filter(|alg| key_algorithm(*alg) == named)
            .collect(),
    };
    if algorithms.is_empty() {
        tracing::debug!(?kid, "skipping a JWKS entry that is no signing key of ours");
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk)
        .map_err(|error| tracing::debug!(?kid, %error, "skipping an unreadable JWKS key"))
        .ok()?;
    Some(PublishedKey {
        kid: jwk.common.key_id,
        algorithms,
        key,
    })
}

fn key_algorithm(alg: Algorithm) -> KeyAlgorithm {
    match alg {
        Algorithm::HS256 => KeyAlgorithm::HS256,
        Algorithm::HS384 => KeyAlgorithm::HS384,
        Algorithm::HS512 => KeyAlgorithm::HS512,
        Algorithm::ES256 => KeyAlgorithm::ES256,
        Algorithm::ES384 => KeyAlgorithm::ES384,
        Algorithm::RS256 => KeyAlgorithm::RS256,
        Algorithm::RS384 => KeyAlgorithm::RS384,
        Algorithm::RS512 => KeyAlgorithm::RS512,
        Algorithm::PS256 => KeyAlgorithm::PS256,
        Algorithm::PS384 => KeyAlgorithm::PS384,
        Algorithm::PS512 => KeyAlgorithm::PS512,
        Algorithm::EdDSA => KeyAlgorithm::EdDSA,
    }
}

fn find(keys: &[PublishedKey], kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, KeyError> {
    match kid {
        Some(kid) => {
            let key = keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or_else(|| KeyError::UnknownKid(crate::store::quote(kid)))?;
            if key.algorithms.contains(&alg) {
                Ok(key.key.clone())
            } else {
                Err(KeyError::AlgorithmMismatch {
                    kid: crate::store::quote(kid),
                    alg,
                })
            }
        }
        None => {
            let mut fitting = keys.iter().filter(|key| key.algorithms.contains(&alg));
            match (fitting.next(), fitting.next()) {
                (Some(key), None) => Ok(key.key.clone()),
                _ => Err(KeyError::NoKid(alg)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_over_https_or_from_this_machine() {
        let fetchable = |url: &str| check_fetchable(&Url::parse(url).unwrap()).is_ok();
        assert!(fetchable("https://auth.example.com/jwks"));
        assert!(fetchable("http://127.0.0.1:8080/jwks"));
        assert!(fetchable("http://127.5.0.1/jwks"));
        assert!(fetchable("http://localhost:3000/api/auth/jwks"));
        assert!(fetchable("http://[::1]:3000/jwks"));
        assert!(!fetchable("http://auth.example.com/jwks"));
        assert!(!fetchable("http://10.0.0.5/jwks"));
        assert!(!fetchable("http://localhost.example.com/jwks"));
        assert!(!fetchable("ftp://127.0.0.1/jwks"));
    }

    #[test]
    fn metadata_is_looked_for_where_rfc_8414_then_openid_put_it() {
        let urls: Vec<String> = metadata_urls("https://auth.example.com/api/auth")
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            urls,
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/api/auth",
                "https://auth.example.com/api/auth/.well-known/openid-configuration",
                "https://auth.example.com/.well-known/openid-configuration/api/auth",
            ]
        );
        let root: Vec<String> = metadata_urls("https://auth.example.com/")
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            root[0],
            "https://auth.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            root[1],
            "https://auth.example.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_taken() {
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s", "alg": "HS256"});
        assert!(published_key(oct).is_none());
        let enc = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "use": "enc", "kid": "e",
            "x": "gzlYtacNN4p9Uj6KtOu0CICDrdfJrjxhwGQBrMciz8M"});
        assert!(published_key(enc).is_none());
        let ed = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "alg": "EdDSA",
            "x": "gzlYtacNN4p9Uj6KtOu0CICDrdfJrjxhwGQBrMciz8M"});
        let key = published_key(ed).expect("an Ed25519 signing key");
        assert_eq!(key.algorithms, [Algorithm::EdDSA]);
        // A key that names another algorithm than its type allows is no key.
        let lying = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "k", "alg": "RS256",
            "x": "gzlYtacNN4p9Uj6KtOu0CICDrdfJrjxhwGQBrMciz8M"});
        assert!(published_key(lying).is_none());
    }
}
