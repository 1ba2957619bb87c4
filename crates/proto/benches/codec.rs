//! Codec and topic-matching micro-benchmarks: `cargo bench -p cauldron-proto`.
//! PUBLISH is the packet on the hot path, so it is measured at each protocol level and at two
//! payload sizes; decoding a batch shows the cost per packet when a read holds many.

use cauldron_proto::{decode, topic, BytesMut, Packet, Properties, Protocol, Publish, QoS};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn publish(size: usize, protocol: Protocol) -> Packet {
    let mut publish = Publish::new("owntracks/jane/phone", vec![b'x'; size]);
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = Some(42);
    if protocol == Protocol::V5 {
        publish.properties = Properties { message_expiry_interval: Some(60), ..Properties::default() };
    }
    Packet::Publish(publish)
}

fn encoded(packet: &Packet, protocol: Protocol, copies: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..copies {
        packet.encode(protocol, &mut buf).unwrap();
    }
    buf
}

fn codec(c: &mut Criterion) {
    for (protocol, name) in [(Protocol::V3_1_1, "3.1.1"), (Protocol::V5, "5")] {
        for size in [64, 4096] {
            let packet = publish(size, protocol);
            let mut group = c.benchmark_group(format!("publish v{name} {size}B"));
            group.throughput(Throughput::Elements(1));
            let mut buf = BytesMut::with_capacity(size + 64);
            group.bench_function("encode", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(&packet).encode(protocol, &mut buf).unwrap();
                })
            });
            let one = encoded(&packet, protocol, 1);
            group.bench_function("decode", |b| {
                b.iter_batched(
                    || one.clone(),
                    |mut buf| decode(&mut buf, protocol, usize::MAX).unwrap().unwrap(),
                    BatchSize::SmallInput,
                )
            });
            group.finish();
        }
    }
    let protocol = Protocol::V3_1_1;
    let batch = encoded(&publish(64, protocol), protocol, 100);
    let mut group = c.benchmark_group("decode 100 x 64B publishes in one read");
    group.throughput(Throughput::Elements(100));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || batch.clone(),
            |mut buf| {
                while let Some(packet) = decode(&mut buf, protocol, usize::MAX).unwrap() {
                    black_box(packet);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic matching");
    let name = "owntracks/jane/phone/event";
    for filter in ["owntracks/jane/phone/event", "owntracks/+/+/event", "owntracks/#", "sensors/+/temp"] {
        group.bench_function(filter, |b| b.iter(|| topic::matches(black_box(filter), black_box(name))));
    }
    group.bench_function("validate_name", |b| b.iter(|| topic::validate_name(black_box(name))));
    group.finish();
}

criterion_group!(benches, codec, topics);
criterion_main!(benches);
