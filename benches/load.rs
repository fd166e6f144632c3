//! The load bench: `cargo bench --bench load -- --help`. The load generator itself is the
//! `todo-mcp-load` crate (load-generator/); this target gives it the server binary cargo
//! built with it.

fn main() -> std::process::ExitCode {
    todo_mcp_load::load::main(todo_mcp_load::bench_paths!())
}
