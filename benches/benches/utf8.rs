//! UTF-8 validation: simdutf8 on whole messages, and the incremental validator fed
//! in 1 KiB pieces (as fragments arrive).

use benches as _;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::utf8::Utf8Validator;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    let ascii: String = "ringline ascii text "
        .chars()
        .cycle()
        .take(16 << 10)
        .collect();
    let mixed: String = "κόσμε ☃ 𝄞 ringline "
        .chars()
        .cycle()
        .take(6 << 10)
        .collect();
    for (name, s) in [("ascii", ascii.as_bytes()), ("multibyte", mixed.as_bytes())] {
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_with_input(BenchmarkId::new("whole", name), s, |b, s| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(s)).is_ok())
        });
        g.bench_with_input(
            BenchmarkId::new("incremental_1KiB_pieces", name),
            s,
            |b, s| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in s.chunks(1000) {
                        let _ = v.feed(black_box(piece));
                    }
                    v.finish().is_ok()
                })
            },
        );
        g.bench_with_input(BenchmarkId::new("std", name), s, |b, s| {
            b.iter(|| std::str::from_utf8(black_box(s)).is_ok())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
