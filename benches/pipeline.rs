//! Micro-benchmarks of the consumer's pure steps: decoding (JSON and
//! protobuf), filtering and aggregation, on newsroom traffic.
//!
//! `cargo bench --bench pipeline`; the end-to-end figures come from
//! `bench/run.sh` (see docs/benchmarks.md).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The allocator of the `popularity` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use popularity::event::decode::{Decoder, MessageInfo};
use popularity::event::filter::{random_seed, Filter, Limits};
use popularity::event::{Behaviour, Encoding, Event};
use popularity::scoring::{destinations, profiles, Aggregate};
use popularity::store::Layout;
use popularity_cli::newsroom::{Newsroom, Shape, Topic, WireFormat};

const N: usize = 10_000;
const NOW: i64 = 1_700_000_000_000;

fn messages(format: WireFormat) -> Vec<(Vec<u8>, bool)> {
    let shape = Shape {
        format,
        invalid: 0.0,
        ..Shape::default()
    };
    let mut n = Newsroom::new(shape, NOW);
    (0..N)
        .map(|_| {
            let m = n.next(NOW);
            (m.payload, m.topic == Topic::Articles)
        })
        .collect()
}

fn info(encoding: Encoding, lifecycle: bool) -> MessageInfo<'static> {
    MessageInfo {
        encoding,
        key: None,
        timestamp_ms: Some(NOW),
        lifecycle_topic: lifecycle,
        now_ms: NOW,
    }
}

fn behaviours() -> Vec<Behaviour<'static>> {
    let d = Decoder::new(65_536, 300_000);
    messages(WireFormat::Json)
        .iter()
        .filter_map(|(p, l)| match d.decode(p, &info(Encoding::Json, *l)) {
            Ok(Event::Behaviour(b)) => Some(b.into_owned()),
            _ => None,
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let d = Decoder::new(65_536, 300_000);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(N as u64));
    for (name, format, encoding) in [
        ("json", WireFormat::Json, Encoding::Json),
        ("protobuf", WireFormat::Protobuf, Encoding::Protobuf),
    ] {
        let msgs = messages(format);
        g.bench_function(name, |b| {
            b.iter(|| {
                for (p, l) in &msgs {
                    let enc = if *l { Encoding::Json } else { encoding };
                    black_box(d.decode(black_box(p), &info(enc, *l)).is_ok());
                }
            })
        });
    }
    g.finish();
}

fn filter_and_aggregate(c: &mut Criterion) {
    let events = behaviours();
    let mut g = c.benchmark_group("steps");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("filter", |b| {
        b.iter(|| {
            let limits = Limits {
                max_age_ms: 7 * 86_400_000,
                window_ms: 30 * 60_000,
                lateness_ms: 3_600_000,
            };
            let mut f = Filter::new(limits, random_seed());
            for e in &events {
                black_box(f.judge(e, NOW));
            }
        })
    });
    let ps = profiles(&popularity::config::Settings::defaults().scoring);
    // As the consumer does: each article placed once per flush.
    let places: Vec<_> = events
        .iter()
        .map(|e| {
            let tags: Vec<String> = e.tags.iter().map(|t| t.to_string()).collect();
            Layout::WHOLE.place(destinations(
                &e.article_id,
                None,
                e.section.as_deref(),
                &tags,
            ))
        })
        .collect();
    g.bench_function("aggregate", |b| {
        b.iter(|| {
            let mut agg = Aggregate::new(ps.clone(), NOW);
            for (e, place) in events.iter().zip(&places) {
                let units = if e.engaged_seconds > 0.0 {
                    e.engaged_seconds
                } else {
                    1.0
                };
                agg.add_placed(
                    e.kind,
                    &e.article_id,
                    place,
                    e.occurred_at_ms,
                    units,
                    |_| true,
                );
            }
            black_box(agg.events)
        })
    });
    g.finish();
}

/// The reading step (decode → validate → filter into the batch) on 1 and
/// on 2 threads (`ingest.decode_threads`): how it scales with cores when
/// nothing else runs on them (in the service the writer, Redis and the
/// broker share them).
fn read_on_threads(c: &mut Criterion) {
    use popularity::ingest::Reading;
    let settings = popularity::config::Settings::defaults();
    let mut newsroom = Newsroom::new(
        Shape {
            invalid: 0.0,
            ..Shape::default()
        },
        NOW,
    );
    let msgs: Vec<_> = (0..N).map(|_| newsroom.next(NOW)).collect();
    let incoming: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| m.incoming(&settings.kafka.topics, (i % 12) as i32, i as i64, Some(NOW)))
        .collect();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(N as u64));
    for threads in [1, 2] {
        let mut settings = settings.clone();
        settings.ingest.decode_threads = threads;
        g.bench_function(format!("json_{threads}_threads"), |b| {
            b.iter_batched(
                || Reading::new(&settings),
                |mut r| {
                    for chunk in incoming.chunks(1024) {
                        r.read_all(chunk);
                    }
                    black_box(r.messages())
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decode, filter_and_aggregate, read_on_threads);
criterion_main!(benches);
