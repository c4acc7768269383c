//! Unmasking throughput: the word-wide version against the byte-wise definition, at
//! 64 B, 1 KiB, 16 KiB and 1 MiB (Throughput::Bytes, so criterion reports GB/s).

use benches as _;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::mask::{apply_mask, apply_mask_bytewise};

fn bench(c: &mut Criterion) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut g = c.benchmark_group("unmask");
    for size in [64usize, 1 << 10, 16 << 10, 1 << 20] {
        let mut buf = vec![0x5Au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("word", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(key)))
        });
        g.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), black_box(key), 0))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
