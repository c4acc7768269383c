//! JSON output primitives: escaped strings, integers, and values (raw JSON or base64) written
//! straight into a byte buffer.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::IgnoredAny;

/// Whether `bytes` is one valid JSON value (UTF-8, optionally surrounded by whitespace),
/// i.e. whether it can be embedded in a JSON message as is.
#[must_use]
pub fn is_json(bytes: &[u8]) -> bool {
    // serde_json skips string contents without checking UTF-8, so check it first: a text
    // frame must be valid UTF-8.
    simdutf8::basic::from_utf8(bytes)
        .is_ok_and(|text| serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// Appends `s` as a JSON string literal (serde_json's escaping).
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `n` in decimal.
pub(super) fn uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends a value: its bytes verbatim when they are JSON, else `{"b64":"..."}`.
pub(super) fn value(out: &mut Vec<u8>, bytes: &[u8]) {
    if is_json(bytes) {
        out.extend_from_slice(bytes);
    } else {
        let mut b64 = String::with_capacity(bytes.len().div_ceil(3) * 4);
        STANDARD.encode_string(bytes, &mut b64);
        out.extend_from_slice(b"{\"b64\":\"");
        out.extend_from_slice(b64.as_bytes());
        out.extend_from_slice(b"\"}");
    }
}

/// Appends `{"op":"<op>","id":<id>`; the object is left open.
pub(super) fn head(out: &mut Vec<u8>, op: &str, id: u64) {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\",\"id\":");
    uint(out, id);
}

/// Appends `,"<name>":` (`name` is a field name literal, never escaped).
pub(super) fn name(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `,"<name>":"<escaped s>"`.
pub(super) fn str_field(out: &mut Vec<u8>, field: &str, s: &str) {
    name(out, field);
    string(out, s);
}

/// Appends `,"<name>":"<s>"` when `s` is present.
pub(super) fn opt_str_field(out: &mut Vec<u8>, field: &str, s: Option<&str>) {
    if let Some(s) = s {
        str_field(out, field, s);
    }
}

/// Appends `,"<name>":<n>`.
pub(super) fn uint_field(out: &mut Vec<u8>, field: &str, n: u64) {
    name(out, field);
    uint(out, n);
}

/// Appends `,"<name>":<value>`.
pub(super) fn value_field(out: &mut Vec<u8>, field: &str, bytes: &[u8]) {
    name(out, field);
    value(out, bytes);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn to_string(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_serde_json() {
        let s = "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}j\u{7f}ü€😀/";
        assert_eq!(
            to_string(|o| string(o, s)),
            serde_json::to_string(s).unwrap()
        );
    }

    #[test]
    fn integers() {
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(to_string(|o| uint(o, n)), n.to_string());
        }
    }

    #[test]
    fn values_are_raw_json_or_base64() {
        assert_eq!(to_string(|o| value(o, b"{\"a\":[1,2]}")), "{\"a\":[1,2]}");
        assert_eq!(to_string(|o| value(o, b"null")), "null");
        assert_eq!(to_string(|o| value(o, b"\"x\"")), "\"x\"");
        assert_eq!(to_string(|o| value(o, b"")), "{\"b64\":\"\"}");
        assert_eq!(to_string(|o| value(o, b"hi")), "{\"b64\":\"aGk=\"}");
        assert_eq!(to_string(|o| value(o, b"1 2")), "{\"b64\":\"MSAy\"}");
        // Invalid UTF-8 inside a JSON string is not JSON text.
        assert_eq!(to_string(|o| value(o, b"\"\xff\"")), "{\"b64\":\"Iv8i\"}");
    }

    proptest! {
        #[test]
        fn escaping_matches_serde_json(s in any::<String>()) {
            prop_assert_eq!(to_string(|o| string(o, &s)), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn integers_match_display(n in any::<u64>()) {
            prop_assert_eq!(to_string(|o| uint(o, n)), n.to_string());
        }

        #[test]
        fn written_values_are_always_json(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let out = to_string(|o| value(o, &bytes));
            prop_assert!(is_json(out.as_bytes()), "{}", out);
        }
    }
}
