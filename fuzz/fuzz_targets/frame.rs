//! Arbitrary client bytes through the frame decoder, delivered in pieces chosen by the
//! input itself: never a panic, `Ok(None)` never consumes or alters the buffer, and the
//! same stream cut differently decodes to the same messages (or the same error).
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::frame::{Decoder, Incoming, Limits, ProtocolError};

#[derive(Debug, PartialEq)]
enum Got {
    Msg(Vec<u8>, bool),
    Close(Option<(u16, String)>),
}

fn run(stream: &[u8], step: usize, limits: Limits) -> (Vec<Got>, Option<ProtocolError>) {
    let mut d = Decoder::server(limits);
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
                        Incoming::Binary(b) | Incoming::Ping(b) | Incoming::Pong(b) => out.push(Got::Msg(b.to_vec(), false)),
                        Incoming::Close(c) => out.push(Got::Close(c.map(|c| (c.code.0, c.reason.to_owned())))),
                        Incoming::Fragment | Incoming::AfterClose => {}
                    }
                    pending.drain(..used);
                }
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else { return };
    let limits = Limits { max_frame: 4096, max_message: 8192 };
    let whole = run(stream, usize::MAX, limits);
    let cut = run(stream, usize::from(sel % 16) + 1, limits);
    // Fail-fast UTF-8 may report an error earlier when cut, but messages delivered
    // before it and the verdict itself match.
    assert_eq!(whole.0, cut.0);
    assert_eq!(whole.1.is_some(), cut.1.is_some());
});
