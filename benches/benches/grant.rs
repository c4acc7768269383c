//! The permission check every `/ws` request passes before it is routed: a typical
//! token's grant (a few exact keys and prefixes with the subject in them) against a
//! `put`, a `get` and a prefix `sub`, granted and refused; and, for scale, a grant of
//! 256 patterns (the most a token may carry). Compare with the per-message cost of a
//! `put` through the edge (BENCHMARKS.md, "Permission checks").
//!
//! The grant compiler is the edge's own source, compiled in by path (the edge is a
//! binary with no library).

use benches as _;
use std::borrow::Cow;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use wire::client::{Request, Target};

#[path = "../../edge/src/auth/grant.rs"]
#[allow(dead_code)]
mod grant;

use grant::{Grant, GrantSpec};

fn spec(read: &[&str], write: &[&str], publish: &[&str]) -> GrantSpec {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    GrantSpec {
        read: own(read),
        write: own(write),
        publish: own(publish),
        presence: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let typical = Grant::compile(
        &spec(
            &["user/{sub}/*", "room/{42}/*", "public/*"],
            &["user/{sub}/inbox", "room/{42}/chat"],
            &["room/{42}/typing"],
        ),
        "user-8f3a2c",
    )
    .unwrap_or_else(|_| unreachable!());
    let many: Vec<String> = (0..256).map(|i| format!("tenant/{i}/doc/*")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let wide = Grant::compile(&spec(&many, &many, &[]), "u").unwrap_or_else(|_| unreachable!());
    let put = |key: &'static str| Request::Put {
        id: 5,
        key: Cow::Borrowed(key),
        value: Cow::Borrowed(br#"{"title":"Ringline design review"}"#),
        if_version: None,
        msg_id: None,
    };
    let granted = put("room/{42}/chat");
    let refused = put("room/{43}/chat");
    let get = Request::Get {
        id: 6,
        key: Cow::Borrowed("user/user-8f3a2c/profile"),
    };
    let sub = Request::Sub {
        id: 7,
        target: Target::Prefix(Cow::Borrowed("room/{42}/")),
        from: None,
        mode: wire::client::SubMode::Stream,
        durable: None,
    };
    let last = put("tenant/255/doc/1");
    let mut g = c.benchmark_group("grant");
    g.throughput(Throughput::Elements(1));
    g.bench_function("typical_put_granted", |b| {
        b.iter(|| black_box(typical.permits(black_box(&granted))))
    });
    g.bench_function("typical_put_refused", |b| {
        b.iter(|| black_box(typical.permits(black_box(&refused))))
    });
    g.bench_function("typical_get", |b| {
        b.iter(|| black_box(typical.permits(black_box(&get))))
    });
    g.bench_function("typical_sub_prefix", |b| {
        b.iter(|| black_box(typical.permits(black_box(&sub))))
    });
    g.bench_function("256_patterns_put_last", |b| {
        b.iter(|| black_box(wide.permits(black_box(&last))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
