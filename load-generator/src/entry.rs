//! The `main` every bench shares: run only under `cargo bench`, on a multi-thread runtime,
//! and exit 0 (passed), 1 (ran, but a check failed) or 2 (could not run).

use std::future::Future;
use std::process::ExitCode;

/// Runs `run` as bench `name`, with the bench target's `paths` ([`crate::bench_paths!`]);
/// `started_by_cargo` is the hidden `--bench` flag, without which (as under
/// `cargo test --benches`) nothing runs.
pub fn main<F>(name: &str, paths: crate::BenchPaths, started_by_cargo: bool, run: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<bool>>,
{
    crate::set_paths(paths);
    if !started_by_cargo {
        eprintln!(
            "{name}: not started by `cargo bench` (no --bench flag), so not running; \
             see `cargo bench --bench {name} -- --help`"
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{name}: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
