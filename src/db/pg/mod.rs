//! PostgreSQL, the production backend: plain on loopback, TLS (rustls) when the URL asks.

pub mod schema;
mod tls;

use super::{ConnectErrors, DbError, PoolOptions};
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use futures_util::FutureExt;
use tokio_postgres::NoTls;

pub type Pool = diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>;

/// How to open connections for one URL: the URL tokio-postgres can read, and TLS if asked.
#[derive(Clone)]
pub struct Connector {
    url: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Connector {
    pub fn new(url: &str) -> Result<Self, DbError> {
        let (url, tls) = tls::from_url(url)?;
        Ok(Connector { url, tls })
    }

    pub async fn establish(&self) -> Result<AsyncPgConnection, ConnectionError> {
        match &self.tls {
            None => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                    .await
                    .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = tokio_postgres::connect(&self.url, tls.clone())
                    .await
                    .map_err(|e| ConnectionError::BadConnection(with_causes(&e)))?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

pub fn pool(url: &str, options: &PoolOptions, errors: &ConnectErrors) -> Result<Pool, DbError> {
    let connector = Connector::new(url)?;
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(move |_url| {
        let connector = connector.clone();
        async move { connector.establish().await }.boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    Ok(bb8::Pool::builder()
        .max_size(options.max_connections)
        .connection_timeout(options.acquire_timeout)
        .error_sink(Box::new(errors.clone()))
        .build_unchecked(manager))
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
