//! The client protocol: decoding a JSON and a flatbuffers `put` request, and encoding
//! one `change` for fan-out (prepared once, then the per-subscriber id added).

use benches as _;
use std::borrow::Cow;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::client::json::PreparedChange;
use wire::client::{ChangeOp, fb, json};

fn bench(c: &mut Criterion) {
    let text = br#"{"op":"put","id":5,"key":"room/{42}/title","value":{"title":"Ringline design review","by":"ana"},"if_version":7}"#;
    let req = json::decode_request(text).unwrap_or_else(|_| unreachable!());
    let mut bin = Vec::new();
    fb::encode_request(&req, &mut bin);
    let mut g = c.benchmark_group("client");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_decode_put", |b| {
        b.iter(|| black_box(json::decode_request(black_box(text)).is_ok()))
    });
    g.bench_function("fb_decode_put", |b| {
        b.iter(|| black_box(fb::decode_request(black_box(&bin)).is_ok()))
    });
    let op = ChangeOp::Put {
        value: Cow::Borrowed(br#"{"title":"Ringline design review","by":"ana"}"#),
        version: 18,
    };
    g.bench_function("json_prepare_change", |b| {
        b.iter(|| {
            black_box(PreparedChange::new(
                black_box("room/{42}/title"),
                &op,
                "AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAA",
            ))
        })
    });
    let prepared = PreparedChange::new("room/{42}/title", &op, "AQAAAAAAAAACAAAAAAAAAAMAAAAAAAAA");
    let mut out = Vec::with_capacity(256);
    g.bench_function("json_write_prepared_change", |b| {
        b.iter(|| {
            out.clear();
            prepared.write(black_box(12345), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
