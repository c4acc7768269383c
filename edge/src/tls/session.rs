//! One TLS session as a sans-IO record layer, on rustls's unbuffered API (the caller
//! holds the buffers, so an idle session holds none): a connection's, server side
//! ([`worker::conn`](crate::worker::conn)), or a store link's, client side
//! ([`worker::link`](crate::worker::link)). Ciphertext from a receive comes in through
//! [`Tls::handle_ciphertext`]: complete records are opened in place in the receive
//! buffer and their plaintext comes out; the bytes of a record not yet complete are
//! kept (and released once it completes). Handshake records and alerts are sealed as
//! they come; the owner's frames are sealed by [`Tls::seal`] once the handshake is
//! done; all of it leaves through [`Tls::take_sealed`] as the chunks of one send, and
//! what a send did not take comes back through [`Tls::handle_sent`] to go first in the
//! next. Closing seals a `close_notify` after the last frame.

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use crate::uring::Chunk;

/// Either end of rustls's unbuffered API: a server session or a client session.
pub trait Endpoint {
    /// The side's connection data.
    type Data;

    /// Process the records at the front of `buf` until a new state is reached.
    fn process<'c, 'i>(&'c mut self, buf: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;

    /// Whether the handshake is still going on.
    fn handshaking(&self) -> bool;

    /// Whether the handshake resumed an earlier session.
    fn resumed(&self) -> bool;
}

/// `Endpoint` for a rustls unbuffered connection type: the same three calls on either
/// side.
macro_rules! endpoint {
    ($conn:ty, $data:ty) => {
        impl Endpoint for $conn {
            type Data = $data;

            fn process<'c, 'i>(
                &'c mut self,
                buf: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(buf)
            }

            fn handshaking(&self) -> bool {
                self.is_handshaking()
            }

            fn resumed(&self) -> bool {
                self.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
            }
        }
    };
}

endpoint!(UnbufferedServerConnection, ServerConnectionData);
endpoint!(UnbufferedClientConnection, ClientConnectionData);

/// Most ciphertext held for records not yet complete: a handshake message may span
/// records up to 64 KiB (rustls's own limit), plus one record.
const MAX_INCOMING: usize = 64 * 1024 + 16 * 1024 + 256;

/// Room for a record's header, tag and padding, per 16 KiB of plaintext.
const RECORD_OVERHEAD: usize = 64;

/// Where the session's `close_notify` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notify {
    /// Not asked for.
    No,
    /// To be sealed after the last frame queued.
    Wanted,
    /// Sealed (or there is no session left to seal it in).
    Done,
}

/// One TLS session (a server's for a connection, a client's for a link).
pub struct Tls<E> {
    session: E,
    /// Ciphertext of records not yet complete; empty (no allocation) between records.
    incoming: Vec<u8>,
    /// Ciphertext ready to send, in order: what the last send did not take, then
    /// handshake records and sealed frames.
    sealed: Vec<Chunk>,
    notify: Notify,
    /// The peer's `close_notify` arrived (reported once).
    peer_closed: bool,
    /// It failed: rustls is not asked anything more.
    failed: bool,
}

impl<E: Endpoint> std::fmt::Debug for Tls<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.session.handshaking())
            .field("incoming", &self.incoming.len())
            .field("sealed", &self.sealed.len())
            .field("notify", &self.notify)
            .finish_non_exhaustive()
    }
}

/// What a receive's ciphertext gave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The handshake completed with these bytes.
    pub handshake_done: bool,
    /// The peer sent `close_notify`: nothing more will come.
    pub peer_closed: bool,
}

impl<E: Endpoint> Tls<E> {
    /// A session over `session` (new: for a client, [`start`](Self::start) it).
    pub fn new(session: E) -> Self {
        Self {
            session,
            incoming: Vec::new(),
            sealed: Vec::new(),
            notify: Notify::No,
            peer_closed: false,
            failed: false,
        }
    }

    /// A client speaks first: seal its first handshake records.
    pub fn start(&mut self) -> Result<(), rustls::Error> {
        self.open(&mut [], &mut Vec::new()).map(|_| ())
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.session.handshaking()
    }

    /// Whether the handshake resumed an earlier session (a ticket, no signature).
    pub fn is_resumed(&self) -> bool {
        self.session.resumed()
    }

    /// Ciphertext arrived (`data` is opened in place): the plaintext of every complete
    /// record is appended to `plain`; handshake replies are sealed for the next send.
    /// `Err`: the peer broke the protocol (an alert to send, if any, is sealed).
    pub fn handle_ciphertext(
        &mut self,
        data: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<Opened, rustls::Error> {
        let was_handshaking = self.is_handshaking();
        // Plaintext is never longer than its ciphertext: one allocation at most.
        plain.reserve(data.len() + self.incoming.len());
        if let Err(e) = self.open_all(data, plain) {
            self.fail();
            return Err(e);
        }
        if self.incoming.len() > MAX_INCOMING {
            self.fail();
            return Err(rustls::Error::General("record larger than allowed".into()));
        }
        Ok(Opened {
            handshake_done: was_handshaking && !self.is_handshaking(),
            peer_closed: std::mem::take(&mut self.peer_closed),
        })
    }

    /// Open what `data` completes: first the record held from earlier receives
    /// (completed with just the bytes it lacks), then the records in `data` itself, in
    /// place; the bytes of a record still incomplete are held.
    fn open_all(&mut self, mut data: &mut [u8], plain: &mut Vec<u8>) -> Result<(), rustls::Error> {
        if !self.incoming.is_empty() {
            loop {
                let lack = record_lacks(&self.incoming).min(data.len());
                if lack == 0 {
                    break;
                }
                let (head, rest) = data.split_at_mut(lack);
                self.incoming.extend_from_slice(head);
                data = rest;
            }
            if record_lacks(&self.incoming) > 0 {
                // Still incomplete: all of `data` went into it.
                return Ok(());
            }
            let mut held = std::mem::take(&mut self.incoming);
            let used = self.open(&mut held, plain)?;
            if used < held.len() {
                // A handshake message spans records: rustls joins them in one buffer.
                held.drain(..used);
                held.extend_from_slice(data);
                let used = self.open(&mut held, plain)?;
                held.drain(..used);
                if !held.is_empty() {
                    self.incoming = held;
                }
                return Ok(());
            }
        }
        let used = self.open(data, plain)?;
        self.incoming
            .extend_from_slice(&data[used.min(data.len())..]);
        Ok(())
    }

    /// Open the complete records at the front of `buf`; returns the bytes used.
    fn open(&mut self, buf: &mut [u8], plain: &mut Vec<u8>) -> Result<usize, rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("the session failed".into()));
        }
        self.open_records(buf, plain).map_err(|(e, at)| {
            self.failed = true;
            let at = at.min(buf.len());
            self.seal_alert(&mut buf[at..]);
            e
        })
    }

    /// [`open`](Self::open)'s loop; `Err` also says where in `buf` it stood.
    fn open_records(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<usize, (rustls::Error, usize)> {
        let mut used = 0;
        loop {
            let status = self.session.process(&mut buf[used..]);
            let mut discard = status.discard;
            // An error comes with the discard of what was processed before it: the
            // alert is then asked for past those bytes, as the contract wants.
            let state = status.state.map_err(|e| (e, used + discard))?;
            let more = match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record.map_err(|e| (e, used + discard))?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let v = encode(|b| e.encode(b)).map_err(|e| (e, used + discard))?;
                    self.sealed.push(Chunk::Owned(v));
                    true
                }
                ConnectionState::TransmitTlsData(t) => {
                    // Sealed above, sent with the next send.
                    t.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    true
                }
                // Waiting for more bytes (handshake, or a record not yet complete), or
                // closed both ways. Early data is never accepted (the config allows
                // none), so it cannot be waiting.
                _ => false,
            };
            used += discard;
            if !more {
                return Ok(used);
            }
        }
    }

    /// The session just failed on `buf`: seal what it queued (its alert, after a
    /// record queued before it, such as a key update). Asked with the same buffer
    /// (rustls's deframer may hold positions in it: asking with any other, an empty one
    /// included, is outside its contract), and never again after.
    fn seal_alert(&mut self, buf: &mut [u8]) {
        for _ in 0..4 {
            let status = self.session.process(buf);
            let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state else {
                return;
            };
            match encode(|b| e.encode(b)) {
                Ok(v) => self.sealed.push(Chunk::Owned(v)),
                Err(_) => return,
            }
        }
    }

    /// The session failed: nothing more is opened or sealed, and no `close_notify`
    /// follows (its alert, if any, is sealed already).
    fn fail(&mut self) {
        self.failed = true;
        self.incoming = Vec::new();
        self.notify = Notify::Done;
    }

    /// The connection is closing: a `close_notify` follows the last frame queued.
    pub fn close(&mut self) {
        if self.notify == Notify::No {
            self.notify = Notify::Wanted;
        }
    }

    /// Whether a send is wanted (`queued`: frames wait in the send queue).
    pub fn wants_transmit(&self, queued: bool) -> bool {
        !self.sealed.is_empty() || (self.can_seal() && (queued || self.notify == Notify::Wanted))
    }

    /// Whether everything, `close_notify` included if asked for, is handed to sends.
    pub fn flushed(&self) -> bool {
        self.sealed.is_empty() && self.notify != Notify::Wanted
    }

    /// Whether the owner's frames can be sealed now (the handshake is done, and the
    /// session has not failed: then only its alert, already sealed, goes out).
    pub fn can_seal(&self) -> bool {
        !self.failed && !self.is_handshaking()
    }

    /// Whether a `close_notify` is asked for and not yet sealed.
    pub fn notify_wanted(&self) -> bool {
        self.notify == Notify::Wanted
    }

    /// Seal `frames` (once the handshake is done), and the `close_notify` asked for
    /// when `last` (nothing more is queued). `Err`: the session cannot seal any more.
    pub fn seal_frames(&mut self, frames: &[Chunk], last: bool) -> Result<(), rustls::Error> {
        let notify = last && self.notify == Notify::Wanted;
        self.seal(frames, notify)?;
        if notify {
            self.notify = Notify::Done;
        }
        Ok(())
    }

    /// Bytes sealed and not yet handed to a send.
    pub fn sealed_bytes(&self) -> usize {
        self.sealed.iter().map(|c| c.as_slice().len()).sum()
    }

    /// The ciphertext of the next send, if any is sealed.
    pub fn take_sealed(&mut self) -> Option<Vec<Chunk>> {
        (!self.sealed.is_empty()).then(|| std::mem::take(&mut self.sealed))
    }

    /// Seal `frames` (and a `close_notify` after them if `notify`) as one run of records.
    fn seal(&mut self, frames: &[Chunk], notify: bool) -> Result<(), rustls::Error> {
        let joined;
        let plain: &[u8] = match frames {
            [] => &[],
            [one] => one.as_slice(),
            many => {
                joined = many
                    .iter()
                    .flat_map(|c| c.as_slice())
                    .copied()
                    .collect::<Vec<u8>>();
                &joined
            }
        };
        if self.failed {
            return Err(rustls::Error::General("the session failed".into()));
        }
        loop {
            // With the bytes held for a record not yet complete (and nothing else):
            // rustls's deframer may hold positions in them. It may also find them
            // broken (a bad header completed by the last receive): then the session
            // fails here, its alert sealed.
            let status = self.session.process(&mut self.incoming);
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    let at = status.discard;
                    let mut held = std::mem::take(&mut self.incoming);
                    let at = at.min(held.len());
                    self.seal_alert(&mut held[at..]);
                    self.fail();
                    return Err(e);
                }
            };
            match state {
                ConnectionState::EncodeTlsData(mut e) => {
                    self.sealed.push(Chunk::Owned(encode(|b| e.encode(b))?));
                }
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::WriteTraffic(mut w) => {
                    let mut v = if plain.is_empty() {
                        Vec::new()
                    } else {
                        encrypt(|b| w.encrypt(plain, b), plain.len())?
                    };
                    if notify {
                        v.extend(encrypt(|b| w.queue_close_notify(b), 0)?);
                    }
                    if !v.is_empty() {
                        self.sealed.push(Chunk::Owned(v));
                    }
                    return Ok(());
                }
                // Closed or failed: nothing can be sealed any more.
                _ => return Err(rustls::Error::General("session closed".into())),
            }
        }
    }

    /// A send of `chunks` took `sent` bytes: the rest goes first in the next.
    pub fn handle_sent(&mut self, chunks: Vec<Chunk>, sent: usize) {
        let mut unsent = crate::worker::requeue(chunks, sent);
        if !unsent.is_empty() {
            unsent.append(&mut self.sealed);
            self.sealed = unsent;
        }
    }
}

/// Bytes the TLS record at the front of `buf` still lacks (the rest of its 5-byte
/// header first); 0 when it is complete. A header announcing more than a record may
/// hold counts as complete: rustls refuses it.
fn record_lacks(buf: &[u8]) -> usize {
    /// RFC 8446 §5.2: a record's ciphertext is at most 2^14 + 256 bytes (RFC 5246
    /// allows 2^14 + 2048).
    const MAX_RECORD: usize = (1 << 14) + 2048;
    match buf {
        [_, _, _, hi, lo, ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            if len >= MAX_RECORD {
                0
            } else {
                (5 + len).saturating_sub(buf.len())
            }
        }
        _ => 5 - buf.len(),
    }
}

/// A handshake record or alert, encoded into a buffer of the size it needs.
fn encode(
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<Vec<u8>, rustls::Error> {
    sized(4096, |b| {
        f(b).map_err(|e| match e {
            EncodeError::InsufficientSize(s) => Ok(s.required_size),
            e => Err(e.to_string()),
        })
    })
}

/// `len` bytes of plaintext sealed into records, in a buffer of the size they need.
fn encrypt(
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
    len: usize,
) -> Result<Vec<u8>, rustls::Error> {
    sized(len + (len / (16 * 1024) + 1) * RECORD_OVERHEAD, |b| {
        f(b).map_err(|e| match e {
            EncryptError::InsufficientSize(s) => Ok(s.required_size),
            e => Err(e.to_string()),
        })
    })
}

/// What `f` writes into a buffer of `guess` bytes, grown to what it says it needs
/// (`Err(Ok(required))`) until it fits; `Err(Err(why))`: it failed.
fn sized(
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Result<usize, String>>,
) -> Result<Vec<u8>, rustls::Error> {
    let mut v = vec![0; guess];
    loop {
        match f(&mut v) {
            Ok(n) => {
                v.truncate(n);
                return Ok(v);
            }
            Err(Ok(required)) if required > v.len() => v.resize(required, 0),
            Err(Ok(required)) => {
                return Err(rustls::Error::General(format!(
                    "asked for {required} bytes with {} given",
                    v.len()
                )));
            }
            Err(Err(why)) => return Err(rustls::Error::General(why)),
        }
    }
}
