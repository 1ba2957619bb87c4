//! Counters the broker keeps about itself, read by `$SYS` and `/metrics` (later issues) and by
//! tests. Relaxed atomics: each counter is independent and only needs to be eventually exact.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of every counter.
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
    /// Connections accepted since start.
    connections_total,
    /// Connections closed because of malformed or protocol-violating input.
    protocol_errors,
    /// PUBLISH packets received from clients.
    messages_received,
    /// PUBLISH packets sent to clients.
    messages_sent,
    /// Messages dropped: queue full, offline QoS 0, expired or too large for the client.
    messages_dropped,
    bytes_received,
    bytes_sent,
    /// Failed authentications (CONNECT and re-authentication).
    auth_failures,
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}
