//! Evidence for the Reliability table in docs/reliability.md, written by the tests that produce it.
//!
//! A test that tries a class of faults or inputs calls [`record`] once at its end (after its
//! assertions passed) with how many cases it tried and what it observed. Each call writes
//! `target/reliability/<class>.json`; `scripts/reliability-table` renders them as the README's
//! markdown table. Figures come from what the test counted, never from constants.

use serde_json::json;
use std::path::PathBuf;

/// What one test observed for one fault or input class.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// Stable, human-readable class name, e.g. "hostile input over HTTP".
    pub class: &'a str,
    /// Where the test lives, e.g. "tests/it/hostile_input.rs".
    pub test: &'a str,
    /// How many cases (inputs, faults, calls) the test tried.
    pub cases: usize,
    /// How many of them got a clear error (or the documented success, for fault recovery).
    pub clear_errors: usize,
    /// Acknowledged writes found missing afterwards.
    pub writes_lost: usize,
    /// Rows of another user that any case managed to read or change.
    pub cross_user: usize,
    /// One line on what "outcome" means for this class.
    pub outcome: &'a str,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("reliability")
}

/// Writes the evidence file for `evidence.class`. Panics if it cannot (a test whose evidence
/// vanished silently would leave the README table stale).
pub fn record(evidence: Evidence<'_>) {
    let dir = dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let file_name: String = evidence
        .class
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let path = dir.join(format!("{file_name}.json"));
    let body = json!({
        "class": evidence.class,
        "test": evidence.test,
        "cases": evidence.cases,
        "clear_errors": evidence.clear_errors,
        "writes_lost": evidence.writes_lost,
        "cross_user": evidence.cross_user,
        "outcome": evidence.outcome,
    });
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&body).expect("evidence is JSON"),
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    eprintln!(
        "reliability: {} ({}): {} cases, {} clear, {} writes lost, {} cross-user",
        evidence.class,
        evidence.test,
        evidence.cases,
        evidence.clear_errors,
        evidence.writes_lost,
        evidence.cross_user
    );
}
