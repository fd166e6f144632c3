//! What the `history` and `coldstart` benches share: markdown tables, the printed and saved
//! report (named like the load generator's), the command line as run.

use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Milliseconds with three decimals, for tables.
pub fn ms(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// A markdown table: a header row, its separator, then the rows.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    let separators: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "---:" })
        .collect();
    out += &format!("|{}|\n", separators.join("|"));
    for row in rows {
        out += &format!("| {} |\n", row.join(" | "));
    }
    out
}

/// Prints the report, with `save_to` (--save) also saves it (see `save`) and says where,
/// then prints the JSON summary as the last line, as `load` does.
pub fn print_report(
    text: &str,
    summary: &Value,
    save_to: Option<&Path>,
    date: chrono::DateTime<chrono::Utc>,
    name: &str,
) -> anyhow::Result<()> {
    print!("{text}");
    if let Some(dir) = save_to {
        let path = save(dir, date, name, text, summary)?;
        println!("saved: {}", path.display());
    }
    println!("{summary}");
    Ok(())
}

/// Writes `text` with `summary: <json>` as its last line to
/// `<dir>/<date>-<transport>-<workload>-<backend>.txt`, as `load --save` does (with `-2`,
/// `-3`… if the name is taken).
fn save(
    dir: &Path,
    date: chrono::DateTime<chrono::Utc>,
    name: &str,
    text: &str,
    summary: &Value,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = format!("{}-{name}", date.format("%Y-%m-%d"));
    let mut path = dir.join(format!("{stem}.txt"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{n}.txt"));
        n += 1;
    }
    let text = format!("{text}\nsummary: {summary}\n");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// How this run was started, as a `cargo bench` command.
pub fn command_line(bench: &str) -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    format!("cargo bench --bench {bench} -- {}", args.join(" "))
        .trim_end()
        .to_owned()
}

/// A directory under the target dir for this bench's server logs (replacing the previous
/// run's).
pub fn log_dir(bench: &str, name: &str) -> anyhow::Result<PathBuf> {
    let dir = crate::paths().tmp.as_path().join(bench).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The timestamp at the start of a server log line (RFC 3339, as the server's logger
/// writes it).
pub fn log_time(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let first = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(first)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}
