//! SQL functions both backends have, for the query DSL.

use diesel::sql_types::{Nullable, SingleValue, SqlType, Text};

diesel::define_sql_function! {
    /// `lower(text)`: case-insensitive search (the trigram indexes are on `lower(...)`).
    fn lower(text: Nullable<Text>) -> Nullable<Text>;
}

diesel::define_sql_function! {
    /// `coalesce(a, b)` of two nullable values of one type.
    fn coalesce<T: SqlType + SingleValue>(first: Nullable<T>, second: Nullable<T>) -> Nullable<T>;
}
