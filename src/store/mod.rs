//! The domain: tasks, conversations, messages, users and their tokens, and the audit trail.
//!
//! A user's data is reached only through a [`UserTx`]: a transaction that names its user,
//! from which every store function takes the user its queries filter by (and that
//! row-level security confines it to), so no query can be given another user than its
//! transaction's. A row of another user is indistinguishable from a missing one.
//! Transactions are opened, committed and rolled back here and in `crate::db` only: the
//! layers above call store functions that take a [`UserTx`] (tool calls, see [`calls`]) or
//! the [`Database`] itself (tokens, users, sessions, secrets, the web page's reads in
//! [`browse`]), each one transaction.

pub mod agent_state;
pub mod audit;
pub mod browse;
pub mod calls;
pub mod conversations;
pub mod repeat;
pub mod scopes;
pub mod search;
pub mod secrets;
pub mod sessions;
pub mod task_fields;
pub mod tasks;
pub mod tokens;
pub mod transfer;
pub mod turns;
pub mod users;

use crate::db::{Database, DbError, DbTime, Scope, Tx};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};

/// Size limits, in characters, checked before anything is written.
pub mod limits {
    pub const TITLE: usize = 500;
    pub const DESCRIPTION: usize = 10_000;
    pub const CONVERSATION_TITLE: usize = 500;
    pub const MESSAGE_CONTENT: usize = 100_000;
    pub const SUMMARY: usize = 100_000;
    pub const IDEMPOTENCY_KEY: usize = 200;
    pub const USER_ID: usize = 255;
    pub const TOKEN_NAME: usize = 200;
    pub const PAGE_MAX: i64 = 200;
    pub const PAGE_DEFAULT: i64 = 50;
}

/// Per-user and per-conversation ceilings an operator sets (`todo-mcp --help`). Past one,
/// the call fails with `quota_exceeded` and writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub tasks_per_user: i32,
    /// Messages appended with append_message; the server's own call records don't count.
    pub messages_per_conversation: i32,
    /// UTF-8 bytes of one message's content.
    pub message_bytes: usize,
    /// Bytes of one agent state, as JSON.
    pub state_bytes: usize,
    /// Versions of a conversation's agent state kept (the latest ones).
    pub state_versions: i32,
    /// Failed calls recorded per user and clock hour; past it a failure is counted in the
    /// metrics, not recorded. Successful calls are always recorded.
    pub failure_records_per_hour: i32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            tasks_per_user: 10_000,
            messages_per_conversation: 100_000,
            message_bytes: 256 * 1024,
            state_bytes: 1024 * 1024,
            state_versions: 20,
            failure_records_per_hour: 1_000,
        }
    }
}

/// The user every query is scoped to. It comes from the caller's credential, never from
/// a tool argument.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// The single user of a server run without a token.
    pub fn local() -> Self {
        UserId("local".into())
    }

    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(StoreError::invalid("user", "must not be empty"));
        }
        if id.chars().count() > limits::USER_ID {
            return Err(StoreError::invalid(
                "user",
                format!("must be at most {} characters", limits::USER_ID),
            ));
        }
        if id.chars().any(char::is_control) {
            return Err(StoreError::invalid(
                "user",
                "must not contain control characters",
            ));
        }
        Ok(UserId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A transaction scoped to one user: on PostgreSQL, row-level security confines it to
/// that user, and every store function filters by the same user, taken from here.
pub struct UserTx {
    tx: Tx,
    user: UserId,
}

impl UserTx {
    pub async fn begin(db: &Database, user: &UserId) -> Result<Self, DbError> {
        Ok(UserTx {
            tx: db.begin(Scope::User(user.as_str())).await?,
            user: user.clone(),
        })
    }

    /// A read-only transaction of the user's that sees one snapshot throughout
    /// ([`Database::begin_snapshot`]).
    pub async fn begin_snapshot(db: &Database, user: &UserId) -> Result<Self, DbError> {
        Ok(UserTx {
            tx: db.begin_snapshot(Scope::User(user.as_str())).await?,
            user: user.clone(),
        })
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The connection's transaction and its user, for the queries of a store function.
    fn split(&mut self) -> (&mut Tx, &UserId) {
        (&mut self.tx, &self.user)
    }
}

/// The one way a store transaction ends: by its work's outcome. After success it commits
/// (a read-only transaction's commit writes nothing); after a failure it rolls back, and
/// an error met on a connection that turned out already closed becomes
/// [`DbError::StaleConnection`] (nothing of the work ran: safe to run again elsewhere). A
/// failed rollback is only logged: the pool discards a connection left in a transaction.
pub async fn end<T, E: EndsTransaction>(tx: impl Into<Tx>, result: Result<T, E>) -> Result<T, E> {
    let tx: Tx = tx.into();
    match result {
        Ok(value) => {
            tx.commit().await.map_err(E::from)?;
            Ok(value)
        }
        Err(mut error) => {
            if let Some(db) = error.db_error()
                && let DbError::ConnectionLost(cause) = db
            {
                if tx.found_dead() {
                    *db = DbError::StaleConnection(std::mem::take(cause));
                } else if tx.commit_outcome_unknown() {
                    // The COMMIT went out with the statement that lost the connection.
                    *db = DbError::CommitOutcomeUnknown(std::mem::take(cause));
                }
            }
            if let Err(error) = tx.rollback().await {
                tracing::warn!(%error, "rollback failed");
            }
            Err(error)
        }
    }
}

/// An error a transaction's work can end with: it may be the database's.
pub trait EndsTransaction: From<DbError> {
    fn db_error(&mut self) -> Option<&mut DbError>;
}

impl EndsTransaction for StoreError {
    fn db_error(&mut self) -> Option<&mut DbError> {
        match self {
            StoreError::Db(error) => Some(error),
            _ => None,
        }
    }
}

impl From<UserTx> for Tx {
    fn from(tx: UserTx) -> Tx {
        tx.tx
    }
}

/// What can go wrong in the domain, each kind with what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The arguments are each fine but together ask for nothing (an update changing
    /// nothing): no one field is to blame.
    #[error("{0}")]
    NothingRequested(String),
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl StoreError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn not_found(entity: &'static str, id: impl std::fmt::Display) -> Self {
        StoreError::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    /// What kind of failure this is, for clients and the audit trail.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Invalid { .. } | StoreError::NothingRequested(_) => {
                ErrorKind::InvalidArgument
            }
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            StoreError::Db(
                DbError::Unavailable(_)
                | DbError::CannotConnect(_)
                | DbError::ConnectionLost(_)
                | DbError::StaleConnection(_)
                | DbError::CommitOutcomeUnknown(_),
            ) => ErrorKind::Unavailable,
            StoreError::Db(DbError::Contention(_) | DbError::Timeout(_)) => ErrorKind::Busy,
            StoreError::Db(_) => ErrorKind::Internal,
        }
    }
}

/// The kinds of failure a client sees, each with what it should do about it. A tool
/// error's text starts with the kind's name (`invalid_argument: …`), and the audit record
/// stores it as `error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A bad argument: fix it; nothing was written.
    InvalidArgument,
    /// No such row for this user (another user's rows look the same).
    NotFound,
    /// The request contradicts the current state (a stale `expected_updated_at`, say).
    Conflict,
    /// A quota would be exceeded; nothing was written.
    QuotaExceeded,
    /// Storage cannot be reached now: retry later.
    Unavailable,
    /// Storage is contended or slow: retry.
    Busy,
    /// The credential's scopes do not allow this tool (`todo:read` for the read-only
    /// tools, `todo:write` for the others): use a token that has the scope.
    InsufficientScope,
    /// A defect of the server.
    Internal,
    /// Audit records only: the client called a tool the server does not have.
    UnknownTool,
    /// Audit records only: the protocol layer refused the call before the tool ran.
    ProtocolError,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::QuotaExceeded,
        ErrorKind::Unavailable,
        ErrorKind::Busy,
        ErrorKind::InsufficientScope,
        ErrorKind::Internal,
        ErrorKind::UnknownTool,
        ErrorKind::ProtocolError,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Busy => "busy",
            ErrorKind::InsufficientScope => "insufficient_scope",
            ErrorKind::Internal => "internal",
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::ProtocolError => "protocol_error",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StoreError {
    /// See [`DbError::is_retryable`]: only database failures that saved nothing.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Db(error) if error.is_retryable())
    }
}

impl From<diesel::result::Error> for StoreError {
    fn from(error: diesel::result::Error) -> Self {
        StoreError::Db(DbError::from(error))
    }
}

/// Now, at the microsecond precision both backends store, so a value written and read
/// back compares equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Times in tool results: RFC 3339, UTC, microseconds.
pub fn format_time(time: DateTime<Utc>) -> String {
    DbTime(time).text()
}

/// For an update's argument where leaving it out keeps the value and `null` clears it:
/// present (even as null) is `Some`, so `null` arrives as `Some(None)`.
fn null_clears<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Bytes in an export record: base64, standard alphabet (`#[serde(with = ...)]`).
pub(crate) mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Parses an id argument, naming the field when it is not a uuid.
pub fn parse_uuid(field: &'static str, raw: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(raw.trim())
        .map_err(|_| StoreError::invalid(field, format!("{} is not a uuid", quote(raw))))
}

/// How many characters of a refused value an error quotes: enough to recognise it, while
/// a megabyte sent as an id costs a megabyte nowhere (not in the answer, the log or the
/// audit record).
pub const QUOTED_CHARS: usize = 40;

/// A refused value as errors show it: in backticks, cut after [`QUOTED_CHARS`]
/// characters with its length said (`` `AAAA…` (3000000 characters) ``).
pub fn quote(raw: &str) -> String {
    match raw.char_indices().nth(QUOTED_CHARS) {
        None => format!("`{raw}`"),
        Some((cut, _)) => format!("`{}…` ({} characters)", &raw[..cut], raw.chars().count()),
    }
}

/// Cuts a message after `max_chars` characters, marking the cut.
pub fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Checks a text argument: no NUL bytes (PostgreSQL text cannot hold them), within `max`
/// characters, and, if `required`, not blank. Returns it trimmed of surrounding space.
pub fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<String, StoreError> {
    if value.contains('\0') {
        return Err(StoreError::invalid(field, "must not contain NUL bytes"));
    }
    let trimmed = value.trim();
    if required && trimmed.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    let length = trimmed.chars().count();
    if length > max {
        return Err(StoreError::invalid(
            field,
            format!("is {length} characters; the limit is {max}"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// A page size argument: `default` when absent, an error outside 1..=PAGE_MAX.
pub fn page_size(field: &'static str, requested: Option<i64>) -> Result<i64, StoreError> {
    match requested {
        None => Ok(limits::PAGE_DEFAULT),
        Some(n) if (1..=limits::PAGE_MAX).contains(&n) => Ok(n),
        Some(n) => Err(StoreError::invalid(
            field,
            format!("{n} is outside 1..={}", limits::PAGE_MAX),
        )),
    }
}

/// Opaque keyset cursors: the last id of a page and a MAC binding it to its user and its
/// list, base64url-encoded with a kind prefix. A cursor of another user, of another list,
/// or made up is refused; any replica can check one, since the key is in the database.
pub mod cursor {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    /// Bytes of the MAC a cursor carries (128 bits).
    const TAG_BYTES: usize = 16;

    /// The key cursors are signed with ([`super::secrets::cursor_key`] loads it), as an
    /// HMAC state with the key already absorbed: each use clones it.
    #[derive(Clone)]
    pub struct CursorKey(Hmac<Sha256>);

    impl std::fmt::Debug for CursorKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("CursorKey(…)")
        }
    }

    impl CursorKey {
        /// A key from the shared secret (HMAC takes a key of any length, so this fails
        /// only if the hmac crate stops saying so).
        pub fn from_secret(secret: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
            <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret).map(CursorKey)
        }

        fn mac(&self, kind: &str, user: &UserId, key: &[u8]) -> Hmac<Sha256> {
            let mut mac = self.0.clone();
            for part in [kind.as_bytes(), b"\0", user.as_str().as_bytes(), b"\0"] {
                mac.update(part);
            }
            mac.update(key);
            mac
        }

        /// A cursor whose key is an id: the last row of a page in id order.
        pub fn encode(&self, kind: &str, user: &UserId, id: uuid::Uuid) -> String {
            self.encode_key(kind, user, id.as_bytes())
        }

        pub fn decode(
            &self,
            kind: &str,
            user: &UserId,
            field: &'static str,
            raw: &str,
        ) -> Result<uuid::Uuid, StoreError> {
            let key = self.decode_key::<16>(kind, user, field, raw)?;
            Ok(uuid::Uuid::from_bytes(key))
        }

        /// A cursor whose key is any fixed number of bytes (a sort key and an id, say).
        pub fn encode_key(&self, kind: &str, user: &UserId, key: &[u8]) -> String {
            let tag = self.mac(kind, user, key).finalize().into_bytes();
            let mut bytes = key.to_vec();
            bytes.extend_from_slice(&tag[..TAG_BYTES]);
            format!("{kind}_{}", URL_SAFE_NO_PAD.encode(bytes))
        }

        pub fn decode_key<const N: usize>(
            &self,
            kind: &str,
            user: &UserId,
            field: &'static str,
            raw: &str,
        ) -> Result<[u8; N], StoreError> {
            let bad = || StoreError::invalid(field, "is not a cursor this list returned");
            let encoded = raw
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix('_'))
                .ok_or_else(bad)?;
            let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| bad())?;
            if bytes.len() != N + TAG_BYTES {
                return Err(bad());
            }
            let (key, tag) = bytes.split_at(N);
            self.mac(kind, user, key)
                .verify_truncated_left(tag)
                .map_err(|_| bad())?;
            key.try_into().map_err(|_| bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_checks_name_the_field() {
        assert!(matches!(
            check_text("title", "  ", 10, true),
            Err(StoreError::Invalid { field: "title", .. })
        ));
        assert!(matches!(
            check_text("title", "a\0b", 10, true),
            Err(StoreError::Invalid { field: "title", .. })
        ));
        assert!(matches!(
            check_text("title", &"x".repeat(11), 10, true),
            Err(StoreError::Invalid { field: "title", .. })
        ));
        assert_eq!(check_text("title", " milk ", 10, true).unwrap(), "milk");
        assert_eq!(check_text("description", "", 10, false).unwrap(), "");
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let key = cursor::CursorKey::from_secret(&[7; 32]).unwrap();
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let id = uuid::Uuid::now_v7();
        let encoded = key.encode("t", &alice, id);
        assert_eq!(key.decode("t", &alice, "cursor", &encoded).unwrap(), id);
        assert!(
            key.decode("c", &alice, "cursor", &encoded).is_err(),
            "another list"
        );
        assert!(
            key.decode("t", &bob, "cursor", &encoded).is_err(),
            "another user"
        );
        let other_key = cursor::CursorKey::from_secret(&[8; 32]).unwrap();
        assert!(other_key.decode("t", &alice, "cursor", &encoded).is_err());
        // The right shape with a made-up position: the old, unsigned form.
        let forged = format!("t_{}", URL_SAFE_NO_PAD.encode(id.as_bytes()));
        assert!(key.decode("t", &alice, "cursor", &forged).is_err());
        assert!(key.decode("t", &alice, "cursor", "t_!!!").is_err());
        assert!(key.decode("t", &alice, "cursor", "t_AAAA").is_err());
    }

    #[test]
    fn refused_values_are_quoted_short() {
        assert_eq!(quote("abc"), "`abc`");
        let long = "é".repeat(3_000);
        let quoted = quote(&long);
        assert!(quoted.starts_with(&format!("`{}…`", "é".repeat(QUOTED_CHARS))));
        assert!(quoted.ends_with("(3000 characters)"));
        let error = parse_uuid("task_id", &"A".repeat(3_000_000)).unwrap_err();
        assert!(error.to_string().len() < 120, "{error}");
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size("limit", None).unwrap(), 50);
        assert_eq!(page_size("limit", Some(200)).unwrap(), 200);
        assert!(page_size("limit", Some(0)).is_err());
        assert!(page_size("limit", Some(-5)).is_err());
        assert!(page_size("limit", Some(201)).is_err());
    }
}
