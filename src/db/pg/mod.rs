//! PostgreSQL, the production backend: plain on loopback, TLS (rustls) when the URL asks.

pub mod schema;
mod tls;

use super::{ConnectErrors, DbError, PoolOptions};
use diesel::ConnectionError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::FutureExt;

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
            None => AsyncPgConnection::establish(&self.url).await,
            Some(tls) => {
                let (client, connection) = tokio_postgres::connect(&self.url, tls.clone())
                    .await
                    .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
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
