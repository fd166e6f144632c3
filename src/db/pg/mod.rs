//! PostgreSQL, the production backend: plain on loopback, TLS (rustls) when the URL asks.

mod session;
mod tls;

pub use session::Session;

use super::{ConnectErrors, DbError, PoolOptions, Scope};
use diesel::ConnectionError;
use diesel::connection::CacheSize;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt;
use std::time::Duration;
use tokio_postgres::NoTls;

pub type Pool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;

/// How to open connections for one URL: the URL tokio-postgres can read, TLS if asked,
/// and whether a transaction-mode pooler stands between us and PostgreSQL.
#[derive(Clone)]
pub struct Connector {
    url: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    behind_pooler: bool,
}

impl Connector {
    pub fn new(url: &str) -> Result<Self, DbError> {
        let (url, behind_pooler) = pooler_from_url(url)?;
        let (url, tls) = tls::from_url(&url)?;
        Ok(Connector {
            url,
            tls,
            behind_pooler,
        })
    }

    /// True when connections go through a transaction-mode pooler (PgBouncer, Neon's
    /// `-pooler` hosts): each transaction may land on a different server connection.
    pub fn behind_pooler(&self) -> bool {
        self.behind_pooler
    }

    pub async fn establish(&self) -> Result<AsyncPgConnection, ConnectionError> {
        match &self.tls {
            None => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                    .await
                    .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
                self.set_up(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = tokio_postgres::connect(&self.url, tls.clone())
                    .await
                    .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
                self.set_up(client, connection).await
            }
        }
    }

    async fn set_up<S>(
        &self,
        client: tokio_postgres::Client,
        connection: tokio_postgres::Connection<tokio_postgres::Socket, S>,
    ) -> Result<AsyncPgConnection, ConnectionError>
    where
        S: tokio_postgres::tls::TlsStream + Unpin + Send + 'static,
    {
        if !self.behind_pooler {
            return AsyncPgConnection::try_from_client_and_connection(client, connection).await;
        }
        // A prepared statement lives on one server connection, and behind a transaction
        // pooler the next transaction may run on another. diesel-async's own setup
        // prepares (and caches) statements, so it runs inside one transaction, and the
        // cache is off from then on: each statement is prepared, used and closed within
        // its transaction.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "pooled PostgreSQL connection ended");
            }
        });
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
        let mut conn = AsyncPgConnection::try_from(client).await?;
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        conn.batch_execute("COMMIT")
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }
}

/// Reads and removes the URL's `pgbouncer=true|false` parameter (Prisma's spelling). Without
/// it, a host whose first label ends in `-pooler` (Neon's pooled endpoints) means a pooler.
fn pooler_from_url(url: &str) -> Result<(String, bool), DbError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut explicit = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("pgbouncer", "true" | "1") => explicit = Some(true),
            ("pgbouncer", "false" | "0") => explicit = Some(false),
            ("pgbouncer", other) => {
                return Err(DbError::InvalidUrl(format!(
                    "pgbouncer={other} is not true or false"
                )));
            }
            _ => kept.push(pair),
        }
    }
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let first_label = host.split(['.', ':']).next().unwrap_or("");
    let behind_pooler = explicit.unwrap_or(first_label.ends_with("-pooler"));
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, behind_pooler))
}

pub fn pool(connector: Connector, options: &PoolOptions, errors: &ConnectErrors) -> Pool {
    let url = connector.url.clone();
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // No test query on every check-out (a round trip per call): a connection the server
    // closed (a restart, pg_terminate_backend, an idle reaper) is already known closed,
    // and is discarded at check-out; one that dies unnoticed fails at its transaction's
    // BEGIN, and a tool call runs again on another (`tools::TodoServer::retry_after`).
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        let broken = conn.is_broken();
        async move {
            match broken {
                false => Ok(()),
                true => Err(diesel::result::Error::BrokenTransactionManager),
            }
        }
        .boxed()
    }));
    config.custom_setup = Box::new(move |_url| {
        let connector = connector.clone();
        async move { connector.establish().await }.boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    bb8::Pool::builder()
        .max_size(options.max_connections)
        .connection_timeout(options.acquire_timeout)
        .error_sink(Box::new(errors.clone()))
        .build_unchecked(manager)
}

/// What opens a transaction: BEGIN and its `SET LOCAL`s, which end with it (so they also
/// hold behind a transaction-mode pooler). The user id goes in an escape string literal,
/// correct whatever `standard_conforming_strings` says.
///
/// Three simple queries, pipelined (one round trip), not one batch string: Citus passes a
/// `SET LOCAL` on to its workers as the text of the whole query it came in, so a batch
/// made each worker run our `BEGIN` again inside its transaction, warning every time.
pub fn opening_statements(
    scope: Scope<'_>,
    statement_timeout: Duration,
    snapshot: bool,
) -> [String; 3] {
    let user = match scope {
        Scope::User(user) => user.replace('\\', "\\\\").replace('\'', "''"),
        Scope::System => String::new(),
    };
    // A snapshot: every statement sees the database as of the first, and nothing writes.
    let begin = if snapshot {
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    } else {
        "BEGIN"
    };
    [
        begin.to_owned(),
        format!(
            "SET LOCAL statement_timeout = {}",
            statement_timeout.as_millis().max(1)
        ),
        format!("SET LOCAL todo.user_id = E'{user}'"),
    ]
}

/// tokio-postgres keeps the cause ("Connection refused", "invalid peer certificate:
/// UnknownIssuer") in the error's sources; a message without it is no help.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::pooler_from_url;

    #[test]
    fn pooler_is_read_from_the_url_or_a_neon_pooler_host() {
        let cases = [
            (
                "postgres://u@localhost/db",
                "postgres://u@localhost/db",
                false,
            ),
            (
                "postgres://u@localhost:6432/db?pgbouncer=true",
                "postgres://u@localhost:6432/db",
                true,
            ),
            (
                "postgres://u:p@ep-x-pooler.eu.aws.neon.tech/db?sslmode=require",
                "postgres://u:p@ep-x-pooler.eu.aws.neon.tech/db?sslmode=require",
                true,
            ),
            (
                "postgres://u:p@ep-x-pooler.neon.tech/db?pgbouncer=false&sslmode=require",
                "postgres://u:p@ep-x-pooler.neon.tech/db?sslmode=require",
                false,
            ),
            (
                "postgres://ep-x.neon.tech/db",
                "postgres://ep-x.neon.tech/db",
                false,
            ),
        ];
        for (url, stripped, pooled) in cases {
            assert_eq!(
                pooler_from_url(url).unwrap(),
                (stripped.to_owned(), pooled),
                "{url}"
            );
        }
        assert!(pooler_from_url("postgres://h/db?pgbouncer=yes").is_err());
    }
}
