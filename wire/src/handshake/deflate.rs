//! `permessage-deflate` negotiation (RFC 7692 §5, §7): the `Sec-WebSocket-Extensions`
//! offers of an upgrade request flow in, with what the server allows; the one
//! configuration accepted (the first offer the server can honour) and the exact
//! response header value flow out, or nothing (every offer declined: the connection
//! goes on uncompressed).
//!
//! The server compresses each message on its own, without context takeover (one
//! compression shared by every subscriber of a change), and asks the client to do the
//! same, so that neither side keeps a compression window per connection: the response
//! always carries `server_no_context_takeover` and `client_no_context_takeover`. An
//! offer limiting the server's window (`server_max_window_bits`) is honoured down to 9
//! bits and echoed; 8 cannot be (zlib's raw deflate uses 9 for 8) and is declined.

/// The window the server's compressor uses unless an offer limits it, in bits (RFC
/// 1951's 32 KiB).
pub const SERVER_WINDOW_BITS: u8 = 15;
/// The smallest window the server can limit its compressor to.
pub const MIN_SERVER_WINDOW_BITS: u8 = 9;

/// What the server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Compression is offered at all.
    pub enabled: bool,
}

/// The configuration agreed for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The largest window the client may compress with, in bits (15 unless it offered
    /// less).
    pub client_window_bits: u8,
    /// The window the server compresses with, in bits: 15, or what the offer limited
    /// it to (9 to 15).
    pub server_window_bits: u8,
    /// The offer limited the server's window: the response says so (§7.1.2.1: "by
    /// including the server_max_window_bits extension parameter in the extension
    /// negotiation response").
    pub server_window_echo: bool,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the response.
    #[must_use]
    pub fn response(&self) -> String {
        let mut r =
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_owned();
        if self.server_window_echo {
            r.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        r
    }
}

/// The parameters of one offer, each at most once (RFC 7692 §7: a repeated parameter
/// declines the offer).
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `server_max_window_bits=N`.
    server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` (`Some(None)`: without a value).
    client_max_window_bits: Option<Option<u8>>,
}

/// A window size parameter's value: 8 to 15, as a token or a quoted string (RFC 7692
/// §7.1.2.1: "value ... MUST conform to the ABNF ... 1*DIGIT" within 8..15).
fn window_bits(value: &str) -> Option<u8> {
    let v = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 2 {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// The parameters after `permessage-deflate` in one offer; `None` declines it.
fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<Offer> {
    let mut o = Offer::default();
    for p in params.map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            // RFC 7692 §7: "contains multiple extension parameters with the same name"
            // and "an extension parameter with an invalid value" decline the offer.
            ("server_no_context_takeover", None) if !o.server_no_context_takeover => {
                o.server_no_context_takeover = true;
            }
            ("client_no_context_takeover", None) if !o.client_no_context_takeover => {
                o.client_no_context_takeover = true;
            }
            ("server_max_window_bits", Some(v)) if o.server_max_window_bits.is_none() => {
                o.server_max_window_bits = Some(window_bits(v)?);
            }
            ("client_max_window_bits", v) if o.client_max_window_bits.is_none() => {
                o.client_max_window_bits = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
            }
            // "contains an extension parameter not defined for use in an offer".
            _ => return None,
        }
    }
    Some(o)
}

/// The configuration to accept from the `Sec-WebSocket-Extensions` header `offers`
/// (every occurrence joined by commas), or `None`: no acceptable offer, or compression
/// is off. Offers of other extensions are passed over.
#[must_use]
pub fn negotiate(offers: Option<&str>, policy: DeflatePolicy) -> Option<Deflate> {
    if !policy.enabled {
        return None;
    }
    for ext in offers?.split(',') {
        let mut parts = ext.split(';');
        let name = parts.next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("permessage-deflate") {
            continue;
        }
        let Some(offer) = parse_offer(parts) else {
            continue;
        };
        // A window below 9 bits cannot be honoured (§7.1.2.1: the server "MUST
        // decline" what it cannot do).
        if offer
            .server_max_window_bits
            .is_some_and(|b| b < MIN_SERVER_WINDOW_BITS)
        {
            continue;
        }
        let client_window_bits = offer.client_max_window_bits.flatten().unwrap_or(15);
        return Some(Deflate {
            client_window_bits,
            server_window_bits: offer.server_max_window_bits.unwrap_or(SERVER_WINDOW_BITS),
            server_window_echo: offer.server_max_window_bits.is_some(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: DeflatePolicy = DeflatePolicy { enabled: true };

    fn accepts(offers: &str) -> Option<u8> {
        negotiate(Some(offers), ON).map(|d| d.client_window_bits)
    }

    #[test]
    fn what_browsers_offer_is_accepted_without_context_takeover() {
        // Chromium and Firefox.
        assert_eq!(
            accepts("permessage-deflate; client_max_window_bits"),
            Some(15)
        );
        assert_eq!(accepts("permessage-deflate"), Some(15));
        assert_eq!(
            negotiate(Some("permessage-deflate"), ON)
                .map(|d| d.response())
                .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        // Python websockets' default offer.
        assert_eq!(
            accepts("permessage-deflate; client_max_window_bits"),
            Some(15)
        );
        // Node ws's default offer.
        assert_eq!(
            accepts("permessage-deflate; client_max_window_bits=15"),
            Some(15)
        );
        assert_eq!(
            accepts(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=\"10\""
            ),
            Some(10)
        );
    }

    #[test]
    fn offers_that_cannot_be_honoured_or_are_malformed_are_declined() {
        // RFC 7692 §7: each of these declines its offer.
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown_param",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(accepts(bad), None, "{bad}");
        }
        // The first offer the server can honour is the one accepted.
        assert_eq!(
            accepts(
                "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=12"
            ),
            Some(12)
        );
        // A smaller window is honoured, and echoed.
        let d = negotiate(Some("permessage-deflate; server_max_window_bits=9"), ON);
        assert_eq!(d.map(|d| d.server_window_bits), Some(9));
        assert!(d.is_some_and(|d| d.response().ends_with("; server_max_window_bits=9")));
        assert_eq!(accepts("x-foo, permessage-deflate"), Some(15));
        // A limit the server meets is accepted and answered.
        let d = negotiate(Some("permessage-deflate; server_max_window_bits=15"), ON);
        assert!(d.is_some_and(|d| d.response().ends_with("; server_max_window_bits=15")));
        assert_eq!(negotiate(None, ON), None);
        assert_eq!(
            negotiate(Some("permessage-deflate"), DeflatePolicy { enabled: false }),
            None
        );
    }
}
