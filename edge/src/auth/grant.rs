//! Permissions: which keys a connection may read (`get`, `sub`), write (`put`, `del`)
//! and publish to (`pub`), and which channels' presence it may join and see (`join`,
//! `presence`, a presence `sub`). A [`Grant`] comes from the patterns of a token's claim:
//! each pattern is an exact key, or a prefix ending in `*`, and `{sub}` stands for the
//! token's subject. The patterns are compiled once per distinct claim on each worker
//! and shared (a connection holds a pointer to them and its subject, which is matched
//! in place of `{sub}` without building the key). Keys are compared byte for byte, exactly as the
//! store will see them: nothing is decoded or normalised (no percent-decoding, no
//! `..`, no Unicode folding, hash-tag braces are plain bytes), so no spelling of a key
//! can reach past what its bytes say.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Weak};

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
    /// `join`, `presence` and a presence `sub`, on a channel.
    Presence,
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

/// One compiled pattern: its literal pieces, with the subject standing between each
/// two (`user/{sub}/*` is `["user/", "/"]`, a prefix).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Pattern {
    pieces: Box<[Box<[u8]>]>,
    prefix: bool,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                f.write_str(SUBJECT)?;
            }
            f.write_str(&String::from_utf8_lossy(piece))?;
        }
        if self.prefix {
            f.write_str("*")
        } else {
            Ok(())
        }
    }
}

impl Pattern {
    fn compile(pattern: &str) -> Result<Self, PatternError> {
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
        let pieces = body
            .split(SUBJECT)
            .map(|p| p.as_bytes().to_vec().into_boxed_slice())
            .collect();
        Ok(Self { pieces, prefix })
    }

    /// Whether it was compiled from `source`.
    fn is_from(&self, source: &str) -> bool {
        let Some(mut rest) = (match source.strip_suffix('*') {
            Some(body) if self.prefix => Some(body.as_bytes()),
            None if !self.prefix => Some(source.as_bytes()),
            _ => None,
        }) else {
            return false;
        };
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                let Some(r) = rest.strip_prefix(SUBJECT.as_bytes()) else {
                    return false;
                };
                rest = r;
            }
            let Some(r) = rest.strip_prefix(&piece[..]) else {
                return false;
            };
            rest = r;
        }
        rest.is_empty()
    }

    /// Whether the subject stands in it.
    fn uses_subject(&self) -> bool {
        self.pieces.len() > 1
    }

    /// Its length once `subject` stands in.
    fn len_with(&self, subject: &str) -> usize {
        let literal: usize = self.pieces.iter().map(|p| p.len()).sum();
        literal + (self.pieces.len() - 1) * subject.len()
    }

    /// What is left of `key` after this pattern's bytes (with `subject` in place),
    /// if `key` starts with them.
    fn strip<'k>(&self, key: &'k [u8], subject: &[u8]) -> Option<&'k [u8]> {
        let mut rest = key;
        for (i, piece) in self.pieces.iter().enumerate() {
            if i > 0 {
                rest = rest.strip_prefix(subject)?;
            }
            rest = rest.strip_prefix(&piece[..])?;
        }
        Some(rest)
    }

    /// Whether `key` matches.
    fn allows_key(&self, key: &[u8], subject: &[u8]) -> bool {
        match self.strip(key, subject) {
            Some(rest) => self.prefix || rest.is_empty(),
            None => false,
        }
    }

    /// Whether every key starting with `prefix` matches.
    fn covers_prefix(&self, prefix: &[u8], subject: &[u8]) -> bool {
        self.prefix && self.strip(prefix, subject).is_some()
    }
}

/// One access kind's patterns; past [`INDEXED`] of them, found through an [`Index`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Patterns {
    list: Vec<Pattern>,
    index: Option<Index>,
}

/// Lists longer than this are indexed (shorter ones are scanned faster than walked).
const INDEXED: usize = 16;

impl Patterns {
    fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError::TooMany(patterns.len()));
        }
        let list = patterns
            .iter()
            .map(|p| Pattern::compile(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let index = (list.len() > INDEXED).then(|| Index::build(&list));
        Ok(Self { list, index })
    }

    /// Whether any pattern that could match `key` (all of them, or those the index
    /// finds) satisfies `f`.
    fn any(&self, key: &[u8], f: impl Fn(&Pattern) -> bool) -> bool {
        match &self.index {
            None => self.list.iter().any(f),
            Some(ix) => ix.any(key, |i| self.list.get(i).is_some_and(&f)),
        }
    }

    fn allows_key(&self, key: &[u8], subject: &[u8]) -> bool {
        self.any(key, |p| p.allows_key(key, subject))
    }

    fn covers_prefix(&self, prefix: &[u8], subject: &[u8]) -> bool {
        self.any(prefix, |p| p.covers_prefix(prefix, subject))
    }
}

/// Patterns by their first piece: a byte trie over the first pieces, so that a key
/// meets only the patterns whose first piece it starts with (which every pattern that
/// matches it does), and a grant of hundreds of patterns is not scanned whole. Built
/// once per template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Index {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Node {
    /// Children by byte, sorted.
    next: Vec<(u8, u32)>,
    /// The patterns whose first piece ends here.
    here: Vec<u16>,
}

impl Index {
    fn build(list: &[Pattern]) -> Self {
        let mut nodes = vec![Node::default()];
        for (i, p) in list.iter().enumerate() {
            let first = p.pieces.first().map_or(&[][..], |x| &x[..]);
            let mut at = 0;
            for &b in first {
                let id = nodes.len();
                let Some(node) = nodes.get_mut(at) else { break };
                at = match node.next.binary_search_by_key(&b, |e| e.0) {
                    Ok(k) => node.next.get(k).map_or(0, |e| e.1 as usize),
                    Err(k) => {
                        node.next.insert(k, (b, id as u32));
                        nodes.push(Node::default());
                        id
                    }
                };
            }
            if let Some(node) = nodes.get_mut(at) {
                node.here.push(i as u16);
            }
        }
        Self { nodes }
    }

    /// Whether `f` holds for a pattern whose first piece `key` starts with.
    fn any(&self, key: &[u8], f: impl Fn(usize) -> bool) -> bool {
        let mut at = 0;
        for i in 0..=key.len() {
            let Some(node) = self.nodes.get(at) else {
                return false;
            };
            if node.here.iter().any(|&p| f(usize::from(p))) {
                return true;
            }
            let Some(&b) = key.get(i) else {
                return false;
            };
            match node.next.binary_search_by_key(&b, |e| e.0) {
                Ok(k) => at = node.next.get(k).map_or(usize::MAX, |e| e.1 as usize),
                Err(_) => return false,
            }
        }
        false
    }
}

/// The patterns of a grant before compiling, as a token's claim lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct GrantSpec {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub publish: Vec<String>,
    pub presence: Vec<String>,
}

/// A grant's patterns with `{sub}` still in them: compiled once per distinct claim and
/// shared by every connection whose token carries the same lists (see [`templates`]).
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct Template {
    read: Patterns,
    write: Patterns,
    publish: Patterns,
    presence: Patterns,
}

impl Template {
    fn compile(spec: &GrantSpec) -> Result<Self, PatternError> {
        Ok(Self {
            read: Patterns::compile(&spec.read)?,
            write: Patterns::compile(&spec.write)?,
            publish: Patterns::compile(&spec.publish)?,
            presence: Patterns::compile(&spec.presence)?,
        })
    }

    fn all(&self) -> impl Iterator<Item = &Pattern> {
        self.read
            .list
            .iter()
            .chain(&self.write.list)
            .chain(&self.publish.list)
            .chain(&self.presence.list)
    }

    /// Whether it was compiled from `spec`.
    fn is_from(&self, spec: &GrantSpec) -> bool {
        let same = |ps: &Patterns, src: &[String]| {
            ps.list.len() == src.len() && ps.list.iter().zip(src).all(|(p, s)| p.is_from(s))
        };
        same(&self.read, &spec.read)
            && same(&self.write, &spec.write)
            && same(&self.publish, &spec.publish)
            && same(&self.presence, &spec.presence)
    }
}

/// This thread's templates by claim, so that the connections of one worker whose
/// tokens list the same patterns share one compiled copy (held weakly: the last
/// connection using one frees it). Keyed by the claim's hash only (a copy of every
/// claim would cost more than it saves when claims differ); a hit is checked against
/// the claim before it is used.
fn templates(spec: &GrantSpec) -> Result<Arc<Template>, PatternError> {
    thread_local! {
        static CACHE: RefCell<(RandomState, HashMap<u64, Weak<Template>>)> = RefCell::default();
    }
    CACHE.with_borrow_mut(|(hasher, cache)| {
        let h = hasher.hash_one(spec);
        if let Some(t) = cache.get(&h).and_then(Weak::upgrade)
            && t.is_from(spec)
        {
            return Ok(t);
        }
        let t = Arc::new(Template::compile(spec)?);
        // Forget dead entries now and then (when the map has doubled).
        if cache.len() >= 64 && cache.len().is_power_of_two() {
            cache.retain(|_, w| w.strong_count() > 0);
        }
        cache.insert(h, Arc::downgrade(&t));
        Ok(t)
    })
}

/// What one connection may touch: its claim's shared patterns, and its subject (put in
/// place of `{sub}`; empty for the anonymous grant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    template: Arc<Template>,
    subject: Box<str>,
}

impl Grant {
    /// Compile `spec` for `subject` (the token's `sub`, empty if anonymous).
    pub fn compile(spec: &GrantSpec, subject: &str) -> Result<Self, PatternError> {
        let template = templates(spec)?;
        let uses_subject = template.all().any(Pattern::uses_subject);
        if uses_subject && (subject.is_empty() || subject.contains(['*', '{', '}'])) {
            return Err(PatternError::BadSubject);
        }
        if let Some(len) = template
            .all()
            .map(|p| p.len_with(subject))
            .find(|&len| len > MAX_PATTERN_LEN)
        {
            return Err(PatternError::TooLong(len));
        }
        Ok(Self {
            template,
            subject: subject.into(),
        })
    }

    /// The subject it was compiled for.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn patterns(&self, access: Access) -> &Patterns {
        let t = &*self.template;
        match access {
            Access::Read => &t.read,
            Access::Write => &t.write,
            Access::Publish => &t.publish,
            Access::Presence => &t.presence,
        }
    }

    /// Whether `access` to `key` is granted.
    pub fn allows(&self, access: Access, key: &str) -> bool {
        self.patterns(access)
            .allows_key(key.as_bytes(), self.subject.as_bytes())
    }

    /// Whether `req` is granted (an `unsub` or a `leave` always is: it only gives up
    /// what was granted; so is `auth`, which touches no key).
    pub fn permits(&self, req: &Request<'_>) -> bool {
        match req {
            Request::Sub { target, .. } => self.allows_target(target),
            // An ack touches only the connection's own durable subscription.
            Request::Unsub { .. }
            | Request::Auth { .. }
            | Request::Ack { .. }
            | Request::Leave { .. } => true,
            Request::Join { channel, .. } | Request::Presence { channel, .. } => {
                self.allows(Access::Presence, channel)
            }
            Request::Get { key, .. } => self.allows(Access::Read, key),
            Request::Put { key, .. } | Request::Del { key, .. } => self.allows(Access::Write, key),
            Request::Pub { key, .. } => self.allows(Access::Publish, key),
        }
    }

    /// Whether a subscription to `target` is granted: a key if it is readable (a user's
    /// own inbox always is), a prefix only if every key under it is.
    pub fn allows_target(&self, target: &Target<'_>) -> bool {
        let (read, subject) = (&self.template.read, self.subject.as_bytes());
        match target {
            Target::Key(k)
                if !self.subject.is_empty() && **k == wire::client::inbox_key(&self.subject) =>
            {
                true
            }
            Target::Key(k) => read.allows_key(k.as_bytes(), subject),
            Target::Prefix(p) => read.covers_prefix(p.as_bytes(), subject),
            Target::Presence(c) => self.allows(Access::Presence, c),
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

    #[test]
    fn the_same_claim_shares_one_compiled_template_and_no_other_does() {
        let spec = |read: &[&str]| GrantSpec {
            read: read.iter().map(|s| (*s).to_owned()).collect(),
            ..GrantSpec::default()
        };
        let bob = Grant::compile(&spec(&["user/{sub}/*", "news"]), "bob").expect("compiles");
        let ann = Grant::compile(&spec(&["user/{sub}/*", "news"]), "ann").expect("compiles");
        assert!(Arc::ptr_eq(&bob.template, &ann.template));
        assert!(bob.allows(Access::Read, "user/bob/x") && !bob.allows(Access::Read, "user/ann/x"));
        assert!(ann.allows(Access::Read, "user/ann/x") && !ann.allows(Access::Read, "user/bob/x"));
        let other = Grant::compile(&spec(&["user/{sub}/*", "news*"]), "bob").expect("compiles");
        assert!(!Arc::ptr_eq(&bob.template, &other.template));
        assert!(other.allows(Access::Read, "newsroom") && !bob.allows(Access::Read, "newsroom"));
        // The subject is kept whether or not a pattern uses it (a refresh compares it).
        let plain = Grant::compile(&spec(&["news"]), "bob").expect("compiles");
        assert_eq!(plain.subject(), "bob");
        // A claim whose template is gone compiles afresh.
        drop((bob, ann));
        let again = Grant::compile(&spec(&["user/{sub}/*", "news"]), "eve").expect("compiles");
        assert!(again.allows(Access::Read, "user/eve/1"));
        for (src, ok) in [
            ("user/{sub}/*", true),
            ("user/{sub}/", false),
            ("user/x/*", false),
        ] {
            let p = Pattern::compile("user/{sub}/*").expect("compiles");
            assert_eq!(p.is_from(src), ok, "{src}");
        }
    }

    proptest! {
        /// A long list is looked up through its index; the answer is the one a scan
        /// of every pattern gives, for keys and prefixes alike.
        #[test]
        fn the_index_finds_what_a_scan_finds(
            patterns in proptest::collection::vec("[ab/]{0,4}(\\{sub\\}[ab/]{0,3})?\\*?", 17..40),
            keys in proptest::collection::vec("[ab/s]{0,9}", 1..20),
        ) {
            let patterns: Vec<String> = patterns.into_iter().filter(|p| !p.is_empty() && !p.contains("{sub}*")).collect();
            let Ok(indexed) = Patterns::compile(&patterns) else { return Ok(()) };
            let scanned = Patterns { list: indexed.list.clone(), index: None };
            prop_assert_eq!(indexed.index.is_some(), patterns.len() > INDEXED);
            for k in &keys {
                let k = k.as_bytes();
                prop_assert_eq!(indexed.allows_key(k, b"s"), scanned.allows_key(k, b"s"));
                prop_assert_eq!(indexed.covers_prefix(k, b"s"), scanned.covers_prefix(k, b"s"));
            }
        }
    }
}
