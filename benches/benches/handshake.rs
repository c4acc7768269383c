//! Opening-handshake parsing (a browser-like upgrade request) and the 101 response.

use benches as _;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::handshake::{HandshakeLimits, parse_request, write_switching_protocols};

const REQ: &[u8] = b"GET /ws?token=abc HTTP/1.1\r\nHost: edge.example.com\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\r\n\
Upgrade: websocket\r\nOrigin: https://app.example.com\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: ringline.v1.json\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench(c: &mut Criterion) {
    let limits = HandshakeLimits::default();
    let protos = ["ringline.v1.json", "ringline.v1.fb"];
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_upgrade_request", |b| {
        b.iter(|| {
            let (r, n) = parse_request(black_box(REQ), &limits, &protos)
                .ok()
                .flatten()
                .unwrap_or_else(|| unreachable!());
            black_box((r.websocket.is_some(), n))
        })
    });
    g.bench_function("parse_and_write_101", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            if let Ok(Some((r, _))) = parse_request(black_box(REQ), &limits, &protos)
                && let Some(ws) = r.websocket
            {
                write_switching_protocols(&mut out, &ws.accept, ws.protocol, None);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
