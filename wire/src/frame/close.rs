//! Close frames (RFC 6455 §5.5.1, §7.4): the status codes, and the validation of a
//! received close payload (empty, or a legal 2-byte code plus a UTF-8 reason).

use super::error::ProtocolError;

/// A close status code. Any `u16` can be represented; [`CloseCode::is_sendable`]
/// says whether it may appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, drain).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept (e.g. binary on a JSON connection).
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: closed without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: payload inconsistent with the message type (invalid UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: policy violation.
    pub const POLICY: Self = Self(1008);
    /// 1009: message too big.
    pub const TOO_BIG: Self = Self(1009);
    /// 1011: unexpected server condition.
    pub const INTERNAL: Self = Self(1011);
    /// 1012: service restart.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 4008 (Ringline): the client read too slowly and its outbound queue overflowed.
    pub const SLOW_CONSUMER: Self = Self(4008);
    /// 4401 (Ringline): the token of an `auth` message was refused (bad signature,
    /// wrong audience, expired, ...). Reconnecting with the same token will not help.
    pub const UNAUTHORIZED: Self = Self(4401);
    /// 4408 (Ringline): no `auth` message came within the authentication timeout of
    /// a connection that needs one. Reconnect and authenticate at once.
    pub const AUTH_TIMEOUT: Self = Self(4408);
    /// 4419 (Ringline): the connection's token expired without a refresh. Get a
    /// fresh token, then reconnect (this is not a reason to give up).
    pub const TOKEN_EXPIRED: Self = Self(4419);

    /// True for codes an endpoint may put in a close frame: 1000-1003, 1007-1014
    /// (IANA-registered), and 3000-4999 (registered and private use). 1004, 1005,
    /// 1006, 1015 and everything else are reserved or internal-only (§7.4.1, §7.4.2).
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A received close frame's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code.
    pub code: CloseCode,
    /// The UTF-8 reason (may be empty).
    pub reason: &'a str,
}

/// The longest reason that fits a control frame: 125 bytes minus the 2-byte code.
pub const MAX_REASON: usize = 123;

/// Validate a close payload: `Ok(None)` for an empty body, the code and reason otherwise.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload {
        [] => Ok(None),
        // §5.5.1: "If there is a body, the first two bytes of the body MUST be a
        // 2-byte unsigned integer (in network byte order) representing a status code"
        [_] => Err(ProtocolError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            // §5.5.1: the body after the code is UTF-8 encoded data.
            let reason = simdutf8::basic::from_utf8(reason)
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Write a close body (code + reason, the reason cut at a character boundary to fit
/// 123 bytes) into `out`; returns the body length.
pub fn write_close_payload(out: &mut Vec<u8>, code: CloseCode, reason: &str) -> usize {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    2 + end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_and_illegal_codes() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(parse_close_payload(&u16::to_be_bytes(ok)).is_ok(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                parse_close_payload(&u16::to_be_bytes(bad)),
                Err(ProtocolError::InvalidCloseCode(bad)),
                "{bad}"
            );
        }
    }

    #[test]
    fn body_shapes() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(parse_close_payload(&[3]), Err(ProtocolError::CloseTooShort));
        let f = parse_close_payload(b"\x03\xe8bye").unwrap().unwrap();
        assert_eq!((f.code, f.reason), (CloseCode::NORMAL, "bye"));
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xce\xba\xe1"),
            Err(ProtocolError::InvalidCloseReason)
        );
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        let n = write_close_payload(&mut out, CloseCode::GOING_AWAY, &reason);
        assert!(n <= 125);
        assert_eq!(n, out.len());
        assert!(parse_close_payload(&out).is_ok());
    }
}
