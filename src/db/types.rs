//! SQL types whose column type differs between the backends while their Rust value does
//! not, so that one schema (`db::schema`) describes the tables for both: each maps to
//! PostgreSQL's native type and to SQLite's text, and its values convert through diesel's
//! own conversions for those types.

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types;
use diesel::sqlite::Sqlite;
use std::borrow::Borrow;
use std::io::Write;

/// The column types of `db::schema` that differ by backend.
pub mod sql_types_by_backend {
    use diesel::query_builder::QueryId;
    use diesel::sql_types::SqlType;

    /// A uuid: PostgreSQL `uuid`; SQLite canonical lowercase text (whose byte order is
    /// the uuid's, so keyset pagination works the same on both). Rust value: `DbUuid`.
    #[derive(Debug, Clone, Copy, Default, QueryId, SqlType)]
    #[diesel(postgres_type(oid = 2950, array_oid = 2951))]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct Id;

    /// An instant: PostgreSQL `timestamptz`; SQLite text. Rust value: `DateTime<Utc>`.
    #[derive(Debug, Clone, Copy, Default, QueryId, SqlType)]
    #[diesel(postgres_type(oid = 1184, array_oid = 1185))]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct Instant;

    /// A JSON document: PostgreSQL `jsonb`; SQLite text holding JSON. Rust value:
    /// `serde_json::Value`.
    #[derive(Debug, Clone, Copy, Default, QueryId, SqlType)]
    #[diesel(postgres_type(oid = 3802, array_oid = 3807))]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct JsonDoc;
}

use sql_types_by_backend::{Id, Instant, JsonDoc};

/// A uuid column value, readable and writable on both backends.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    AsExpression,
    FromSqlRow,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(sql_type = Id)]
#[serde(transparent)]
pub struct DbUuid(pub uuid::Uuid);

impl ToSql<Id, Pg> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.0.as_bytes())?;
        Ok(IsNull::No)
    }
}

impl FromSql<Id, Pg> for DbUuid {
    fn from_sql(
        bytes: <Pg as diesel::backend::Backend>::RawValue<'_>,
    ) -> deserialize::Result<Self> {
        Ok(DbUuid(uuid::Uuid::from_slice(bytes.as_bytes())?))
    }
}

impl ToSql<Id, Sqlite> for DbUuid {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(IsNull::No)
    }
}

impl FromSql<Id, Sqlite> for DbUuid {
    fn from_sql(
        value: <Sqlite as diesel::backend::Backend>::RawValue<'_>,
    ) -> deserialize::Result<Self> {
        let text = <String as FromSql<sql_types::Text, Sqlite>>::from_sql(value)?;
        Ok(DbUuid(uuid::Uuid::parse_str(&text)?))
    }
}

impl From<uuid::Uuid> for DbUuid {
    fn from(id: uuid::Uuid) -> Self {
        DbUuid(id)
    }
}

/// An [`Instant`] column's value. (A wrapper: diesel's coherence rules let only diesel
/// bind `DateTime<Utc>` itself to a SQL type.) Serialized as the time is (RFC 3339), so a
/// row struct with it exports as it reads.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, AsExpression, FromSqlRow, serde::Deserialize,
)]
#[diesel(sql_type = Instant)]
#[serde(transparent)]
pub struct DbTime(pub DateTime<Utc>);

impl DbTime {
    /// RFC 3339, UTC, always with microseconds (what both backends store): how results and
    /// exports write times.
    pub fn text(&self) -> String {
        self.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl serde::Serialize for DbTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

impl schemars::JsonSchema for DbTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DateTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }

    fn inline_schema() -> bool {
        true
    }
}

impl schemars::JsonSchema for DbUuid {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Uuid".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "uuid" })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A [`JsonDoc`] column's value: owned (`DbJson<Value>`, as rows read it) or borrowed
/// (`DbJson(&value)`, to write without a copy).
#[derive(
    Debug, Clone, Copy, PartialEq, AsExpression, FromSqlRow, serde::Serialize, serde::Deserialize,
)]
#[diesel(sql_type = JsonDoc)]
#[serde(transparent)]
pub struct DbJson<T = serde_json::Value>(pub T);

/// `FromSql` of `$rust` and of `$wrapper` for `$ours` on `$backend`, through diesel's own
/// for `$theirs`; `ToSql` of `$wrapper` the same way (`$borrow` gives the value).
macro_rules! same_as {
    ($rust:ty, $wrapper:ty, $ours:ty, $backend:ty, $theirs:ty) => {
        impl FromSql<$ours, $backend> for $rust {
            fn from_sql(
                value: <$backend as diesel::backend::Backend>::RawValue<'_>,
            ) -> deserialize::Result<Self> {
                <$rust as FromSql<$theirs, $backend>>::from_sql(value)
            }
        }

        impl FromSql<$ours, $backend> for $wrapper {
            fn from_sql(
                value: <$backend as diesel::backend::Backend>::RawValue<'_>,
            ) -> deserialize::Result<Self> {
                <$rust as FromSql<$theirs, $backend>>::from_sql(value).map(Into::into)
            }
        }
    };
}

same_as!(DateTime<Utc>, DbTime, Instant, Pg, sql_types::Timestamptz);
same_as!(
    DateTime<Utc>,
    DbTime,
    Instant,
    Sqlite,
    sql_types::TimestamptzSqlite
);
same_as!(serde_json::Value, DbJson, JsonDoc, Pg, sql_types::Jsonb);
same_as!(serde_json::Value, DbJson, JsonDoc, Sqlite, sql_types::Json);

impl From<DateTime<Utc>> for DbTime {
    fn from(time: DateTime<Utc>) -> Self {
        DbTime(time)
    }
}

impl From<serde_json::Value> for DbJson {
    fn from(value: serde_json::Value) -> Self {
        DbJson(value)
    }
}

impl ToSql<Instant, Pg> for DbTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <DateTime<Utc> as ToSql<sql_types::Timestamptz, Pg>>::to_sql(&self.0, out)
    }
}

impl ToSql<Instant, Sqlite> for DbTime {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        <DateTime<Utc> as ToSql<sql_types::TimestamptzSqlite, Sqlite>>::to_sql(&self.0, out)
    }
}

/// A [`JsonDoc`] value already serialized, written as it is: a document made once for
/// its column (the audit record) is not built as a `serde_json::Value` tree first.
#[derive(Debug, AsExpression)]
#[diesel(sql_type = JsonDoc)]
pub struct JsonText(pub Box<serde_json::value::RawValue>);

impl ToSql<JsonDoc, Pg> for JsonText {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        // jsonb's binary input: a version byte, then the text (as diesel writes a Value).
        out.write_all(&[1])?;
        out.write_all(self.0.get().as_bytes())?;
        Ok(IsNull::No)
    }
}

impl ToSql<JsonDoc, Sqlite> for JsonText {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.get());
        Ok(IsNull::No)
    }
}

impl<T: Borrow<serde_json::Value> + std::fmt::Debug> ToSql<JsonDoc, Pg> for DbJson<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <serde_json::Value as ToSql<sql_types::Jsonb, Pg>>::to_sql(self.0.borrow(), out)
    }
}

impl<T: Borrow<serde_json::Value> + std::fmt::Debug> ToSql<JsonDoc, Sqlite> for DbJson<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        <serde_json::Value as ToSql<sql_types::Json, Sqlite>>::to_sql(self.0.borrow(), out)
    }
}
