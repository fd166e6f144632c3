//! SQLite for tests: a database file in a temp dir of its own, deleted with the value.

use std::path::{Path, PathBuf};

use super::cli;

/// A fresh SQLite database path for one test. The file does not exist until the binary creates
/// it (`todo-mcp stdio` migrates at start; [`SqliteTestDb::migrate`] does it explicitly).
pub struct SqliteTestDb {
    // Keeps the directory (and the db, its -wal/-shm files) alive until the test ends.
    dir: tempfile::TempDir,
    path: PathBuf,
    url: String,
}

impl SqliteTestDb {
    pub fn new() -> SqliteTestDb {
        let dir = tempfile::Builder::new()
            .prefix("todo-mcp-sqlite-")
            .tempdir()
            .expect("could not create a temp dir for the SQLite test database");
        let path = dir.path().join("todo.db");
        let url = format!("sqlite://{}", path.display());
        SqliteTestDb { dir, path, url }
    }

    /// `sqlite://<absolute path>`, the `DATABASE_URL` for the binary.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp dir holding the database (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run `todo-mcp migrate` against it, asserting success.
    pub fn migrate(&self) {
        cli::migrate(&self.url);
    }
}

impl Default for SqliteTestDb {
    fn default() -> Self {
        Self::new()
    }
}
