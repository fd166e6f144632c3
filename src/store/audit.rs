//! The audit trail: every tool call, success or failure, becomes a `tool` message.

use super::conversations::insert_record;
use super::{ErrorKind, StoreError, UserTx};
use crate::db::sql::CachedDsl;
use crate::db::{DbError, JsonText};
use crate::on_backend;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::time::Duration;

/// Results larger than this (serialized) are recorded by size only: the data they carry
/// is in its own rows, and a history read of 50 long messages must not copy them all.
pub const RESULT_RECORD_LIMIT: usize = 16 * 1024;

/// How a call ended.
pub enum Outcome<'a> {
    /// Its result, serialized once by the caller.
    Success(&'a RawValue),
    Failure {
        kind: ErrorKind,
        message: &'a str,
    },
}

/// One tool invocation, as recorded in `messages.tool_calls`.
pub struct CallRecord<'a> {
    pub tool: &'a str,
    pub arguments: &'a Value,
    pub outcome: Outcome<'a>,
    pub duration: Duration,
}

/// A successful call's record, written straight to JSON text: its result is embedded as
/// serialized, and nothing is built as a `Value` tree or copied on the way.
#[derive(Serialize)]
struct SuccessJson<'a> {
    tool: &'a str,
    arguments: &'a Value,
    ok: bool,
    result: RecordedResult<'a>,
    duration_ms: f64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RecordedResult<'a> {
    Kept(&'a RawValue),
    Omitted { omitted: bool, bytes: usize },
}

impl CallRecord<'_> {
    /// The JSON stored in `tool_calls`:
    /// `{tool, arguments, ok, result | error: {kind, message}, duration_ms}`.
    pub fn to_json(&self) -> Result<JsonText, StoreError> {
        let duration_ms = (self.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let encoded = match self.outcome {
            Outcome::Success(result) => {
                let bytes = result.get().len();
                serde_json::value::to_raw_value(&SuccessJson {
                    tool: self.tool,
                    arguments: self.arguments,
                    ok: true,
                    result: if bytes <= RESULT_RECORD_LIMIT {
                        RecordedResult::Kept(result)
                    } else {
                        RecordedResult::Omitted {
                            omitted: true,
                            bytes,
                        }
                    },
                    duration_ms,
                })
            }
            Outcome::Failure { kind, message } => serde_json::value::to_raw_value(&json!({
                "tool": self.tool,
                "arguments": refused_arguments(self.arguments),
                "ok": false,
                "error": { "kind": kind.as_str(), "message": message },
                "duration_ms": duration_ms,
            })),
        };
        let unencodable = |e: serde_json::Error| {
            StoreError::Conflict(format!("cannot encode the call's record: {e}"))
        };
        let encoded = encoded.map_err(unencodable)?;
        // JSON escapes a NUL as `\u0000`, which jsonb refuses: only then is the record
        // read back as a tree to replace it (a `\\u0000` in the text, an escaped
        // backslash, takes that slower road too, harmlessly).
        if !encoded.get().contains("\\u0000") {
            return Ok(JsonText(encoded));
        }
        let mut tree: Value = serde_json::from_str(encoded.get()).map_err(unencodable)?;
        replace_nul(&mut tree);
        serde_json::value::to_raw_value(&tree)
            .map(JsonText)
            .map_err(unencodable)
    }

    fn summary(&self) -> String {
        match &self.outcome {
            Outcome::Success(_) => format!("{} succeeded", self.tool),
            Outcome::Failure { message, .. } => format!("{} failed: {message}", self.tool),
        }
    }
}

/// The most bytes of JSON a failure record keeps of the call's arguments.
pub const REFUSED_ARGUMENTS_BYTES: usize = 1024;

/// The most characters of one string (or key) a failure record keeps when the arguments
/// were over [`REFUSED_ARGUMENTS_BYTES`].
pub const REFUSED_STRING_CHARS: usize = 64;

/// A failed call's arguments as its record keeps them. They were refused, so nothing
/// bounded them: up to [`REFUSED_ARGUMENTS_BYTES`] of JSON they are kept as sent; beyond,
/// each string and key is cut after [`REFUSED_STRING_CHARS`] characters (with `…`), and if
/// the whole is still over the limit only its size is kept: `{"omitted": true, "bytes": N}`.
fn refused_arguments(arguments: &Value) -> Value {
    fn cut(value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(super::shorten(text, REFUSED_STRING_CHARS)),
            Value::Array(items) => Value::Array(items.iter().map(cut).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (super::shorten(key, REFUSED_STRING_CHARS), cut(value)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let size = serialized_size(arguments);
    if size <= REFUSED_ARGUMENTS_BYTES {
        return arguments.clone();
    }
    let kept = cut(arguments);
    if serialized_size(&kept) <= REFUSED_ARGUMENTS_BYTES {
        kept
    } else {
        json!({ "omitted": true, "bytes": size })
    }
}

/// The length of a value's JSON, counted without building the text.
fn serialized_size(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Writes the record into `conversation` (which must be the transaction user's), as the
/// transaction's last statement: on PostgreSQL the COMMIT that follows goes out with it,
/// in one round trip ([`crate::db::Tx::commit_with_next_statement`]).
pub async fn record(
    tx: &mut UserTx,
    conversation: uuid::Uuid,
    call: CallRecord<'_>,
) -> Result<(), StoreError> {
    let (tx, user) = tx.split();
    let content = call.summary().replace('\0', NUL_STANDIN);
    let tool_calls = call.to_json()?;
    tx.commit_with_next_statement();
    insert_record(tx, user, conversation, &content, &tool_calls)
        .await
        .map_err(|error| match error {
            // The only key a record refers to besides its user: the conversation, which
            // is not the user's (or no longer exists).
            StoreError::Db(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                _,
            ))) => StoreError::not_found("conversation", conversation),
            other => other,
        })
}

/// Counts a failure record against its user's budget for this hour
/// (`--max-failure-records-per-hour`) and returns how many this hour has had, this one
/// included. One upsert on the user's budget row: concurrent failures, on any replica,
/// count one at a time, and never wait on the user's own row.
pub async fn count_failure_record(tx: &mut UserTx) -> Result<i32, StoreError> {
    let (tx, user) = tx.split();
    let hour = chrono::Utc::now().timestamp().div_euclid(3600);
    let count: i32 = on_backend!(tx, |conn| {
        use diesel::dsl::case_when;
        use diesel::upsert::excluded;
        use schema::failure_budgets::dsl as b;
        diesel::insert_into(b::failure_budgets)
            .values((
                b::user_id.eq(user.as_str()),
                b::hour.eq(hour),
                b::records.eq(1),
            ))
            .on_conflict(b::user_id)
            .do_update()
            .set((
                b::records
                    .eq(case_when(b::hour.eq(excluded(b::hour)), b::records + 1).otherwise(1)),
                b::hour.eq(excluded(b::hour)),
            ))
            .returning(b::records)
            .cached()
            .get_result(conn)
            .await?
    });
    Ok(count)
}

/// Refused input may carry NUL bytes, which PostgreSQL's text and jsonb cannot store; the
/// record keeps everything else, with U+FFFD in their place.
const NUL_STANDIN: &str = "\u{FFFD}";

fn replace_nul(value: &mut Value) {
    match value {
        Value::String(text) if text.contains('\0') => *text = text.replace('\0', NUL_STANDIN),
        Value::Array(items) => items.iter_mut().for_each(replace_nul),
        Value::Object(fields) => {
            if fields.keys().any(|key| key.contains('\0')) {
                *fields = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, value)| (key.replace('\0', NUL_STANDIN), value))
                    .collect();
            }
            fields.values_mut().for_each(replace_nul);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn success_record(arguments: &Value, result: &Value) -> Value {
        let result = serde_json::value::to_raw_value(result).unwrap();
        let record = CallRecord {
            tool: "add_task",
            arguments,
            outcome: Outcome::Success(&result),
            duration: Duration::from_micros(1_500),
        };
        serde_json::from_str(record.to_json().unwrap().0.get()).unwrap()
    }

    /// The record written as text holds what the tree form held: the result as it was
    /// serialized, or only its size past the limit.
    #[test]
    fn a_success_record_keeps_its_result_up_to_the_limit() {
        let arguments = json!({ "title": "milk" });
        let small = json!({ "task": { "title": "milk", "labels": [] } });
        assert_eq!(
            success_record(&arguments, &small),
            json!({ "tool": "add_task", "arguments": arguments, "ok": true,
                    "result": small, "duration_ms": 1.5 })
        );
        let large = json!({ "text": "x".repeat(RESULT_RECORD_LIMIT) });
        let bytes = serde_json::to_string(&large).unwrap().len();
        assert_eq!(
            success_record(&arguments, &large)["result"],
            json!({ "omitted": true, "bytes": bytes })
        );
    }

    /// jsonb refuses `\u0000`: a NUL anywhere in a record's text (arguments or result) is
    /// replaced, and a literal backslash before `u0000` is kept as it was.
    #[test]
    fn a_success_record_carries_no_nul() {
        let record = success_record(
            &json!({ "title": "milk", "extra\0": "a\0b" }),
            &json!({ "title": "c:\\u0000", "note": "\0" }),
        );
        assert_eq!(
            record["arguments"],
            json!({ "title": "milk", "extra\u{FFFD}": "a\u{FFFD}b" })
        );
        assert_eq!(
            record["result"],
            json!({ "title": "c:\\u0000", "note": "\u{FFFD}" })
        );
    }

    #[test]
    fn nul_bytes_are_replaced_everywhere() {
        let mut value = json!({ "ti\0tle": ["a\0b", { "k": "\0" }], "n": 1 });
        replace_nul(&mut value);
        assert_eq!(
            value,
            json!({ "ti\u{FFFD}tle": ["a\u{FFFD}b", { "k": "\u{FFFD}" }], "n": 1 })
        );
    }

    #[test]
    fn refused_arguments_are_bounded() {
        let small = json!({ "task_id": "nope" });
        assert_eq!(refused_arguments(&small), small);
        // `{"title":""}` is 12 bytes; é is 2.
        let at_limit = json!({ "title": "é".repeat((REFUSED_ARGUMENTS_BYTES - 12) / 2) });
        assert_eq!(serialized_size(&at_limit), REFUSED_ARGUMENTS_BYTES);
        assert_eq!(refused_arguments(&at_limit), at_limit);
        let over =
            json!({ "title": format!("{}x", "é".repeat((REFUSED_ARGUMENTS_BYTES - 12) / 2)) });
        assert_eq!(
            refused_arguments(&over),
            json!({ "title": format!("{}…", "é".repeat(REFUSED_STRING_CHARS)) })
        );
        let long = json!({ "task_id": "A".repeat(3_000_000), "n": 1 });
        let kept = refused_arguments(&long);
        assert_eq!(
            kept["task_id"].as_str().map(|t| t.chars().count()),
            Some(REFUSED_STRING_CHARS + 1)
        );
        assert_eq!(kept["n"], 1);
        let many: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("k{i}"), json!("x".repeat(300))))
            .collect();
        let many = Value::Object(many);
        let kept = refused_arguments(&many);
        assert_eq!(
            kept,
            json!({ "omitted": true, "bytes": serialized_size(&many) })
        );
    }

    #[test]
    fn size_is_the_length_of_the_json() {
        let value = json!({ "task": { "title": "milk", "tags": [1, 2, "é"] } });
        assert_eq!(
            serialized_size(&value),
            serde_json::to_vec(&value).unwrap().len()
        );
    }
}
