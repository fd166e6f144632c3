//! The programs the benches start: the server under test and PostgreSQL's client tools.

use std::path::{Path, PathBuf};

/// `--server-bin` if given, else the todo-mcp that cargo built with this bench.
pub fn server(server_bin: Option<&Path>) -> PathBuf {
    server_bin.map_or_else(|| crate::paths().server.clone(), Path::to_path_buf)
}

/// The newest /usr/lib/postgresql/*/bin/`name`, else `name` from PATH: Debian installs
/// several major versions side by side and puts only a wrapper on PATH.
pub fn postgres_tool(name: &str) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let path = entry.path().join("bin").join(name);
            path.is_file().then_some((version, path))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map_or_else(|| PathBuf::from(name), |(_, path)| path)
}
