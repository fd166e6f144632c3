//! SQL functions both backends have, and a statement-caching wrapper, for the query DSL.

use diesel::QueryResult;
use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Nullable, SingleValue, SqlType, Text};

diesel::define_sql_function! {
    /// `lower(text)`: case-insensitive search (the trigram indexes are on `lower(...)`).
    fn lower(text: Nullable<Text>) -> Nullable<Text>;
}

diesel::define_sql_function! {
    /// `coalesce(a, b)` of two nullable values of one type.
    fn coalesce<T: SqlType + SingleValue>(first: Nullable<T>, second: Nullable<T>) -> Nullable<T>;
}

/// A statement prepared once per connection and reused, like any other query, though
/// diesel would prepare it anew on every run.
///
/// diesel marks every UPDATE (and every upsert's `DO UPDATE`) uncacheable, because a
/// changeset with `Option` fields renders different SQL from run to run. On PostgreSQL
/// that costs an extra round trip (Parse) per UPDATE; on SQLite, a parse and plan of the
/// SQL each time. The cache is keyed here by the statement's SQL text (and bind types),
/// never by its Rust type, so each shape a changeset takes is its own entry and a reused
/// statement always matches its SQL. Only for statements of a few fixed shapes: each
/// distinct SQL text stays cached for the connection's life.
#[derive(Debug, Clone, Copy)]
pub struct Cached<Q>(Q);

pub trait CachedDsl: Sized {
    /// See [`Cached`].
    fn cached(self) -> Cached<Self> {
        Cached(self)
    }
}

impl<Q: QueryId> CachedDsl for Q {}

impl<Q> QueryId for Cached<Q> {
    type QueryId = ();
    // No static id: the cache key is the SQL text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Cached<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Cached<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

/// PostgreSQL's plan for a query, binds and all: `EXPLAIN (COSTS OFF)`, a line a row.
#[derive(Debug, Clone, Copy)]
pub struct PgExplain<Q>(pub Q);

/// SQLite's plan for a query: `EXPLAIN QUERY PLAN`, rows of (id, parent, notused, detail).
#[derive(Debug, Clone, Copy)]
pub struct SqliteExplain<Q>(pub Q);

impl<Q> QueryId for PgExplain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for PgExplain<Q> {
    type SqlType = Text;
}

impl<Q: QueryFragment<diesel::pg::Pg>> QueryFragment<diesel::pg::Pg> for PgExplain<Q> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, diesel::pg::Pg>) -> QueryResult<()> {
        pass.unsafe_to_cache_prepared();
        pass.push_sql("EXPLAIN (COSTS OFF) ");
        self.0.walk_ast(pass.reborrow())
    }
}

impl<Q> QueryId for SqliteExplain<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for SqliteExplain<Q> {
    type SqlType = (
        diesel::sql_types::Integer,
        diesel::sql_types::Integer,
        diesel::sql_types::Integer,
        Text,
    );
}

impl<Q: QueryFragment<diesel::sqlite::Sqlite>> QueryFragment<diesel::sqlite::Sqlite>
    for SqliteExplain<Q>
{
    fn walk_ast<'b>(
        &'b self,
        mut pass: AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        pass.unsafe_to_cache_prepared();
        pass.push_sql("EXPLAIN QUERY PLAN ");
        self.0.walk_ast(pass.reborrow())
    }
}
