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
//! `bm25`; equal ranks go newest first. Ranking is by windows of the newest matches
//! ([`RANK_WINDOW`]), so a common word costs what a rare one does.

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

/// Hits are ranked a window at a time: the newest `RANK_WINDOW` matches, best first, then
/// the next `RANK_WINDOW` older ones, and so on. A search thus costs the same whether a
/// word is in ten messages or in a hundred thousand (ranking every match of a common word
/// took hundreds of milliseconds at 100,000 messages), and recent messages come first.
const RANK_WINDOW: usize = 1000;

/// Where a page starts: in the window of matches older than `below` (an id), after the
/// `skip` best of it. The first page's window is then pinned, so messages appended while
/// a client pages do not shift the pages it has yet to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    below: i64,
    skip: usize,
}

impl Position {
    const START: Position = Position {
        below: i64::MAX,
        skip: 0,
    };
}

#[derive(QueryableByName)]
struct Ranked {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct Snippet {
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
    let limit = page_size("limit", search.limit)? as usize;
    let (tx, user) = tx.split();
    let fingerprint = fingerprint(&query, search);
    let mut at = match search.cursor {
        Some(raw) => decode_position(cursors, user, raw, fingerprint)?,
        None => Position::START,
    };
    if let Some(conversation) = search.conversation {
        super::conversations::find(tx, user, conversation).await?;
    }
    if search.include_call_records {
        tx.index_call_records().await?;
    }
    let finder = Finder::new(tx, &query, &parsed, search);
    // One more hit than the page, to know whether there is a next one; each hit with the
    // position after it, which the next page starts from.
    let mut hits: Vec<(i64, Position)> = Vec::with_capacity(limit + 1);
    while hits.len() <= limit {
        let window = finder.ranked_window(tx, user, at.below).await?;
        if at == Position::START
            && let Some(newest) = window.iter().max()
        {
            at.below = newest + 1;
        }
        for (index, id) in window.iter().enumerate().skip(at.skip) {
            let after = Position {
                below: at.below,
                skip: index + 1,
            };
            hits.push((*id, after));
            if hits.len() > limit {
                break;
            }
        }
        match window.iter().min() {
            Some(oldest) if window.len() == RANK_WINDOW => {
                at = Position {
                    below: *oldest,
                    skip: 0,
                }
            }
            _ => break,
        }
    }
    let next = (hits.len() > limit)
        .then(|| encode_position(cursors, user, hits[limit - 1].1, fingerprint));
    hits.truncate(limit);
    let ids: Vec<i64> = hits.iter().map(|(id, _)| *id).collect();
    let snippets = finder.snippets(tx, user, &ids).await?;
    let messages = super::conversations::messages_by_id(tx, user, &ids).await?;
    let found = ids
        .iter()
        .filter_map(|id| {
            let message = messages.iter().find(|m| m.id == *id)?.clone();
            let snippet = snippets.iter().find(|s| s.id == *id)?.snippet.clone();
            Some(SearchHit {
                conversation_id: message.conversation_id.clone(),
                snippet,
                message,
            })
        })
        .collect();
    Ok((found, next))
}

/// A search's SQL on the connection's backend. Full-text search has no diesel DSL: each
/// backend's SQL, every value bound.
struct Finder<'q> {
    postgres: bool,
    /// The query as the backend reads it: web-search text for `websearch_to_tsquery`,
    /// FTS5's syntax for SQLite.
    query: String,
    search: &'q Search<'q>,
}

impl<'q> Finder<'q> {
    fn new(tx: &Tx, query: &str, parsed: &Parsed, search: &'q Search<'q>) -> Self {
        let postgres = matches!(tx.conn, Conn::Postgres(_));
        let query = if postgres {
            query.to_owned()
        } else {
            fts5_query(parsed)
        };
        Finder {
            postgres,
            query,
            search,
        }
    }

    fn placeholder(&self, n: usize) -> String {
        if self.postgres {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    }

    /// The ids of the newest `RANK_WINDOW` matches older than `below`, best first.
    async fn ranked_window(
        &self,
        tx: &mut Tx,
        user: &UserId,
        below: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut binds: Vec<String> = vec![self.query.clone(), user.as_str().to_owned()];
        let mut sql = if self.postgres {
            String::from(
                "SELECT id FROM (SELECT m.id AS id, ts_rank_cd(m.search_vector, q) AS rank \
                 FROM messages m, websearch_to_tsquery('simple', $1) AS q \
                 WHERE m.search_vector @@ q AND m.user_id = $2 AND m.hidden_at IS NULL",
            )
        } else {
            String::from(
                "SELECT id FROM (SELECT m.id AS id, bm25(messages_fts) AS rank \
                 FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid \
                 WHERE messages_fts MATCH ? AND m.user_id = ? AND m.hidden_at IS NULL",
            )
        };
        if !self.search.include_call_records {
            sql.push_str(" AND m.kind = 'message'");
        }
        if let Some(conversation) = self.search.conversation {
            binds.push(conversation.to_string());
            let column = if self.postgres {
                "m.conversation_id::text"
            } else {
                "m.conversation_id"
            };
            sql.push_str(&format!(
                " AND {column} = {}",
                self.placeholder(binds.len())
            ));
        }
        if let Some(role) = self.search.role {
            binds.push(role.to_owned());
            sql.push_str(&format!(" AND m.role = {}", self.placeholder(binds.len())));
        }
        // The window, newest first: on SQLite in the FTS5 index's own rowid order, which
        // it reads backwards and stops at the limit.
        let id = if self.postgres {
            "m.id"
        } else {
            "messages_fts.rowid"
        };
        sql.push_str(&format!(
            " AND {id} < {below} ORDER BY {id} DESC LIMIT {window}) AS w",
            below = self.placeholder(binds.len() + 1),
            window = self.placeholder(binds.len() + 2),
        ));
        // ts_rank_cd is higher for better hits, bm25 lower; equal ranks go newest first.
        sql.push_str(if self.postgres {
            " ORDER BY rank DESC, id DESC"
        } else {
            " ORDER BY rank, id DESC"
        });
        let rows = on_backend!(tx, |conn| {
            let mut statement = diesel::sql_query(sql.as_str()).into_boxed();
            for value in &binds {
                statement = statement.bind::<Text, _>(value.clone());
            }
            statement
                .bind::<BigInt, _>(below)
                .bind::<BigInt, _>(RANK_WINDOW as i64)
                .load::<Ranked>(conn)
                .await?
        });
        Ok(rows.into_iter().map(|row| row.id).collect())
    }

    /// The words found in each of these messages, in context, marked `[like this]`.
    async fn snippets(
        &self,
        tx: &mut Tx,
        user: &UserId,
        ids: &[i64],
    ) -> Result<Vec<Snippet>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The ids came from the database as integers: written into the SQL, not bound.
        let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = if self.postgres {
            format!(
                "SELECT id, ts_headline('simple', content, websearch_to_tsquery('simple', $1), \
                 'StartSel=[, StopSel=], MaxWords=24, MinWords=8, MaxFragments=1') AS snippet \
                 FROM messages WHERE user_id = $2 AND id IN ({ids})"
            )
        } else {
            format!(
                "SELECT rowid AS id, snippet(messages_fts, 0, '[', ']', '…', 16) AS snippet \
                 FROM messages_fts WHERE messages_fts MATCH ? AND rowid IN ({ids})"
            )
        };
        let query = self.query.clone();
        // The user's id, so that PostgreSQL reads one user's rows (one shard, on Citus);
        // SQLite's full-text table has no user column, and the ids are theirs already.
        let postgres = self.postgres;
        let user = user.as_str().to_owned();
        Ok(on_backend!(tx, |conn| {
            let statement = diesel::sql_query(sql.as_str())
                .into_boxed()
                .bind::<Text, _>(query);
            let statement = if postgres {
                statement.bind::<Text, _>(user)
            } else {
                statement
            };
            statement.load::<Snippet>(conn).await?
        }))
    }
}

/// Binds a cursor to its search: the query and the filters.
fn fingerprint(query: &str, search: &Search<'_>) -> [u8; FINGERPRINT] {
    let digest = Sha256::digest(
        format!(
            "{query}\0{:?}\0{:?}\0{}",
            search.conversation, search.role, search.include_call_records
        )
        .as_bytes(),
    );
    let mut out = [0u8; FINGERPRINT];
    out.copy_from_slice(&digest[..FINGERPRINT]);
    out
}

/// Bytes of a search's fingerprint in its cursors.
const FINGERPRINT: usize = 8;
/// A cursor's key: `below` (8 bytes), `skip` (8), the search's fingerprint; the cursor's
/// MAC covers it all.
const POSITION_KEY: usize = 16 + FINGERPRINT;

fn encode_position(
    cursors: &CursorKey,
    user: &UserId,
    at: Position,
    fingerprint: [u8; FINGERPRINT],
) -> String {
    let mut key = [0u8; POSITION_KEY];
    key[..8].copy_from_slice(&at.below.to_be_bytes());
    key[8..16].copy_from_slice(&(at.skip as u64).to_be_bytes());
    key[16..].copy_from_slice(&fingerprint);
    cursors.encode_key(CURSOR_KIND, user, &key)
}

fn decode_position(
    cursors: &CursorKey,
    user: &UserId,
    raw: &str,
    fingerprint: [u8; FINGERPRINT],
) -> Result<Position, StoreError> {
    let key = cursors.decode_key::<POSITION_KEY>(CURSOR_KIND, user, "cursor", raw)?;
    if key[16..] != fingerprint {
        return Err(StoreError::invalid(
            "cursor",
            "belongs to another search: pass the same query and filters",
        ));
    }
    let mut below = [0u8; 8];
    below.copy_from_slice(&key[..8]);
    let mut skip = [0u8; 8];
    skip.copy_from_slice(&key[8..16]);
    Ok(Position {
        below: i64::from_be_bytes(below),
        skip: usize::try_from(u64::from_be_bytes(skip)).unwrap_or(usize::MAX),
    })
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
