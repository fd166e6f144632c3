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

/// A time to write into an [`Instant`] column. (Written through this wrapper: diesel's
/// coherence rules let only diesel bind `DateTime<Utc>` itself to a SQL type. Reading
/// needs none: `DateTime<Utc>` reads from [`Instant`] directly.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, AsExpression)]
#[diesel(sql_type = Instant)]
pub struct DbTime(pub DateTime<Utc>);

/// A JSON document to write into a [`JsonDoc`] column (read as `serde_json::Value`).
#[derive(Debug, Clone, Copy, AsExpression)]
#[diesel(sql_type = JsonDoc)]
pub struct DbJson<'a>(pub &'a serde_json::Value);

/// `FromSql` of `$rust` for `$ours` on `$backend`, through diesel's own for `$theirs`,
/// and `ToSql` of `$wrapper` the same way.
macro_rules! same_as {
    ($rust:ty, $wrapper:ty, $ours:ty, $backend:ty, $theirs:ty) => {
        impl FromSql<$ours, $backend> for $rust {
            fn from_sql(
                value: <$backend as diesel::backend::Backend>::RawValue<'_>,
            ) -> deserialize::Result<Self> {
                <$rust as FromSql<$theirs, $backend>>::from_sql(value)
            }
        }

        impl ToSql<$ours, $backend> for $wrapper {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, $backend>) -> serialize::Result {
                <$rust as ToSql<$theirs, $backend>>::to_sql(&self.0, out)
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
same_as!(serde_json::Value, DbJson<'_>, JsonDoc, Pg, sql_types::Jsonb);
same_as!(
    serde_json::Value,
    DbJson<'_>,
    JsonDoc,
    Sqlite,
    sql_types::Json
);
