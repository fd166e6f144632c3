//! MCP over stdin/stdout. stdout carries only protocol messages; logs go to stderr.

use crate::db::Database;
use crate::store::{Quotas, UserId};
use crate::tools::{Identity, TodoServer};
use rmcp::ServiceExt;

/// Serves one client until it closes stdin.
pub async fn serve(db: Database, user: UserId, quotas: Quotas) -> anyhow::Result<()> {
    let server = TodoServer::new(db, Identity::Fixed(user), quotas);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP initialization over stdio failed: {e}"))?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "stdio session ended");
    Ok(())
}
