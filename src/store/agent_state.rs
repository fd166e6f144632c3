//! An agent's state per conversation: the serialized state of its graph or planner, saved
//! as versions 1, 2, … with compare-and-set, the latest [`Quotas::state_versions`] kept.
//!
//! A save locks the conversation's row first (as an append does), so saves to one
//! conversation happen one at a time: of two writers with the same `expected_version`,
//! the second finds the version moved on and gets `conflict`.

use super::conversations::lock_for_write;
use super::{Quotas, StoreError, UserId, UserTx, format_time, now};
use crate::db::{DbJson, DbTime, DbUuid, Tx};
use crate::on_backend;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A row of `agent_states` as read.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::agent_states)]
struct StateRow {
    version: i32,
    state: Value,
    created_at: DateTime<Utc>,
}

/// A saved version, as `save_agent_state` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct SavedState {
    pub conversation_id: String,
    /// The version just saved: the previous one plus 1 (the first is 1).
    pub version: i32,
    /// RFC 3339, UTC.
    pub updated_at: String,
}

/// A state as `get_agent_state` returns it.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct AgentState {
    pub conversation_id: String,
    /// The state object; null when none was saved.
    pub state: Option<Map<String, Value>>,
    /// Its version; 0 when none was saved.
    pub version: i32,
    /// When this version was saved (RFC 3339, UTC); null when none was.
    pub updated_at: Option<String>,
}

/// Saves `state` as the conversation's next version. With `expected_version`, only if the
/// current version is that one (0: no state yet), else `conflict` and nothing written.
pub async fn save(
    tx: &mut UserTx,
    conversation: uuid::Uuid,
    state: &Map<String, Value>,
    expected_version: Option<i32>,
    quotas: &Quotas,
) -> Result<SavedState, StoreError> {
    let (tx, user) = tx.split();
    save_in(tx, user, conversation, state, expected_version, quotas).await
}

/// [`save`] within a transaction already under way (commit_turn's).
pub(super) async fn save_in(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
    state: &Map<String, Value>,
    expected_version: Option<i32>,
    quotas: &Quotas,
) -> Result<SavedState, StoreError> {
    let state = Value::Object(state.clone());
    let bytes = serde_json::to_vec(&state).map_or(usize::MAX, |encoded| encoded.len());
    if bytes > quotas.state_bytes {
        return Err(StoreError::QuotaExceeded(format!(
            "the state is {bytes} bytes of JSON; this server keeps at most {} bytes per state",
            quotas.state_bytes
        )));
    }
    if expected_version.is_some_and(|v| v < 0) {
        return Err(StoreError::invalid(
            "expected_version",
            "must be 0 (no state yet) or a saved version",
        ));
    }
    lock_for_write(tx, user, conversation).await?;
    let current = latest_version(tx, user, conversation).await?;
    if let Some(expected) = expected_version
        && expected != current
    {
        return Err(StoreError::Conflict(format!(
            "conversation {conversation}'s agent state is at version {current}, not \
             {expected}: read it again (get_agent_state) and retry"
        )));
    }
    let version = current + 1;
    let at = now();
    on_backend!(tx, |conn| {
        use schema::agent_states::dsl as s;
        diesel::insert_into(s::agent_states)
            .values((
                s::conversation_id.eq(DbUuid(conversation)),
                s::user_id.eq(user.as_str()),
                s::version.eq(version),
                s::state.eq(DbJson(&state)),
                s::created_at.eq(DbTime(at)),
            ))
            .execute(conn)
            .await?
    });
    // Keep the latest `state_versions` versions.
    let oldest_kept = version - quotas.state_versions + 1;
    if oldest_kept > 1 {
        on_backend!(tx, |conn| {
            use schema::agent_states::dsl as s;
            diesel::delete(
                s::agent_states
                    .filter(s::conversation_id.eq(DbUuid(conversation)))
                    .filter(s::user_id.eq(user.as_str()))
                    .filter(s::version.lt(oldest_kept)),
            )
            .execute(conn)
            .await?
        });
    }
    Ok(SavedState {
        conversation_id: conversation.to_string(),
        version,
        updated_at: format_time(at),
    })
}

/// The latest state, or `version` if given; version 0 and a null state when none was saved.
pub async fn get(
    tx: &mut UserTx,
    conversation: uuid::Uuid,
    version: Option<i32>,
) -> Result<AgentState, StoreError> {
    let (tx, user) = tx.split();
    super::conversations::find(tx, user, conversation).await?;
    let row: Option<StateRow> = on_backend!(tx, |conn| {
        use schema::agent_states::dsl as s;
        let query = s::agent_states
            .filter(s::conversation_id.eq(DbUuid(conversation)))
            .filter(s::user_id.eq(user.as_str()))
            .select(StateRow::as_select())
            .into_boxed();
        let query = match version {
            Some(version) => query.filter(s::version.eq(version)),
            None => query.order(s::version.desc()),
        };
        query.first(conn).await.optional()?
    });
    match (row, version) {
        (Some(row), _) => Ok(AgentState {
            conversation_id: conversation.to_string(),
            state: match row.state {
                Value::Object(map) => Some(map),
                _ => None,
            },
            version: row.version,
            updated_at: Some(format_time(row.created_at)),
        }),
        (None, None | Some(0)) => Ok(AgentState {
            conversation_id: conversation.to_string(),
            state: None,
            version: 0,
            updated_at: None,
        }),
        (None, Some(asked)) => {
            let latest = latest_version(tx, user, conversation).await?;
            let oldest = oldest_version(tx, user, conversation).await?;
            Err(StoreError::NotFound {
                entity: "agent state version",
                id: match (asked > latest, oldest) {
                    (true, _) | (false, None) => {
                        format!("{asked} (the latest is {latest})")
                    }
                    (false, Some(oldest)) => {
                        format!("{asked} (no longer kept: versions {oldest} to {latest} are)")
                    }
                },
            })
        }
    }
}

/// One kept version of a conversation's agent state, without the state itself (which may
/// be up to a megabyte): what a list of versions shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateVersion {
    pub version: i32,
    /// When it was saved (RFC 3339, UTC).
    pub saved_at: String,
}

/// The kept versions of the conversation's agent state, newest first (none when nothing
/// was saved); `not_found` when the conversation is not the user's.
pub async fn versions(
    tx: &mut UserTx,
    conversation: uuid::Uuid,
) -> Result<Vec<StateVersion>, StoreError> {
    let (tx, user) = tx.split();
    super::conversations::find(tx, user, conversation).await?;
    let rows: Vec<(i32, DateTime<Utc>)> = on_backend!(tx, |conn| {
        use schema::agent_states::dsl as s;
        s::agent_states
            .filter(s::conversation_id.eq(DbUuid(conversation)))
            .filter(s::user_id.eq(user.as_str()))
            .select((s::version, s::created_at))
            .order(s::version.desc())
            .load(conn)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(version, saved_at)| StateVersion {
            version,
            saved_at: format_time(saved_at),
        })
        .collect())
}

async fn latest_version(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
) -> Result<i32, StoreError> {
    let latest: Option<i32> = on_backend!(tx, |conn| {
        use schema::agent_states::dsl as s;
        s::agent_states
            .filter(s::conversation_id.eq(DbUuid(conversation)))
            .filter(s::user_id.eq(user.as_str()))
            .select(diesel::dsl::max(s::version))
            .first(conn)
            .await?
    });
    Ok(latest.unwrap_or(0))
}

async fn oldest_version(
    tx: &mut Tx,
    user: &UserId,
    conversation: uuid::Uuid,
) -> Result<Option<i32>, StoreError> {
    Ok(on_backend!(tx, |conn| {
        use schema::agent_states::dsl as s;
        s::agent_states
            .filter(s::conversation_id.eq(DbUuid(conversation)))
            .filter(s::user_id.eq(user.as_str()))
            .select(diesel::dsl::min(s::version))
            .first(conn)
            .await?
    }))
}
