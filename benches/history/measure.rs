//! One stage's measurement: one sequential MCP client over stdio (its own `todo-mcp
//! stdio` process) calling the read operations in turn, checking every answer.

use crate::client::{CallError, Client, Request, StdioClient};
use crate::seed::Seeded;
use crate::server::ServerBinary;
use crate::shared::log_time;
use crate::stats::{Errors, Samples};
use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};

/// Messages or conversations per page, as the target names it.
pub const PAGE: usize = 50;

/// The operations, in the order each round calls them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Operation {
    /// `get_conversation_history` of the long conversation, limit 50: its latest page.
    HistoryLatest,
    /// `get_conversation_history` with `before`: walking back page by page from a random
    /// message of the long conversation.
    HistoryBefore,
    /// `list_conversations`, limit 50, no cursor.
    ListFirst,
    /// `list_conversations` with the previous page's `next_cursor`: walking the whole list.
    ListNext,
    /// `search_messages` for one turn of the long conversation (`"turn N"`): one hit.
    SearchRare,
    /// `search_messages` for words in every user message (`oat milk`): a first page of
    /// 50 among tens of thousands of hits, ranked.
    SearchCommon,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Operation::HistoryLatest,
        Operation::HistoryBefore,
        Operation::ListFirst,
        Operation::ListNext,
        Operation::SearchRare,
        Operation::SearchCommon,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Operation::HistoryLatest => "get_conversation_history, latest 50",
            Operation::HistoryBefore => "get_conversation_history, before (paging back)",
            Operation::ListFirst => "list_conversations, first page",
            Operation::ListNext => "list_conversations, next pages",
            Operation::SearchRare => "search_messages, one hit (\"turn N\")",
            Operation::SearchCommon => "search_messages, first 50 of many (oat milk)",
        }
    }

    /// Short names for the JSON summary.
    pub fn key(self) -> &'static str {
        match self {
            Operation::HistoryLatest => "history_latest",
            Operation::HistoryBefore => "history_before",
            Operation::ListFirst => "list_first",
            Operation::ListNext => "list_next",
            Operation::SearchRare => "search_rare",
            Operation::SearchCommon => "search_common",
        }
    }
}

pub struct StageSettings<'a> {
    pub name: &'a str,
    pub server: &'a ServerBinary,
    pub token: &'a str,
    pub seeded: &'a Seeded,
    /// Measured calls of each operation.
    pub calls: u64,
    /// Unmeasured calls of each operation first.
    pub warmup: u64,
    /// Pages each walk back with `before` reads before starting again elsewhere.
    pub walk_pages: u32,
    pub call_timeout: Duration,
    /// The operations each round calls, in order.
    pub operations: &'a [Operation],
}

pub struct StageOutcome {
    /// Latency of each measured call as the client saw it, by operation label.
    pub samples: Samples,
    /// Time inside the tool call as the server logged it, by operation label.
    pub server_time: Samples,
    pub errors: Errors,
    pub warmup_errors: Errors,
    /// Complete walks through the conversation list (each checked for its count).
    pub list_walks: u64,
    pub server_peak_rss_kib: Option<u64>,
}

/// When a measured call was in flight, to find its line in the server's log.
struct Window {
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    operation: Operation,
}

/// Where the two walks are.
#[derive(Default)]
struct Walks {
    history: Option<HistoryWalk>,
    list: Option<ListWalk>,
    complete_list_walks: u64,
}

struct HistoryWalk {
    /// The `before` of the next page.
    before: i64,
    /// Pages read so far in this walk.
    pages: u32,
}

struct ListWalk {
    /// The cursor of the next page.
    cursor: String,
    /// Conversations seen so far in this walk.
    seen: i64,
    /// The last conversation id seen: the next page's must all sort before it.
    last_id: String,
}

pub async fn run_stage(
    settings: &StageSettings<'_>,
    rng: &mut StdRng,
) -> anyhow::Result<StageOutcome> {
    let (log_path, log) = settings
        .server
        .log_file(&format!("server-stdio-{}.log", settings.name))?;
    let mut command = settings.server.command();
    command.arg("stdio").env("TODO_MCP_TOKEN", settings.token);
    let mut client = Client::Stdio(StdioClient::connect(command, log).await?);
    let pid = client.server_pid();

    let mut samples = Samples::default();
    let mut errors = Errors::default();
    let mut warmup_errors = Errors::default();
    let mut windows = Vec::new();
    let mut walks = Walks::default();
    for round in 0..settings.warmup + settings.calls {
        let measured = round >= settings.warmup;
        for &operation in settings.operations {
            let request = plan(operation, settings.seeded, &mut walks, rng);
            let from = SystemTime::now();
            let started = Instant::now();
            let result =
                match tokio::time::timeout(settings.call_timeout, client.call(&request)).await {
                    Ok(result) => result,
                    Err(_) => Err(CallError::Unknown(format!(
                        "no answer within {:?}",
                        settings.call_timeout
                    ))),
                };
            let latency = started.elapsed();
            let to = SystemTime::now();
            let phase_errors = if measured {
                &mut errors
            } else {
                &mut warmup_errors
            };
            let checked = match &result {
                Ok(answer) => check(operation, &request, answer, settings, &mut walks),
                Err(error) => {
                    phase_errors.record(operation.label(), error);
                    Ok(())
                }
            };
            if let Err(problem) = &checked {
                phase_errors.note("bad answer", format!("{}: {problem}", operation.label()));
            }
            if result.is_err() || checked.is_err() {
                // Start the walks afresh rather than follow a doubtful cursor.
                walks.history = None;
                walks.list = None;
            }
            if measured {
                samples.record(operation.label(), latency);
                windows.push(Window {
                    from: from.into(),
                    to: to.into(),
                    operation,
                });
            }
        }
    }
    let server_peak_rss_kib = pid.and_then(crate::system::peak_rss_kib);
    client.close().await;

    let log = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    Ok(StageOutcome {
        samples,
        server_time: server_time(&log, &windows),
        errors,
        warmup_errors,
        list_walks: walks.complete_list_walks,
        server_peak_rss_kib,
    })
}

/// The next call of `operation`.
fn plan(operation: Operation, seeded: &Seeded, walks: &mut Walks, rng: &mut StdRng) -> Request {
    let conversation = &seeded.long_conversation;
    match operation {
        Operation::HistoryLatest => Request::tool(
            "get_conversation_history",
            json!({ "conversation_id": conversation, "limit": PAGE }),
        ),
        Operation::HistoryBefore => {
            let walk = walks.history.get_or_insert_with(|| HistoryWalk {
                // A random point with at least one message before it.
                before: rng.random_range(seeded.first_message + 1..=seeded.last_message),
                pages: 0,
            });
            Request::tool(
                "get_conversation_history",
                json!({ "conversation_id": conversation, "limit": PAGE, "before": walk.before }),
            )
        }
        Operation::ListFirst => Request::tool("list_conversations", json!({ "limit": PAGE })),
        Operation::ListNext => match &walks.list {
            Some(walk) => Request::tool(
                "list_conversations",
                json!({ "limit": PAGE, "cursor": walk.cursor }),
            ),
            // No walk under way (the list fits on one page): read the first page.
            None => Request::tool("list_conversations", json!({ "limit": PAGE })),
        },
        Operation::SearchRare => {
            // Turn N of the long conversation is "Turn N. …", except every fifth, the
            // server's call records.
            let turns = (seeded.last_message - seeded.first_message).max(5);
            let mut turn = rng.random_range(1..=turns);
            if turn % 5 == 0 {
                turn -= 1;
            }
            Request::tool(
                "search_messages",
                json!({ "query": format!("\"turn {turn}\""), "conversation_id": conversation,
                        "limit": PAGE }),
            )
        }
        Operation::SearchCommon => Request::tool(
            "search_messages",
            json!({ "query": "oat milk", "limit": PAGE }),
        ),
    }
}

/// Checks an answer against the seeded data and moves the walks on.
fn check(
    operation: Operation,
    request: &Request,
    answer: &Value,
    settings: &StageSettings<'_>,
    walks: &mut Walks,
) -> Result<(), String> {
    let Request::Tool { arguments, .. } = request else {
        return Err("not a tool call".into());
    };
    match operation {
        Operation::HistoryLatest => check_history(answer, settings.seeded, None).map(drop),
        Operation::HistoryBefore => {
            let next = check_history(answer, settings.seeded, arguments["before"].as_i64())?;
            let pages = walks.history.as_ref().map_or(0, |walk| walk.pages) + 1;
            walks.history = next
                .filter(|_| pages < settings.walk_pages)
                .map(|before| HistoryWalk { before, pages });
            Ok(())
        }
        Operation::SearchRare => {
            let hits = answer["hits"].as_array().ok_or("no `hits` array")?;
            let query = arguments["query"].as_str().unwrap_or_default();
            let turn = query.trim_matches('"').trim_start_matches("turn ");
            let expected = format!("Turn {turn}. ");
            match hits.as_slice() {
                [hit]
                    if hit["message"]["content"]
                        .as_str()
                        .is_some_and(|c| c.starts_with(&expected)) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "{query}: expected the one message \"{expected}…\", got {} hits",
                    hits.len()
                )),
            }
        }
        Operation::SearchCommon => {
            let hits = answer["hits"].as_array().ok_or("no `hits` array")?;
            let all_match = hits.iter().all(|hit| {
                hit["message"]["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("oat milk"))
            });
            if hits.len() != PAGE || !all_match || answer["next_cursor"].is_null() {
                return Err(format!(
                    "oat milk: {} hits (all matching: {all_match}), next_cursor {}",
                    hits.len(),
                    answer["next_cursor"]
                ));
            }
            Ok(())
        }
        Operation::ListFirst | Operation::ListNext => {
            let continuing = arguments.get("cursor").is_some();
            let (seen_before, after) = match (&walks.list, continuing) {
                (Some(walk), true) => (walk.seen, Some(walk.last_id.as_str())),
                _ => (0, None),
            };
            let (next, seen, last_id) = check_list(answer, settings.seeded, seen_before, after)?;
            // The first page of each round starts a walk if none is under way; the
            // "next pages" calls move it on.
            if operation == Operation::ListNext || walks.list.is_none() {
                walks.list = match (next, last_id) {
                    (Some(cursor), Some(last_id)) => Some(ListWalk {
                        cursor,
                        seen,
                        last_id,
                    }),
                    _ => {
                        if continuing {
                            walks.complete_list_walks += 1;
                        }
                        None
                    }
                };
            }
            Ok(())
        }
    }
}

/// Checks a page of the long conversation's history; returns its `next_cursor`.
fn check_history(
    answer: &Value,
    seeded: &Seeded,
    before: Option<i64>,
) -> Result<Option<i64>, String> {
    let long = seeded.long_conversation.as_str();
    if answer["conversation"]["id"].as_str() != Some(long) {
        return Err(format!(
            "the answer is about conversation {}, not {long}",
            answer["conversation"]["id"]
        ));
    }
    let messages = answer["messages"].as_array().ok_or("no `messages` array")?;
    let mut ids = Vec::with_capacity(messages.len());
    for message in messages {
        if message["conversation_id"].as_str() != Some(long) {
            return Err(format!("a message of another conversation: {message}"));
        }
        ids.push(message["id"].as_i64().ok_or("a message without an id")?);
    }
    if ids.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err("messages not oldest first".into());
    }
    if ids.len() > PAGE {
        return Err(format!("{} messages on a page of {PAGE}", ids.len()));
    }
    match before {
        Some(before) => {
            if ids.last().is_some_and(|last| *last >= before) {
                return Err(format!("a message at or after before={before}"));
            }
        }
        None => {
            if ids.last() != Some(&seeded.last_message) {
                return Err(format!(
                    "the latest page ends at {:?}, not at the last message {}",
                    ids.last(),
                    seeded.last_message
                ));
            }
        }
    }
    let next = answer["next_cursor"].as_i64();
    match next {
        Some(next) if ids.len() != PAGE || ids.first() != Some(&next) => Err(format!(
            "next_cursor {next} on a page of {} messages starting at {:?}",
            ids.len(),
            ids.first()
        )),
        None if ids
            .first()
            .is_some_and(|first| *first != seeded.first_message) =>
        {
            Err(format!(
                "no next_cursor, but the page starts at {:?}, after the first message {}",
                ids.first(),
                seeded.first_message
            ))
        }
        _ => Ok(next),
    }
}

/// Checks a page of the conversation list, given how many conversations the walk has
/// seen before it and the last one's id; returns the page's `next_cursor`, the walk's
/// count after it and the page's last id.
fn check_list(
    answer: &Value,
    seeded: &Seeded,
    seen_before: i64,
    after: Option<&str>,
) -> Result<(Option<String>, i64, Option<String>), String> {
    let conversations = answer["conversations"]
        .as_array()
        .ok_or("no `conversations` array")?;
    let ids: Vec<&str> = conversations
        .iter()
        .map(|c| c["id"].as_str().ok_or("a conversation without an id"))
        .collect::<Result<_, _>>()?;
    // Lowercase hyphenated uuids: text order is uuid order.
    if ids.windows(2).any(|pair| pair[0] <= pair[1]) {
        return Err("conversations not newest first".into());
    }
    if let (Some(after), Some(first)) = (after, ids.first())
        && *first >= after
    {
        return Err(format!("a page starting at {first}, not after {after}"));
    }
    let total = seeded.conversations;
    let due = (total - seen_before).clamp(0, PAGE as i64);
    if ids.len() as i64 != due {
        return Err(format!(
            "{} conversations on a page where {due} were due ({total} in all, {seen_before} \
             seen before)",
            ids.len()
        ));
    }
    let seen = seen_before + ids.len() as i64;
    let next = answer["next_cursor"].as_str().map(str::to_owned);
    if next.is_some() != (seen < total) {
        return Err(format!(
            "next_cursor {next:?} after {seen} of {total} conversations"
        ));
    }
    Ok((next, seen, ids.last().map(|id| (*id).to_owned())))
}

/// The server's logged time inside each measured call (`call ok … duration_ms=…` lines),
/// matched to the call by when it was logged: one client calls one at a time, so each
/// line falls inside exactly one call's window.
fn server_time(log: &str, windows: &[Window]) -> Samples {
    let mut samples = Samples::default();
    for line in log.lines().filter(|line| line.contains(" call ok ")) {
        let Some(at) = log_time(line) else {
            continue;
        };
        let Some(millis) = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("duration_ms="))
            .and_then(|m| m.parse::<f64>().ok())
        else {
            continue;
        };
        let index = windows.partition_point(|window| window.from <= at);
        let Some(window) = index.checked_sub(1).map(|i| &windows[i]) else {
            continue;
        };
        if at <= window.to
            && let Ok(duration) = Duration::try_from_secs_f64(millis / 1000.0)
        {
            samples.record(window.operation.label(), duration);
        }
    }
    samples
}
