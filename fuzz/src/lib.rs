//! The body of every fuzz target, one function per target, so that the targets
//! (`fuzz_targets/`, run by cargo-fuzz) and the seed replay (`tests/seeds.rs`, run by
//! `make test` on the stable toolchain) execute exactly the same checks. Each function
//! takes the fuzzer's bytes and panics on a broken property.

pub mod handshake {
    use wire::handshake::{HandshakeLimits, parse_request};

    /// Arbitrary request bytes, fed whole and cut in two: never a panic; a complete parse
    /// consumes no more than it was given; the verdict does not depend on the cut.
    pub fn run(data: &[u8]) {
        let limits = HandshakeLimits::default();
        let protos = ["ringline.v1.json", "ringline.v1.fb"];
        let whole = parse_request(data, &limits, &protos);
        if let Ok(Some((req, used))) = &whole {
            assert!(*used <= data.len());
            assert_eq!(req.rest.len(), data.len() - used);
            if let Some(ws) = &req.websocket {
                assert_eq!(ws.accept.as_str().len(), 28);
            }
            // Any prefix that ends before the head is complete needs more (or is refused
            // for size), never a different request.
            for cut in [used / 2, used.saturating_sub(1)] {
                if let Ok(Some((_, n))) = parse_request(&data[..cut], &limits, &protos) {
                    panic!(
                        "prefix of {cut} bytes parsed as a {n}-byte head before the {used}-byte one"
                    );
                }
            }
        }
        if let Err(e) = &whole {
            let mut out = Vec::new();
            e.write_response(&mut out);
            assert!(out.starts_with(b"HTTP/1.1 4"));
        }
    }
}

pub mod api_request {
    use wire::api::{call, parse_head, write_answer, write_error};
    use wire::client::Response;
    use wire::handshake::HandshakeLimits;

    /// Arbitrary bytes as HTTP API requests: never a panic; a head parsed whole is never
    /// parsed from a shorter prefix; each request maps to hub requests with consecutive
    /// ids or to a refusal whose answer is a 4xx; every answer is a valid HTTP response.
    pub fn run(data: &[u8]) {
        let limits = HandshakeLimits::default();
        match parse_head(data, &limits) {
            Ok(Some((head, used))) => {
                assert!(used <= data.len());
                if let Ok(Some((_, n))) = parse_head(&data[..used.saturating_sub(1)], &limits) {
                    panic!("a {n}-byte head inside the {used}-byte one");
                }
                let body = &data[used..data.len().min(used + head.content_length)];
                if let Ok(subs) = wire::api::sse::events_requests(&head) {
                    assert!((1..=wire::api::sse::MAX_STREAM_SUBS).contains(&subs.len()));
                    for (i, s) in subs.iter().enumerate() {
                        assert_eq!(s.id(), wire::api::sse::EVENTS_SUB + i as u64);
                    }
                }
                match call(&head, body, 1) {
                    Ok(c) => {
                        for (i, r) in c.requests().iter().enumerate() {
                            assert_eq!(r.id(), 1 + i as u64);
                            let answer = Response::Ok { id: r.id(), version: Some(1), token: None };
                            check_answer(|out| write_answer(out, &answer, true));
                        }
                    }
                    Err(e) => {
                        assert!((400..500).contains(&e.status().code()));
                        check_answer(|out| write_error(out, &e, head.keep_alive));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                assert!(e.closes());
                check_answer(|out| write_error(out, &e, true));
            }
        }
    }

    /// What `write` writes parses as one whole HTTP response whose body is JSON.
    fn check_answer(write: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        write(&mut out);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(&out) else {
            panic!("not an HTTP response: {:?}", String::from_utf8_lossy(&out));
        };
        assert!(serde_json::from_slice::<serde_json::Value>(&out[n..]).is_ok());
    }
}

pub mod frame {
    use wire::frame::deflate::{Inflater, inflate_message};
    use wire::frame::{Decoder, Incoming, Limits, ProtocolError};

    #[derive(Debug, PartialEq)]
    enum Got {
        Msg(Vec<u8>, bool),
        Close(Option<(u16, String)>),
    }

    fn decode_all(
        stream: &[u8],
        step: usize,
        limits: Limits,
        deflate: bool,
    ) -> (Vec<Got>, Option<ProtocolError>) {
        let mut d = Decoder::server(limits);
        if deflate {
            d.enable_deflate();
        }
        let mut inflater = Inflater::default();
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let end = (at + step).min(stream.len());
            pending.extend_from_slice(&stream[at..end]);
            at = end;
            loop {
                let before = pending.clone();
                let len = pending.len();
                match d.decode(&mut pending) {
                    Err(e) => return (out, Some(e)),
                    Ok(None) => {
                        assert_eq!(before, pending);
                        break;
                    }
                    Ok(Some((item, used))) => {
                        assert!(used > 0 && used <= len);
                        match item {
                            Incoming::Text(s) => out.push(Got::Msg(s.as_bytes().to_vec(), true)),
                            Incoming::Binary(b) | Incoming::Ping(b) | Incoming::Pong(b) => {
                                out.push(Got::Msg(b.to_vec(), false))
                            }
                            Incoming::Close(c) => {
                                out.push(Got::Close(c.map(|c| (c.code.0, c.reason.to_owned()))))
                            }
                            Incoming::Compressed { text, payload } => {
                                let mut m = Vec::new();
                                let max = limits.max_message;
                                if let Err(e) = inflate_message(&mut inflater, text, payload, max, &mut m) {
                                    return (out, Some(e));
                                }
                                assert!(m.len() <= max);
                                assert!(!text || std::str::from_utf8(&m).is_ok());
                                out.push(Got::Msg(m, text));
                            }
                            Incoming::Fragment | Incoming::AfterClose => {}
                        }
                        pending.drain(..used);
                    }
                }
            }
        }
        (out, None)
    }

    /// Arbitrary client bytes through the frame decoder, delivered in pieces chosen by the
    /// input itself: never a panic, `Ok(None)` never consumes or alters the buffer, and the
    /// same stream cut differently decodes to the same messages (or the same error).
    pub fn run(data: &[u8]) {
        let Some((&sel, stream)) = data.split_first() else {
            return;
        };
        let limits = Limits {
            max_frame: 4096,
            max_message: 8192,
        };
        // The top bit: permessage-deflate negotiated (compressed messages inflated).
        let deflate = sel & 0x80 != 0;
        let whole = decode_all(stream, usize::MAX, limits, deflate);
        let cut = decode_all(stream, usize::from(sel % 16) + 1, limits, deflate);
        // Fail-fast UTF-8 may report an error earlier when cut, but messages delivered
        // before it and the verdict itself match.
        assert_eq!(whole.0, cut.0);
        assert_eq!(whole.1.is_some(), cut.1.is_some());
    }
}

pub mod link_frame {
    use wire::link::{HEADER_LEN, LinkLimits, decode_frame, encode_frame};

    /// Arbitrary link bytes: never a panic; `Ok(None)` only for a strict prefix of a
    /// possible frame; a decoded frame re-encodes to exactly the bytes it came from.
    pub fn run(data: &[u8]) {
        let limits = LinkLimits {
            max_frame: 1 << 16,
            ..LinkLimits::default()
        };
        match decode_frame(data, &limits) {
            Ok(Some((frame, used))) => {
                assert!(used >= HEADER_LEN && used <= data.len());
                let mut again = Vec::new();
                encode_frame(
                    &mut again,
                    frame.message.kind(),
                    frame.flags,
                    frame.request_id,
                    &data[HEADER_LEN..used],
                    limits.max_frame,
                )
                .expect("a decoded frame fits the limit it was decoded under");
                assert_eq!(again, &data[..used]);
                // Every strict prefix needs more.
                assert!(matches!(decode_frame(&data[..used - 1], &limits), Ok(None)));
            }
            Ok(None) => {}
            Err(_) => {}
        }
    }
}

pub mod client_json {
    use wire::client::{fb, json};

    /// Arbitrary text through the JSON client codec (requests and responses): never a
    /// panic; whatever decodes re-encodes (JSON, and flatbuffers) to an equal value.
    pub fn run(data: &[u8]) {
        if let Ok(req) = json::decode_request(data) {
            let mut out = Vec::new();
            json::encode_request(&req, &mut out);
            assert_eq!(
                json::decode_request(&out).as_ref(),
                Ok(&req),
                "json re-encode: {}",
                String::from_utf8_lossy(&out)
            );
            out.clear();
            fb::encode_request(&req, &mut out);
            assert_eq!(fb::decode_request(&out).as_ref(), Ok(&req), "fb encode");
        }
        if let Ok(resp) = json::decode_response(data) {
            let mut out = Vec::new();
            json::encode_response(&resp, &mut out);
            assert_eq!(
                json::decode_response(&out).as_ref(),
                Ok(&resp),
                "json re-encode: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }
}

pub mod client_fb {
    use wire::client::fb;

    /// Arbitrary bytes through the flatbuffers client codec (requests and responses):
    /// never a panic (the verifier runs before any field is read); whatever decodes
    /// re-encodes to an equal value.
    pub fn run(data: &[u8]) {
        if let Ok(req) = fb::decode_request(data) {
            let mut out = Vec::new();
            fb::encode_request(&req, &mut out);
            assert_eq!(fb::decode_request(&out).as_ref(), Ok(&req));
        }
        if let Ok(resp) = fb::decode_response(data) {
            let mut out = Vec::new();
            fb::encode_response(&resp, &mut out);
            assert_eq!(fb::decode_response(&out).as_ref(), Ok(&resp));
        }
    }
}

pub mod token {
    use wire::client::{decode_token, encode_token};

    /// Arbitrary strings as resume tokens (they come back from clients): never a panic;
    /// whatever decodes re-encodes to the same positions.
    pub fn run(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(positions) = decode_token(text) {
            let again = encode_token(&positions);
            assert_eq!(decode_token(&again).as_ref(), Ok(&positions));
        }
    }
}

// The edge's permission patterns and token verification, compiled from the edge's
// own source files (the edge is a binary with no library to link against). At the
// crate root, where `token.rs` finds `super::grant`.
#[path = "../../edge/src/auth/grant.rs"]
#[allow(dead_code)]
pub mod grant;
#[path = "../../edge/src/auth/token.rs"]
#[allow(dead_code)]
pub mod jwt;

pub mod auth_message {
    use std::sync::OnceLock;

    use jsonwebtoken::{Algorithm, EncodingKey};
    use wire::client::{Request, fb, json};

    use crate::jwt::Verifier;

    /// The HS256 secret of this target (fuzzing only).
    const SECRET: &[u8] = b"the fuzz target's own secret, 32 bytes or more";

    fn verifier() -> &'static Verifier {
        static V: OnceLock<Verifier> = OnceLock::new();
        V.get_or_init(|| {
            Verifier::with_secret(SECRET)
                .expect("a 32-byte secret")
                .audience(Some("ringline".into()))
        })
    }

    /// Arbitrary bytes as an `auth` message (JSON and flatbuffers) and as a bare token:
    /// never a panic, and nothing the fuzzer makes up is accepted (it cannot sign).
    /// Then the same bytes as a token's claims, signed with the target's secret so that
    /// they reach the claim checks and the grant compiler: never a panic; whatever is
    /// accepted has an `exp` in the future (with the skew), the configured audience,
    /// and a grant that compiled for its subject.
    pub fn run(data: &[u8]) {
        let v = verifier();
        for token in [json::decode_request(data).ok(), fb::decode_request(data).ok()]
            .into_iter()
            .flatten()
            .filter_map(|r| match r {
                Request::Auth { token, .. } => Some(token),
                _ => None,
            })
        {
            assert!(v.verify(&token).is_err(), "an unsigned token was accepted");
        }
        if let Ok(text) = std::str::from_utf8(data) {
            assert!(v.verify(text).is_err(), "an unsigned token was accepted");
        }
        // Signed claims: the header is fixed, the payload is the fuzzer's.
        let key = EncodingKey::from_secret(SECRET).expect("key");
        let b64 = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        let message = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(data));
        let Ok(sig) = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256)
        else {
            return;
        };
        if let Ok(id) = v.verify(&format!("{message}.{sig}")) {
            let now = jsonwebtoken::get_current_timestamp();
            assert!(id.expires + 30 >= now, "an expired token was accepted");
            // Read as the verifier reads it: fields it does not know are skipped
            // (unchecked, so they may even hold invalid UTF-8).
            #[derive(serde::Deserialize)]
            struct Aud {
                #[serde(default)]
                aud: serde_json::Value,
            }
            let claims: Aud = serde_json::from_slice(data).expect("claims parsed");
            let ours = |a: &serde_json::Value| a == "ringline";
            let aud = &claims.aud;
            assert!(
                ours(aud) || aud.as_array().is_some_and(|a| a.iter().any(ours)),
                "accepted for another audience: {aud}"
            );
        }
    }
}

pub mod patterns {
    use wire::client::Target;

    use crate::grant::{Access, Grant, GrantSpec};

    /// Arbitrary bytes as a subject and read/write/publish/presence patterns (lines; the first
    /// is the subject, then a line `--` between the lists), compiled: never a panic;
    /// a grant that compiled allows each exact pattern's own key (the subject in
    /// place of `{sub}`), each prefix pattern's keys and prefixes, and nothing in a
    /// list it has no pattern for.
    pub fn run(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let mut lines = text.split('\n');
        let subject = lines.next().unwrap_or_default();
        let mut lists: [Vec<String>; 4] = Default::default();
        let mut at = 0;
        for l in lines {
            if l == "--" {
                at = (at + 1).min(3);
            } else if let Some(list) = lists.get_mut(at) {
                list.push(l.to_owned());
            }
        }
        let [read, write, publish, presence] = lists;
        let spec = GrantSpec {
            read,
            write,
            publish,
            presence,
        };
        let Ok(grant) = Grant::compile(&spec, subject) else {
            return;
        };
        for (access, list) in [
            (Access::Read, &spec.read),
            (Access::Write, &spec.write),
            (Access::Publish, &spec.publish),
            (Access::Presence, &spec.presence),
        ] {
            for p in list {
                let key = p.replace("{sub}", subject);
                match key.strip_suffix('*') {
                    Some(prefix) => {
                        let below = format!("{prefix}x/y");
                        assert!(grant.allows(access, &below), "{p:?} {below:?}");
                        if access == Access::Read {
                            let t = Target::Prefix(format!("{prefix}z").into());
                            assert!(grant.allows_target(&t), "{p:?}");
                        }
                    }
                    None => assert!(grant.allows(access, &key), "{p:?} {key:?}"),
                }
            }
            if list.is_empty() {
                assert!(!grant.allows(access, "any/key"), "{access:?} with no patterns");
            }
        }
    }
}

pub mod proxy {
    use wire::proxy::parse_proxy_header;

    /// Arbitrary bytes as a balancer's PROXY header: never a panic; a header found
    /// claims no more than it was given, and every strict prefix of it needs more
    /// (the decoder contract: `Ok(None)` until whole, nothing consumed).
    pub fn run(data: &[u8]) {
        if let Ok(Some((header, used))) = parse_proxy_header(data) {
            assert!(used <= data.len());
            for cut in 0..used {
                let part = data.get(..cut).unwrap_or_default();
                assert_eq!(parse_proxy_header(part), Ok(None), "cut {cut} of {used}");
            }
            assert_eq!(
                parse_proxy_header(data.get(..used).unwrap_or_default()),
                Ok(Some((header, used)))
            );
        }
    }
}
