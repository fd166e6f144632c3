//! search_messages: full-text search over a user's messages, ranked, on both backends with
//! one query syntax (web-search style, as PostgreSQL's `websearch_to_tsquery` reads it):
//!
//! * words: every one must occur (`paris weather`);
//! * `"a phrase"`: those words, in that order;
//! * `or` between two terms: either (`paris or oslo`);
//! * `-word` or `-"a phrase"`: must not occur.
//!
//! Words are compared lower-cased, without stemming (PostgreSQL's `simple` configuration,
//! SQLite FTS5's `unicode61` tokenizer). PostgreSQL ranks by `ts_rank_cd`, SQLite by
//! `bm25`; ties and equal ranks go newest first.

use super::conversations::Message;
use super::cursor::CursorKey;
use super::{StoreError, UserId, UserTx, check_text, page_size};
use crate::db::{Conn, Tx};
use crate::on_backend;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use schemars::JsonSchema;
use serde::Serialize;
use sha2::{Digest, Sha256};

const CURSOR_KIND: &str = "s";
/// The longest query.
const QUERY_CHARS: usize = 500;

/// One search hit.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct SearchHit {
    pub conversation_id: String,
    /// The words found, in context, marked `[like this]`.
    pub snippet: String,
    pub message: Message,
}

/// What to search, and where.
pub struct Search<'a> {
    pub query: &'a str,
    pub conversation: Option<uuid::Uuid>,
    pub role: Option<&'a str>,
    pub include_call_records: bool,
    pub limit: Option<i64>,
    pub cursor: Option<&'a str>,
}

/// A term of a query: a word or a quoted phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Word(String),
    Phrase(String),
}

/// A query as parsed: terms that must occur (each a set of alternatives), and terms that
/// must not.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    required: Vec<Vec<Term>>,
    excluded: Vec<Term>,
}

fn parse(query: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut chars = query.chars().peekable();
    let mut join_next = false;
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let negated = c == '-';
        if negated {
            chars.next();
        }
        let term = if chars.peek() == Some(&'"') {
            chars.next();
            let phrase: String = chars.by_ref().take_while(|c| *c != '"').collect();
            Term::Phrase(phrase.split_whitespace().collect::<Vec<_>>().join(" "))
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            Term::Word(word)
        };
        let text = match &term {
            Term::Word(text) | Term::Phrase(text) => text,
        };
        if text.chars().all(|c| !c.is_alphanumeric()) {
            continue;
        }
        if !negated && matches!(&term, Term::Word(w) if w.eq_ignore_ascii_case("or")) {
            join_next = !parsed.required.is_empty();
            continue;
        }
        if negated {
            parsed.excluded.push(term);
        } else if join_next && let Some(last) = parsed.required.last_mut() {
            last.push(term);
            join_next = false;
        } else {
            parsed.required.push(vec![term]);
        }
    }
    parsed
}

/// The parsed query in FTS5's syntax: every term quoted, so no character of the user's
/// is an FTS5 operator.
fn fts5_query(parsed: &Parsed) -> String {
    fn quoted(term: &Term) -> String {
        let text = match term {
            Term::Word(text) | Term::Phrase(text) => text,
        };
        format!("\"{}\"", text.replace('"', "\"\""))
    }
    let required: Vec<String> = parsed
        .required
        .iter()
        .map(|alternatives| {
            let terms: Vec<String> = alternatives.iter().map(quoted).collect();
            format!("({})", terms.join(" OR "))
        })
        .collect();
    let mut query = required.join(" AND ");
    for term in &parsed.excluded {
        query.push_str(&format!(" NOT {}", quoted(term)));
    }
    query
}

#[derive(QueryableByName)]
struct Hit {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    snippet: String,
}

/// The user's messages matching the query, best first, a page at a time.
pub async fn search(
    tx: &mut UserTx,
    search: &Search<'_>,
    cursors: &CursorKey,
) -> Result<(Vec<SearchHit>, Option<String>), StoreError> {
    let query = check_text("query", search.query, QUERY_CHARS, true)?;
    let parsed = parse(&query);
    if parsed.required.is_empty() {
        return Err(StoreError::invalid(
            "query",
            "needs at least one word to find (a query of exclusions alone finds nothing)",
        ));
    }
    let limit = page_size("limit", search.limit)?;
    let (tx, user) = tx.split();
    let fingerprint = fingerprint(&query, search);
    let offset = match search.cursor {
        Some(raw) => decode_offset(cursors, user, raw, fingerprint)?,
        None => 0,
    };
    if let Some(conversation) = search.conversation {
        super::conversations::find(tx, user, conversation).await?;
    }
    let hits = matching(tx, user, &query, &parsed, search, limit + 1, offset).await?;
    let more = hits.len() as i64 > limit;
    let hits = &hits[..hits.len().min(limit as usize)];
    let messages = super::conversations::messages_by_id(
        tx,
        user,
        &hits.iter().map(|hit| hit.id).collect::<Vec<_>>(),
    )
    .await?;
    let found = hits
        .iter()
        .filter_map(|hit| {
            let message = messages.iter().find(|m| m.id == hit.id)?.clone();
            Some(SearchHit {
                conversation_id: message.conversation_id.clone(),
                snippet: hit.snippet.clone(),
                message,
            })
        })
        .collect();
    let next = more.then(|| encode_offset(cursors, user, offset + limit, fingerprint));
    Ok((found, next))
}

async fn matching(
    tx: &mut Tx,
    user: &UserId,
    query: &str,
    parsed: &Parsed,
    search: &Search<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<Hit>, StoreError> {
    // Full-text search has no diesel DSL: each backend's SQL, every value bound.
    let postgres = matches!(tx.conn, Conn::Postgres(_));
    let mut binds: Vec<String> = vec![user.as_str().to_owned()];
    let mut sql = if postgres {
        binds.insert(0, query.to_owned());
        String::from(
            "SELECT m.id AS id, ts_headline('simple', m.content, q, \
             'StartSel=[, StopSel=], MaxWords=24, MinWords=8, MaxFragments=1') AS snippet \
             FROM messages m, websearch_to_tsquery('simple', $1) AS q \
             WHERE to_tsvector('simple', m.content) @@ q AND m.user_id = $2 \
             AND m.hidden_at IS NULL",
        )
    } else {
        binds.insert(0, fts5_query(parsed));
        String::from(
            "SELECT m.id AS id, snippet(messages_fts, 0, '[', ']', '…', 16) AS snippet \
             FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid \
             WHERE messages_fts MATCH ? AND m.user_id = ? AND m.hidden_at IS NULL",
        )
    };
    let placeholder = |n: usize| {
        if postgres {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    };
    if !search.include_call_records {
        sql.push_str(" AND m.kind = 'message'");
    }
    if let Some(conversation) = search.conversation {
        binds.push(conversation.to_string());
        let column = if postgres {
            "m.conversation_id::text"
        } else {
            "m.conversation_id"
        };
        sql.push_str(&format!(" AND {column} = {}", placeholder(binds.len())));
    }
    if let Some(role) = search.role {
        binds.push(role.to_owned());
        sql.push_str(&format!(" AND m.role = {}", placeholder(binds.len())));
    }
    sql.push_str(if postgres {
        " ORDER BY ts_rank_cd(to_tsvector('simple', m.content), q) DESC, m.id DESC"
    } else {
        " ORDER BY bm25(messages_fts), m.id DESC"
    });
    sql.push_str(&format!(
        " LIMIT {} OFFSET {}",
        placeholder(binds.len() + 1),
        placeholder(binds.len() + 2)
    ));
    let hits = on_backend!(tx, |conn| {
        let mut statement = diesel::sql_query(sql.as_str()).into_boxed();
        for value in &binds {
            statement = statement.bind::<Text, _>(value.clone());
        }
        statement
            .bind::<BigInt, _>(limit)
            .bind::<BigInt, _>(offset)
            .load::<Hit>(conn)
            .await?
    });
    Ok(hits)
}

/// Binds a cursor to its search: the query and the filters.
fn fingerprint(query: &str, search: &Search<'_>) -> [u8; 8] {
    let digest = Sha256::digest(
        format!(
            "{query}\0{:?}\0{:?}\0{}",
            search.conversation, search.role, search.include_call_records
        )
        .as_bytes(),
    );
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

fn encode_offset(cursors: &CursorKey, user: &UserId, offset: i64, fingerprint: [u8; 8]) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&offset.to_be_bytes());
    bytes[8..].copy_from_slice(&fingerprint);
    cursors.encode(CURSOR_KIND, user, uuid::Uuid::from_bytes(bytes))
}

fn decode_offset(
    cursors: &CursorKey,
    user: &UserId,
    raw: &str,
    fingerprint: [u8; 8],
) -> Result<i64, StoreError> {
    let bytes = cursors
        .decode(CURSOR_KIND, user, "cursor", raw)?
        .into_bytes();
    if bytes[8..] != fingerprint {
        return Err(StoreError::invalid(
            "cursor",
            "belongs to another search: pass the same query and filters",
        ));
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&bytes[..8]);
    Ok(i64::from_be_bytes(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str) -> Term {
        Term::Word(w.into())
    }

    #[test]
    fn queries_parse_as_web_searches_do() {
        let parsed = parse(r#"paris "cheap hotel" or hostel -luxury -"five star" !!"#);
        assert_eq!(
            parsed.required,
            vec![
                vec![word("paris")],
                vec![Term::Phrase("cheap hotel".into()), word("hostel")],
            ]
        );
        assert_eq!(
            parsed.excluded,
            vec![word("luxury"), Term::Phrase("five star".into())]
        );
        assert_eq!(
            fts5_query(&parsed),
            r#"("paris") AND ("cheap hotel" OR "hostel") NOT "luxury" NOT "five star""#
        );
        // FTS5 operators and quotes in the user's words are only words.
        let tricky = parse(r#"NEAR(a b) x"y AND*"#);
        assert_eq!(
            fts5_query(&tricky),
            r#"("NEAR(a") AND ("b)") AND ("x") AND ("y AND*")"#
        );
        assert!(parse("-only -exclusions").required.is_empty());
        assert!(parse("or").required.is_empty());
    }
}
