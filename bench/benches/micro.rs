//! Micro benchmarks: the cookie, the value codec, and the middleware's own cost.
//!
//! ```text
//! cargo bench -p actix-redis-session-bench --bench micro
//! ```
//!
//! The middleware group puts one request through `actix_web::test::call_service` on an app
//! with `RedisSession::memory` and a handler that reads and writes a counter, and through the
//! same app without the middleware. After criterion, paired batches of both measure the
//! difference per request directly (target: within 5 us of plain).

use std::{
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use actix_redis_session::{__bench, Key, RedisSession, Session};
use actix_web::{http::header, rt::System, test, web, App};
use criterion::{criterion_group, Criterion};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Small {
    user_id: u64,
    name: String,
    admin: bool,
}

#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
    price_cents: u64,
}

/// About 4 KB of JSON: a cart of 64 lines.
#[derive(Serialize, Deserialize)]
struct Large {
    user_id: u64,
    lines: Vec<Line>,
}

fn small() -> Small {
    Small {
        user_id: 42,
        name: "Ada Lovelace".into(),
        admin: false,
    }
}

fn large() -> Large {
    Large {
        user_id: 42,
        lines: (0..64)
            .map(|i| Line {
                sku: format!("SKU-{i:06}-blue-L"),
                quantity: i % 5 + 1,
                price_cents: 1999 + u64::from(i) * 100,
            })
            .collect(),
    }
}

fn cookie(c: &mut Criterion) {
    let signer = __bench::signer(&Key::generate());
    let value = __bench::sign_new_cookie(&signer);
    let mut group = c.benchmark_group("cookie");
    group.bench_function("sign_new", |b| {
        b.iter(|| __bench::sign_new_cookie(black_box(&signer)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| assert!(__bench::verify_cookie(&signer, black_box(&value))))
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let (small, large) = (small(), large());
    let (small_raw, large_raw) = (__bench::encode(&small), __bench::encode(&large));
    println!(
        "codec: small value {} bytes, large value {} bytes encoded",
        small_raw.len(),
        large_raw.len()
    );
    let mut group = c.benchmark_group("codec");
    group.bench_function("encode/small", |b| {
        b.iter(|| __bench::encode(black_box(&small)))
    });
    group.bench_function("decode/small", |b| {
        b.iter(|| __bench::decode::<Small>(black_box(&small_raw)).expect("valid"))
    });
    group.bench_function("validate/small", |b| {
        b.iter(|| assert!(__bench::validate(black_box(&small_raw))))
    });
    group.bench_function("encode/4k", |b| {
        b.iter(|| __bench::encode(black_box(&large)))
    });
    group.bench_function("decode/4k", |b| {
        b.iter(|| __bench::decode::<Large>(black_box(&large_raw)).expect("valid"))
    });
    group.bench_function("validate/4k", |b| {
        b.iter(|| assert!(__bench::validate(black_box(&large_raw))))
    });
    group.finish();

    // The formats side by side: JSON (static), MessagePack (static), JSON through the
    // public Codec trait (erased-serde), and an eager rewrite JSON -> MessagePack.
    let mut group = c.benchmark_group("formats");
    for name in ["json", "msgpack", "erased-json"] {
        let formats = __bench::formats(name);
        let small_raw = __bench::encode_as(&formats, &small);
        let large_raw = __bench::encode_as(&formats, &large);
        println!(
            "formats: {name}: small {} bytes, 4k-JSON cart {} bytes",
            small_raw.len(),
            large_raw.len()
        );
        for (size, raw) in [("small", &small_raw), ("4k", &large_raw)] {
            group.bench_function(format!("encode/{name}/{size}"), |b| match size {
                "small" => b.iter(|| __bench::encode_as(&formats, black_box(&small))),
                _ => b.iter(|| __bench::encode_as(&formats, black_box(&large))),
            });
            group.bench_function(format!("decode/{name}/{size}"), |b| match size {
                "small" => {
                    b.iter(|| __bench::decode_as::<Small>(&formats, black_box(raw)).unwrap())
                }
                _ => b.iter(|| __bench::decode_as::<Large>(&formats, black_box(raw)).unwrap()),
            });
            group.bench_function(format!("validate/{name}/{size}"), |b| {
                b.iter(|| assert!(__bench::validate_as(&formats, black_box(raw))))
            });
        }
    }
    let to_msgpack = __bench::formats("msgpack");
    group.bench_function("rewrite/json-to-msgpack/4k", |b| {
        b.iter(|| __bench::rewrite_as(&to_msgpack, black_box(&large_raw)).unwrap())
    });
    group.finish();

    // The stored forms (encrypt_at_rest, compress_above): what a save adds per value, and a
    // load.
    let key = __bench::signer_key();
    let forms = [
        ("sealed", __bench::at_rest(&key, true, None)),
        ("gzip", __bench::at_rest(&key, false, Some(256))),
        ("sealed-gzip", __bench::at_rest(&key, true, Some(256))),
    ];
    let mut group = c.benchmark_group("at_rest");
    for (name, form) in &forms {
        for (size, raw) in [("small", &small_raw), ("4k", &large_raw)] {
            let stored = __bench::seal(form, raw);
            group.bench_function(format!("seal/{name}/{size}"), |b| {
                b.iter(|| __bench::seal(form, black_box(raw)))
            });
            group.bench_function(format!("open/{name}/{size}"), |b| {
                b.iter_batched(
                    || stored.clone(),
                    |mut stored| assert!(__bench::open(form, &mut stored)),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

async fn with_session(session: Session) -> actix_web::Result<String> {
    let n: u64 = session.get("n")?.unwrap_or(0);
    session.insert("n", n + 1)?;
    Ok(n.to_string())
}

async fn without_session(counter: web::Data<AtomicU64>) -> actix_web::Result<String> {
    Ok(counter.fetch_add(1, Ordering::Relaxed).to_string())
}

/// The app with the middleware, the same app without it, and the Cookie header of a session
/// in the memory store; built on `$system`'s runtime. A macro, so that the service types
/// need no names.
macro_rules! apps {
    ($system:expr) => {{
        let system = $system;
        let session = system.block_on(test::init_service(
            App::new()
                .wrap(RedisSession::memory(Key::generate()))
                .route("/", web::get().to(with_session)),
        ));
        let plain = system.block_on(test::init_service(
            App::new()
                .app_data(web::Data::new(AtomicU64::new(0)))
                .route("/", web::get().to(without_session)),
        ));
        let res = system.block_on(test::call_service(
            &session,
            test::TestRequest::get().to_request(),
        ));
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .expect("a new session sets its cookie")
            .to_str()
            .expect("ASCII")
            .split(';')
            .next()
            .expect("name=value")
            .to_owned();
        (session, plain, cookie)
    }};
}

/// Both apps get the cookie, so that parsing the header is not counted as overhead.
macro_rules! request {
    ($cookie:expr) => {
        test::TestRequest::get()
            .insert_header((header::COOKIE, $cookie.as_str()))
            .to_request()
    };
}

fn middleware(c: &mut Criterion) {
    let system = System::new();
    let (session, plain, cookie) = apps!(&system);
    let mut group = c.benchmark_group("middleware");
    group.bench_function("plain", |b| {
        b.iter(|| system.block_on(test::call_service(&plain, request!(cookie))))
    });
    group.bench_function("memory-rw", |b| {
        b.iter(|| system.block_on(test::call_service(&session, request!(cookie))))
    });
    group.finish();
}

/// Paired batches (plain, then with the middleware) so that both see the same machine load;
/// the median of the per-pair differences.
fn paired_overhead() {
    const BATCH: u32 = 20_000;
    const PAIRS: usize = 15;
    let system = System::new();
    let (session, plain, cookie) = apps!(&system);
    let batch = |with_middleware: bool| {
        let start = Instant::now();
        for _ in 0..BATCH {
            let ok = if with_middleware {
                let res = system.block_on(test::call_service(&session, request!(cookie)));
                res.status().is_success()
            } else {
                let res = system.block_on(test::call_service(&plain, request!(cookie)));
                res.status().is_success()
            };
            assert!(ok);
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(BATCH)
    };
    batch(false);
    batch(true);
    let mut plain_us = Vec::new();
    let mut diffs = Vec::new();
    for _ in 0..PAIRS {
        let p = batch(false);
        let s = batch(true);
        plain_us.push(p);
        diffs.push(s - p);
    }
    plain_us.sort_by(f64::total_cmp);
    diffs.sort_by(f64::total_cmp);
    let diff = diffs[PAIRS / 2];
    println!(
        "\nmiddleware overhead (memory store, read + write a counter, paired batches of \
         {BATCH}): plain {:.2} us/request, with RedisSession {diff:+.2} us/request \
         (median of {PAIRS} pairs; range {:+.2} .. {:+.2}); target within 5 us: {}",
        plain_us[PAIRS / 2],
        diffs[0],
        diffs[PAIRS - 1],
        if diff <= 5.0 { "PASS" } else { "MISS" }
    );
}

criterion_group!(benches, cookie, codec, middleware);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Under `cargo bench` only (not `cargo test --benches`), and unless a filter leaves the
    // middleware out.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let filter = args.iter().find(|a| !a.starts_with('-'));
    if bench_mode && filter.is_none_or(|f| "middleware".contains(f.as_str())) {
        paired_overhead();
    }
}
