//! TLS termination in the edge, against the real binary: `wss://` beside `ws://`, TLS
//! 1.2 and 1.3, ALPN, SNI with several certificates, certificates reloaded under live
//! connections (on change, and on SIGHUP), and handshakes that stall, send garbage or
//! end in an alert closing that connection only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::send_signal;
use common::tls::{Leaf, TestCa, TlsEdge, TlsStream, connect_with, leaf_der, peer_cert};
use common::ws::{Msg, Ws};
use wire::frame::Opcode;

/// A client config offering ALPN `http/1.1` and only `versions`.
fn client(
    ca: &TestCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf_der(&ca.ca_pem)).unwrap();
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

fn echo_once(ws: &mut Ws<TlsStream>, text: &str) {
    ws.send(true, Opcode::Text, text.as_bytes());
    assert_eq!(ws.recv(), Msg::Text(text.to_owned()));
}

fn wss(ca: &TestCa, addr: SocketAddr, name: &str) -> Ws<TlsStream> {
    let s = connect_with(client(ca, rustls::ALL_VERSIONS), addr, name).unwrap();
    Ws::upgrade(s, "/echo", None, "").unwrap()
}

#[test]
fn wss_and_https_beside_cleartext_over_tls_1_2_and_1_3() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], "edge");
    let edge = TlsEdge::start(&[&leaf], &[]);
    for (version, versions) in [
        ("TLSv1_3", &[&rustls::version::TLS13][..]),
        ("TLSv1_2", &[&rustls::version::TLS12][..]),
    ] {
        let s = connect_with(client(&ca, versions), edge.tls, "localhost").unwrap();
        assert_eq!(format!("{:?}", s.conn.protocol_version().unwrap()), version);
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut ws = Ws::upgrade(s, "/echo", None, "").unwrap();
        echo_once(&mut ws, &format!("over {version}"));
        // A message larger than one TLS record (16 KiB), and one split over many.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(true, Opcode::Binary, &big);
        assert_eq!(ws.recv(), Msg::Binary(big));
        for i in 0..100 {
            ws.send(true, Opcode::Text, format!("m{i}").as_bytes());
        }
        for i in 0..100 {
            assert_eq!(ws.recv(), Msg::Text(format!("m{i}")));
        }
        ws.send(true, Opcode::Close, &1000u16.to_be_bytes());
        assert_eq!(ws.recv(), Msg::Close(Some(1000)));
    }
    // Plain HTTP over TLS.
    let mut s = ca.connect(edge.tls, "localhost").unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The cleartext listener still serves.
    let mut plain = Ws::connect(edge.addr, "/echo").unwrap();
    plain.send(true, Opcode::Text, b"clear");
    assert_eq!(plain.recv(), Msg::Text("clear".into()));
    assert!(edge.metric("ringline_edge_tls_handshakes_total") >= 3);
    assert_eq!(edge.metric("ringline_edge_tls_failed_total"), 0);
}

#[test]
fn sni_picks_the_certificate_that_names_the_host() {
    let ca = TestCa::new();
    let a = ca.leaf(&["a.test", "127.0.0.1"], "a");
    let b = ca.leaf(&["b.test", "*.b.test"], "b");
    let edge = TlsEdge::start(&[&a, &b], &[]);
    for (name, leaf) in [
        ("a.test", &a),
        ("b.test", &b),
        ("x.b.test", &b),
        ("127.0.0.1", &a),
    ] {
        let s = ca.connect(edge.tls, name).unwrap();
        assert_eq!(peer_cert(&s), leaf_der(&leaf.cert), "{name}");
        let mut ws = Ws::upgrade(s, "/echo", None, "").unwrap();
        echo_once(&mut ws, name);
    }
}

/// Replace `to`'s files with `from`'s the way deployment tools do: write aside, rename.
fn install(from: &Leaf, to: &Leaf) {
    for (src, dst) in [(&from.cert, &to.cert), (&from.key, &to.key)] {
        let tmp = dst.with_extension("new");
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, dst).unwrap();
    }
}

/// Wait until a new connection is served `want`.
fn wait_for_cert(ca: &TestCa, edge: &TlsEdge, want: &Leaf, within: Duration) {
    let want = leaf_der(&want.cert);
    let deadline = Instant::now() + within;
    loop {
        let s = ca.connect(edge.tls, "localhost").unwrap();
        if peer_cert(&s) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "certificate not replaced in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn certificates_reload_on_change_and_on_sighup_and_live_connections_stay() {
    let ca = TestCa::new();
    let live = ca.leaf(&["localhost"], "live");
    let first = ca.leaf(&["localhost"], "first");
    let second = ca.leaf(&["localhost"], "second");
    let third = ca.leaf(&["localhost"], "third");
    install(&first, &live);
    let edge = TlsEdge::start(&[&live], &[]);
    let mut open: Vec<Ws<TlsStream>> = (0..20).map(|_| wss(&ca, edge.tls, "localhost")).collect();
    assert_eq!(peer_cert(&open[0].s), leaf_der(&first.cert));

    // Changed on disk: picked up within the 1 s poll (allow 5 s on a busy host).
    install(&second, &live);
    wait_for_cert(&ca, &edge, &second, Duration::from_secs(5));
    for (i, ws) in open.iter_mut().enumerate() {
        echo_once(ws, &format!("still here {i}"));
    }

    // A file that does not load keeps the old certificate, and the log says why.
    std::fs::write(&live.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.logged("TLS certificates not reloaded") == 0 {
        assert!(
            Instant::now() < deadline,
            "no warning for a bad certificate file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = ca.connect(edge.tls, "localhost").unwrap();
    assert_eq!(peer_cert(&s), leaf_der(&second.cert));

    // SIGHUP reloads at once (and does not end the process, its default action).
    install(&third, &live);
    let reloads = edge.logged("TLS certificates reloaded");
    send_signal(&edge.child, "HUP");
    wait_for_cert(&ca, &edge, &third, Duration::from_secs(5));
    assert!(edge.logged("SIGHUP: reloading the TLS certificates") >= 1);
    assert!(edge.logged("TLS certificates reloaded") > reloads);
    for (i, ws) in open.iter_mut().enumerate() {
        echo_once(ws, &format!("after sighup {i}"));
    }
}

/// Whether the server closed `s` within `within` (EOF or a reset), reading and
/// dropping what it sends (an alert) meanwhile.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) if Instant::now() < deadline => return true,
            Ok(_) if Instant::now() < deadline => {}
            _ => return false,
        }
    }
}

#[test]
fn stalled_garbage_and_refused_handshakes_close_that_connection_only() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], "edge");
    let edge = TlsEdge::start(&[&leaf], &["--handshake-timeout-secs", "2"]);
    let mut good = wss(&ca, edge.tls, "localhost");

    // Garbage: cleartext HTTP on the TLS port.
    let mut garbage = TcpStream::connect(edge.tls).unwrap();
    garbage
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut garbage, Duration::from_secs(1)));

    // A client that refuses the certificate ends the handshake with an alert.
    let stranger = TestCa::new();
    assert!(stranger.connect(edge.tls, "localhost").is_err());

    // Stalled mid-handshake: the first bytes of a ClientHello, then nothing. Closed at
    // the handshake deadline (2 s; ticks are whole seconds, so within 4 s).
    let mut stalled = TcpStream::connect(edge.tls).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut stalled, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // A record larger than TLS allows.
    let mut huge = TcpStream::connect(edge.tls).unwrap();
    huge.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).unwrap();
    assert!(closed_within(&mut huge, Duration::from_secs(1)));

    echo_once(&mut good, "unharmed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.metric("ringline_edge_tls_failed_total") < 3 {
        assert!(Instant::now() < deadline, "TLS failures not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(edge.metric("ringline_edge_rejected_timeout_total") >= 1);
}

#[test]
fn a_tls_listener_needs_a_certificate_and_bad_files_refuse_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["--listen-tls", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_tls and tls_certs go together"));
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], "edge");
    let other = ca.leaf(&["localhost"], "other");
    // A key that is not the certificate's.
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["--listen-tls", "127.0.0.1:0", "--tls-cert"])
        .arg(&leaf.cert)
        .arg("--tls-key")
        .arg(&other.key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS certificates"), "{err}");
}

/// A ClientHello split over two records, the second with a content type TLS does not
/// have: rustls fails while it holds the first half of the message. That connection
/// closes (its alert sent), and the process goes on serving (asking rustls for the
/// alert with another buffer than the one it failed on once brought a worker down).
#[test]
fn a_handshake_that_fails_midway_through_a_split_message_closes_that_connection_only() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], "edge");
    let edge = TlsEdge::start(&[&leaf], &[]);
    let mut good = wss(&ca, edge.tls, "localhost");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 0x16, "a handshake record");
    let payload = &hello[5..];
    let half = payload.len() / 2;
    let mut bytes = vec![0x16, 0x03, 0x01];
    bytes.extend((half as u16).to_be_bytes());
    bytes.extend(&payload[..half]);
    bytes.extend([0x99, 0x03, 0x03]);
    bytes.extend(((payload.len() - half) as u16).to_be_bytes());
    bytes.extend(&payload[half..]);
    for _ in 0..3 {
        let mut s = TcpStream::connect(edge.tls).unwrap();
        s.write_all(&bytes).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(2)));
    }
    echo_once(&mut good, "still serving");
    let fresh = &mut wss(&ca, edge.tls, "localhost");
    echo_once(fresh, "and accepting");
    assert!(edge.metric("ringline_edge_tls_failed_total") >= 3);
}

/// A client that reconnects presents the session ticket it was given and resumes
/// (no certificate signature), on either worker: the ticket key is the process's.
#[test]
fn a_reconnecting_client_resumes_its_session() {
    let ca = TestCa::new();
    let leaf = ca.leaf(&["localhost"], "edge");
    let edge = TlsEdge::start(&[&leaf], &[]);
    let mut config = (*client(&ca, &[&rustls::version::TLS13])).clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(16);
    let config = Arc::new(config);
    let mut kinds = Vec::new();
    for i in 0..6 {
        let s = connect_with(Arc::clone(&config), edge.tls, "localhost").unwrap();
        kinds.push(s.conn.handshake_kind());
        let mut ws = Ws::upgrade(s, "/echo", None, "").unwrap();
        // The tickets arrive after the handshake: an exchange makes sure they did.
        echo_once(&mut ws, &format!("visit {i}"));
    }
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert!(
        kinds[1..]
            .iter()
            .all(|k| *k == Some(rustls::HandshakeKind::Resumed)),
        "{kinds:?}"
    );
}
