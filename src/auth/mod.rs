//! Who is calling, and what they may do: the [`Caller`] named by a bearer credential.
//!
//! Three kinds of credential:
//! * an API token (`tmcp_…`, from `todo-mcp token create`), checked against the database;
//! * a JWT signed by the deployer's identity provider (EdDSA, ES256/384, RS256/384/512,
//!   PS256/384/512), verified against the issuer's published keys ([`jwks`]): `iss` must be
//!   `TODO_MCP_JWT_ISSUER`, `aud` must contain the expected audience (RFC 8707);
//! * a JWT signed with HS256 and `TODO_MCP_JWT_SECRET`.
//!
//! For every JWT, `exp` is required and `exp`/`nbf` are enforced with [`LEEWAY_SECONDS`] of
//! leeway; the user is `sub`; the scopes are the `scope` claim (or `scp`), and a token with
//! neither (a first-party session token, such as Better Auth's JWT plugin issues) may use
//! every tool. An algorithm is accepted only with a key made for it: `alg: none`, HS256 when
//! no secret is set (the HS256-with-a-public-key confusion), or an algorithm the `kid`'s key
//! was not made for, are refused before any signature is checked.

pub mod jwks;

use crate::db::Database;
use crate::store::scopes::{Caller, Scopes};
use crate::store::tokens::{self, TokenCheck};
use crate::store::{StoreError, UserId, quote, users};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use jwks::{KeyError, KeySource, PublishedKeys};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is neither an API token nor a JWT")]
    Malformed,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token's issuer is not the one this server trusts")]
    WrongIssuer,
    #[error("the token is not for this server (aud)")]
    WrongAudience,
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    #[error("the token's `sub` is not a valid user id")]
    BadSubject,
    #[error("the token's algorithm {0} is not accepted")]
    AlgorithmRefused(String),
    #[error(
        "the token lives {lifetime} s (from `iat`, or now, to `exp`), over the {max} s \
         --jwt-max-lifetime allows"
    )]
    TooLong { lifetime: i64, max: u64 },
    #[error(
        "the token is a JWT, but neither TODO_MCP_JWT_ISSUER nor TODO_MCP_JWT_SECRET is set, so JWTs are not accepted"
    )]
    JwtDisabled,
    #[error("{0}")]
    Key(KeyError),
    #[error("cannot check the token: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    /// The server, not the token, is at fault: answer "retry" (503), not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            AuthError::Store(StoreError::Db(_)) | AuthError::Key(KeyError::Unavailable(_))
        )
    }

    /// Why the credential was refused, for logs and metrics.
    pub fn reason(&self) -> Refusal {
        match self {
            AuthError::Malformed => Refusal::Malformed,
            AuthError::Invalid => Refusal::Invalid,
            AuthError::BadSignature => Refusal::BadSignature,
            AuthError::Expired => Refusal::Expired,
            AuthError::NotYetValid => Refusal::NotYetValid,
            AuthError::Revoked => Refusal::Revoked,
            AuthError::WrongIssuer => Refusal::WrongIssuer,
            AuthError::WrongAudience => Refusal::WrongAudience,
            AuthError::MissingClaim(_) => Refusal::MissingClaim,
            AuthError::BadSubject => Refusal::BadSubject,
            AuthError::AlgorithmRefused(_) => Refusal::AlgorithmRefused,
            AuthError::TooLong { .. } => Refusal::TooLong,
            AuthError::JwtDisabled => Refusal::JwtDisabled,
            AuthError::Key(KeyError::Unavailable(_)) => Refusal::KeysUnavailable,
            AuthError::Key(_) => Refusal::UnknownKey,
            AuthError::Store(_) => Refusal::Store,
        }
    }
}

/// Why a request was refused before any tool ran: a fixed set, so that it can label a
/// metric (`todo_mcp_auth_refusals_total{reason}`) without unbounded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    Malformed,
    Invalid,
    BadSignature,
    Expired,
    NotYetValid,
    Revoked,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    BadSubject,
    AlgorithmRefused,
    /// An HS256 token whose lifetime is over `--jwt-max-lifetime`.
    TooLong,
    JwtDisabled,
    UnknownKey,
    /// The issuer's keys could not be fetched (503, not 401).
    KeysUnavailable,
    /// The database could not check the token (503 when it is unreachable).
    Store,
    /// A valid credential whose scopes do not allow the tool called (403).
    InsufficientScope,
}

impl Refusal {
    pub const ALL: [Refusal; 18] = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::Invalid,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::Revoked,
        Refusal::WrongIssuer,
        Refusal::WrongAudience,
        Refusal::MissingClaim,
        Refusal::BadSubject,
        Refusal::AlgorithmRefused,
        Refusal::TooLong,
        Refusal::JwtDisabled,
        Refusal::UnknownKey,
        Refusal::KeysUnavailable,
        Refusal::Store,
        Refusal::InsufficientScope,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Invalid => "invalid",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::Revoked => "revoked",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::MissingClaim => "missing_claim",
            Refusal::BadSubject => "bad_subject",
            Refusal::AlgorithmRefused => "algorithm_refused",
            Refusal::TooLong => "too_long",
            Refusal::JwtDisabled => "jwt_disabled",
            Refusal::UnknownKey => "unknown_key",
            Refusal::KeysUnavailable => "keys_unavailable",
            Refusal::Store => "store",
            Refusal::InsufficientScope => "insufficient_scope",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How JWTs are checked, from the command line.
#[derive(Debug, Clone)]
pub struct JwtOptions {
    /// `TODO_MCP_JWT_SECRET`: enables HS256.
    pub secret: Option<String>,
    /// `TODO_MCP_JWT_ISSUER`: enables JWTs signed with the issuer's published keys.
    pub issuer: Option<String>,
    /// `TODO_MCP_JWKS_URL`: where those keys are, if not in the issuer's metadata.
    pub jwks_url: Option<String>,
    /// `TODO_MCP_JWT_AUDIENCE`: the `aud` every JWT must contain.
    pub audience: Option<String>,
    /// `TODO_MCP_PUBLIC_URL`: the `aud` an issuer's JWTs must contain when no audience is
    /// set (the resource its OAuth access tokens are for).
    pub public_url: Option<String>,
    /// `--jwt-max-lifetime`: the longest an HS256 token may live, from `iat` (or now) to
    /// `exp`. (An issuer's tokens live as long as it says.)
    pub max_lifetime: Duration,
    pub jwks_cache_ttl: Duration,
    pub jwks_refresh_min_interval: Duration,
}

impl Default for JwtOptions {
    /// No credentials but API tokens; the JWKS cache's defaults (`--jwks-cache-ttl`,
    /// `--jwks-refresh-min-interval`).
    fn default() -> Self {
        JwtOptions {
            secret: None,
            issuer: None,
            jwks_url: None,
            audience: None,
            public_url: None,
            max_lifetime: Duration::from_secs(24 * 3600),
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_refresh_min_interval: Duration::from_secs(5),
        }
    }
}

/// A configuration that cannot work, said at start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// Checks credentials (see the module docs).
#[derive(Clone)]
pub struct Authenticator {
    secret: Option<Arc<Secret>>,
    published: Option<Arc<Published>>,
}

/// What HS256 tokens are checked with.
struct Secret {
    key: DecodingKey,
    /// `iss` must be this, when TODO_MCP_JWT_ISSUER is set.
    issuer: Option<String>,
    /// `aud` must contain this, when TODO_MCP_JWT_AUDIENCE is set.
    audience: Option<String>,
    max_lifetime: Duration,
}

/// The shortest HS256 secret accepted: 256 bits, the hash's own size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

struct Published {
    keys: PublishedKeys,
    issuer: String,
    audience: String,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
}

impl Authenticator {
    pub fn new(options: &JwtOptions) -> Result<Self, ConfigError> {
        let set = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let issuer = set(&options.issuer);
        let explicit_audience = set(&options.audience);
        let secret = match options.secret.as_deref().filter(|s| !s.is_empty()) {
            Some(secret) if secret.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError(format!(
                    "TODO_MCP_JWT_SECRET is {} bytes; HS256 needs at least {MIN_SECRET_BYTES} \
                     (for example `openssl rand -base64 32`)",
                    secret.len()
                )));
            }
            Some(secret) => Some(Arc::new(Secret {
                key: DecodingKey::from_secret(secret.as_bytes()),
                issuer: issuer.clone(),
                audience: explicit_audience.clone(),
                max_lifetime: options.max_lifetime,
            })),
            None => None,
        };
        let mut authenticator = Authenticator {
            secret,
            published: None,
        };
        let issuer = issuer.as_deref();
        let jwks_url = options
            .jwks_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let Some(issuer) = issuer else {
            if jwks_url.is_some() {
                return Err(ConfigError(
                    "TODO_MCP_JWKS_URL needs TODO_MCP_JWT_ISSUER: a token's issuer is always checked"
                        .into(),
                ));
            }
            return Ok(authenticator);
        };
        let Some(audience) = explicit_audience.or_else(|| set(&options.public_url)) else {
            return Err(ConfigError(
                "TODO_MCP_JWT_ISSUER needs TODO_MCP_PUBLIC_URL (this server's URL, the audience \
                 tokens must name) or TODO_MCP_JWT_AUDIENCE: without an audience, a token the \
                 issuer made for any other service would be accepted here"
                    .into(),
            ));
        };
        let source = match jwks_url {
            Some(url) => {
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    ConfigError(format!(
                        "TODO_MCP_JWKS_URL {} is not a URL: {e}",
                        quote(url)
                    ))
                })?;
                jwks::check_fetchable(&parsed)
                    .map_err(|e| ConfigError(format!("TODO_MCP_JWKS_URL {e}")))?;
                KeySource::Jwks(parsed)
            }
            None => {
                let parsed = reqwest::Url::parse(issuer).map_err(|e| {
                    ConfigError(format!(
                        "TODO_MCP_JWT_ISSUER {} is not a URL, so its metadata cannot be found \
                         ({e}); set TODO_MCP_JWKS_URL",
                        quote(issuer)
                    ))
                })?;
                jwks::check_fetchable(&parsed).map_err(|e| {
                    ConfigError(format!(
                        "TODO_MCP_JWT_ISSUER's metadata would be fetched from {e}; set \
                         TODO_MCP_JWKS_URL to an https URL"
                    ))
                })?;
                KeySource::Discovered {
                    issuer: issuer.to_owned(),
                }
            }
        };
        let keys = PublishedKeys::new(
            source,
            options.jwks_cache_ttl,
            options.jwks_refresh_min_interval,
        )
        .map_err(ConfigError)?;
        authenticator.published = Some(Arc::new(Published {
            keys,
            issuer: issuer.to_owned(),
            audience,
        }));
        Ok(authenticator)
    }

    /// For the start-up log: what is accepted.
    pub fn describe(&self) -> String {
        let mut kinds = vec!["API tokens".to_owned()];
        if let Some(published) = &self.published {
            let keys = match published.keys.source() {
                KeySource::Jwks(url) => format!("keys from {url}"),
                KeySource::Discovered { .. } => "keys from its metadata".to_owned(),
            };
            kinds.push(format!(
                "JWTs of {} for {} ({keys})",
                published.issuer, published.audience
            ));
        }
        if self.secret.is_some() {
            kinds.push("HS256 JWTs (TODO_MCP_JWT_SECRET)".to_owned());
        }
        kinds.join(", ")
    }

    /// Fetches the issuer's keys now, so that a wrong URL shows in the log at start rather
    /// than at the first request. Failing is not fatal: the keys are fetched again on need.
    pub async fn warm_up(&self) {
        if let Some(published) = &self.published {
            match published.keys.prefetch().await {
                Ok(()) => tracing::info!("fetched the issuer's keys"),
                Err(error) => tracing::warn!(%error, "cannot fetch the issuer's keys yet"),
            }
        }
    }

    /// The caller the credential names. A JWT's user is created on first sight.
    pub async fn authenticate(&self, db: &Database, credential: &str) -> Result<Caller, AuthError> {
        let credential = credential.trim();
        if tokens::looks_like_api_token(credential) {
            return match tokens::check(db, credential).await? {
                TokenCheck::Valid(caller) => Ok(caller),
                TokenCheck::Unknown => Err(AuthError::Invalid),
                TokenCheck::Expired => Err(AuthError::Expired),
                TokenCheck::Revoked => Err(AuthError::Revoked),
            };
        }
        let caller = self.verify_jwt(credential).await?;
        // Every request of a JWT user comes here: read first, create only on first sight.
        if !users::exists(db, &caller.user).await? {
            users::ensure(db, &caller.user).await?;
        }
        Ok(caller)
    }

    async fn verify_jwt(&self, token: &str) -> Result<Caller, AuthError> {
        let alg = header_algorithm(token)?;
        let (key, validation) = match alg {
            Algorithm::HS256 => {
                let secret = self.secret.as_ref().ok_or_else(|| {
                    if self.published.is_some() {
                        AuthError::AlgorithmRefused("HS256".into())
                    } else {
                        AuthError::JwtDisabled
                    }
                })?;
                let mut validation = Validation::new(Algorithm::HS256);
                let mut required = vec!["exp", "sub"];
                if let Some(issuer) = &secret.issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                if let Some(audience) = &secret.audience {
                    validation.set_audience(&[audience]);
                    required.push("aud");
                }
                validation.set_required_spec_claims(&required);
                (secret.key.clone(), validation)
            }
            alg if jwks::is_asymmetric(alg) => {
                let published = self.published.as_ref().ok_or(if self.secret.is_some() {
                    AuthError::AlgorithmRefused(format!("{alg:?}"))
                } else {
                    AuthError::JwtDisabled
                })?;
                let header =
                    jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
                let key = published
                    .keys
                    .key_for(header.kid.as_deref(), alg)
                    .await
                    .map_err(|error| match error {
                        KeyError::AlgorithmMismatch { .. } => {
                            AuthError::AlgorithmRefused(format!("{alg:?}"))
                        }
                        other => AuthError::Key(other),
                    })?;
                let mut validation = Validation::new(alg);
                validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
                validation.set_issuer(&[&published.issuer]);
                validation.set_audience(&[&published.audience]);
                (key, validation)
            }
            other => return Err(AuthError::AlgorithmRefused(format!("{other:?}"))),
        };
        let mut validation = validation;
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::AlgorithmRefused(format!("{alg:?}")),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
            _ => AuthError::Invalid,
        })?;
        let claims = data.claims;
        if let (Algorithm::HS256, Some(secret), Some(exp)) = (alg, &self.secret, claims.exp) {
            // A shared secret signs tokens anyone holding it can mint: bound how long one
            // lives, so that a leaked or forgotten token does not work for years.
            let from = claims.iat.unwrap_or_else(|| chrono::Utc::now().timestamp());
            let lifetime = exp.saturating_sub(from);
            let max = secret.max_lifetime.as_secs();
            if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
                return Err(AuthError::TooLong { lifetime, max });
            }
        }
        Ok(Caller {
            user: UserId::parse(
                claims
                    .sub
                    .as_deref()
                    .ok_or_else(|| AuthError::MissingClaim("sub".into()))?,
            )
            .map_err(|_| AuthError::BadSubject)?,
            scopes: scopes_of(claims.scope.as_ref().or(claims.scp.as_ref())),
        })
    }
}

/// The header's `alg`, read before anything else so that `none` or an unknown algorithm is
/// refused by name. Anything that is not three base64url parts with a JSON header is not a
/// JWT.
fn header_algorithm(token: &str) -> Result<Algorithm, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(AuthError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::MissingClaim("alg".into()))?;
    alg.parse::<Algorithm>()
        .map_err(|_| AuthError::AlgorithmRefused(quote(alg)))
}

/// `scope` as OAuth writes it (a space-separated string) or `scp` (a list, as some issuers
/// write it). No claim at all: a first-party token, with every scope.
fn scopes_of(claim: Option<&Value>) -> Scopes {
    match claim {
        None | Some(Value::Null) => Scopes::FULL,
        Some(Value::String(text)) => Scopes::from_oauth(text),
        Some(Value::Array(items)) => {
            let joined: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            Scopes::from_oauth(&joined.join(" "))
        }
        Some(_) => Scopes::NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scopes::TodoScope;

    #[test]
    fn scope_claims_in_both_shapes() {
        assert_eq!(scopes_of(None), Scopes::FULL);
        assert_eq!(
            scopes_of(Some(&Value::from("openid todo:read"))),
            [TodoScope::Read].into_iter().collect()
        );
        assert_eq!(
            scopes_of(Some(&serde_json::json!(["todo:write"]))),
            [TodoScope::Write].into_iter().collect()
        );
        assert_eq!(scopes_of(Some(&Value::from(""))), Scopes::NONE);
        assert_eq!(scopes_of(Some(&serde_json::json!(7))), Scopes::NONE);
    }

    #[test]
    fn algorithm_none_is_refused_by_name() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u"}"#);
        match header_algorithm(&format!("{header}.{payload}.")) {
            Err(AuthError::AlgorithmRefused(alg)) => assert!(alg.contains("none"), "{alg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(header_algorithm("a.b"), Err(AuthError::Malformed)));
    }

    #[test]
    fn an_issuer_without_an_audience_is_refused_at_start() {
        let options = JwtOptions {
            issuer: Some("https://auth.example.com".into()),
            ..JwtOptions::default()
        };
        let error = Authenticator::new(&options).err().expect("refused");
        assert!(error.to_string().contains("TODO_MCP_PUBLIC_URL"), "{error}");
        let options = JwtOptions {
            jwks_url: Some("https://auth.example.com/jwks".into()),
            ..JwtOptions::default()
        };
        assert!(Authenticator::new(&options).is_err());
    }
}
