//! Row structs read by column name, on both backends.

/// Declares a struct read from `$table` by column name: each field is the column of the
/// same name, on PostgreSQL and on SQLite. `Selectable` selects the columns in field
/// order and `Queryable` reads them in that same order, both generated from this one
/// list, so the order of the columns in a schema (or in the database) never matters, and
/// a field naming a column that does not exist fails to compile. Queries read rows with
/// `.select(Row::as_select())` or `.returning(Row::as_returning())`.
///
/// (diesel's `#[derive(Selectable)]` names one table, and the backends have one schema
/// module each, since a column's SQL type differs between them; see `db::pg::schema`.)
#[macro_export]
macro_rules! table_row {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident from $table:ident {
            $($(#[$field_attr:meta])* $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(diesel::Queryable)]
        $vis struct $name {
            $($(#[$field_attr])* $field: $ty),*
        }

        impl diesel::Selectable<diesel::pg::Pg> for $name {
            type SelectExpression = ($($crate::db::pg::schema::$table::$field,)*);

            fn construct_selection() -> Self::SelectExpression {
                ($($crate::db::pg::schema::$table::$field,)*)
            }
        }

        impl diesel::Selectable<diesel::sqlite::Sqlite> for $name {
            type SelectExpression = ($($crate::db::sqlite::schema::$table::$field,)*);

            fn construct_selection() -> Self::SelectExpression {
                ($($crate::db::sqlite::schema::$table::$field,)*)
            }
        }
    };
}
