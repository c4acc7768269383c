//! Internal link frames: encoding (header + flatbuffer) and decoding (header checks +
//! flatbuffer verification + reading the fields) of a put request and of a batch of
//! 64 changes, the store's hottest push.

use benches as _;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::link::{
    ChangeKind, ChangeRef, LinkEncoder, LinkLimits, LinkMessage, Position, decode_frame,
};

fn bench(c: &mut Criterion) {
    let limits = LinkLimits::default();
    let mut enc = LinkEncoder::new(&limits);
    let value = br#"{"title":"Ringline design review","by":"ana","at":1763812345}"#;
    let mut g = c.benchmark_group("link");

    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    g.bench_function("encode_put", |b| {
        b.iter(|| {
            out.clear();
            enc.put(
                &mut out,
                black_box(7),
                black_box("room/{42}/title"),
                black_box(value),
                Some(3),
                None,
            )
            .unwrap_or_else(|_| unreachable!());
            black_box(out.len())
        })
    });
    let put = out.clone();
    g.bench_function("decode_put", |b| {
        b.iter(|| match decode_frame(black_box(&put), &limits) {
            Ok(Some((f, n))) => match f.message {
                LinkMessage::Put(p) => black_box((p.key().len(), p.value().map(|v| v.len()), n)),
                _ => unreachable!(),
            },
            _ => unreachable!(),
        })
    });

    let keys: Vec<String> = (0..64).map(|i| format!("room/{{42}}/msg/{i:04}")).collect();
    let ids = [11u64];
    let changes: Vec<ChangeRef<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ChangeRef {
            watch_ids: &ids,
            position: Position::new(9, 0xfeed, 1000 + i as u64),
            key: k,
            kind: ChangeKind::Publish,
            value: Some(value),
            version: 0,
        })
        .collect();
    g.throughput(Throughput::Elements(changes.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("encode_changes", changes.len()),
        &changes,
        |b, changes| {
            b.iter(|| {
                out.clear();
                enc.changes(&mut out, 0, black_box(changes))
                    .unwrap_or_else(|_| unreachable!());
                black_box(out.len())
            })
        },
    );
    out.clear();
    enc.changes(&mut out, 0, &changes)
        .unwrap_or_else(|_| unreachable!());
    let batch = out.clone();
    g.bench_with_input(
        BenchmarkId::new("decode_changes", changes.len()),
        &batch,
        |b, batch| {
            b.iter(|| match decode_frame(black_box(batch), &limits) {
                Ok(Some((f, _))) => match f.message {
                    LinkMessage::Changes(cs) => {
                        let mut sum = 0usize;
                        for ch in cs.changes().iter().flatten() {
                            sum += ch.key().len() + ch.value().map_or(0, |v| v.len());
                        }
                        black_box(sum)
                    }
                    _ => unreachable!(),
                },
                _ => unreachable!(),
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
