//! Frame decoding (masked client frames of 20 B and 16 KiB, text and binary) and
//! server-side encoding, including the shared fan-out frame.
//!
//! Decoding unmasks in place, so each iteration first restores the pristine batch
//! with one memcpy; that copy is included in the figure (a conservative number).

use benches as _;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::frame::{
    Decoder, Incoming, Limits, Opcode, SharedFrame, encode_client_frame, encode_frame,
};

fn batch(op: Opcode, payload: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        encode_client_frame(
            &mut out,
            true,
            op,
            payload,
            (i as u32).wrapping_mul(0x9E37_79B9).to_le_bytes(),
        );
    }
    out
}

fn decode_all(decoder: &mut Decoder, buf: &mut [u8]) -> usize {
    let mut at = 0;
    let mut bytes = 0;
    while let Ok(Some((item, used))) = decoder.decode(&mut buf[at..]) {
        bytes += match item {
            Incoming::Text(s) => s.len(),
            Incoming::Binary(b) => b.len(),
            _ => 0,
        };
        at += used;
    }
    bytes
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_decode");
    for (size, n) in [(20usize, 1000usize), (16 << 10, 64)] {
        let text: String = "ringline-payload-".chars().cycle().take(size).collect();
        for (name, op) in [("text", Opcode::Text), ("binary", Opcode::Binary)] {
            let pristine = batch(op, text.as_bytes(), n);
            let mut work = pristine.clone();
            let mut decoder = Decoder::server(Limits::default());
            // Sanity: every frame decodes.
            work.copy_from_slice(&pristine);
            assert_eq!(decode_all(&mut decoder, &mut work), size * n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{name}_{size}B_frames"), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        work.copy_from_slice(&pristine);
                        black_box(decode_all(&mut decoder, black_box(&mut work)))
                    })
                },
            );
        }
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    for size in [20usize, 16 << 10] {
        let payload = vec![b'x'; size];
        g.throughput(Throughput::Elements(1));
        let mut out = Vec::with_capacity(size + 16);
        g.bench_with_input(BenchmarkId::new("into_buffer", size), &size, |b, _| {
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, Opcode::Text, black_box(&payload));
                black_box(out.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("shared_frame", size), &size, |b, _| {
            b.iter(|| black_box(SharedFrame::new(Opcode::Text, black_box(&payload))))
        });
        // Fan-out: one encode, then 1000 sends by reference (clone = refcount).
        g.throughput(Throughput::Elements(1000));
        g.bench_with_input(
            BenchmarkId::new("shared_frame_x1000_clones", size),
            &size,
            |b, _| {
                let mut outq: Vec<SharedFrame> = Vec::with_capacity(1000);
                b.iter(|| {
                    outq.clear();
                    let f = SharedFrame::new(Opcode::Text, black_box(&payload));
                    for _ in 0..1000 {
                        outq.push(f.clone());
                    }
                    black_box(outq.len())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
