//! When, how and on what a bench ran: the lines every report starts with.

use crate::system;
use std::fmt::Write as _;
use std::path::Path;

pub struct RunInfo {
    pub date: chrono::DateTime<chrono::Utc>,
    pub command: String,
    pub machine: String,
    /// Load averages when the run started (other work on the machine skews the figures).
    pub load_before: String,
    pub server: String,
    pub commit: Option<String>,
}

impl RunInfo {
    /// Dated now, with this machine and the repository's commit.
    pub fn collect(
        command: String,
        load_before: String,
        server_version: &str,
        server_path: &Path,
    ) -> Self {
        RunInfo {
            date: chrono::Utc::now(),
            command,
            machine: system::machine_description(),
            load_before,
            server: format!("{server_version} ({})", server_path.display()),
            commit: system::git_revision(&crate::paths().repo),
        }
    }

    /// The `date:`, `command:`, `machine:` and `server:` lines of a report.
    pub fn write_lines(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "date:     {}",
            self.date.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let _ = writeln!(out, "command:  {}", self.command);
        let _ = writeln!(
            out,
            "machine:  {} (load average before the run: {})",
            self.machine, self.load_before
        );
        let _ = writeln!(
            out,
            "server:   {}{}",
            self.server,
            self.commit
                .as_deref()
                .map(|c| format!(" (commit {c})"))
                .unwrap_or_default()
        );
    }
}
