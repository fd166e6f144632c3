//! Rebuild when a migration is added or changed: `embed_migrations!` embeds the files of
//! `migrations/` at compile time but cannot tell cargo to watch the folder itself.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
