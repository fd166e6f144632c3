//! Property tests over what a model can put in a call: arbitrary JSON as tool arguments,
//! arbitrary strings as cursors and texts. Bounded (a few thousand cases each) so CI
//! stays fast; each property can fail, by a panic or a broken promise.

use proptest::prelude::*;
use serde_json::{Map, Value};
use todo_mcp::store::cursor::CursorKey;
use todo_mcp::store::{UserId, check_text};

fn key() -> CursorKey {
    CursorKey::from_secret(b"a key for the property tests, 32+ bytes").unwrap()
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}
use todo_mcp::store::tasks::{NewTask, TaskChanges};
use todo_mcp::tools::Checked;
use todo_mcp::tools::conversations::{AppendMessageArgs, HistoryArgs, SetSummaryArgs};
use todo_mcp::tools::tasks::ListTasksArgs;

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,16}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Any JSON value that is not a string (for fields that must be one).
fn non_string_json() -> impl Strategy<Value = Value> {
    any_json().prop_filter("not a string", |v| !v.is_string())
}

fn parses<T: serde::de::DeserializeOwned>(value: &Value) -> Result<(), String> {
    serde_json::from_value::<Checked<T>>(value.clone())
        .map_err(|e| e.to_string())?
        .get()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Whatever arrives as arguments, parsing answers Ok or an error with a message; it
    /// never panics.
    #[test]
    fn arbitrary_arguments_never_panic(value in any_json()) {
        for outcome in [
            parses::<NewTask>(&value),
            parses::<ListTasksArgs>(&value),
            parses::<TaskChanges>(&value),
            parses::<AppendMessageArgs>(&value),
            parses::<HistoryArgs>(&value),
            parses::<SetSummaryArgs>(&value),
        ] {
            if let Err(message) = outcome {
                prop_assert!(!message.is_empty());
            }
        }
    }

    /// A field of the wrong type is refused with an error naming that field.
    #[test]
    fn a_wrongly_typed_field_is_named(title in non_string_json(), limit in non_string_json().prop_filter("not an integer", |v| !v.is_i64() && !v.is_u64() && !v.is_null())) {
        let error = parses::<NewTask>(&serde_json::json!({ "title": title })).unwrap_err();
        prop_assert!(error.contains("title"), "{}", error);
        let error = parses::<ListTasksArgs>(&serde_json::json!({ "limit": limit })).unwrap_err();
        prop_assert!(error.contains("limit"), "{}", error);
    }

    /// An unknown field is refused, and named.
    #[test]
    fn unknown_fields_are_refused(name in "[a-z]{1,12}".prop_filter("not a real field", |n| !["title", "description", "conversation_id", "idempotency_key"].contains(&n.as_str())), value in any_json()) {
        let mut args = Map::new();
        args.insert("title".into(), "milk".into());
        args.insert(name.clone(), value);
        let error = parses::<NewTask>(&Value::Object(args)).unwrap_err();
        prop_assert!(error.contains(&name), "{}", error);
    }

    /// Well-formed arguments parse to what was sent.
    #[test]
    fn well_formed_arguments_parse(title in ".{0,60}", description in proptest::option::of(".{0,60}")) {
        let parsed = serde_json::from_value::<Checked<NewTask>>(
            serde_json::json!({ "title": title, "description": description }),
        );
        let args = parsed
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .get()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(args.title, title);
        prop_assert_eq!(args.description, description);
    }

    /// Any string offered as a cursor decodes or is refused; never a panic, and a refusal
    /// names the field.
    #[test]
    fn forged_cursors_are_refused_cleanly(raw in ".{0,64}") {
        if let Err(error) = key().decode("t", &alice(), "cursor", &raw) {
            prop_assert!(error.to_string().contains("cursor"));
        }
    }

    /// A cursor decodes to the id it encodes, and only for the list and the user it was
    /// made for.
    #[test]
    fn cursors_round_trip(bytes in any::<[u8; 16]>()) {
        let id = uuid::Uuid::from_bytes(bytes);
        let encoded = key().encode("t", &alice(), id);
        prop_assert_eq!(key().decode("t", &alice(), "cursor", &encoded).ok(), Some(id));
        prop_assert!(key().decode("c", &alice(), "cursor", &encoded).is_err());
        let bob = UserId::parse("bob").unwrap();
        prop_assert!(key().decode("t", &bob, "cursor", &encoded).is_err());
    }

    /// Text checks accept exactly: no NUL, and 1..=max characters once trimmed.
    #[test]
    fn text_checks_accept_exactly_what_they_promise(text in "(.|\\x00){0,40}", max in 1usize..30) {
        let trimmed = text.trim();
        let valid = !text.contains('\0') && !trimmed.is_empty() && trimmed.chars().count() <= max;
        let checked = check_text("title", &text, max, true);
        prop_assert_eq!(checked.is_ok(), valid, "{:?} (max {})", text, max);
        if let Ok(kept) = checked {
            prop_assert_eq!(kept, trimmed);
        }
    }
}
