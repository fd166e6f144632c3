//! What the web page (`/ui`) reads: a user's tasks, conversations, transcripts and agent
//! state versions, through the same store functions the read-only tools use.
//!
//! Unlike a tool call, a read here leaves no call record: the page is the user looking at
//! what their agents did, not an agent acting, and browsing must not grow the history it
//! shows. Each read runs in a [`UserTx`] of the signed-in user (so row-level security
//! applies on PostgreSQL) that is always rolled back: whatever a read might do by mistake,
//! nothing it does is kept.

use super::agent_state::{self, AgentState, StateVersion};
use super::conversations::{self, Conversation, Message};
use super::cursor::CursorKey;
use super::tasks::{self, ListQuery, StatusFilter, Task, TaskSort};
use super::{StoreError, UserId, UserTx, secrets};
use crate::db::{Database, DbError};

/// Reads for the web page, on behalf of one user at a time.
#[derive(Clone)]
pub struct Browser {
    db: Database,
    /// The same key the tools sign list cursors with.
    cursors: CursorKey,
}

/// A page of a list and the cursor of the next one (none on the last page).
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A page of a conversation's timeline: the agent's messages and the server's call
/// records, oldest first.
pub struct Transcript {
    pub conversation: Conversation,
    pub messages: Vec<Message>,
    /// Pass as `before` to read the earlier page; none at the start.
    pub next_cursor: Option<i64>,
}

/// Runs `$body` (a block using `$tx: &mut UserTx`, evaluating to `Result<T, StoreError>`)
/// in a read-only snapshot transaction of `$user`. Like a tool call, it runs
/// again on another connection when its pooled one turned out closed (after a database
/// restart), which cost nothing. (A macro for the reason given at [`crate::transact!`].)
macro_rules! read {
    ($browser:expr, $user:expr, |$tx:ident| $body:block) => {{
        let db: &Database = &$browser.db;
        let mut stale_connections = 0;
        loop {
            let mut tx = UserTx::begin_snapshot(db, $user).await?;
            let result = async {
                let $tx = &mut tx;
                $body
            }
            .await;
            match super::end(tx, result).await {
                Err(StoreError::Db(DbError::StaleConnection(_)))
                    if stale_connections < db.max_connections() =>
                {
                    stale_connections += 1;
                }
                result => break result,
            }
        }
    }};
}

impl Browser {
    /// Loads the cursor key (made by the first server that started on this database).
    pub async fn new(db: Database) -> Result<Self, StoreError> {
        let cursors = secrets::cursor_key(&db).await?;
        Ok(Browser { db, cursors })
    }

    /// The user's tasks, newest first; `limit` as list_tasks takes it (default 50).
    pub async fn tasks(
        &self,
        user: &UserId,
        status: StatusFilter,
        sort: TaskSort,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Page<Task>, StoreError> {
        let (items, next_cursor) = read!(self, user, |tx| {
            let query = ListQuery {
                status,
                query: None,
                due_before: None,
                due_after: None,
                overdue: false,
                label: None,
                priority: None,
                parent_task_id: None,
                sort,
                limit,
                cursor,
            };
            tasks::list(tx, query, &self.cursors).await
        })?;
        Ok(Page { items, next_cursor })
    }

    /// The user's conversations, newest first, archived ones included (the page shows
    /// everything the agents did), the activity logs last.
    pub async fn conversations(
        &self,
        user: &UserId,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Page<Conversation>, StoreError> {
        let (items, next_cursor) = read!(self, user, |tx| {
            conversations::list(tx, true, limit, cursor, &self.cursors).await
        })?;
        Ok(Page { items, next_cursor })
    }

    /// A page of the conversation's timeline, call records included; `not_found` when it
    /// is not the user's.
    pub async fn transcript(
        &self,
        user: &UserId,
        conversation: uuid::Uuid,
        limit: Option<i64>,
        before: Option<i64>,
    ) -> Result<Transcript, StoreError> {
        let history = read!(self, user, |tx| {
            conversations::history(tx, conversation, limit, before, true).await
        })?;
        Ok(Transcript {
            conversation: history.conversation,
            messages: history.messages,
            next_cursor: history.next_cursor,
        })
    }

    /// The kept versions of the conversation's agent state, newest first.
    pub async fn state_versions(
        &self,
        user: &UserId,
        conversation: uuid::Uuid,
    ) -> Result<Vec<StateVersion>, StoreError> {
        read!(self, user, |tx| {
            agent_state::versions(tx, conversation).await
        })
    }

    /// One version of the conversation's agent state (versions start at 1).
    pub async fn state(
        &self,
        user: &UserId,
        conversation: uuid::Uuid,
        version: i32,
    ) -> Result<AgentState, StoreError> {
        if version < 1 {
            return Err(StoreError::invalid(
                "version",
                format!("{version} is not a version (they start at 1)"),
            ));
        }
        read!(self, user, |tx| {
            agent_state::get(tx, conversation, Some(version)).await
        })
    }
}
