//! Counters and histograms the broker keeps about itself, read by `$SYS`, Prometheus `/metrics`
//! and tests. Relaxed atomics: each value is independent and only needs to be eventually exact.

mod prometheus;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use prometheus::render;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// What every packet counts, one set per thread stripe (see `Traffic`).
            traffic: Box<[Traffic; STRIPES]>,
            /// Messages dropped, by [`DropReason`].
            pub dropped: [AtomicU64; DropReason::ALL.len()],
            /// Connections refused, by [`Refusal`].
            pub refused: [AtomicU64; Refusal::ALL.len()],
            /// Store commit duration and operations per commit.
            pub commit_seconds: Histogram,
            pub commit_ops: Histogram,
        }

        /// A point-in-time copy of the plain counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct MetricsSnapshot {
            $(pub $name: u64,)*
        }

        impl Metrics {
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Connections open now.
    connections_current,
    /// Of those, idle ones parked without a task of their own (`connection::parking`).
    connections_parked,
    /// The most connections open at once since start.
    connections_maximum,
    /// Connections accepted since start.
    connections_total,
    /// Connections closed because of malformed or protocol-violating input.
    protocol_errors,
    /// Messages dropped for any reason (the sum of `dropped`).
    messages_dropped,
    /// Failed authentications (CONNECT and re-authentication).
    auth_failures,
    /// Sessions ended by their expiry interval.
    sessions_expired,
}

/// Why a message did not reach a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue was full (count or bytes), or QoS 0 for an offline client.
    QueueFull,
    /// Larger than the client's Maximum Packet Size.
    TooLarge,
    /// Its Message Expiry Interval ran out while queued.
    Expired,
    /// The publisher may not publish there.
    NotAuthorized,
    /// The broker-wide ceiling for queued messages was reached.
    Memory,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::TooLarge,
        DropReason::Expired,
        DropReason::NotAuthorized,
        DropReason::Memory,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::TooLarge => "too_large",
            DropReason::Expired => "expired",
            DropReason::NotAuthorized => "not_authorized",
            DropReason::Memory => "memory",
        }
    }
}

/// Why a connection was refused before it became a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The broker or listener was at its connection limit.
    MaxConnections,
    /// The client's address opened connections faster than allowed.
    RateLimited,
    /// Bad or missing credentials, or not authorized.
    Auth,
    /// Unsupported protocol level or client identifier.
    Protocol,
    /// Redirected to another server.
    Redirected,
    /// What the connection needs is out of reach (a cluster's session registry).
    Unavailable,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::MaxConnections,
        Refusal::RateLimited,
        Refusal::Auth,
        Refusal::Protocol,
        Refusal::Redirected,
        Refusal::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::RateLimited => "rate_limited",
            Refusal::Auth => "auth",
            Refusal::Protocol => "protocol",
            Refusal::Unavailable => "unavailable",
            Refusal::Redirected => "redirected",
        }
    }
}

impl Metrics {
    pub fn dropped_for(&self, reason: DropReason, n: u64) {
        if n > 0 {
            add(&self.dropped[reason as usize], n);
            add(&self.messages_dropped, n);
        }
    }

    pub fn refuse(&self, reason: Refusal) {
        add(&self.refused[reason as usize], 1);
    }

    pub fn connected(&self) {
        let now = self.connections_current.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_maximum.fetch_max(now, Ordering::Relaxed);
        add(&self.connections_total, 1);
    }

    pub fn packet_in(&self, kind: u8) {
        add(&self.traffic().packets_received[usize::from(kind & 0x0f)], 1);
    }

    pub fn packet_out(&self, kind: u8) {
        add(&self.traffic().packets_sent[usize::from(kind & 0x0f)], 1);
    }

    /// `n` PUBLISH packets of `qos` sent.
    pub fn publish_out(&self, qos: cauldron_proto::QoS, n: u64) {
        let traffic = self.traffic();
        add(&traffic.packets_sent[usize::from(cauldron_proto::PacketType::Publish as u8)], n);
        add(&traffic.publish_sent[qos as usize], n);
    }

    /// This thread's traffic counters, to add to.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic[stripe()]
    }

    /// The traffic counted by all threads so far.
    pub fn traffic_totals(&self) -> TrafficTotals {
        let mut totals = TrafficTotals::default();
        let sum = |into: &mut [u64], from: &[AtomicU64]| {
            into.iter_mut().zip(from).for_each(|(t, c)| *t += c.load(Ordering::Relaxed));
        };
        for t in self.traffic.iter() {
            sum(&mut totals.packets_received, &t.packets_received);
            sum(&mut totals.packets_sent, &t.packets_sent);
            sum(&mut totals.publish_received, &t.publish_received);
            sum(&mut totals.publish_sent, &t.publish_sent);
            let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
            totals.messages_received += get(&t.messages_received);
            totals.messages_sent += get(&t.messages_sent);
            totals.bytes_received += get(&t.bytes_received);
            totals.bytes_sent += get(&t.bytes_sent);
        }
        totals
    }
}

/// More than the cores a broker runs on, so threads rarely share a stripe.
pub(crate) const STRIPES: usize = 16;

/// This thread's stripe of a striped counter, handed out in turn as threads first count.
pub(crate) fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

/// What each packet counts, as one thread stripe's share. Every delivery of a fan-out counts
/// here, on the subscriber's core while the publisher's core counts what it reads: one shared
/// set of counters was a cache line bouncing between them on every message.
/// 128 bytes aligned: adjacent-line prefetching pairs lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Traffic {
    /// Packets received and sent, by control packet type (index = type number).
    pub packets_received: [AtomicU64; 16],
    pub packets_sent: [AtomicU64; 16],
    /// PUBLISH packets received and sent, by QoS.
    pub publish_received: [AtomicU64; 3],
    pub publish_sent: [AtomicU64; 3],
    /// PUBLISH packets received from clients.
    pub messages_received: AtomicU64,
    /// Messages sent to clients and bridges (resends not counted).
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
}

/// `Traffic` summed over the stripes.
#[derive(Debug, Default, Clone, Copy)]
pub struct TrafficTotals {
    pub packets_received: [u64; 16],
    pub packets_sent: [u64; 16],
    pub publish_received: [u64; 3],
    pub publish_sent: [u64; 3],
    pub messages_received: u64,
    pub messages_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// A histogram with fixed upper bounds, Prometheus style (cumulative on output).
#[derive(Debug)]
pub struct Histogram {
    pub bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations in millionths, to stay in integers.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        add(&self.counts[bucket], 1);
        add(&self.sum_micros, (value * 1e6) as u64);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    /// Per-bucket counts (the last is above every bound), sum and count.
    pub fn read(&self) -> (Vec<u64>, f64, u64) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total = counts.iter().sum();
        (counts, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, total)
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(&[])
    }
}

const COMMIT_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const COMMIT_OPS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, 10000.0];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            commit_seconds: Histogram::new(COMMIT_SECONDS),
            commit_ops: Histogram::new(COMMIT_OPS),
            ..Metrics::default()
        }
    }
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}
