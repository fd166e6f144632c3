//! What a credential may do: the OAuth scopes of this server's tools. `todo:read` allows
//! the read-only tools, `todo:write` the others; the two are independent.

use super::UserId;

/// One of the server's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TodoScope {
    /// The read-only tools.
    Read,
    /// Every tool that writes.
    Write,
}

impl TodoScope {
    pub const ALL: [TodoScope; 2] = [TodoScope::Read, TodoScope::Write];

    /// The scope as OAuth names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            TodoScope::Read => "todo:read",
            TodoScope::Write => "todo:write",
        }
    }

    /// Exactly `todo:read` or `todo:write`, as in a token's `scope` claim.
    pub fn from_oauth(raw: &str) -> Option<TodoScope> {
        TodoScope::ALL
            .into_iter()
            .find(|scope| raw == scope.as_str())
    }

    /// `todo:read` / `todo:write`, or the short `read` / `write` of `token create --scope`.
    pub fn parse(raw: &str) -> Option<TodoScope> {
        let raw = raw.trim();
        TodoScope::from_oauth(raw).or_else(|| TodoScope::from_oauth(&format!("todo:{raw}")))
    }
}

impl std::fmt::Display for TodoScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`TodoScope`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes {
    read: bool,
    write: bool,
}

impl Scopes {
    /// Every tool: API tokens issued without `--scope`, JWTs without a scope claim.
    pub const FULL: Scopes = Scopes {
        read: true,
        write: true,
    };
    pub const NONE: Scopes = Scopes {
        read: false,
        write: false,
    };

    pub fn allows(self, scope: TodoScope) -> bool {
        match scope {
            TodoScope::Read => self.read,
            TodoScope::Write => self.write,
        }
    }

    pub fn is_full(self) -> bool {
        self == Scopes::FULL
    }

    /// The scopes among space-separated OAuth scope tokens (RFC 6749 §3.3); any other
    /// scope (`openid`, `email`…) grants nothing here.
    pub fn from_oauth(scope_claim: &str) -> Scopes {
        Scopes::from_iter(
            scope_claim
                .split_ascii_whitespace()
                .filter_map(TodoScope::from_oauth),
        )
    }

    /// Space-separated, as OAuth writes them: `todo:read todo:write`, or `` when none.
    pub fn to_oauth(self) -> String {
        TodoScope::ALL
            .into_iter()
            .filter(|scope| self.allows(*scope))
            .map(TodoScope::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl FromIterator<TodoScope> for Scopes {
    fn from_iter<I: IntoIterator<Item = TodoScope>>(scopes: I) -> Self {
        scopes.into_iter().fold(Scopes::NONE, |mut set, scope| {
            match scope {
                TodoScope::Read => set.read = true,
                TodoScope::Write => set.write = true,
            }
            set
        })
    }
}

/// Who is calling and what they may do, as their credential says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub scopes: Scopes,
}

impl Caller {
    /// A caller who may use every tool (stdio without a token, `--no-auth`).
    pub fn with_full_access(user: UserId) -> Self {
        Caller {
            user,
            scopes: Scopes::FULL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_scope_strings_round_trip() {
        assert_eq!(
            Scopes::from_oauth("openid todo:read email"),
            [TodoScope::Read].into_iter().collect()
        );
        assert_eq!(Scopes::from_oauth("todo:write  todo:read"), Scopes::FULL);
        assert_eq!(
            Scopes::from_oauth("openid todo:admin TODO:READ read"),
            Scopes::NONE
        );
        assert_eq!(Scopes::FULL.to_oauth(), "todo:read todo:write");
        assert_eq!(Scopes::from_oauth("todo:write").to_oauth(), "todo:write");
        assert_eq!(TodoScope::parse("read"), Some(TodoScope::Read));
        assert_eq!(TodoScope::parse("todo:write"), Some(TodoScope::Write));
        assert_eq!(TodoScope::parse("admin"), None);
    }
}
