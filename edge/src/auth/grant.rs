//! Permissions: which keys a connection may read (`get`, `sub`), write (`put`, `del`)
//! and publish to (`pub`). A [`Grant`] is compiled once per token from the patterns of
//! its claim: each pattern is an exact key, or a prefix ending in `*`, and `{sub}`
//! stands for the token's subject. Keys are compared byte for byte, exactly as the
//! store will see them: nothing is decoded or normalised (no percent-decoding, no
//! `..`, no Unicode folding, hash-tag braces are plain bytes), so no spelling of a key
//! can reach past what its bytes say.

use std::fmt;

use wire::client::{Request, Target};

/// What an operation does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `get`, `sub`.
    Read,
    /// `put`, `del`.
    Write,
    /// `pub`.
    Publish,
}

/// The placeholder for the token's subject.
pub const SUBJECT: &str = "{sub}";
/// Most patterns per access kind in one grant.
pub const MAX_PATTERNS: usize = 256;
/// Longest pattern once the subject is in, in bytes (the longest key).
pub const MAX_PATTERN_LEN: usize = wire::client::MAX_KEY_LEN;

/// Why a pattern does not compile. A token with one such pattern is refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// An empty pattern (a bare `*` is the way to say "every key").
    #[error("empty pattern")]
    Empty,
    /// A `*` anywhere but at the end.
    #[error("`*` only ends a pattern: {0:?}")]
    InnerStar(String),
    /// `{sub}*`: `user/{sub}*` would let subject `bob` reach `user/bobby`.
    #[error("`{{sub}}` directly before `*` reaches other subjects' keys: {0:?}")]
    SubjectThenStar(String),
    /// A pattern uses `{sub}` but the subject is empty or holds `*`, `{` or `}`.
    #[error("the subject cannot stand in a pattern")]
    BadSubject,
    /// Longer than any key.
    #[error("pattern of {0} bytes (at most {MAX_PATTERN_LEN})")]
    TooLong(usize),
    /// More patterns than [`MAX_PATTERNS`].
    #[error("{0} patterns (at most {MAX_PATTERNS})")]
    TooMany(usize),
}

/// One compiled pattern.
#[derive(Clone, PartialEq, Eq)]
struct Pattern {
    /// The key, or the prefix (without its `*`).
    bytes: Box<[u8]>,
    prefix: bool,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = String::from_utf8_lossy(&self.bytes);
        if self.prefix {
            write!(f, "{s}*")
        } else {
            write!(f, "{s}")
        }
    }
}

impl Pattern {
    fn compile(pattern: &str, subject: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.contains("{sub}*") {
            return Err(PatternError::SubjectThenStar(pattern.to_owned()));
        }
        let (body, prefix) = match pattern.strip_suffix('*') {
            Some(body) => (body, true),
            None => (pattern, false),
        };
        if body.contains('*') {
            return Err(PatternError::InnerStar(pattern.to_owned()));
        }
        let body = if body.contains(SUBJECT) {
            if subject.is_empty() || subject.contains(['*', '{', '}']) {
                return Err(PatternError::BadSubject);
            }
            body.replace(SUBJECT, subject)
        } else {
            body.to_owned()
        };
        if body.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong(body.len()));
        }
        Ok(Self {
            bytes: body.into_bytes().into_boxed_slice(),
            prefix,
        })
    }

    /// Whether `key` matches.
    fn allows_key(&self, key: &[u8]) -> bool {
        if self.prefix {
            key.starts_with(&self.bytes)
        } else {
            *key == *self.bytes
        }
    }

    /// Whether every key starting with `prefix` matches.
    fn covers_prefix(&self, prefix: &[u8]) -> bool {
        self.prefix && prefix.starts_with(&self.bytes)
    }
}

/// One access kind's patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Patterns(Vec<Pattern>);

impl Patterns {
    fn compile<S: AsRef<str>>(patterns: &[S], subject: &str) -> Result<Self, PatternError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError::TooMany(patterns.len()));
        }
        patterns
            .iter()
            .map(|p| Pattern::compile(p.as_ref(), subject))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn allows_key(&self, key: &[u8]) -> bool {
        self.0.iter().any(|p| p.allows_key(key))
    }

    fn covers_prefix(&self, prefix: &[u8]) -> bool {
        self.0.iter().any(|p| p.covers_prefix(prefix))
    }
}

/// The patterns of a grant before compiling, as a token's claim lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSpec {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub publish: Vec<String>,
}

/// What one connection may touch, compiled for its subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    read: Patterns,
    write: Patterns,
    publish: Patterns,
}

impl Grant {
    /// Compile `spec` for `subject` (the token's `sub`, empty if anonymous).
    pub fn compile(spec: &GrantSpec, subject: &str) -> Result<Self, PatternError> {
        Ok(Self {
            read: Patterns::compile(&spec.read, subject)?,
            write: Patterns::compile(&spec.write, subject)?,
            publish: Patterns::compile(&spec.publish, subject)?,
        })
    }

    fn patterns(&self, access: Access) -> &Patterns {
        match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
            Access::Publish => &self.publish,
        }
    }

    /// Whether `access` to `key` is granted.
    pub fn allows(&self, access: Access, key: &str) -> bool {
        self.patterns(access).allows_key(key.as_bytes())
    }

    /// Whether `req` is granted (an `unsub` always is: it only gives up what was
    /// granted; so is `auth`, which touches no key).
    pub fn permits(&self, req: &Request<'_>) -> bool {
        match req {
            Request::Sub { target, .. } => self.allows_target(target),
            Request::Unsub { .. } | Request::Auth { .. } => true,
            Request::Get { key, .. } => self.allows(Access::Read, key),
            Request::Put { key, .. } | Request::Del { key, .. } => self.allows(Access::Write, key),
            Request::Pub { key, .. } => self.allows(Access::Publish, key),
        }
    }

    /// Whether a subscription to `target` is granted: a key if it is readable, a
    /// prefix only if every key under it is.
    pub fn allows_target(&self, target: &Target<'_>) -> bool {
        match target {
            Target::Key(k) => self.read.allows_key(k.as_bytes()),
            Target::Prefix(p) => self.read.covers_prefix(p.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn grant(read: &[&str], subject: &str) -> Grant {
        let spec = GrantSpec {
            read: read.iter().map(|s| (*s).to_owned()).collect(),
            ..GrantSpec::default()
        };
        Grant::compile(&spec, subject).expect("compiles")
    }

    #[test]
    fn exact_keys_and_prefixes() {
        let g = grant(&["a/b", "news/*"], "");
        assert!(g.allows(Access::Read, "a/b"));
        assert!(!g.allows(Access::Read, "a/bc"), "exact means exact");
        assert!(!g.allows(Access::Read, "a/"));
        assert!(g.allows(Access::Read, "news/"));
        assert!(g.allows(Access::Read, "news/x/y"));
        assert!(!g.allows(Access::Read, "news"), "the prefix is `news/`");
        assert!(!g.allows(Access::Write, "a/b"), "read is not write");
        assert!(!g.allows(Access::Publish, "news/x"));
        assert!(grant(&["*"], "").allows(Access::Read, "anything at all"));
        assert!(
            !Grant::default().allows(Access::Read, "k"),
            "nothing by default"
        );
    }

    #[test]
    fn the_subject_stands_in_for_sub_and_only_there() {
        let g = grant(&["user/{sub}/*", "room/{sub}"], "bob");
        assert!(g.allows(Access::Read, "user/bob/inbox"));
        assert!(g.allows(Access::Read, "room/bob"));
        assert!(!g.allows(Access::Read, "user/bobby/inbox"));
        assert!(!g.allows(Access::Read, "user/alice/inbox"));
        assert!(
            !g.allows(Access::Read, "user/{sub}/inbox"),
            "no literal placeholder"
        );
        // Other braces are plain bytes (hash tags).
        let t = grant(&["t/{room1}/*"], "bob");
        assert!(t.allows(Access::Read, "t/{room1}/x"));
        assert!(!t.allows(Access::Read, "t/room1/x"));
    }

    #[test]
    fn patterns_that_could_widen_are_refused() {
        let bad = |p: &str, sub: &str| {
            Grant::compile(
                &GrantSpec {
                    read: vec![p.to_owned()],
                    ..GrantSpec::default()
                },
                sub,
            )
        };
        assert_eq!(bad("", "bob"), Err(PatternError::Empty));
        assert!(matches!(bad("a*b", "bob"), Err(PatternError::InnerStar(_))));
        assert!(matches!(bad("a**", "bob"), Err(PatternError::InnerStar(_))));
        assert!(matches!(
            bad("user/{sub}*", "bob"),
            Err(PatternError::SubjectThenStar(_))
        ));
        // A subject that would turn into a wildcard, or vanish.
        assert_eq!(bad("user/{sub}/*", "*"), Err(PatternError::BadSubject));
        assert_eq!(bad("user/{sub}/*", "a*"), Err(PatternError::BadSubject));
        assert_eq!(bad("user/{sub}/*", ""), Err(PatternError::BadSubject));
        assert_eq!(bad("user/{sub}/*", "{sub}"), Err(PatternError::BadSubject));
        assert!(matches!(
            bad(&"k".repeat(MAX_PATTERN_LEN + 1), "bob"),
            Err(PatternError::TooLong(_))
        ));
        let many = GrantSpec {
            write: vec!["k".to_owned(); MAX_PATTERNS + 1],
            ..GrantSpec::default()
        };
        assert!(matches!(
            Grant::compile(&many, "bob"),
            Err(PatternError::TooMany(_))
        ));
    }

    #[test]
    fn other_spellings_of_a_key_are_other_keys() {
        let g = grant(&["user/bob/*", "doc/a"], "");
        for k in [
            "user/bo%62/x", // percent-encoding is not decoded
            "user/bob%2fx", // nor an encoded slash
            "user//bob/x",  // nor doubled separators
            "USER/bob/x",   // nor case
            "user/bοb/x",   // a Greek omicron is not an `o`
            "user/bob",     // the prefix is `user/bob/`
            "doc/a/",       // exact means exact
            "doc/./a",      // no path resolution
            "user/{bob}/x", // braces are bytes
        ] {
            assert!(!g.allows(Access::Read, k), "{k}");
        }
        // What the prefix does allow stays inside it, as the store will see it:
        // `..` is two bytes, not a way out.
        assert!(g.allows(Access::Read, "user/bob/../alice"));
        assert!("user/bob/../alice".starts_with("user/bob/"));
    }

    #[test]
    fn a_prefix_subscription_needs_every_key_under_it() {
        let g = grant(&["news/*", "user/bob/inbox"], "");
        fn prefix(p: &str) -> Target<'_> {
            Target::Prefix(p.into())
        }
        fn key(k: &str) -> Target<'_> {
            Target::Key(k.into())
        }
        assert!(g.allows_target(&prefix("news/")));
        assert!(g.allows_target(&prefix("news/sport/")));
        assert!(
            !g.allows_target(&prefix("news")),
            "`newsletter` is under it"
        );
        assert!(!g.allows_target(&prefix("n")));
        assert!(
            !g.allows_target(&prefix("user/bob/inbox")),
            "`user/bob/inbox2` is under it"
        );
        assert!(g.allows_target(&key("user/bob/inbox")));
        assert!(g.allows_target(&key("news/x")));
        assert!(!g.allows_target(&key("user/bob")));
    }

    proptest! {
        /// Every key a grant allows starts with one of its prefixes or equals one of its
        /// keys, byte for byte; and every key under an allowed prefix is allowed.
        #[test]
        fn what_is_allowed_is_exactly_what_the_bytes_say(
            pats in prop::collection::vec(("[a-c/{}%.]{0,4}", any::<bool>()), 1..5),
            key in "[a-c/{}%.]{0,6}",
            tail in "[a-c/]{0,3}",
        ) {
            let raw: Vec<String> = pats
                .iter()
                .map(|(p, star)| if *star { format!("{p}*") } else { p.clone() })
                .filter(|p| !p.is_empty())
                .collect();
            prop_assume!(!raw.is_empty());
            let g = grant(&raw.iter().map(String::as_str).collect::<Vec<_>>(), "bob");
            let model = raw.iter().any(|p| match p.strip_suffix('*') {
                Some(pre) => key.starts_with(pre),
                None => key == *p,
            });
            prop_assert_eq!(g.allows(Access::Read, &key), model);
            if g.allows_target(&Target::Prefix(key.as_str().into())) {
                let under = format!("{key}{tail}");
                prop_assert!(g.allows(Access::Read, &under), "{} under {}", under, key);
            }
        }
    }
}
