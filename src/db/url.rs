//! Where the database is: a PostgreSQL URL, or the path of a SQLite file.

use super::DbError;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://…` or `postgresql://…`, as given (libpq-style query parameters included).
    Postgres(String),
    /// A SQLite database file; created, with its folder, if missing.
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Reads `postgres://…`, `postgresql://…`, `sqlite://PATH`, `sqlite:PATH` or a bare path.
    pub fn parse(raw: &str) -> Result<Self, DbError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(DbError::InvalidUrl("it is empty".into()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(raw.to_owned()));
        }
        let path = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
            .unwrap_or(raw);
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(DbError::InvalidUrl(format!(
                "unsupported scheme `{scheme}://`: use postgres://, postgresql://, sqlite:// or a file path"
            )));
        }
        if path.is_empty() {
            return Err(DbError::InvalidUrl("the SQLite path is empty".into()));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }

    /// The embedded default: `$XDG_DATA_HOME/todo-mcp/todo.db`, else
    /// `~/.local/share/todo-mcp/todo.db`.
    pub fn default_sqlite() -> Result<Self, DbError> {
        let data_home = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|home| !home.is_empty())
                    .map(|home| PathBuf::from(home).join(".local").join("share"))
            })
            .ok_or_else(|| {
                DbError::InvalidUrl(
                    "no DATABASE_URL, and neither XDG_DATA_HOME nor HOME is set to find the default SQLite file".into(),
                )
            })?;
        Ok(DatabaseUrl::Sqlite(
            data_home.join("todo-mcp").join("todo.db"),
        ))
    }

    /// For logs: the URL with any password replaced.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_password(url),
        }
    }
}

/// Query parameters (libpq's) whose values are secrets, or say where one is.
const SECRET_PARAMETERS: [&str; 3] = ["password", "sslpassword", "sslkey"];

/// The URL with the password of its user-info and the values of [`SECRET_PARAMETERS`]
/// replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let authority_end = address.find('/').unwrap_or(address.len());
    let (authority, path) = address.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let query = query.map(|query| {
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if SECRET_PARAMETERS.contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(query) => format!("{scheme}://{authority}{path}?{query}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/db?sslmode=require").unwrap(),
            DatabaseUrl::Postgres("postgresql://u@h/db?sslmode=require".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:rel.db").unwrap(),
            DatabaseUrl::Sqlite("rel.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("./todo.db").unwrap(),
            DatabaseUrl::Sqlite("./todo.db".into())
        );
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(DatabaseUrl::parse("  ").is_err());
    }

    #[test]
    fn redacts_passwords_only() {
        let url = DatabaseUrl::Postgres(
            "postgres://me:s3cret@db.example:5432/app?sslmode=require".into(),
        );
        assert_eq!(
            url.redacted(),
            "postgres://me:***@db.example:5432/app?sslmode=require"
        );
        let url = DatabaseUrl::Postgres("postgres://me@localhost/app".into());
        assert_eq!(url.redacted(), "postgres://me@localhost/app");
    }

    #[test]
    fn redacts_secrets_in_the_query_too() {
        let url = DatabaseUrl::Postgres(
            "postgresql://me@db/app?sslmode=verify-full&password=s3cret&SSLPassword=k3y&sslkey=/keys/me.key&application_name=x".into(),
        );
        assert_eq!(
            url.redacted(),
            "postgresql://me@db/app?sslmode=verify-full&password=***&SSLPassword=***&sslkey=***&application_name=x"
        );
        let url = DatabaseUrl::Postgres("postgres://me:p@ss@db/app?password=x".into());
        assert_eq!(url.redacted(), "postgres://me:***@db/app?password=***");
    }
}
