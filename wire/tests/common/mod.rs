//! Shared test driver: feeds a byte stream to a decoder in arbitrary pieces, the way
//! a socket would deliver it, and collects owned results.
#![allow(dead_code)]

use wire::frame::{Decoder, Incoming, ProtocolError};

/// An owned copy of [`Incoming`] (fragments are not reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// A compressed message, as sent (text if true).
    Compressed(bool, Vec<u8>),
}

/// Feed `stream` cut at `cuts` (sorted, any values) and decode everything.
pub fn feed(
    decoder: &mut Decoder,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<Got>, ProtocolError> {
    let mut pending: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    for end in ends {
        if end < start {
            continue;
        }
        pending.extend_from_slice(&stream[start..end]);
        start = end;
        loop {
            let before = pending.clone();
            match decoder.decode(&mut pending)? {
                None => {
                    assert_eq!(pending, before, "Ok(None) must leave the buffer untouched");
                    break;
                }
                Some((item, used)) => {
                    assert!(used > 0);
                    let got = match item {
                        Incoming::Text(s) => Some(Got::Text(s.to_owned())),
                        Incoming::Binary(b) => Some(Got::Binary(b.to_vec())),
                        Incoming::Ping(b) => Some(Got::Ping(b.to_vec())),
                        Incoming::Pong(b) => Some(Got::Pong(b.to_vec())),
                        Incoming::Close(c) => {
                            Some(Got::Close(c.map(|c| (c.code.0, c.reason.to_owned()))))
                        }
                        Incoming::Fragment | Incoming::AfterClose => None,
                        Incoming::Compressed { text, payload } => {
                            Some(Got::Compressed(text, payload.to_vec()))
                        }
                    };
                    out.extend(got);
                    pending.drain(..used);
                }
            }
        }
    }
    Ok(out)
}
