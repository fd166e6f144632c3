//! Load generator (being written): see `cargo bench --bench load -- --help`.
fn main() {
    eprintln!("the load generator is not written yet");
    std::process::exit(2);
}
