//! The operator's commands: migrations, tokens, users, export and import. Results go to
//! stdout (a token, JSON lines), what happened to stderr.

use crate::cli::{MigrateAction, TokenAction, UserAction};
use anyhow::Context;
use std::io::Write;
use todo_mcp::db::{Database, DatabaseUrl, migrations};
use todo_mcp::store::scopes::Scopes;
use todo_mcp::store::transfer;
use todo_mcp::store::{StoreError, UserId, quote, tokens, users};

pub async fn migrate(url: &DatabaseUrl, action: MigrateAction) -> anyhow::Result<()> {
    match action {
        MigrateAction::Run => {
            let applied = migrations::run_pending(url).await?;
            if applied.is_empty() {
                eprintln!("no pending migrations");
            }
            for name in applied {
                eprintln!("applied {name}");
            }
        }
        MigrateAction::Status => {
            for migration in migrations::status(url).await? {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state}\t{}", migration.name);
            }
        }
        MigrateAction::Down => revert(url).await?,
        MigrateAction::Redo => {
            revert(url).await?;
            for name in migrations::run_pending(url).await? {
                eprintln!("applied {name}");
            }
        }
    }
    Ok(())
}

async fn revert(url: &DatabaseUrl) -> anyhow::Result<()> {
    let reverted = migrations::revert_last(url).await?;
    if reverted.is_empty() {
        eprintln!("no migration is applied");
    }
    for name in reverted {
        eprintln!("reverted {name}");
    }
    Ok(())
}

pub async fn token(db: &Database, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create {
            user,
            scopes,
            name,
            expires_in,
        } => {
            let user = UserId::parse(&user)?;
            let scopes = if scopes.is_empty() {
                Scopes::FULL
            } else {
                scopes.into_iter().collect()
            };
            let expires_at =
                expires_in.map(|days| chrono::Utc::now() + chrono::Duration::days(days.into()));
            let issued = tokens::create(db, &user, name.as_deref(), scopes, expires_at).await?;
            eprintln!(
                "token {} issued for user {user}, scopes {}",
                issued.id,
                scopes.to_oauth()
            );
            println!("{}", issued.secret);
        }
        TokenAction::List { user } => {
            let user = UserId::parse(&user)?;
            let list = tokens::list(db, &user).await?;
            for token in list {
                println!("{}", serde_json::to_string(&token)?);
            }
        }
        TokenAction::Revoke { id } => {
            let id = uuid::Uuid::parse_str(id.trim()).map_err(|_| {
                StoreError::invalid("id", format!("{} is not a token id", quote(&id)))
            })?;
            let revoked = tokens::revoke(db, id).await?;
            eprintln!("token {} of user {} revoked", revoked.id, revoked.user_id);
        }
    }
    Ok(())
}

pub async fn user(db: &Database, action: UserAction) -> anyhow::Result<()> {
    match action {
        UserAction::List => {
            const PAGE: i64 = 500;
            let mut stdout = std::io::stdout().lock();
            let mut after = String::new();
            loop {
                let page = users::list(db, &after, PAGE).await?;
                for user in &page {
                    writeln!(stdout, "{}", serde_json::to_string(user)?)?;
                }
                match page.last() {
                    Some(last) if page.len() as i64 == PAGE => after = last.id.clone(),
                    _ => break,
                }
            }
            stdout.flush()?;
        }
        UserAction::Delete { user, dry_run } => {
            let user = UserId::parse(&user)?;
            let removed = users::delete(db, &user, dry_run).await?;
            println!("{}", serde_json::to_string(&removed)?);
            let verb = if dry_run { "would remove" } else { "removed" };
            eprintln!(
                "user {}: {verb} {} tasks, {} conversations, {} messages, {} agent states, \
                 {} turns, {} tokens, {} sessions",
                removed.user,
                removed.tasks,
                removed.conversations,
                removed.messages,
                removed.agent_states,
                removed.turns,
                removed.api_tokens,
                removed.mcp_sessions
            );
        }
    }
    Ok(())
}

pub async fn export(db: &Database, user: Option<&str>) -> anyhow::Result<()> {
    let user = user.map(UserId::parse).transpose()?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let started = std::time::Instant::now();
    let counts = transfer::export(db, user.as_ref(), &mut out)
        .await
        .context("export failed")?;
    eprintln!(
        "exported {counts} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn import(db: &Database, input: Option<&std::path::Path>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let progress = |user: &str| eprintln!("imported user {user}");
    let imported = match input {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            transfer::import(db, std::io::BufReader::new(file), progress).await
        }
        None => transfer::import(db, std::io::stdin().lock(), progress).await,
    }
    .context("import failed (users not listed as imported above are unchanged)")?;
    println!("{}", serde_json::to_string(&imported)?);
    eprintln!(
        "imported {} users in {:.1} s: inserted {}; already present {}",
        imported.users.len(),
        started.elapsed().as_secs_f64(),
        imported.inserted,
        imported.already_present
    );
    Ok(())
}
