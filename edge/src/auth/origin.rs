//! The `Origin` allow-list of browser handshakes (against cross-site WebSocket
//! hijacking: a page on another site opening a WebSocket with the user's browser). A
//! pattern is an exact origin (`https://app.example.com`, port included if any) or a
//! subdomain wildcard (`https://*.example.com`, which matches `https://a.example.com`
//! and `https://a.b.example.com` but not `https://example.com`). Schemes and hosts
//! compare without regard to case, as RFC 6454 serializes them lower-case.

use std::fmt;

/// One allowed origin, or a family of them.
#[derive(Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// `https://`, lower-case.
    scheme: String,
    /// The host (and port), lower-case; after `*.` for a wildcard.
    host: String,
    wildcard: bool,
}

impl fmt::Debug for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        write!(f, "{}{star}{}", self.scheme, self.host)
    }
}

/// Why an allow-list entry does not parse (the edge does not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed origin {0:?}: expected scheme://host[:port] or scheme://*.domain")]
pub struct OriginPatternError(pub String);

impl OriginPattern {
    /// Parse `scheme://host[:port]` or `scheme://*.domain[:port]`.
    pub fn parse(pattern: &str) -> Result<Self, OriginPatternError> {
        let bad = || OriginPatternError(pattern.to_owned());
        let lower = pattern.trim().to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return Err(bad());
        }
        let (host, wildcard) = match rest.strip_prefix("*.") {
            Some(h) => (h, true),
            None => (rest, false),
        };
        let host_ok =
            !host.is_empty() && !host.contains(['*', '/', '?', '#', '@']) && !host.starts_with('.');
        if !host_ok {
            return Err(bad());
        }
        Ok(Self {
            scheme: format!("{scheme}://"),
            host: host.to_owned(),
            wildcard,
        })
    }

    /// Whether the `Origin` header value `origin` matches.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim();
        let Some(scheme) = origin.get(..self.scheme.len()) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        let host = &origin[self.scheme.len()..];
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.host);
        }
        // `*.example.com`: at least one label, then `.example.com`.
        let Some(cut) = host.len().checked_sub(self.host.len() + 1) else {
            return false;
        };
        cut > 0
            && host.get(cut..cut + 1) == Some(".")
            && host
                .get(cut + 1..)
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
    }
}

/// Whether a handshake with `origin` may go on: no list, no `Origin` header (not a
/// browser), or an origin the list allows.
pub fn allowed(list: &[OriginPattern], origin: Option<&str>) -> bool {
    match origin {
        _ if list.is_empty() => true,
        None => true,
        Some(o) => list.iter().any(|p| p.allows(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(patterns: &[&str]) -> Vec<OriginPattern> {
        patterns
            .iter()
            .map(|p| OriginPattern::parse(p).expect("parses"))
            .collect()
    }

    #[test]
    fn exact_origins_match_exactly_up_to_case() {
        let l = list(&["https://app.example.com", "http://localhost:3000"]);
        assert!(allowed(&l, Some("https://app.example.com")));
        assert!(allowed(&l, Some("HTTPS://App.Example.COM")));
        assert!(allowed(&l, Some("http://localhost:3000")));
        for o in [
            "http://app.example.com",       // another scheme
            "https://app.example.com:8443", // another port
            "https://app.example.com.evil.net",
            "https://evilapp.example.com",
            "https://app.example.co",
            "http://localhost:30000",
            "null", // sandboxed pages and file:// send this
            "",
        ] {
            assert!(!allowed(&l, Some(o)), "{o}");
        }
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let l = list(&["https://*.example.com"]);
        assert!(allowed(&l, Some("https://a.example.com")));
        assert!(allowed(&l, Some("https://a.b.example.com")));
        for o in [
            "https://example.com",        // no label before it
            "https://.example.com",       // an empty one
            "https://aexample.com",       // not a subdomain
            "https://a.example.com.evil", // a suffix after it
            "http://a.example.com",       // another scheme
            "https://a.example.com:444",  // another port
        ] {
            assert!(!allowed(&l, Some(o)), "{o}");
        }
    }

    #[test]
    fn without_a_list_or_an_origin_anything_goes() {
        assert!(allowed(&[], Some("https://evil.example.net")));
        assert!(allowed(&list(&["https://app.example.com"]), None));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "app.example.com",
            "https://",
            "https://*.",
            "https://a*.example.com",
            "https://app.example.com/path",
            "://x",
            "https://user@app.example.com",
        ] {
            assert!(OriginPattern::parse(p).is_err(), "{p}");
        }
    }
}
