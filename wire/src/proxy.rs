//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that a
//! balancer puts before the first byte of a connection it forwards: the client's real
//! address. Bytes go in; out comes the header and its length, `Ok(None)` while it is
//! incomplete (nothing consumed), or why it is no PROXY header. Only the addresses are
//! read: v2 TLVs are skipped. Trust is the caller's business: a header is believed only
//! from a configured balancer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Decoded;

/// The version 2 signature (12 bytes).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included ("worst case (optional fields set to
/// 0xff)" in the specification).
pub const V1_MAX: usize = 107;
/// The most address and TLV bytes a version 2 header may announce that we accept (the
/// specification allows 65,535; a balancer sends tens).
pub const V2_MAX_BODY: usize = 4096;

/// What the balancer says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// It forwards a client: the client's address, and the address the client reached.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// Where the client connected to.
        destination: SocketAddr,
    },
    /// No client address to take (a health check: v1 `UNKNOWN`, v2 `LOCAL`, or an
    /// address family other than TCP over IPv4/IPv6): the connection's own peer stands.
    Local,
}

/// Why the bytes are not a PROXY header. Always the sender's fault: close the
/// connection (a balancer that is trusted sends a good one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither signature: the peer is not speaking the PROXY protocol.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A version 1 line without its CRLF within 107 bytes.
    #[error("PROXY v1 line too long")]
    TooLong,
    /// A version 2 header announcing more than [`V2_MAX_BODY`] bytes.
    #[error("PROXY v2 header of {0} bytes")]
    TooBig(usize),
    /// Bad fields.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

/// Parse the PROXY header at the start of `buf` (version 1 or 2).
pub fn parse_proxy_header(buf: &[u8]) -> Result<Decoded<ProxyHeader>, ProxyError> {
    let v1 = b"PROXY ";
    if buf.starts_with(&V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if buf.starts_with(v1) {
        return parse_v1(buf);
    }
    // Still a prefix of one of the signatures: wait for more.
    let n = buf.len();
    if V2_SIGNATURE.starts_with(buf) || (n < v1.len() && v1.starts_with(buf)) {
        return Ok(None);
    }
    Err(ProxyError::NotProxy)
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, `TCP6` the same, or `UNKNOWN ...`.
fn parse_v1(buf: &[u8]) -> Result<Decoded<ProxyHeader>, ProxyError> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let _proxy = fields.next();
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(family @ ("TCP4" | "TCP6")) => {
            let mut next = || fields.next().ok_or(ProxyError::Malformed("missing field"));
            let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err(ProxyError::Malformed("extra field"));
            }
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                let ip: IpAddr = s.parse().map_err(|_| ProxyError::Malformed("address"))?;
                if ip.is_ipv4() != (family == "TCP4") {
                    return Err(ProxyError::Malformed("address of the wrong family"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Ports are plain decimal without a sign or leading zeros.
                if s.starts_with(['+', '-']) || (s.len() > 1 && s.starts_with('0')) {
                    return Err(ProxyError::Malformed("port"));
                }
                s.parse().map_err(|_| ProxyError::Malformed("port"))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => return Err(ProxyError::Malformed("protocol family")),
    };
    Ok(Some((header, end + 2)))
}

/// The binary form: signature, version and command, family and protocol, length,
/// addresses, TLVs.
fn parse_v2(buf: &[u8]) -> Result<Decoded<ProxyHeader>, ProxyError> {
    let Some(&[ver_cmd, fam, hi, lo]) = buf.get(12..16) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version"));
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_BODY {
        return Err(ProxyError::TooBig(len));
    }
    let Some(body) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let used = 16 + len;
    let header = match (ver_cmd & 0x0F, fam) {
        // LOCAL: the balancer's own connection (a health check).
        (0x0, _) => ProxyHeader::Local,
        // PROXY over TCP/IPv4, TCP/IPv6.
        (0x1, 0x11) => addresses::<4>(body, |b: [u8; 4]| Ipv4Addr::from(b).into())?,
        (0x1, 0x21) => addresses::<16>(body, |b: [u8; 16]| Ipv6Addr::from(b).into())?,
        // Other families (UDP, UNIX, UNSPEC): "the receiver must use the real
        // connection endpoints".
        (0x1, _) => ProxyHeader::Local,
        _ => return Err(ProxyError::Malformed("command")),
    };
    Ok(Some((header, used)))
}

/// A v2 address block: source and destination addresses of `N` bytes each, then the
/// two ports.
fn addresses<const N: usize>(
    body: &[u8],
    ip: impl Fn([u8; N]) -> IpAddr,
) -> Result<ProxyHeader, ProxyError> {
    let block = body
        .get(..2 * N + 4)
        .ok_or(ProxyError::Malformed("short address block"))?;
    let addr = |i: usize| {
        block
            .get(i..i + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .map(&ip)
    };
    let port = |i: usize| {
        block
            .get(i..i + 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
    };
    let (Some(src), Some(dst), Some(sport), Some(dport)) =
        (addr(0), addr(N), port(2 * N), port(2 * N + 2))
    else {
        return Err(ProxyError::Malformed("short address block"));
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(src, sport),
        destination: SocketAddr::new(dst, dport),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | cmd);
        b.push(fam);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        let (h, used) = parse_proxy_header(line).unwrap().unwrap();
        assert_eq!(used, line.len() - 5);
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "192.168.0.1:56324".parse().unwrap(),
                destination: "192.168.0.11:443".parse().unwrap(),
            }
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 8080\r\n";
        let (h, _) = parse_proxy_header(six).unwrap().unwrap();
        assert!(
            matches!(h, ProxyHeader::Proxied { source, .. } if source == "[2001:db8::1]:4000".parse().unwrap())
        );
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(
            parse_proxy_header(unknown).unwrap(),
            Some((ProxyHeader::Local, unknown.len()))
        );
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n"[..],
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 x\r\n",
            b"PROXY TCP4 2001:db8::1 192.168.0.11 1 2\r\n",
            b"PROXY TCP6 192.168.0.1 192.168.0.11 1 2\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 2\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 2\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 01 2\r\n",
            b"PROXY UDP4 192.168.0.1 192.168.0.11 1 2\r\n",
        ] {
            assert!(
                matches!(parse_proxy_header(bad), Err(ProxyError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_proxy_header(&[b'P'; 200]), Err(ProxyError::NotProxy));
        let long = format!("PROXY TCP4 {}", "1".repeat(120));
        assert_eq!(
            parse_proxy_header(long.as_bytes()),
            Err(ProxyError::TooLong)
        );
    }

    #[test]
    fn version_2_blocks() {
        let mut v4 = vec![127, 0, 3, 1, 10, 0, 0, 1];
        v4.extend_from_slice(&5000u16.to_be_bytes());
        v4.extend_from_slice(&443u16.to_be_bytes());
        v4.extend_from_slice(&[0x04, 0, 1, 0xAA]); // a TLV, skipped
        let b = v2(1, 0x11, &v4);
        let (h, used) = parse_proxy_header(&b).unwrap().unwrap();
        assert_eq!(used, b.len());
        assert_eq!(
            h,
            ProxyHeader::Proxied {
                source: "127.0.3.1:5000".parse().unwrap(),
                destination: "10.0.0.1:443".parse().unwrap(),
            }
        );
        let mut v6 = Ipv6Addr::LOCALHOST.octets().to_vec();
        v6.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
        v6.extend_from_slice(&[0, 80, 1, 187]);
        let (h, _) = parse_proxy_header(&v2(1, 0x21, &v6)).unwrap().unwrap();
        assert!(
            matches!(h, ProxyHeader::Proxied { source, .. } if source == "[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_proxy_header(&v2(0, 0x00, &[])).unwrap(),
            Some((ProxyHeader::Local, 16))
        );
        assert_eq!(
            parse_proxy_header(&v2(1, 0x31, &[0; 216]))
                .unwrap()
                .map(|x| x.0),
            Some(ProxyHeader::Local)
        );
        assert!(matches!(
            parse_proxy_header(&v2(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_proxy_header(&v2(7, 0x11, &v4)),
            Err(ProxyError::Malformed(_))
        ));
        let mut wrong_version = v2(1, 0x11, &v4);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse_proxy_header(&wrong_version),
            Err(ProxyError::Malformed(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert_eq!(parse_proxy_header(&huge), Err(ProxyError::TooBig(65535)));
    }

    proptest! {
        /// Any cut of a good header needs more bytes and consumes none; the whole one
        /// parses the same whatever follows it.
        #[test]
        fn a_cut_header_needs_more(cut in 0usize..60, v1 in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..20)) {
            let whole: Vec<u8> = if v1 {
                b"PROXY TCP4 10.1.2.3 10.0.0.1 40000 443\r\n".to_vec()
            } else {
                let mut body = vec![10, 1, 2, 3, 10, 0, 0, 1];
                body.extend_from_slice(&40000u16.to_be_bytes());
                body.extend_from_slice(&443u16.to_be_bytes());
                v2(1, 0x11, &body)
            };
            let cut = cut.min(whole.len() - 1);
            prop_assert_eq!(parse_proxy_header(&whole[..cut]), Ok(None));
            let mut more = whole.clone();
            more.extend_from_slice(&tail);
            let (h, used) = parse_proxy_header(&more).unwrap().unwrap();
            prop_assert_eq!(used, whole.len());
            let want: SocketAddr = "10.1.2.3:40000".parse().unwrap();
            let got = match h {
                ProxyHeader::Proxied { source, .. } => Some(source),
                ProxyHeader::Local => None,
            };
            prop_assert_eq!(got, Some(want));
        }

        /// Arbitrary bytes: never a panic, and a header found never claims more than
        /// was given.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), sig in any::<bool>()) {
            let mut b = if sig { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
            b.extend_from_slice(&bytes);
            if let Ok(Some((_, used))) = parse_proxy_header(&b) {
                prop_assert!(used <= b.len());
            }
        }
    }
}
