//! One agent turn, all or nothing: its messages appended in order and its state saved, in
//! one transaction. A turn committed with an idempotency key keeps its result, so a retry
//! with the key gets that result back and writes nothing twice.

use super::agent_state::{SavedState, save_in};
use super::conversations::{
    Message, NewMessage, check_message, insert_message, lock_for_write, make_room,
};
use super::{Quotas, StoreError, UserId, UserTx, check_text, limits, now};
use crate::db::{DbJson, DbTime, DbUuid, Tx};
use crate::on_backend;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The most messages one turn appends.
pub const MAX_TURN_MESSAGES: usize = 100;

/// What commit_turn returns.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Turn {
    pub conversation_id: String,
    /// The messages appended, in order, with their ids.
    pub messages: Vec<Message>,
    /// The state version saved, if the turn carried a state.
    pub state: Option<SavedState>,
    /// True when this is a retry's answer: the turn was committed before, with the same
    /// idempotency key, and nothing was written now.
    pub replayed: bool,
}

pub struct TurnRequest<'a> {
    pub conversation: uuid::Uuid,
    pub messages: &'a [NewMessage],
    pub state: Option<&'a Map<String, Value>>,
    pub expected_version: Option<i32>,
    pub idempotency_key: Option<&'a str>,
}

pub async fn commit(
    tx: &mut UserTx,
    request: &TurnRequest<'_>,
    quotas: &Quotas,
) -> Result<Turn, StoreError> {
    let key = request
        .idempotency_key
        .map(|key| check_text("idempotency_key", key, limits::IDEMPOTENCY_KEY, true))
        .transpose()?;
    if request.messages.is_empty() && request.state.is_none() {
        return Err(StoreError::invalid(
            "messages",
            "a turn needs messages, a state, or both",
        ));
    }
    if request.messages.len() > MAX_TURN_MESSAGES {
        return Err(StoreError::invalid(
            "messages",
            format!(
                "{} messages; one turn takes at most {MAX_TURN_MESSAGES}",
                request.messages.len()
            ),
        ));
    }
    // Every message is checked before anything is written.
    for (index, message) in request.messages.iter().enumerate() {
        check_message(message, quotas).map_err(|error| match error {
            StoreError::Invalid { field, reason } => {
                StoreError::invalid("messages", format!("[{index}].{field} {reason}"))
            }
            StoreError::QuotaExceeded(reason) => {
                StoreError::QuotaExceeded(format!("messages[{index}]: {reason}"))
            }
            other => other,
        })?;
    }
    let (tx, user) = tx.split();
    let conversation = request.conversation;
    // The conversation's row lock orders this turn after any other on it, so a retry
    // running alongside its first attempt finds that attempt's record.
    lock_for_write(tx, user, conversation).await?;
    let hash = request_hash(request);
    if let Some(key) = &key
        && let Some(turn) = replay(tx, user, key, conversation, &hash).await?
    {
        return Ok(turn);
    }
    let added = i32::try_from(request.messages.len()).unwrap_or(i32::MAX);
    let mut messages = Vec::with_capacity(request.messages.len());
    if added > 0 {
        make_room(tx, user, conversation, added, quotas).await?;
        for message in request.messages {
            messages.push(insert_message(tx, user, conversation, message).await?);
        }
    }
    let state = match request.state {
        Some(state) => Some(
            save_in(
                tx,
                user,
                conversation,
                state,
                request.expected_version,
                quotas,
            )
            .await?,
        ),
        None => None,
    };
    let turn = Turn {
        conversation_id: conversation.to_string(),
        messages,
        state,
        replayed: false,
    };
    if let Some(key) = key {
        remember(tx, user, &key, conversation, &hash, &turn).await?;
    }
    Ok(turn)
}

/// SHA-256 of the request as JSON (serde_json's maps are sorted, so it is canonical).
fn request_hash(request: &TurnRequest<'_>) -> Vec<u8> {
    let canonical = json!({
        "conversation_id": request.conversation.to_string(),
        "messages": request.messages,
        "state": request.state,
        "expected_version": request.expected_version,
    });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}

/// The result of the turn committed with `key`, if there is one; `conflict` if the key
/// was used for a different turn.
async fn replay(
    tx: &mut Tx,
    user: &UserId,
    key: &str,
    conversation: uuid::Uuid,
    hash: &[u8],
) -> Result<Option<Turn>, StoreError> {
    let found: Option<(DbUuid, Vec<u8>, Value)> = on_backend!(tx, |conn| {
        use schema::turns::dsl as t;
        t::turns
            .filter(t::user_id.eq(user.as_str()))
            .filter(t::idempotency_key.eq(key))
            .select((t::conversation_id, t::request_hash, t::result))
            .first(conn)
            .await
            .optional()?
    });
    let Some((stored_conversation, stored_hash, result)) = found else {
        return Ok(None);
    };
    if stored_conversation.0 != conversation || stored_hash != hash {
        return Err(StoreError::Conflict(format!(
            "idempotency_key {} was used for another turn: a retry must send the same \
             conversation, messages and state",
            super::quote(key)
        )));
    }
    let mut turn: Turn = serde_json::from_value(result)
        .map_err(|e| StoreError::Conflict(format!("the stored turn cannot be read: {e}")))?;
    turn.replayed = true;
    Ok(Some(turn))
}

async fn remember(
    tx: &mut Tx,
    user: &UserId,
    key: &str,
    conversation: uuid::Uuid,
    hash: &[u8],
    turn: &Turn,
) -> Result<(), StoreError> {
    let result = serde_json::to_value(turn).unwrap_or(Value::Null);
    let at = now();
    on_backend!(tx, |conn| {
        use schema::turns::dsl as t;
        diesel::insert_into(t::turns)
            .values((
                t::user_id.eq(user.as_str()),
                t::idempotency_key.eq(key),
                t::conversation_id.eq(DbUuid(conversation)),
                t::request_hash.eq(hash),
                t::result.eq(DbJson(&result)),
                t::created_at.eq(DbTime(at)),
            ))
            .execute(conn)
            .await?
    });
    Ok(())
}
